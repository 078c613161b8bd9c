"""Commands to the Ray env runners and their replies back, as they are ready.

The transport half of :class:`~retrovec.core.ray_runners.RayRunnerVectorEnv`: every command
posted to the envs of one runner during a dispatch is queued, then leaves as one call
(:meth:`RunnerTransportMixin._flush`): a Ray actor call, or, for a runner on this node, a
frame on its local channel (:mod:`retrovec.core.runner_channel`). Replies are gathered one
runner's call at a time as they arrive, from ``ray.wait`` and from ``select`` on the
channels; a channel that ends makes its calls' replies :data:`_LOST`, and the runner's
error is Ray's own verdict on it when Ray gives one in time. What each reply means is
:mod:`retrovec.core.runner_replies`.

Example:
    >>> import pickle
    >>> pickle.loads(_dumps(("close", 30.0)))  # a command for a runner's channel
    ('close', 30.0)
"""

from __future__ import annotations

import pickle
import select
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from retrovec.core.actions import IN_ARENA
from retrovec.core.env_runner import rows_index
from retrovec.core.ray_backend import WAIT_SLICE
from retrovec.core.runner_channel import DriverChannel

__all__ = ["RunnerTransportMixin"]

#: A runner call's result not fetched yet.
_UNREAD = object()

#: Seconds a lost channel waits for Ray's verdict on its runner (the error it reports).
_VERDICT_SECONDS = 10.0

#: Seconds between looks at the channels while Ray calls to other runners are also pending.
_MIXED_SLICE = 0.001


class _ChannelCall:
    """One call sent over a runner's local channel (what a Ray ``ObjectRef`` is on the Ray
    path): the key of its entry in ``_calls``."""

    __slots__ = ("channel",)

    def __init__(self, channel: DriverChannel) -> None:
        self.channel = channel


class _Failed:
    """A channel reply that is an error for every env of its call: ``payload``, the error
    payload of a reply the runner could not pickle; or ``error``, what unpickling it here
    raised."""

    __slots__ = ("error", "payload")

    def __init__(self, payload: Any = None, error: BaseException | None = None) -> None:
        self.payload = payload
        self.error = error


#: The reply of a call whose runner ended before answering it.
_LOST = object()

