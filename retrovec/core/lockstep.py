"""The lockstep fast path of :class:`~retrovec.AsyncRetroVectorEnv`: one plain ``step()``
of every env, done without the slot table when nothing unusual happens.

Why a hand-written path: the general one (:meth:`~retrovec.core.base.RetroVectorEnvBase.step`
= ``step_async`` + ``step_wait``) walks the slot table, encodes, dispatches and settles
every env one by one, and its per-env Python was about half of the parent's CPU per env
step. In the common case (every env idle, actions in shared memory, every reply an
8-byte record in the completion pipe) none of that bookkeeping changes anything: the
slots go IDLE -> BUSY -> DONE -> IDLE within the call. This path announces the step to
every worker at once, reads the completion records, and builds the result as the general
path would (:meth:`~retrovec.core.base.RetroVectorEnvBase._step_tuple`).

Anything else hands over to the general path, which stays the one place that handles
failures: a reply on a socket (an error, a new info schema), a worker's death, a
timeout and a Ctrl-C all first write into the slot table exactly what
the general path would have recorded by then (sent envs BUSY, answered ones DONE, the
call pending as ``step``), and then the general code continues from there
(:meth:`LockstepMixin._hand_over`).

Announcing a step with one syscall rather than one socket write per worker
(:class:`Doorbell`): the parent writes the step's round number into the arena and counts
one on an eventfd that worker 0 watches edge-triggered beside its socket, and worker 0
wakes the others through a second one. A worker woken steps when the round number is past
the last one it saw (one it learns when it attaches, so a replacement never steps for a
round it was not part of).

Waking the parent once per step rather than once per reply (:class:`Doorbell`): the
workers' completion records still go to the completion pipe, but this path sleeps on a
doorbell that only the worker that answers last rings. Before it announces the step, the
parent puts ``num_envs - 1`` tokens in a token pipe; after its reply each worker takes
one (a pipe read is atomic), and the one that finds none left rings. Workers write their
record before they take a token, so when the bell rings every record is there. The parent
never trusts the bell: it counts records and sleeps again if some are missing (a straggler
of a round that was handed over may take a token, or ring, late), and a worker that dies
or answers on its socket wakes it through its sentinel or socket.
"""

from __future__ import annotations

import os
import select
import time
from typing import Any

from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.actions import IN_ARENA
from retrovec.core.arena import SharedArena
from retrovec.core.channel import COMPLETION, WorkerChannel
from retrovec.core.processes import disown_fd, own_fd, spin_poll
from retrovec.core.signals import InterruptGuard
from retrovec.core.slots import CALL, SlotState
from retrovec.errors import WorkerTimeoutError

__all__ = ["Doorbell", "LockstepMixin"]

#: The most envs the fast path steps: the tokens (one byte per env) must fit in a pipe
#: whose capacity was cut to one page (``pipe-user-pages-soft``), so the write never blocks.
MAX_LOCKSTEP_ENVS = 4096

_IDLE = SlotState.IDLE
_READ_SIZE = 1 << 16  # a multiple of COMPLETION.size: a read holds whole records


