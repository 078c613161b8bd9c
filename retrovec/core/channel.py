"""One worker process and the parent's end of its socket, and the epoll set that waits on them.

A :class:`WorkerChannel` owns everything the parent holds for one worker: the process, its
sentinel, the parent's end of a ``socketpair`` and the bytes read from it that do not yet
make a whole reply. It registers those descriptors with the vector env's
:class:`ChannelWaiter` when it starts and unregisters them *before* it closes anything, so a
retired worker can never leave a stale registration (a busy loop) or a recycled descriptor
number behind. Every descriptor it holds is the parent's own
(:func:`~retrovec.core.processes.own_fd`), so workers forked later do not inherit it.

Replies are read without blocking: whatever the socket holds is appended to the channel's
buffer and cut into whole messages there, so a worker that stalls halfway through a large
reply never blocks the parent past its timeout, a reply interrupted by Ctrl-C is resumed
where it stopped, and a small reply costs one ``recv``. Messages use
:mod:`multiprocessing.connection`'s framing (a 4-byte big-endian length, or -1 then an
8-byte length), so the worker keeps a plain ``Connection``.

Example:
    >>> import multiprocessing as mp, pickle
    >>> waiter = ChannelWaiter()
    >>> def start(child_end):
    ...     return mp.get_context("fork").Process(target=child_end.send, args=("hello",))
    >>> channel = WorkerChannel.start(0, start, waiter)
    >>> [(index, pickle.loads(message)) for index, message in waiter.wait({0: channel}, 5.0)]
    [(0, 'hello')]
    >>> channel.retire(waiter, grace=5.0); waiter.close()
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import sendfds

from gymnasium.vector.utils import clear_mpi_env_vars

from retrovec.core.leases import forking_workers
from retrovec.core.processes import disown_fd, own_fd, spin_poll, stop_processes
from retrovec.core.reaper import reaper
from retrovec.core.signals import InterruptGuard

__all__ = ["COMPLETION", "DEAD", "PIPE_REPLY", "ChannelWaiter", "WorkerChannel"]

#: What :meth:`ChannelWaiter.wait` yields for a worker that died without a whole reply.
DEAD = None

#: The message :meth:`ChannelWaiter.wait` yields for a reply that came as a record in the
#: completion pipe ("done; everything is in the arena") rather than through the socket.
PIPE_REPLY = b"C"

#: One completion record: the env index and the worker's generation (a replacement has a
#: new one, so a record its dead predecessor wrote is never taken for its own).
COMPLETION = struct.Struct("=ii")

_HEADER = struct.Struct("!i")
_LONG_HEADER = struct.Struct("!Q")
_READ_SIZE = 1 << 16


def _open_fds() -> set[int]:
    """This process's open descriptors (Linux; elsewhere an empty set)."""
    try:
        return {int(name) for name in os.listdir("/proc/self/fd")}
    except OSError:  # pragma: no cover - no procfs
        return set()


