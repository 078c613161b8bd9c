"""The local control channel of a Ray env runner: a Unix domain socket that carries a
runner's commands and replies when it runs on the driver's own node, bypassing Ray's
actor-call machinery (about a millisecond of fixed cost per call on each side).

Ray still places, starts, pings, restarts and kills the runner; only its ``step``,
``handle`` and ``close`` calls travel here, as the same arguments and replies as the Ray
methods of :class:`~retrovec.core.env_runner.EnvRunner`. Once the driver has connected,
every command goes through the channel (one path drives a runner's envs at a time; the
runner also serialises them with a lock). Runners on other nodes keep the Ray path.

Frames are ``<length: 8 bytes little-endian><tag: 1 byte><body>``. Requests:

* ``S``: the common step, ``<observe: 1 byte><the actions' raw bytes>``;
* ``P``: a pickled ``(method, *arguments)`` of ``step``, ``handle`` or ``close``.

Replies, one per request, in order:

* ``F``: the common step's reply, its ``scalars`` bytes only: every env answered "done;
  observation and info in the arena, info with this schema", and the schema is the one of
  the previous ``P`` reply that had one (see
  :func:`~retrovec.core.env_runner.compact_replies`);
* ``P``: the pickled reply tuple;
* ``E``: the reply could not be pickled; the body is the pickled error payload.

The driver's side, :class:`DriverChannel`, never blocks on a read: it waits with
``select`` (Ctrl-C raises there, with nothing read), then takes what the socket holds into
its buffer, so a reply is never split. A runner that dies is seen as EOF on the socket or
its process ending (a pidfd), whichever comes first.

Example:
    >>> import socket
    >>> driver, runner = socket.socketpair()
    >>> send_frame(runner, b"F", b"abc")
    >>> channel = DriverChannel(driver)
    >>> channel.wait(1.0), channel.drain(), channel.frames()
    (True, True, [(b'F', b'abc')])
    >>> channel.close(); runner.close()
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
import threading
import uuid
from collections import deque
from typing import Any

__all__ = ["DriverChannel", "listen", "read_frame", "send_frame", "serve"]

_HEADER = struct.Struct("<Q")
_CHUNK = 1 << 20


def send_frame(sock: socket.socket, tag: bytes, body: bytes) -> None:
    """Send one frame (blocking)."""
    sock.sendall(_HEADER.pack(len(body) + 1) + tag + body)


def _read_exactly(sock: socket.socket, count: int) -> bytearray | None:
    buffer = bytearray(count)
    view = memoryview(buffer)
    got = 0
    while got < count:
        n = sock.recv_into(view[got:], count - got)
        if n == 0:
            return None
        got += n
    return buffer


def read_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """Read one frame (blocking): ``(tag, body)``, or ``None`` at EOF."""
    header = _read_exactly(sock, _HEADER.size)
    if header is None:
        return None
    frame = _read_exactly(sock, _HEADER.unpack(header)[0])
    if frame is None:
        return None
    return bytes(frame[:1]), bytes(frame[1:])


# --------------------------------------------------------------------------- runner side


def listen() -> tuple[socket.socket, str]:
    """A listening Unix socket in the abstract namespace (nothing on disk to clean up)
    and its address."""
    address = f"\0retrovec-runner-{os.getpid()}-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(1)
    return listener, address


def serve(listener: socket.socket, runner: Any, lock: Any) -> threading.Thread:
    """Serve the one driver that connects to ``listener`` on a daemon thread: each request
    is run on ``runner`` (its ``step``, ``handle`` or ``close``) under ``lock``, and
    answered. The thread ends at EOF (the driver closed the channel or died)."""

    def loop() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        finally:
            listener.close()
        schema = None
        with connection:
            while True:
                try:
                    frame = read_frame(connection)
                except OSError:
                    return
                if frame is None:
                    return
                tag, body = frame
                failure = None
                try:
                    with lock:
                        if tag == b"S":
                            reply = runner.step(body[1:], bool(body[0]))
                        else:
                            method, *arguments = pickle.loads(body)
                            reply = getattr(runner, method)(*arguments)
                except Exception as error:  # e.g. an argument that does not unpickle here
                    from retrovec.core.server import error_reply

                    failure = error_reply(error)[1]
                try:
                    if failure is not None:
                        send_frame(connection, b"E", pickle.dumps(failure))
                        continue
                    if (
                        type(reply) is tuple and len(reply) == 4 and reply[1] is None
                        and reply[3] is None and reply[2] is not None
                        and reply[0] is schema and schema is not None
                    ):
                        send_frame(connection, b"F", reply[2])
                        continue
                    try:
                        data = pickle.dumps(reply, protocol=5)
                    except Exception as error:
                        from retrovec.core.server import error_reply

                        send_frame(connection, b"E", pickle.dumps(error_reply(error)[1]))
                        continue
                    if type(reply) is tuple and len(reply) == 4 and reply[2] is not None and (
                        not isinstance(reply[0], list)
                    ):
                        schema = reply[0]  # what the next "F" replies mean
                    send_frame(connection, b"P", data)
                except OSError:
                    return

    thread = threading.Thread(target=loop, name="retrovec-runner-channel", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- driver side


class DriverChannel:
    """The driver's end of a runner's channel.

    Args:
        sock: A connected socket.
        pid: The runner's process id on this node, watched with a pidfd (``None``: only
            EOF tells that it died).

    Attributes:
        calls: The calls sent and not answered yet, oldest first (their replies come in
            that order).
        ready: ``(call, reply)`` decoded by the driver and not handed over yet.
        cause: Why the runner's end is gone, once the driver knows.
        dead: The runner's end is gone (EOF, an error, or its process ended).
        schema: The info schema of the last ``P`` reply that had one (what ``F`` replies
            mean).
    """

    def __init__(self, sock: socket.socket, pid: int | None = None) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.calls: deque[Any] = deque()
        self.ready: deque[tuple[Any, Any]] = deque()
        self.cause: BaseException | None = None
        self.dead = False
        self.schema: Any = None
        self.pidfd: int | None = None
        if pid is not None:
            try:
                self.pidfd = os.pidfd_open(pid)
            except (AttributeError, OSError):  # no pidfds here: EOF alone tells
                self.pidfd = None

    @classmethod
    def connect(cls, address: str, pid: int | None = None) -> DriverChannel:
        """Connect to a runner's listening ``address``.

        Raises:
            OSError: Not reachable from here.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            sock.connect(address)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return cls(sock, pid)

    def watched(self) -> list[int]:
        """What to ``select`` on: the socket, and the pidfd when there is one."""
        if self.dead:
            return []
        fds = [self.sock.fileno()]
        if self.pidfd is not None:
            fds.append(self.pidfd)
        return fds

    def send(self, tag: bytes, body: bytes) -> bool:
        """Send one request; what arrives meanwhile is kept (a runner sending a large
        reply must not block this send). ``False`` if the runner's end is gone."""
        if self.dead:
            return False
        data = memoryview(_HEADER.pack(len(body) + 1) + tag + body)
        sock = self.sock
        while data:
            try:
                sent = sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                readable, _, _ = select.select([sock], [sock], [])
                if readable and not self.drain():
                    return False
                continue
            except OSError:
                self.dead = True
                return False
            data = data[sent:]
        return True

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` until there is something to read (or the runner
        ended); the caller releases Ctrl-C around this."""
        return bool(select.select(self.watched(), [], [], seconds)[0])

    def drain(self) -> bool:
        """Take what the socket holds into the buffer without blocking; ``False`` (and
        :attr:`dead`) at EOF, on an error, or once the runner's process ended and every
        byte it sent was read."""
        sock = self.sock
        while True:
            try:
                data = sock.recv(_CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.dead = True
                return False
            self.buffer += data
            if len(data) < _CHUNK:
                break
        if self.pidfd is not None and select.select([self.pidfd], [], [], 0)[0]:
            try:  # it ended: whatever it sent is in the socket now, read it all
                while data := sock.recv(_CHUNK, socket.MSG_DONTWAIT):
                    self.buffer += data
            except OSError:
                pass
            self.dead = True
            return False
        return True

    def frames(self) -> list[tuple[bytes, bytes]]:
        """The whole frames in the buffer, oldest first (a partial one stays)."""
        out = []
        buffer = self.buffer
        start = 0
        size = _HEADER.size
        while len(buffer) - start >= size:
            (length,) = _HEADER.unpack_from(buffer, start)
            end = start + size + length
            if len(buffer) < end:
                break
            out.append((bytes(buffer[start + size:start + size + 1]),
                        bytes(buffer[start + size + 1:end])))
            start = end
        if start:
            del buffer[:start]
        return out

    def close(self) -> None:
        """Close the socket (the runner's thread ends) and the pidfd."""
        self.dead = True
        try:
            self.sock.close()
        finally:
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None
