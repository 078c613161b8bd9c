"""Everything that runs in a worker process: one env, one pipe, one row of the arena.

Protocol (parent -> worker, over the worker's own socketpair):

1. The worker builds its env and replies with its spaces, metadata and render mode.
2. ``("attach", layout)`` followed by the arena's file descriptor (SCM_RIGHTS): the worker
   maps the arena and from then on writes observations, rewards, terminations and
   truncations into its row, and reads its actions from it.
3. ``("reset", (seed, options))``, ``("reset-noop", None)``, ``("reset-after-restart",
   None)``, ``("step", action_or_None)``,
   ``("call", (name, args, kwargs))``, ``("setattr", (name, value))``, ``("close", None)``.

Every command gets exactly one reply, ``(True, payload)`` or ``(False, error)``, so a reply
can never be taken for the answer to another command. An exception in the env is sent back
(with its traceback) and the worker keeps serving, so that ``close()`` still closes the env
cleanly (recordings are finalised). The worker ignores SIGINT (Ctrl-C is the parent's to
handle) and exits on its own, closing its env, when the parent process disappears.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler, recv_handle
from typing import Any

from gymnasium import Env
from gymnasium.vector import AutoresetMode

from retrovec.core.autoreset import autoreset_step
from retrovec.core.processes import spin_poll
from retrovec.core.arena import ArenaLayout, SharedArena

__all__ = ["STEP_COMMAND", "ErrorPayload", "error_reply", "worker_main"]

#: The step command when actions are in shared memory: pickled once, compared as bytes.
STEP_COMMAND = bytes(ForkingPickler.dumps(("step", None)))

#: How often an idle worker checks that its parent is still alive, in seconds.
PARENT_CHECK_INTERVAL = 0.5


#: Methods that ``call`` must not reach (they have their own commands), as in gymnasium.
_RESERVED_CALLS = ("reset", "step", "close", "_setattr", "_check_spaces")

ErrorPayload = tuple[BaseException | None, str, str, str]


def error_reply(error: BaseException) -> tuple[bool, ErrorPayload]:
    """Package an exception so the parent can raise it as its own type.

    The exception object itself travels when it survives a pickle round trip; otherwise
    its type name and message do, and the parent raises a ``RuntimeError`` naming them.
    """
    text = "".join(traceback.format_exception(error))
    portable: BaseException | None = error
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        portable = None
    return False, (portable, type(error).__qualname__, str(error), text)


def _one_thread_per_library() -> None:
    """A worker is one of many processes: a thread pool in each would oversubscribe the
    cores (OpenCV, used by the preprocessing wrappers, starts one per core by default)."""
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)


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


class _EnvServer:
    """Runs commands against one env and writes results into its row of the arena."""

    def __init__(self, index: int, env: Env, conn: Connection, autoreset_mode: AutoresetMode):
        self.index = index
        self.env = env
        self.conn = conn
        self.autoreset_mode = autoreset_mode
        self.needs_reset = False
        self.last_observation: Any = None
        self.arena: SharedArena | None = None
        self.write_observation: Callable[[Any], None] | None = None
        self.read_action: Callable[[], Any] | None = None
        self.handlers: dict[str, Callable[[Any], Any]] = {
            "reset": self.reset,
            "reset-noop": self.reset_noop,
            "reset-after-restart": self.reset_after_restart,
            "step": self.step,
            "call": self.call,
            "setattr": self.setattr,
            "attach": self.attach,
        }

    def attach(self, layout: ArenaLayout) -> None:
        self.arena = SharedArena.attach(layout, recv_handle(self.conn))
        if layout.observation_space is not None:
            self.write_observation = self.arena.observation_writer(self.index)
        if layout.action_space is not None:
            self.read_action = self.arena.action_reader(self.index)

    def _publish(self, observation: Any) -> Any:
        """Write the observation to shared memory, or return it to travel by pipe."""
        if self.write_observation is not None:
            self.write_observation(observation)
            return None
        self.last_observation = observation
        return observation

    def reset(self, data: tuple[int | None, dict | None]) -> tuple[Any, dict]:
        seed, options = data
        observation, info = self.env.reset(seed=seed, options=options)
        self.needs_reset = False
        return self._publish(observation), info

    def reset_after_restart(self, _: None) -> tuple[Any, dict]:
        """Reset a replacement worker's env. Its episode is reported as truncated, so
        under NEXT_STEP the next step is the reset step that follows an episode end."""
        observation, info = self.env.reset()
        self.needs_reset = self.autoreset_mode is AutoresetMode.NEXT_STEP
        return self._publish(observation), info

    def reset_noop(self, _: None) -> tuple[Any, dict]:
        return self.last_observation if self.write_observation is None else None, {}

    def step(self, action: Any) -> tuple[Any, dict]:
        if self.read_action is not None:
            action = self.read_action()
        observation, reward, terminated, truncated, info, self.needs_reset = autoreset_step(
            self.env, action, self.autoreset_mode, self.needs_reset
        )
        arena = self.arena
        assert arena is not None
        arena.rewards[self.index] = reward
        arena.terminations[self.index] = terminated
        arena.truncations[self.index] = truncated
        return self._publish(observation), info

    def call(self, data: tuple[str, tuple, dict]) -> Any:
        name, args, kwargs = data
        if name in _RESERVED_CALLS:
            raise ValueError(
                f"Trying to call function `{name}` with `call`, use `{name}` directly instead."
            )
        attribute = self.env.get_wrapper_attr(name)
        return attribute(*args, **kwargs) if callable(attribute) else attribute

    def setattr(self, data: tuple[str, Any]) -> None:
        name, value = data
        self.env.set_wrapper_attr(name, value)

    def serve(self, parent_pid: int, initial_ppid: int, spin_seconds: float = 0.0) -> None:
        """Answer commands until ``close``, a closed pipe, or the parent's death.

        Between commands the worker first spins for up to ``spin_seconds`` (see
        :func:`retrovec.core.processes.spin_poll`), then sleeps until the next one."""
        conn = self.conn
        poller = select.poll()  # built once: the spin polls it between every two commands
        poller.register(conn.fileno(), select.POLLIN)
        handlers = self.handlers
        while True:
            ready = bool(spin_seconds) and bool(spin_poll(poller.poll, spin_seconds))
            if not ready and not conn.poll(PARENT_CHECK_INTERVAL):
                if not _parent_alive(parent_pid, initial_ppid):
                    return
                continue
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return
            # The step command is the same bytes every step: compare, don't unpickle.
            command, data = ("step", None) if message == STEP_COMMAND else pickle.loads(message)
            if command == "close":
                try:
                    self.close()
                    _send(conn, (True, None))
                except Exception as error:
                    _send(conn, error_reply(error))
                return
            try:
                reply: tuple[bool, Any] = (True, handlers[command](data))
            except Exception as error:
                reply = error_reply(error)
            if not _send(conn, reply):
                return

    def close(self) -> None:
        env, self.env = self.env, None  # type: ignore[assignment]
        if env is not None:
            env.close()
        if self.arena is not None:
            self.arena.close()
            self.arena = None


def _send(conn: Connection, reply: tuple[bool, Any]) -> bool:
    try:
        conn.send(reply)
    except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
        return False  # the parent is gone
    except Exception as error:  # the payload itself would not pickle
        try:
            conn.send(error_reply(error))
        except Exception:
            return False
    return True


def _describe(env: Env) -> dict[str, Any]:
    return {
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "metadata": dict(env.metadata),
        "render_mode": env.render_mode,
    }


def worker_main(
    index: int,
    env_fn: Callable[[], Env],
    conn: Connection,
    parent_pid: int,
    autoreset_mode: AutoresetMode,
    spin_seconds: float = 0.0,
) -> None:
    """Entry point of a worker process.

    Args:
        index: This env's index in the vector.
        env_fn: Builds the env (a ``CloudpickleWrapper`` under spawn and forkserver).
        conn: The worker's end of its pipe.
        parent_pid: The vector env's process, watched so that orphans exit.
        autoreset_mode: How ``step`` handles episode ends.
        spin_seconds: How long to poll for the next command before sleeping.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initial_ppid = os.getppid()
    server: _EnvServer | None = None
    try:
        try:
            env = env_fn()
        except Exception as error:
            _send(conn, error_reply(error))
            return
        _one_thread_per_library()
        server = _EnvServer(index, env, conn, autoreset_mode)
        if not _send(conn, (True, _describe(env))):
            return
        server.serve(parent_pid, initial_ppid, spin_seconds)
    finally:
        if server is not None:
            try:
                server.close()
            except Exception:
                traceback.print_exc()
        conn.close()