class WorkerChannel:
    """The parent's side of one worker: process, sentinel, socket and read buffer.

    Build one with :meth:`start`. ``send`` writes one framed message; ``retire`` ends the
    worker and releases every descriptor.

    Attributes:
        index: The env index the worker serves.
        process: The worker process.
    """

    def __init__(
        self, index: int, process: BaseProcess, sock: socket.socket, generation: int = 0
    ) -> None:
        self.index = index
        self.generation = generation
        self.process = process
        self.pid = process.pid
        self._sock = sock
        self._fd = sock.fileno()
        self._sentinel = process.sentinel
        self._buffer = bytearray()
        self._inbox: deque[bytes] = deque()
        self._eof = False
        self._process_fds: set[int] = set()
        self.serving = False  # it answered once: past start-up
        self._last_message: bytes | None = None
        self._last_frame = b""
        self.registered = False

    @classmethod
    def start(
        cls,
        index: int,
        make_process: Callable[[Connection], BaseProcess],
        waiter: ChannelWaiter,
        generation: int = 0,
    ) -> WorkerChannel:
        """Start a worker: ``make_process(child_end)`` builds the (unstarted) process;
        ``generation`` must differ from every earlier worker's for the same ``index``.

        Raises:
            OSError: The process could not be started (e.g. ``fork`` failed with ENOMEM);
                nothing is left open.
        """
        parent_sock, child_sock = socket.socketpair()
        own_fd(parent_sock.fileno())
        child_end = Connection(child_sock.detach())
        before = _open_fds()
        try:
            process = make_process(child_end)
            with clear_mpi_env_vars(), forking_workers():
                process.start()
        except BaseException:
            disown_fd(parent_sock.fileno())
            parent_sock.close()
            child_end.close()
            raise
        child_end.close()
        # What starting it left open here: the sentinel, and multiprocessing's own pipe
        # ends (its Popen keeps the write end of the child's "parent alive" pipe).
        process_fds = {process.sentinel} | (_open_fds() - before)
        reaper.watch(process.pid)  # killed if this process ends before it serves
        channel = cls(index, process, parent_sock, generation)
        channel._process_fds = process_fds
        for fd in channel._process_fds:
            own_fd(fd)
        waiter.adopt(channel)
        return channel

    # ------------------------------------------------------------------ sending

    def send(self, message: bytes) -> bool:
        """Write one message (blocking); ``False`` if the worker is gone."""
        if message is self._last_message:  # the same command again (a step): same frame
            try:
                self._sock.sendall(self._last_frame)
            except OSError:
                return False
            return True
        size = len(message)
        header = _HEADER.pack(size) if size <= 0x7FFFFFFF else (
            _HEADER.pack(-1) + _LONG_HEADER.pack(size)
        )
        try:
            if size < 16384:
                self._last_frame = header + message
                self._last_message = message
                self._sock.sendall(self._last_frame)
            else:
                self._sock.sendall(header)
                self._sock.sendall(message)
        except OSError:  # EPIPE, ECONNRESET, or closed
            return False
        return True

    def send_fds(self, fds: list[int]) -> bool:
        """Pass descriptors to the worker (SCM_RIGHTS); ``False`` if it is gone."""
        try:
            sendfds(self._sock, fds)  # what the worker's recvfds reads
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ receiving

    def pump(self) -> None:
        """Read whatever the socket holds without blocking and cut it into messages."""
        sock = self._sock
        if not self._buffer and not self._eof:
            # The common reply: small and whole, in one read, taken without the buffer.
            try:
                chunk = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if len(chunk) >= 4 and _HEADER.unpack_from(chunk)[0] == len(chunk) - 4:
                self._inbox.append(chunk[4:])
                return
            if not chunk:
                self._eof = True
                return
            self._buffer += chunk
            self._cut()
            if len(chunk) < _READ_SIZE:
                return
        while not self._eof:
            size = max(_READ_SIZE, self._missing())
            try:
                chunk = sock.recv(size, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                break
            self._buffer += chunk
            self._cut()
            if len(chunk) < size:
                break  # drained (the common case: one whole reply in one read)

    def _missing(self) -> int:
        buffer = self._buffer
        if len(buffer) < 4:
            return 0
        size = _HEADER.unpack_from(buffer)[0]
        if size == -1:
            if len(buffer) < 12:
                return 0
            return _LONG_HEADER.unpack_from(buffer, 4)[0] + 12 - len(buffer)
        return size + 4 - len(buffer)

    def _cut(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 4:
            size = _HEADER.unpack_from(buffer)[0]
            start = 4
            if size == -1:
                if len(buffer) < 12:
                    return
                size = _LONG_HEADER.unpack_from(buffer, 4)[0]
                start = 12
            end = start + size
            if len(buffer) < end:
                return
            self._inbox.append(bytes(buffer[start:end]))
            del buffer[:end]

    def is_dead(self) -> bool:
        """The worker ended (or closed its end) and no whole message is left."""
        if self._inbox:
            return False
        if self._eof:
            return True
        if self.process.is_alive():
            return False
        self.pump()  # it wrote everything before it died: take it
        return not self._inbox

    # ------------------------------------------------------------------ ending

    def exitcode(self) -> int | None:
        """How the worker ended (waits up to 1 s for it to be reaped)."""
        try:
            self.process.join(1.0)
            return self.process.exitcode
        except ValueError:  # already closed
            return None

    def release(self, waiter: ChannelWaiter | None) -> None:
        """Unregister, then close the parent's descriptors (once); the process is left to
        :meth:`retire` or :func:`~retrovec.core.processes.stop_processes`."""
        if waiter is not None:
            waiter.forget(self)
        if self._fd >= 0:
            reaper.forget(self.pid)
            disown_fd(self._fd)
            for fd in self._process_fds:
                disown_fd(fd)
            self._sock.close()
            self._fd = -1
            self._eof = True

    def retire(self, waiter: ChannelWaiter | None, grace: float) -> None:
        """Release the descriptors, then end the worker (after ``grace`` seconds:
        terminate, then kill)."""
        self.release(waiter)
        stop_processes([self.process], timeout=grace)


class ChannelWaiter:
    """One persistent epoll set over the channels' sockets and sentinels.

    Level-triggered, registered once per channel: a ready descriptor that nobody waits for
    (a dead worker's sentinel, a reply outside the current request) is unregistered the
    first time it shows up and registered again when its env is waited for.

    Args:
        spin_seconds: How long a wait polls, yielding the CPU, before it sleeps
            (see :func:`~retrovec.core.processes.spin_poll`).
    """

    def __init__(self, spin_seconds: float = 0.0, guard: InterruptGuard | None = None) -> None:
        self.spin_seconds = spin_seconds
        self.guard = guard or InterruptGuard()
        self._epoll = select.epoll()
        own_fd(self._epoll.fileno())
        self._owner: dict[int, WorkerChannel] = {}
        self._live: dict[tuple[int, int], WorkerChannel] = {}
        # The completion pipe: every worker writes one COMPLETION record to it for a reply
        # that is all in the arena (a step, a reset), so that one read here collects many
        # replies instead of one recv per worker. Records are 8 bytes, far below PIPE_BUF:
        # each write is atomic, whatever the number of writers.
        self._completions, self.completion_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._completions, False)
        own_fd(self._completions)
        own_fd(self.completion_fd)
        self._epoll.register(self._completions, select.EPOLLIN)

    def adopt(self, channel: WorkerChannel) -> None:
        """Take a new channel: watch it, and credit its completion records to it."""
        self._live[(channel.index, channel.generation)] = channel
        self.register(channel)

    def forget(self, channel: WorkerChannel) -> None:
        """Drop a channel that is being released (before its descriptors close)."""
        self._live.pop((channel.index, channel.generation), None)
        self.unregister(channel)

    def read_completions(self) -> list[WorkerChannel]:
        """Move every completion record in the pipe into its channel's messages; returns
        those channels (records of retired workers are dropped)."""
        woken = []
        while self._epoll is not None:
            try:
                data = os.read(self._completions, 1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            for key in COMPLETION.iter_unpack(data):  # 65536 is a multiple of 8: whole
                channel = self._live.get(key)
                if channel is not None:
                    channel._inbox.append(PIPE_REPLY)
                    woken.append(channel)
            if len(data) < 1 << 16:
                break
        return woken

    def register(self, channel: WorkerChannel) -> None:
        """Watch ``channel``'s socket and sentinel."""
        if channel.registered or self._epoll is None:
            return
        for fd in (channel._fd, channel._sentinel):
            self._epoll.register(fd, select.EPOLLIN)
            self._owner[fd] = channel
        channel.registered = True

    def unregister(self, channel: WorkerChannel) -> None:
        """Stop watching ``channel`` (before any of its descriptors is closed)."""
        if not channel.registered:
            return
        channel.registered = False
        for fd in (channel._fd, channel._sentinel):
            if self._owner.get(fd) is channel:
                del self._owner[fd]
                try:
                    self._epoll.unregister(fd)
                except (OSError, ValueError):  # pragma: no cover - already gone
                    pass

    def close(self) -> None:
        """Release the epoll descriptor."""
        if self._epoll is not None:
            self._owner.clear()
            self._live.clear()
            for fd in (self._epoll.fileno(), self._completions, self.completion_fd):
                disown_fd(fd)
            self._epoll.close()
            self._epoll = None
            os.close(self._completions)
            os.close(self.completion_fd)

    def _poll(self, timeout: float | None) -> list[tuple[int, int]]:
        epoll = self._epoll
        with self.guard.released():
            events = []
            if self.spin_seconds:
                spin = self.spin_seconds if timeout is None else min(self.spin_seconds, timeout)
                events = spin_poll(epoll.poll, spin)
            if not events:
                events = epoll.poll(-1 if timeout is None else timeout)
        return events

    def wait(
        self, channels: dict[int, WorkerChannel], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, bytes | None]]:
        """Yield ``(index, message)`` as the channels answer, ``(index, DEAD)`` for a worker
        that died without a whole reply; each index is removed from ``channels`` as it is
        yielded. Returns when ``channels`` is empty, ``wanted`` were yielded, or ``timeout``
        (seconds in all; ``None``: no limit) ran out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        count = 0
        owner = self._owner
        for channel in channels.values():
            if not channel.registered:
                self.register(channel)
        # Messages read by an earlier wait (one that stopped at ``wanted``, or was
        # interrupted) come first; after that only the channels an event woke are looked at.
        ready = [channel for channel in channels.values() if channel._inbox]
        while True:
            for channel in ready:
                index = channel.index
                if channels.get(index) is not channel:
                    continue  # its socket and its sentinel were both ready
                if not channel._inbox and channel.is_dead():
                    # A record it wrote before it died still counts as its reply.
                    ready.extend(self.read_completions())
                if channel._inbox:
                    message = channel._inbox.popleft()
                    if not channel.serving:
                        channel.serving = True
                        reaper.serving(channel.pid)
                elif channel.is_dead():
                    message = DEAD
                else:
                    continue  # part of a reply: wait for the rest
                del channels[index]
                yield index, message
                count += 1
                if wanted is not None and count >= wanted:
                    return
            if not channels:
                return
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = self._poll(remaining)
            ready = []
            completions = self._completions
            for fd, _ in events:
                if fd == completions:
                    ready.extend(self.read_completions())
                    continue
                channel = owner.get(fd)
                if channel is None:
                    continue
                if channels.get(channel.index) is not channel:
                    self.unregister(channel)  # not waited for now: mute it
                    continue
                channel.pump()
                ready.append(channel)
            if not events and deadline is not None and time.monotonic() >= deadline:
                return
            self.guard.checkpoint()
