"""Everything that runs in a worker process: one env, one socket, one row of the arena.

Protocol (parent -> worker, over the worker's own socketpair, ``multiprocessing`` framing):

1. The worker builds its env and replies with its spaces, metadata and render mode.
2. ``("attach", layout)`` followed by six file descriptors (SCM_RIGHTS): the arena, which
   the worker maps and from then on writes observations, rewards, terminations,
   truncations and scalar infos into (its row), and reads its actions from; the write
   end of the vector env's completion pipe; and the token pipe's read end and the bell,
   go and relay eventfds of :class:`~retrovec.core.lockstep.Doorbell`.
3. Lockstep steps, announced without the socket: the parent raises the arena's
   ``lockstep_round`` and counts one on the go eventfd, which worker 0 watches
   edge-triggered; worker 0 counts one on the relay eventfd, which the others watch. A
   worker whose last round is behind it steps (actions in the arena) and answers with a
   completion record, then a token or the bell.
4. The commands of :class:`~retrovec.core.server.EnvServer` (``reset``, ``reset-noop``,
   ``reset-after-restart``, ``step``, ``call``, ``setattr``), and ``("close", None)``.

Every command gets exactly one reply, ``(True, payload)`` or ``(False, error)`` on the
socket, or, for a step or reset whose results are all in the arena, one 8-byte record
(index, generation) in the completion pipe; so a reply can never be taken for the answer to
another command. An exception in the env is sent back (with its traceback) and the worker
keeps serving, so that ``close()`` still closes the env cleanly (recordings are finalised). The worker ignores SIGINT (Ctrl-C is the parent's to
handle) and exits on its own, closing its env, when the parent process disappears: it
polls for that while idle, and a write to a parent that died fails at once, since no other
process holds the parent's end of the socket.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler, recvfds
from typing import Any

from gymnasium import Env
from gymnasium.vector import AutoresetMode

from retrovec.core.actions import IN_ARENA
from retrovec.core.arena import ArenaLayout, SharedArena
from retrovec.core.channel import COMPLETION
from retrovec.core.info_columns import InfoColumnWriter, InfoSchema
from retrovec.core.processes import spin_poll
from retrovec.core.server import EnvServer, describe, error_reply, one_thread_per_library

__all__ = ["STEP_COMMAND", "worker_main"]

#: The step command when actions are in shared memory: pickled once, compared as bytes.
STEP_COMMAND = bytes(ForkingPickler.dumps(("step", IN_ARENA)))

#: What ``run`` returns for a step or reset whose observation is in the arena and whose
#: info is in the arena's info columns with the schema this worker sent last: the reply is
#: then one record in the completion pipe, no pickling.
INFO_IN_COLUMNS = object()

#: How often an idle worker checks that its parent is still alive, in seconds.
PARENT_CHECK_INTERVAL = 0.5


def _parent_alive(pid: int, initial_ppid: int) -> bool:
    # A reparented worker has lost its parent (under forkserver the parent is the fork
    # server, which exits with the vector env's process). getppid catches a parent that
    # is dead but not yet reaped, which kill(pid, 0) would still find.
    if os.getppid() != initial_ppid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - alive, owned by someone else
        return True
    return True


class _ArenaPublisher:
    """Puts a server's results where the parent reads them: observation, reward and flags
    into this env's row of the arena, the rest into the reply."""

    def __init__(
        self, index: int, server: EnvServer, conn: Connection, generation: int = 0
    ) -> None:
        self.index = index
        self.server = server
        self.conn = conn
        self.arena: SharedArena | None = None
        self.write_observation: Callable[[Any], None] | None = None
        self.read_action: Callable[[], Any] | None = None
        self.write_info: Callable[[dict], InfoSchema | None] | None = None
        self.sent_schema: InfoSchema | None = None
        self.completions: int | None = None  # the completion pipe's write end
        self.tokens: int | None = None  # the lockstep token pipe's read end (non-blocking)
        self.doorbell: int | None = None  # the lockstep bell (an eventfd)
        self.go: int | None = None  # the lockstep go eventfd (worker 0 watches it)
        self.relay: int | None = None  # the lockstep relay eventfd (the others watch it)
        self.last_round = 0  # the last lockstep round this worker stepped (or saw at attach)
        self.writers: list[Callable[[Any], None]] = []  # one observation writer per bank
        self.bank = 0  # the bank this command's observation goes to (the lockstep step's)
        self.record = COMPLETION.pack(index, generation)

    def attach(self, layout: ArenaLayout) -> None:
        with socket.fromfd(self.conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            arena_fd, self.completions, self.tokens, self.doorbell, self.go, self.relay = (
                recvfds(sock, 6)
            )
        self.arena = SharedArena.attach(layout, arena_fd)
        self.last_round = int(self.arena.lockstep_round[0])
        if layout.observation_space is not None:
            self.write_observation = self.arena.observation_writer(self.index)
            self.writers = [
                self.arena.observation_writer(self.index, bank)
                for bank in range(layout.observation_banks)
            ]
        if layout.action_space is not None:
            self.read_action = self.arena.action_reader(self.index)
        self.write_info = InfoColumnWriter(self.arena.info_columns[self.index]).write

    def _publish(self, observation: Any, info: dict) -> Any:
        """The payload for ``(observation, info)``, or :data:`INFO_IN_COLUMNS` when both
        are in the arena and the info's schema is the one sent last."""
        if self.write_observation is None:
            return observation, info
        bank = self.bank
        self.writers[bank](observation)
        self.arena.banks_used[self.index] = bank
        schema = self.write_info(info)
        if schema is None:
            self.sent_schema = None
            return None, info
        if schema is self.sent_schema:
            return INFO_IN_COLUMNS
        self.sent_schema = schema
        return None, schema

    def run(self, kind: str, argument: Any) -> Any:
        if kind == "step":
            if argument is IN_ARENA:
                argument = self.read_action()
            observation, reward, terminated, truncated, info = self.server.step(argument)
            arena = self.arena
            index = self.index
            arena.rewards[index] = reward
            arena.terminations[index] = terminated
            arena.truncations[index] = truncated
            return self._publish(observation, info)
        if kind == "attach":
            return self.attach(argument)
        result = self.server.handle(kind, argument)
        if kind == "reset-noop":
            return (None if self.write_observation is not None else result[0]), result[1]
        if kind.startswith("reset"):
            return self._publish(*result)
        return result

    def close(self) -> None:
        self.server.close()
        if self.arena is not None:
            self.arena.close()
            self.arena = None
        for name in ("completions", "tokens", "doorbell", "go", "relay"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def lockstep_due(self) -> bool:
        """Whether the parent announced a lockstep round this worker has not stepped yet
        (and if so, count it as stepped)."""
        arena = self.arena
        if arena is None:
            return False
        announced = int(arena.lockstep_round[0])
        if announced == self.last_round:
            return False
        self.last_round = announced
        self.bank = int(arena.lockstep_bank[0])
        if self.index == 0:  # wake the others (see Doorbell)
            os.eventfd_write(self.relay, 1)
        return True

    @property
    def wake_up(self) -> int | None:
        """The eventfd that announces this worker's lockstep rounds (``None`` before
        attach)."""
        return self.go if self.index == 0 else self.relay

    def answered_lockstep(self) -> None:
        """After the reply to a lockstep step: take a token, or ring the doorbell if none
        is left (this worker answered last; see :class:`~retrovec.core.lockstep.Doorbell`)."""
        try:
            os.read(self.tokens, 1)
        except BlockingIOError:
            os.eventfd_write(self.doorbell, 1)


def _send(conn: Connection, reply: tuple[bool, Any]) -> bool:
    """Send a reply; a payload that does not pickle is answered with that error.
    ``False`` if the parent is gone."""
    try:
        data = ForkingPickler.dumps(reply)
    except Exception as error:  # the payload itself would not pickle
        data = ForkingPickler.dumps(error_reply(error))
    try:
        conn.send_bytes(data)
    except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
        return False
    return True


def _serve(
    publisher: _ArenaPublisher,
    conn: Connection,
    parent_pid: int,
    initial_ppid: int,
    spin_seconds: float,
) -> None:
    """Answer commands until ``close``, a closed socket, or the parent's death.

    Between commands the worker first spins for up to ``spin_seconds`` (see
    :func:`retrovec.core.processes.spin_poll`), then sleeps until the next one: a message
    on its socket, or a lockstep round announced on the go eventfd (watched from attach
    on)."""
    socket_fd = conn.fileno()
    poller = select.epoll()  # built once: the spin polls it between every two commands
    poller.register(socket_fd, select.EPOLLIN)
    watching_go = False
    run = publisher.run
    while True:
        if not watching_go and publisher.wake_up is not None:
            # Edge-triggered: one event per announcement, and the count is never read.
            poller.register(publisher.wake_up, select.EPOLLIN | select.EPOLLET)
            watching_go = True
        events = spin_poll(poller.poll, spin_seconds) if spin_seconds else []
        if not events:
            events = poller.poll(PARENT_CHECK_INTERVAL)
            if not events:
                if not _parent_alive(parent_pid, initial_ppid):
                    return
                continue
        lockstep = publisher.lockstep_due()
        if lockstep:
            kind, argument = "step", IN_ARENA
        else:
            if all(fd != socket_fd for fd, _ in events):
                continue  # only a go: a round already stepped (or seen at attach)
            publisher.bank = 0  # commands on the socket write bank 0
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return
            # The step command is the same bytes every step: compare, don't unpickle.
            if message == STEP_COMMAND:
                kind, argument = "step", IN_ARENA
            else:
                kind, argument = pickle.loads(message)
        if kind == "close":
            try:
                publisher.close()
                _send(conn, (True, None))
            except Exception as error:
                _send(conn, error_reply(error))
            return
        try:
            result = run(kind, argument)
        except Exception as error:
            reply: Any = error_reply(error)
        else:
            if result is INFO_IN_COLUMNS:
                try:
                    os.write(publisher.completions, publisher.record)
                    if lockstep:
                        publisher.answered_lockstep()
                except OSError:  # the parent is gone
                    return
                continue
            reply = (True, result)
        if not _send(conn, reply):
            return
        if lockstep:
            try:
                publisher.answered_lockstep()
            except OSError:  # the parent is gone
                return


def worker_main(
    index: int,
    env_fn: Callable[[], Env],
    conn: Connection,
    parent_pid: int,
    autoreset_mode: AutoresetMode,
    spin_seconds: float = 0.0,
    generation: int = 0,
) -> None:
    """Entry point of a worker process.

    Args:
        index: This env's index in the vector.
        env_fn: Builds the env (a ``CloudpickleWrapper`` under spawn and forkserver).
        conn: The worker's end of its socket.
        parent_pid: The vector env's process, watched so that orphans exit.
        autoreset_mode: How ``step`` handles episode ends.
        spin_seconds: How long to poll for the next command before sleeping.
        generation: This worker's generation, which its completion records carry.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initial_ppid = os.getppid()
    publisher: _ArenaPublisher | None = None
    try:
        try:
            env = env_fn()
        except Exception as error:
            _send(conn, error_reply(error))
            return
        one_thread_per_library()
        publisher = _ArenaPublisher(index, EnvServer(env, autoreset_mode), conn, generation)
        if not _send(conn, (True, describe(env))):
            return
        _serve(publisher, conn, parent_pid, initial_ppid, spin_seconds)
    finally:
        if publisher is not None:
            try:
                publisher.close()
            except Exception:
                traceback.print_exc()
        conn.close()
