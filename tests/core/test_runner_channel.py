"""The local control channel of Ray env runners (``retrovec.core.runner_channel``): framing
that never splits a reply, sends that cannot deadlock against a large reply, the runner's
serving thread (the compact step reply, replies that do not pickle) and a runner's end
seen as EOF. The channel end to end is tested by ``test_ray_runners.py`` and
``test_ray_failure_paths.py`` (every runner test runs with and without it)."""

from __future__ import annotations

import pickle
import socket
import threading

import pytest

from retrovec.core.runner_channel import DriverChannel, listen, read_frame, send_frame, serve

pytestmark = pytest.mark.timeout(60)


def _frames(channel: DriverChannel, count: int) -> list[tuple[bytes, bytes]]:
    out = channel.frames()  # what an earlier drain took already
    while len(out) < count:
        assert channel.wait(10.0), "nothing arrived"
        channel.drain()
        out += channel.frames()
    return out


def test_a_frame_arriving_in_pieces_is_kept_until_whole():
    driver, runner = socket.socketpair()
    channel = DriverChannel(driver)
    data = b"\x06\x00\x00\x00\x00\x00\x00\x00Phello"
    runner.sendall(data[:5])
    assert channel.wait(5.0) and channel.drain()
    assert channel.frames() == []  # half a header: nothing yet, nothing lost
    runner.sendall(data[5:11])
    channel.drain()
    assert channel.frames() == []
    runner.sendall(data[11:] + data)  # the rest, then a whole second frame
    assert _frames(channel, 2) == [(b"P", b"hello"), (b"P", b"hello")]
    channel.close()
    runner.close()


def test_a_large_send_while_the_peer_sends_a_large_reply_does_not_deadlock():
    driver, runner = socket.socketpair()
    channel = DriverChannel(driver)
    big = bytes(8 << 20)

    def peer():  # sends its big reply first, then reads the request
        send_frame(runner, b"P", big)
        assert read_frame(runner) == (b"S", big)

    thread = threading.Thread(target=peer)
    thread.start()
    assert channel.send(b"S", big)  # drains the peer's reply meanwhile
    thread.join(30)
    assert not thread.is_alive()
    assert _frames(channel, 1) == [(b"P", big)]
    channel.close()
    runner.close()


def test_eof_marks_the_channel_dead_and_sends_fail():
    driver, runner = socket.socketpair()
    channel = DriverChannel(driver)
    send_frame(runner, b"F", b"last")
    runner.close()
    assert channel.wait(5.0)
    channel.drain()  # the frame; a short read stops there
    assert channel.wait(5.0)  # EOF is readable too
    assert not channel.drain() and channel.dead
    assert channel.frames() == [(b"F", b"last")]  # what came before the end is kept
    assert not channel.send(b"S", b"x")
    channel.close()


class _Runner:
    """Answers like EnvRunner: ``step`` with the compact reply, ``handle`` with what it is
    told to."""

    schema = ("an info schema",)

    def step(self, actions: bytes, observe: bool) -> tuple:
        return self.schema, None, actions, None

    def handle(self, reply):
        return _Unpicklable() if reply == "unpicklable" else reply


def test_serve_sends_the_common_step_compactly_and_errors_as_payloads():
    listener, address = listen()
    lock = threading.RLock()
    thread = serve(listener, _Runner(), lock)
    channel = DriverChannel.connect(address)
    channel.send(b"S", b"\x00ab")
    channel.send(b"S", b"\x00cd")  # same schema as the previous reply: only the bytes
    channel.send(b"P", pickle.dumps(("handle", [(True, 1)])))
    channel.send(b"P", pickle.dumps(("handle", "unpicklable")))  # its reply cannot travel
    channel.send(b"P", b"not a pickle")
    frames = _frames(channel, 5)
    assert frames[0][0] == b"P"
    assert pickle.loads(frames[0][1]) == (_Runner.schema, None, b"ab", None)
    assert frames[1] == (b"F", b"cd")
    assert pickle.loads(frames[2][1]) == [(True, 1)]
    assert frames[3][0] == b"E" and "pickle" in pickle.loads(frames[3][1])[2].lower()
    assert frames[4][0] == b"E"  # a request that does not unpickle: an error, not a hang
    channel.close()
    thread.join(10)
    assert not thread.is_alive()  # EOF ends the runner's thread


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle this reply")