class Doorbell:
    """The lockstep path's wake-ups, both ways, and an epoll set over the doorbell and
    every worker's socket and sentinel (see the module docstring).

    The parent announces a step with one syscall whatever the number of envs: it writes
    the step's round number into the arena (``arena.lockstep_round``) and counts one on
    the *go* eventfd, which only worker 0 watches; worker 0 counts one on the *relay*
    eventfd, which every other worker watches, before it steps. Waking a process costs
    the waker several microseconds of kernel time, so the parent (the one process every
    step waits for) wakes one, and a worker pays for waking the rest. Workers watch these
    edge-triggered and answer through the token pipe and the *bell* eventfd, which the
    parent also watches edge-triggered: no eventfd is ever read, so no round costs a read
    to silence one. A round handed over to the general path is relayed by the parent
    (:meth:`relay`), so that no env waits on a worker 0 that died or is late.

    Example:
        >>> bell = Doorbell()
        >>> tokens, ring, go, relay = bell.worker_fds()
        >>> bell.arm([], 3)  # 2 tokens: the third worker to answer rings
        >>> os.read(tokens, 1), os.read(tokens, 1)
        (b'\\x00', b'\\x00')
        >>> os.eventfd_write(ring, 1)
        >>> bell.wait(0.0, 0.0, InterruptGuard()) == [(bell.bell, select.EPOLLIN)]
        True
        >>> bell.wait(0.0, 0.0, InterruptGuard())  # edge-triggered: one ring, one event
        []
        >>> bell.close()
    """

    def __init__(self) -> None:
        self._tokens, self._refill = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # Non-blocking eventfds: a write only fails when the count would pass 2**64 - 2.
        self.bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.go = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._relay = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        for fd in (self._tokens, self._refill, self.bell, self.go, self._relay):
            own_fd(fd)
        self._epoll: select.epoll | None = None
        self._watched: list[WorkerChannel] = []
        self.records: frozenset[tuple[int, int]] = frozenset()
        self.dirty = False  # a round was handed over: tokens may be left in the pipe
        self.round = 0  # the latest round announced

    def worker_fds(self) -> list[int]:
        """What each worker gets at attach: the token pipe's read end, the bell, go and
        relay."""
        return [self._tokens, self.bell, self.go, self._relay]

    def arm(self, channels: list[WorkerChannel], count: int) -> None:
        """Ready a round of ``count`` replies from ``channels``: watch them (a new epoll set
        when they changed, so no retired worker's registration survives), and put
        ``count - 1`` tokens in the pipe (after a handed-over round, once it is emptied)."""
        if self._epoll is None or channels != self._watched:  # channels compare by identity
            self._rebuild(channels)
        if self.dirty:
            _drain(self._tokens)
            self.dirty = False
        if count > 1:
            try:  # fewer tokens than asked (a full pipe) only means earlier rings: safe
                os.write(self._refill, bytes(count - 1))
            except BlockingIOError:
                pass

    def announce(self, arena: SharedArena, bank: int) -> None:
        """Start the next round, whose observations go to ``bank``: the bank and the
        round's number into the arena (``lockstep_bank``, ``lockstep_round``), then wake
        the workers (the actions are in the arena by now; the syscall orders the stores
        before the wake-up)."""
        self.round += 1
        arena.lockstep_bank[0] = bank
        arena.lockstep_round[0] = self.round
        os.eventfd_write(self.go, 1)

    def relay(self) -> None:
        """Wake every worker but worker 0 (what worker 0 does each round): for a round
        handed over, whose worker 0 may be dead or late. A worker woken for a round it
        already stepped only goes back to sleep."""
        os.eventfd_write(self._relay, 1)

    def _rebuild(self, channels: list[WorkerChannel]) -> None:
        self._close_epoll()
        epoll = select.epoll()
        own_fd(epoll.fileno())
        self._epoll = epoll
        epoll.register(self.bell, select.EPOLLIN | select.EPOLLET)
        for channel in channels:
            for fd in (channel._fd, channel._sentinel):
                epoll.register(fd, select.EPOLLIN)
        self._watched = list(channels)
        # The records of a round that went as planned: one from each watched worker.
        self.records = frozenset((channel.index, channel.generation) for channel in channels)

    def wait(
        self, timeout: float | None, spin_seconds: float, guard: InterruptGuard
    ) -> list[tuple[int, int]]:
        """Events of the bell, sockets and sentinels (spinning first, as the waiter does);
        a Ctrl-C raises here at once."""
        epoll = self._epoll
        with guard.released():
            events = []
            if spin_seconds:
                spin = spin_seconds if timeout is None else min(spin_seconds, timeout)
                events = spin_poll(epoll.poll, spin)
            if not events:
                events = epoll.poll(-1 if timeout is None else timeout)
        return events

    def _close_epoll(self) -> None:
        if self._epoll is not None:
            disown_fd(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
            self._watched = []
            self.records = frozenset()

    def close(self) -> None:
        """Release every descriptor (once)."""
        self._close_epoll()
        if self.go >= 0:
            for fd in (self._tokens, self._refill, self.bell, self.go, self._relay):
                disown_fd(fd)
                os.close(fd)
            self._tokens = self._refill = self.bell = self.go = self._relay = -1


def _drain(fd: int) -> None:
    while True:
        try:
            if len(os.read(fd, _READ_SIZE)) < _READ_SIZE:
                return
        except (BlockingIOError, InterruptedError):
            return


class _HandOver(Exception):
    """Something the fast path does not handle: the general path continues."""


class LockstepMixin:
    """``step()`` through the fast path when :meth:`_lockstep_ready` (see the module
    docstring); mixed into :class:`~retrovec.AsyncRetroVectorEnv` before its base, which
    sets ``_doorbell`` (a :class:`Doorbell`) once its workers can take commands."""

    _doorbell: Doorbell | None = None
    _all_reset = False

    def _lockstep_ready(self) -> bool:
        """Every env idle and reset, no call or batch pending, actions and observations in
        shared memory: the case the fast path handles."""
        if (
            self._state is not AsyncState.DEFAULT
            or self.closed
            or self._broken is not None
            or self._parked is not None
            or not self._observations_shared
            or self._actions is None
            or not self._actions.shared
            or self._doorbell is None
            or self.num_envs > MAX_LOCKSTEP_ENVS
        ):
            return False
        if not self._all_reset:  # _ever_reset only grows: once all, always all
            if not self._ever_reset.all():
                return False
            self._all_reset = True
        for slot in self._slots.entries:
            if slot.state is not _IDLE or slot.episode_end is not None:
                return False
        return True

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        """Step every env with its action and batch the results (as gymnasium's
        ``step``); see :meth:`RetroVectorEnvBase.step
        <retrovec.core.base.RetroVectorEnvBase.step>`."""
        if not self._lockstep_ready():
            return super().step(actions)
        arguments = self._step_arguments(actions)  # checks and writes, as step_async does
        if arguments[0] is not IN_ARENA:  # actions to pickle: the general path sends them
            with self._guard:
                self._dispatch(self._step_commands(range(self.num_envs), arguments, CALL), CALL)
                self._state = AsyncState.WAITING_STEP
            return self.step_wait()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        sent = 0
        arrived = [False] * self.num_envs
        leases = self._leases if self.copy else None
        with self._guard:  # Ctrl-C only where the loop below hands over first
            doorbell = self._doorbell
            doorbell.arm(self._channels, self.num_envs)
            # copy=True: the workers write into a free bank, which is then lent, not
            # copied (bank 0 when every bank is lent: then copied as usual).
            bank = leases.acquire() if leases is not None else 0
            try:
                doorbell.announce(self._arena, bank)
                sent = self.num_envs
                if bank:
                    self._banks_dirty = True  # bank 0 no longer holds the latest
                self._collect(arrived, deadline)
            except _HandOver:
                self._hand_over(sent, arrived, bank)
            except BaseException:
                self._hand_over(sent, arrived, bank)
                raise
            else:
                # Every env answered and is idle again; an error here ends the call (as
                # in _finish_call).
                result = self._step_tuple(
                    leases.lend(bank) if bank else self._batch_observations([]),
                    self._schemas,  # every env's info is in the columns, as it sent last
                )
                # As _finish_call does: a Ctrl-C noted from here on leaves the call
                # pending with its result, which step_wait() then returns.
                self._parked = (result,)
                self._state = AsyncState.WAITING_STEP
        # Leaving the guard delivers a Ctrl-C noted meanwhile: the call is pending then.
        if self._parked is None:  # handed over: the general path finishes the call
            return self._continue(deadline)
        (result,), self._parked = self._parked, None
        self._state = AsyncState.DEFAULT
        return result

    def _collect(self, arrived: list[bool], deadline: float | None) -> None:
        """Sleep on the doorbell and read completion records until every env's arrived;
        raise :class:`_HandOver` on any other event (a socket or a sentinel ready) or when
        ``deadline`` passes."""
        waiter = self._waiter
        doorbell = self._doorbell
        channels = self._channels
        pipe = waiter._completions
        live = waiter._live
        missing = total = len(arrived)
        record_bytes = total * COMPLETION.size
        guard = self._guard
        spin = waiter.spin_seconds
        while missing:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = doorbell.wait(remaining, spin, guard)
            if not events:
                raise _HandOver  # timed out: the general path decides
            for fd, _ in events:
                if fd != doorbell.bell:
                    raise _HandOver
            while True:
                try:
                    data = os.read(pipe, _READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                if (  # the usual round, in one read: every record at once, no Python loop
                    missing == total
                    and len(data) == record_bytes
                    and frozenset(COMPLETION.iter_unpack(data)) == doorbell.records
                ):
                    arrived[:] = [True] * total
                    missing = 0
                    break
                for key in COMPLETION.iter_unpack(data):
                    channel = live.get(key)  # None: a retired worker's record, dropped
                    if channel is not None and channels[key[0]] is channel and (
                        not arrived[key[0]]
                    ):
                        arrived[key[0]] = True
                        missing -= 1
                if len(data) < _READ_SIZE:
                    break
            guard.checkpoint()

    def _hand_over(self, sent: int, arrived: list[bool], bank: int = 0) -> None:
        """Record in the slot table what the general path would have by now: the first
        ``sent`` envs were sent ``step`` (BUSY), those that ``arrived`` answered from the
        arena (DONE), and a ``step`` call is pending. The round's ``bank`` is not lent:
        the general path brings its observations home to bank 0 and copies them."""
        if bank:
            self._leases.release(bank)
        doorbell = self._doorbell
        doorbell.dirty = True
        if sent:
            doorbell.relay()  # worker 0 may be dead or late: wake the others here
        slots = self._slots
        schemas = self._schemas
        for index in range(sent):
            slots.send(index, "step", IN_ARENA, CALL)
            if arrived[index]:
                slots.settle(index, (True, (None, schemas[index])))
        self._state = AsyncState.WAITING_STEP

    def _continue(self, deadline: float | None) -> tuple[Any, Any, Any, Any, dict]:
        """The rest of the call on the general path, within the same ``deadline``."""
        unsent = [(index, "step", IN_ARENA) for index, slot in enumerate(self._slots.entries)
                  if slot.state is _IDLE]
        if unsent:  # a send failed: the general path records the dead env, sends the rest
            with self._guard:
                self._dispatch(unsent, CALL)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        busy = set(self._slots.busy(CALL))
        self._wait_for(busy, remaining)
        if busy:  # still pending, as after the general path's timeout
            raise WorkerTimeoutError("step_wait", self.timeout, sorted(busy))
        return self.step_wait()