def _dumps(value: Any) -> bytes:
    """Pickle a command for a runner's channel (``cloudpickle`` for what plain pickle
    cannot: e.g. a lambda passed to ``call``)."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 - whatever pickle fails on, cloudpickle tries
        from ray import cloudpickle

        return cloudpickle.dumps(value, protocol=5)

class RunnerTransportMixin:
    """Sends each runner its queued commands as one call and yields the replies as they
    come, for :class:`~retrovec.core.ray_runners.RayRunnerVectorEnv` (which reads each
    reply with ``_read``, :class:`~retrovec.core.runner_replies.RunnerRepliesMixin`)."""

    _ray: Any
    _guard: Any
    runners: list[Any]
    runner_envs: list[range]
    local_channel: bool
    _calls: dict[Any, tuple[int, list[int], list[str], int]]
    _outbox: dict[int, list[tuple[int, str, Any]]]
    _channels: list[DriverChannel | None]
    _direct: list[Any]
    _runner_of: Any
    _local: Any
    _lost: list[bool]
    _generation: list[int]
    _env_generation: list[int]
    _env_call: list[Any]
    _close_grace: float
    _action_arrays: Any

    def _post(self, index: int, message: tuple[str, Any]) -> bool:
        """Queue the command for its runner (sent by :meth:`_flush`). ``False`` for an env
        whose runner is lost or was replaced since the env last ran (the restart policy
        then applies to it)."""
        runner = self._runner_of[index]
        if (
            not self.runners or self.runners[runner] is None or self._lost[runner]
            or self._env_generation[index] != self._generation[runner]
        ):
            return False
        kind, argument = message
        self._outbox.setdefault(runner, []).append((index, kind, argument))
        return True

    def _dispatch(self, commands: Sequence[tuple[int, str, Any]], owner: str | None) -> None:
        super()._dispatch(commands, owner)  # type: ignore[misc]
        self._flush()

    def _flush(self) -> None:
        """Send each runner its queued commands as one actor call."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        local = self._local
        for runner, queued in outbox.items():
            actor = self.runners[runner]
            indices = [index for index, _, _ in queued]
            kinds = [kind for _, kind, _ in queued]
            channel = self._channels[runner]
            if kinds[0] == "build":
                ref = actor.build.remote(self.local_channel)
            elif kinds[0] == "close":
                if channel is not None:
                    ref = self._send(channel, b"P", pickle.dumps(("close", self._close_grace)))
                else:
                    ref = actor.close.remote(self._close_grace)
            else:
                in_arena = [i for i, kind, a in queued if kind == "step" and a is IN_ARENA]
                actions = None
                if in_arena:
                    rows = rows_index(in_arena)
                    arrays = self._action_arrays
                    if list(arrays) == [()]:
                        actions = arrays[()][rows]
                    else:
                        from retrovec.core.arena import _assemble

                        actions = _assemble(
                            self.single_action_space,
                            {path: array[rows] for path, array in arrays.items()},
                        )
                envs = self.runner_envs[runner]
                observe = self._direct[runner] is None
                if len(queued) == len(envs) and in_arena == list(envs):
                    # every env of the runner steps, in order: the short call
                    if type(actions) is np.ndarray:  # bytes travel faster than an array
                        actions = actions.tobytes()
                    if channel is None:
                        ref = actor.step.remote(actions, observe)
                    elif type(actions) is bytes:
                        ref = self._send(channel, b"S", (b"\1" if observe else b"\0") + actions)
                    else:
                        ref = self._send(channel, b"P", _dumps(("step", actions, observe)))
                else:
                    commands = [(int(local[i]), kind, a) for i, kind, a in queued]
                    if channel is None:
                        ref = actor.handle.remote(commands, actions, observe)
                    else:
                        ref = self._send(
                            channel, b"P", _dumps(("handle", commands, actions, observe))
                        )
            self._calls[ref] = (runner, indices, kinds, self._generation[runner])
            for index in indices:
                self._env_call[index] = ref

    def _send(self, channel: DriverChannel, tag: bytes, body: bytes) -> _ChannelCall:
        """Send one call over a runner's local channel (a dead channel's calls are read
        as lost)."""
        call = _ChannelCall(channel)
        channel.send(tag, body)
        channel.calls.append(call)
        return call

    def _replies(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Replies, one runner's call at a time as they are ready (every env of a ready
        call, also those not in ``pending``: each has one call in flight): from the local
        channels (``select`` on their sockets) and from Ray (``ray.wait``)."""
        self._flush()
        ray = self._ray
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending and (wanted is None or wanted > 0):
            calls = {self._env_call[index] for index in pending}
            channels = [call.channel for call in calls if type(call) is _ChannelCall]
            refs = [call for call in calls if type(call) is not _ChannelCall]
            seconds = WAIT_SLICE if deadline is None else min(
                WAIT_SLICE, max(0.0, deadline - time.monotonic())
            )
            if channels:
                channels = list(dict.fromkeys(channels))
                ready_channels = [c for c in channels if self._collect(c)]
                if not ready_channels:
                    self._wait_channels(channels, min(seconds, _MIXED_SLICE) if refs else seconds)
                    ready_channels = [c for c in channels if self._collect(c)]
                if refs:
                    seconds = 0.0
            else:
                ready_channels = []
            fetched: list[Any] = []
            ready: list[Any] = []
            if refs:
                with self._guard.released():
                    if wanted is not None:
                        ready, _ = ray.wait(refs, num_returns=1, timeout=seconds)
                    elif channels:  # also channels to watch: take those ready, then look again
                        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=seconds)
                    else:  # the common case: one round trip for all the runners
                        try:
                            fetched = ray.get(refs, timeout=seconds)
                            ready = refs
                        except ray.exceptions.GetTimeoutError:  # read those that are ready
                            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                        except Exception:  # noqa: BLE001 - a runner died: read them one by one
                            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=seconds)
            if not ready and not ready_channels:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                continue
            for channel in ready_channels:
                while channel.ready and (wanted is None or wanted > 0):
                    call, value = channel.ready[0]
                    if value is _LOST:  # may wait for Ray's verdict: nothing taken yet
                        self._lost_cause(call)
                    channel.ready.popleft()
                    for index, reply in self._read(call, value):
                        if index in pending:
                            pending.discard(index)
                            if wanted is not None:
                                wanted -= 1
                        yield index, reply
            for position, ref in enumerate(ready):
                if wanted is not None and wanted <= 0:
                    break
                value = fetched[position] if fetched else _UNREAD
                for index, reply in self._read(ref, value):
                    if index in pending:
                        pending.discard(index)
                        if wanted is not None:
                            wanted -= 1
                    yield index, reply

    def _wait_channels(self, channels: list[DriverChannel], seconds: float) -> None:
        """Wait up to ``seconds`` until one of ``channels`` has something to read, then take
        what each readable one holds (a Ctrl-C raises during the wait only)."""
        watched: list[Any] = []
        for channel in channels:
            watched += channel.watched()
        with self._guard.released():
            readable = select.select(watched, [], [], seconds)[0]
        if readable:
            readable_set = set(readable)
            for channel in channels:
                if any(fd in readable_set for fd in channel.watched()):
                    channel.drain()

    def _collect(self, channel: DriverChannel) -> bool:
        """Decode the whole replies ``channel`` holds into ``channel.ready`` (in the
        order sent; a dead channel's unanswered calls as :data:`_LOST`); whether any is
        ready."""
        for tag, body in channel.frames():
            call = channel.calls.popleft()
            if tag == b"F":  # the common step: see runner_channel
                value: Any = (channel.schema, None, body, None)
            elif tag == b"P":
                try:
                    value = pickle.loads(body)
                except Exception as error:  # noqa: BLE001 - e.g. a reply not unpicklable here
                    value = _Failed(error=error)
                else:
                    if type(value) is tuple and len(value) == 4 and value[2] is not None and (
                        not isinstance(value[0], list)
                    ):
                        channel.schema = value[0]
            else:  # "E": the runner could not pickle its reply
                value = _Failed(payload=pickle.loads(body))
            channel.ready.append((call, value))
        if channel.dead:
            while channel.calls:
                channel.ready.append((channel.calls.popleft(), _LOST))
        return bool(channel.ready)

    def _lost_cause(self, call: _ChannelCall) -> None:
        """The error of a runner whose channel ended: Ray's own verdict on the actor
        (``ActorDiedError``...) when it gives one within :data:`_VERDICT_SECONDS`."""
        channel = call.channel
        entry = self._calls.get(call)
        if channel.cause is not None or entry is None:
            return
        runner, _, _, generation = entry
        actor = self.runners[runner] if self.runners else None
        if generation != self._generation[runner] or actor is None:
            return
        ray = self._ray
        cause: BaseException = ConnectionResetError(
            f"The local channel of Ray runner {runner} closed: its process ended."
        )
        deadline = time.monotonic() + _VERDICT_SECONDS
        while time.monotonic() < deadline:
            ping = actor.ping.remote()
            with self._guard.released():
                while not ray.wait([ping], timeout=WAIT_SLICE)[0]:
                    if time.monotonic() >= deadline:
                        break
            try:
                ray.get(ping, timeout=0)
            except ray.exceptions.ActorUnavailableError:
                time.sleep(WAIT_SLICE)
                continue
            except ray.exceptions.RayActorError as error:
                cause = error
            except Exception:  # noqa: BLE001, S110 - no verdict: the channel error stands
                pass
            break
        channel.cause = cause
