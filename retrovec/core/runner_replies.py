"""The Ray env runners' replies, read into the driver's batch.

The reading half of :class:`~retrovec.core.ray_runners.RayRunnerVectorEnv`: one runner
call's reply becomes the base class's per-env replies (``(True, payload)``,
``(False, error)``, or ``None`` for an env whose runner died), its arrays written straight
into the driver's batch (one ``numpy`` copy per runner). A ``build`` reply also says where
the runner runs: on this node its shared-memory arena is mapped here (its observations are
read there, not carried in replies) and its local channel opened
(:mod:`retrovec.core.runner_channel`). Emulator restarts and deaths inside a runner arrive
as its reply's extras.

A step reply's scalars are one bytes block for the ``n`` stepping envs: ``n`` float64
rewards, ``n`` terminations, ``n`` truncations, then the info columns (see
:mod:`retrovec.core.info_columns`):

Example:
    >>> import numpy as np
    >>> block = np.array([1.0, 0.5]).tobytes() + bytes([1, 0]) + bytes([0, 0])
    >>> np.frombuffer(block, np.float64, 2, 0), np.frombuffer(block, np.bool_, 2, 8 * 2)
    (array([1. , 0.5]), array([ True, False]))
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from retrovec.core.arena import SharedArena, copy_structure
from retrovec.core.env_runner import CRASHED, OBSERVING, copy_rows, put_rows, rows_index
from retrovec.core.info_columns import InfoSchema
from retrovec.core.ray_backend import _task_error
from retrovec.core.runner_channel import DriverChannel
from retrovec.core.runner_transport import _LOST, _UNREAD, _Failed
from retrovec.core.server import error_reply
from retrovec.errors import WorkerCrashedError

__all__ = ["RunnerRepliesMixin"]


class RunnerRepliesMixin:
    """Reads each runner call's reply into the driver's batch, maps the arenas and opens the
    channels of runners on this node, for
    :class:`~retrovec.core.ray_runners.RayRunnerVectorEnv`."""

    _ray: Any
    _arena: Any
    observations: Any
    runner_envs: list[range]
    runner_pids: list[int]
    runner_node_ids: list[str]
    worker_pids: list[int]
    restart_counts: Any
    _calls: dict[Any, tuple[int, list[int], list[str], int]]
    _env_call: list[Any]
    _generation: list[int]
    _lost: list[bool]
    _crash_cause: BaseException | None
    _crashed: bool
    _broken: str | None
    _inner_restarts: list[Any]
    _exitcodes: dict[int, int | None]
    _direct: list[tuple[SharedArena, Any] | None]
    _channels: list[DriverChannel | None]
    _node_id: str
    _aliased: bool
    _local: Any
    _observations_shared: bool
    num_runners: int

    @property
    def observation_paths(self) -> list[str]:
        """How each runner's observations reach this driver: ``"arena"`` (a runner on this
        node: its shared memory is mapped here and read after its reply) or ``"object
        store"`` (one array per runner per step in its reply, through Ray's object
        store)."""
        return ["arena" if direct is not None else "object store" for direct in self._direct]

    @property
    def control_paths(self) -> list[str]:
        """How each runner's commands and replies travel: ``"channel"`` (a runner on this
        node, with ``local_channel=True``: a Unix socket to a thread of the runner,
        :mod:`retrovec.core.runner_channel`) or ``"ray"`` (actor calls)."""
        return ["ray" if channel is None else "channel" for channel in self._channels]

    def _read(self, ref: Any, value: Any = None) -> list[tuple[int, Any]]:
        """One runner call's replies in the base class's form, its arrays written into
        the driver's batch (``None`` for every env of a runner that died). ``value`` is
        the call's result if already fetched (else :data:`_UNREAD`)."""
        ray = self._ray
        runner, indices, kinds, generation = self._calls.pop(ref)
        for index in indices:
            self._env_call[index] = None
        if generation != self._generation[runner]:  # its runner was replaced meanwhile:
            return [(index, None) for index in indices]  # those envs went with it
        if value is _LOST:  # its local channel ended: the runner died
            self._crash_cause = ref.channel.cause
            self._lost[runner] = True
            self._close_channel(runner)
            return [(index, None) for index in indices]
        if type(value) is _Failed and value.error is None:  # its reply would not pickle
            return [(index, (False, value.payload)) for index in indices]
        try:
            if value is _UNREAD:
                reply = ray.get(ref)
            elif type(value) is _Failed:
                raise value.error
            else:
                reply = value
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as error:
            self._crash_cause = error  # ActorDiedError, a lost node, a lost reply...
            self._lost[runner] = True
            return [(index, None) for index in indices]
        except ray.exceptions.RayTaskError as error:  # e.g. a reply that would not pickle
            payload = _task_error(error)
            return [(index, (False, payload)) for index in indices]
        except Exception as error:  # noqa: BLE001 - e.g. a reply that cannot be unpickled here
            error.add_note(
                f"The reply of Ray runner {runner} (envs {indices}) could not be read in "
                "the driver."
            )
            payload = error_reply(error)
            return [(index, payload) for index in indices]
        if kinds[0] == "build":
            return self._read_build(runner, indices, reply)
        if kinds[0] == "close":
            return [(index, reply) for index in indices]
        return self._read_batch(runner, indices, kinds, reply)

    def _read_build(self, runner: int, indices: list[int], reply: Any) -> list[tuple[int, Any]]:
        ok, payload = reply
        if not ok:
            local, error = payload
            failed = indices[0] if local is None else indices[local]
            return [(index, (False, error) if index == failed else (True, None))
                    for index in indices]
        self.runner_pids[runner] = payload["pid"]
        self.runner_node_ids[runner] = payload["node_id"]
        self._inner_restarts[runner][:] = 0
        self._map_arena(runner, payload)
        self._open_channel(runner, payload)
        return [
            (index, (True, {**description, "pid": pid, "node_id": payload["node_id"]}))
            for index, description, pid in zip(
                indices, payload["descriptions"], payload["worker_pids"]
            )
        ]

    def _map_arena(self, runner: int, payload: dict[str, Any]) -> None:
        """Map the arena of a runner on this node, whose observations are then copied from
        there (no object in Ray's object store per step); otherwise they come in replies."""
        self._unmap_arena(runner)
        if payload.get("arena") is None or payload["node_id"] != self._node_id:
            return
        fd, layout = payload["arena"]
        try:
            mine = os.open(f"/proc/{payload['pid']}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:  # not allowed here (e.g. another user): replies carry them
            return
        arena = SharedArena.attach(layout, mine)
        self._direct[runner] = (arena, arena.observations())
        if self._arena is not None:  # a replacement runner
            self._alias_observations()

    def _open_channel(self, runner: int, payload: dict[str, Any]) -> None:
        """Connect to the local channel of a runner on this node: its commands then go
        there, not through Ray (:mod:`retrovec.core.runner_channel`)."""
        self._close_channel(runner)
        address = payload.get("channel")
        if address is None or payload["node_id"] != self._node_id:
            return
        try:
            self._channels[runner] = DriverChannel.connect(address, payload["pid"])
        except OSError:  # not reachable from here (another network namespace): Ray path
            pass

    def _close_channel(self, runner: int) -> None:
        channel, self._channels[runner] = self._channels[runner], None
        if channel is not None:
            channel.close()

    def _unmap_arena(self, runner: int) -> None:
        direct, self._direct[runner] = self._direct[runner], None
        if direct is None:
            return
        if self._aliased:  # the batch buffer was that arena: keep the rows as they are
            self._aliased = False
            self.observations = copy_structure(self.observations)
        direct[0].close()

    def _alias_observations(self) -> None:
        """With one runner, on this node, its arena's observations are the batch buffer
        itself (as the process backend's arena is): no copy per step in the driver."""
        if self.num_runners == 1 and self._direct[0] is not None:
            self.observations = self._direct[0][1]
            self._aliased = True

    def _read_batch(
        self, runner: int, indices: list[int], kinds: list[str], reply: tuple
    ) -> list[tuple[int, Any]]:
        replies, observations, scalars, extras = reply
        if scalars is None:  # the runner failed as a whole: its replies say why
            return list(zip(indices, replies))
        compact = type(replies) is InfoSchema
        if compact:  # see compact_replies
            replies = [(True, (None, replies))] * len(indices)
        arena = self._arena
        stepping = [index for index, kind in zip(indices, kinds) if kind == "step"]
        observing = [index for index, kind in zip(indices, kinds) if kind in OBSERVING]
        offset = 0
        if stepping:
            count = len(stepping)
            rows = rows_index(stepping)
            arena.rewards[rows] = np.frombuffer(scalars, np.float64, count, 0)
            arena.terminations[rows] = np.frombuffer(scalars, np.bool_, count, 8 * count)
            arena.truncations[rows] = np.frombuffer(scalars, np.bool_, count, 9 * count)
            offset = 10 * count
        if observing:
            rows = rows_index(observing)
            columns = arena.info_columns
            arena.info_columns[rows] = np.frombuffer(
                scalars, columns.dtype, len(observing) * columns.shape[1], offset
            ).reshape(len(observing), columns.shape[1])
            if observations is not None:
                put_rows(self.observations, rows, observations)
            elif self._direct[runner] is not None and not self._aliased:  # its arena
                copy_rows(
                    self.observations, rows, self._direct[runner][1],
                    rows_index(self._local[observing].tolist()),
                )
        if extras is not None:
            self._take_extras(runner, extras)
        if compact and self._observations_shared:  # the common step: nothing to convert
            return list(zip(indices, replies))
        out = []
        shared = self._observations_shared
        for index, kind, answer in zip(indices, kinds, replies):
            if answer is not None and answer[0] and kind in OBSERVING:
                observation, info = answer[1]
                if type(info) is dict and "final_obs" in info:  # out of the object store
                    info = {**info, "final_obs": copy_structure(info["final_obs"])}
                if not shared and observation is not None:
                    observation = copy_structure(observation)
                answer = (True, (None if shared else observation, info))
            elif answer is not None and not answer[0] and answer[1][0] == CRASHED:
                _, exitcode, restarted, gave_up = answer[1]
                crash = WorkerCrashedError(
                    index, exitcode, f"`{kind}`", restarted=restarted, gave_up_after=gave_up
                )
                crash.add_note(f"Its emulator ran in Ray runner {runner}, which restarted it.")
                answer = (False, (crash, type(crash).__name__, str(crash), ""))
            out.append((index, answer))
        return out

    def _take_extras(self, runner: int, extras: dict[str, Any]) -> None:
        """What a runner reports after an emulator restart or death."""
        envs = self.runner_envs[runner]
        seen = self._inner_restarts[runner]
        counts = extras["restart_counts"]
        self.restart_counts[envs] += counts - seen
        seen[:] = counts
        for local, pid in extras["pids"].items():
            self.worker_pids[envs[local]] = pid
        for local, code in extras["exitcodes"].items():
            self._exitcodes[envs[local]] = code
        for notice in extras["notices"]:
            warnings.warn(notice, UserWarning, stacklevel=4)
        if extras["broken"] is not None:
            self._crashed = True
            self._broken = f"Ray runner {runner}'s envs: {extras['broken']}"
