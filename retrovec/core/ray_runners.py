"""``RayRunnerVectorEnv``: Ray env runners, each a process vector env for ``k`` emulators.

The layout that scales RL sampling (RLlib's env runners, Sample Factory's rollout workers):
each Ray actor, an *env runner*, hosts retrovec's own process vector env
(:class:`~retrovec.AsyncRetroVectorEnv`) for ``k`` emulators on its node and answers one
call per step with one batch for its ``k`` envs::

    driver ──runner.handle.remote(commands, actions[rows])──▶ runner r (any node)
       │                                                       └─ AsyncRetroVectorEnv(k)
       │                                                          k worker processes,
       │                                                          one shared-memory arena
    driver ◀──ray.wait + ray.get: one reply per runner─────────────┘
          (observations as ONE array per runner, rewards, flags, info columns;
           through Ray's object store: zero-copy reads on the same node)

A runner on the driver's own node skips both Ray hops once it is built: the driver maps
its shared-memory arena and reads the observations there, and sends its commands over a
*local channel*, a Unix domain socket served by a thread of the runner
(:mod:`retrovec.core.runner_channel`): the same calls and replies without Ray's fixed
cost per call (``local_channel=False`` keeps Ray calls for every runner; runners on other
nodes always use them). Ray still places, starts, pings, restarts and kills every runner.

The driver is :class:`~retrovec.core.base.RetroVectorEnvBase` (the gymnasium API,
autoreset modes, info batching, errors, restarts, EnvPool batches) with a transport that
groups each env's command by runner: every command posted during one dispatch to the
envs of one runner leaves as one actor call, and its reply is written straight into the
driver's batch arrays (one ``numpy`` copy per runner). Env ``i`` gets ``seed + i`` and its
own commands whatever the layout, so results are the process backend's exactly.

Faults are handled where they happen:

* an emulator that dies inside a runner is restarted by that runner's own process vector
  env (``on_worker_failure`` and ``max_restarts`` are passed to it): the driver sees the
  truncated transition with ``info["worker_restarted"]`` as from the process backend;
* a runner that dies (its process killed, its node lost) is noticed by the driver: under
  ``on_worker_failure="raise"`` as :class:`~retrovec.errors.WorkerCrashedError` naming
  the envs it held; under ``"restart"`` a new runner for the same envs is started where
  Ray finds room, and each of its envs is reported truncated with ``worker_restarted``
  (the restart policy of ``docs/errors.md``, applied to each of them).

The runner actor is :class:`~retrovec.core.env_runner.EnvRunner`. Ray is an optional
dependency: importing this module does not import it. See ``docs/ray.md``.

Example:
    >>> default_envs_per_runner(8, [8.0], 1)      # one 8-CPU node: one runner of 8
    8
    >>> default_envs_per_runner(8, [2.0], 0.25)   # a quarter CPU per env: 8 fit in 2 CPUs
    8
    >>> default_envs_per_runner(64, [16.0] * 4, 1)  # four 16-CPU nodes: 4 runners of 16
    16
    >>> default_envs_per_runner(40, [16.0, 16.0, 16.0], 1)  # 3 runners: 14, 14, 12
    14
"""

from __future__ import annotations

import math
import os
import pickle
import select
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from gymnasium import Env, Space
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.actions import IN_ARENA
from retrovec.core.arena import SharedArena, copy_structure, is_shareable
from retrovec.core.base import ReplacementDied, RetroVectorEnvBase, base_arguments
from retrovec.core.env_runner import (
    CRASHED,
    OBSERVING,
    EnvRunner,
    copy_rows,
    put_rows,
    rows_index,
)
from retrovec.core.info_columns import InfoSchema
from retrovec.core.ray_backend import WAIT_SLICE, RayActorsMixin, _task_error, import_ray
from retrovec.core.runner_channel import DriverChannel
from retrovec.core.server import error_reply
from retrovec.core.slots import CALL
from retrovec.errors import WorkerCrashedError

__all__ = ["RayRunnerVectorEnv", "default_envs_per_runner", "runner_layout"]

#: Seconds ``close()`` waits for the runners to close their envs when given no timeout.
DEFAULT_CLOSE_TIMEOUT = 30.0

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

#: Commands whose argument comes from the user and may not pickle: checked by ``_encode``.
def _dumps(value: Any) -> bytes:
    """Pickle a command for a runner's channel (``cloudpickle`` for what plain pickle
    cannot: e.g. a lambda passed to ``call``)."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        from ray import cloudpickle

        return cloudpickle.dumps(value, protocol=5)


def default_envs_per_runner(num_envs: int, node_cpus: Sequence[float], num_cpus: float) -> int:
    """How many envs each runner hosts when the user does not say: as many as the largest
    node has CPUs for (``num_cpus`` each), balanced over the runners that takes.

    Args:
        num_envs: The number of envs.
        node_cpus: The CPUs of each alive node.
        num_cpus: CPUs reserved per env (``0``: no limit, one runner).

    Returns:
        ``k`` in ``1..num_envs``: runner ``r`` hosts envs ``r*k .. r*k+k-1``.

    Example:
        >>> default_envs_per_runner(16, [4.0, 4.0], 1)
        4
        >>> default_envs_per_runner(5, [], 1), default_envs_per_runner(5, [2.0], 0)
        (5, 5)
    """
    if num_cpus <= 0 or not node_cpus:
        return num_envs
    capacity = max(1, int(max(node_cpus) // num_cpus))
    runners = math.ceil(num_envs / capacity)
    return math.ceil(num_envs / runners)


def runner_layout(num_envs: int, envs_per_runner: int) -> list[range]:
    """The envs of each runner: consecutive blocks of ``envs_per_runner`` (the last may be
    smaller).

    Example:
        >>> runner_layout(5, 2)
        [range(0, 2), range(2, 4), range(4, 5)]
    """
    return [
        range(start, min(start + envs_per_runner, num_envs))
        for start in range(0, num_envs, envs_per_runner)
    ]


# --------------------------------------------------------------------------- driver side


class RayRunnerVectorEnv(RayActorsMixin, RetroVectorEnvBase):
    """Runs ``len(env_fns)`` envs in Ray env runners of ``envs_per_runner`` each.

    What ``retrovec.make(..., backend="ray")`` builds. Behaves as
    :class:`~retrovec.AsyncRetroVectorEnv` (same methods, seeding, autoreset modes, info
    batching, errors, ``on_worker_failure``, EnvPool-style ``async_reset``/``send``/
    ``recv``); see the module docstring for the layout and ``docs/ray.md``. Connects to
    Ray with ``ray.init()`` when the driver has not already.

    Args:
        env_fns: Functions that each build one env; they run in the runners' worker
            processes only.
        envs_per_runner: Envs per runner (runner ``r`` hosts envs ``r*k`` to
            ``r*k+k-1``). ``None``: as many as the largest alive node has CPUs for
            (:func:`default_envs_per_runner`).
        num_cpus: CPUs Ray reserves per env; a runner of ``k`` envs reserves ``k`` times
            as many.
        runner_options: Extra ``ray.remote`` options for every runner (a dict) or one
            dict per runner (a list): ``resources``, ``scheduling_strategy``,
            ``runtime_env``... Without a ``scheduling_strategy`` (and no
            ``placement_group``) runners are spread over the nodes (``"SPREAD"``).
        placement_group: ``None``; a strategy (``"PACK"``, ``"SPREAD"``,
            ``"STRICT_PACK"``, ``"STRICT_SPREAD"``) for a placement group of one bundle
            per runner that this vector env creates and removes at ``close()``; or a
            ``PlacementGroup`` of yours with at least one bundle per runner (runner ``r``
            goes into bundle ``r``).
        context: Start method of each runner's worker processes (``None``: the
            platform's default).
        spin_seconds: As for :class:`~retrovec.AsyncRetroVectorEnv`, in each runner.
        copy: ``reset`` and ``step`` return fresh arrays (``True``) or the driver's batch
            buffer that the next call overwrites (``False``).
        observation_mode: ``"same"``, ``"different"`` or ``(batch_space, single_space)``.
        autoreset_mode: As gymnasium's :class:`~gymnasium.vector.AutoresetMode`.
        timeout: Default seconds for every ``*_wait`` call (``None``: no limit).
        on_worker_failure: ``"raise"`` or ``"restart"``, for an emulator (restarted in
            its runner) and for a runner (restarted by the driver, all its envs
            reported truncated with ``info["worker_restarted"]``).
        max_restarts: With ``"restart"``, restarts allowed per env.
        batch_size: How many envs :meth:`recv` returns (``None``: ``num_envs``).
        validate_actions: As for :class:`~retrovec.AsyncRetroVectorEnv` (checked here,
            in the driver, before any runner gets them).
        local_channel: Send the commands of runners on this node through a local
            channel (a Unix domain socket served by a thread of the runner) instead of
            Ray actor calls: the same commands and replies, a fraction of the fixed cost
            per step. ``False``: Ray actor calls for every runner (as for runners on
            other nodes, which always use them).

    Attributes:
        envs_per_runner: ``k``.
        runners: Each runner's actor handle (a restarted runner's is its replacement).
        runner_envs: The env indices of each runner.
        runner_pids: Each runner's process id, on its node.
        runner_node_ids: Each runner's Ray node id.
        local_channel: Whether runners on this node get a local channel.
        worker_pids: Each env's emulator process id, on its runner's node.
        node_ids: Each env's Ray node id.

    Raises:
        ImportError: Ray is not installed.
        ValueError: Bad ``env_fns`` or an argument outside the values listed.
        SpacesMismatchError: The envs do not share their spaces.
        Exception: Whatever an ``env_fn`` raised, with its traceback as ``__cause__``;
            every runner is stopped first.
    """

    _worker_noun = "Ray runner"

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Env]],
        *,
        envs_per_runner: int | None = None,
        num_cpus: float = 1,
        runner_options: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        placement_group: Any = None,
        context: str | None = None,
        spin_seconds: float | None = None,
        copy: bool = True,
        observation_mode: str | tuple[Space, Space] = "same",
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        timeout: float | None = None,
        on_worker_failure: str = "raise",
        max_restarts: int = 3,
        batch_size: int | None = None,
        validate_actions: bool = False,
        local_channel: bool = True,
    ) -> None:
        self.runners: list[Any] = []
        #: ref -> (runner, its envs, their commands, the runner's generation) of each call
        self._calls: dict[Any, tuple[int, list[int], list[str], int]] = {}
        self._outbox: dict[int, list[tuple[int, str, Any]]] = {}
        self._created_group = None
        env_fns = self._init_base(**base_arguments(locals()))
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0:
            raise ValueError(f"num_cpus must be a number >= 0, got {num_cpus!r}.")
        if envs_per_runner is not None and (
            isinstance(envs_per_runner, bool) or not isinstance(envs_per_runner, int)
            or envs_per_runner < 1
        ):
            raise ValueError(
                f"envs_per_runner must be None or an int >= 1, got {envs_per_runner!r}."
            )
        if not isinstance(local_channel, bool):
            raise ValueError(f"local_channel must be True or False, got {local_channel!r}.")
        self.local_channel = local_channel
        self._ray = ray = import_ray()
        if not ray.is_initialized():
            ray.init()
        if envs_per_runner is None:
            cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]]
            envs_per_runner = default_envs_per_runner(self.num_envs, cpus, num_cpus)
        self.envs_per_runner = min(envs_per_runner, self.num_envs)
        self.runner_envs = runner_layout(self.num_envs, self.envs_per_runner)
        count = len(self.runner_envs)
        if runner_options is None or isinstance(runner_options, dict):
            per_runner = [dict(runner_options or {}) for _ in range(count)]
        else:
            per_runner = [dict(options) for options in runner_options]
            if len(per_runner) != count:
                raise ValueError(
                    f"runner_options must be a dict or one dict per runner ({count} runners "
                    f"of envs_per_runner={self.envs_per_runner}), got {len(per_runner)}."
                )
        self.num_cpus = num_cpus
        self.runner_options = per_runner
        self._inner_options = {
            "autoreset_mode": self.autoreset_mode,
            "on_worker_failure": on_worker_failure,
            "max_restarts": max_restarts,
            "context": context,
            "spin_seconds": spin_seconds,
        }
        #: runner of each env, and the env's index inside it
        self._runner_of = np.repeat(np.arange(count), [len(r) for r in self.runner_envs])
        self._local = np.concatenate([np.arange(len(r)) for r in self.runner_envs])
        self._generation = [0] * count  # bumped by every replacement runner
        self._env_generation = [0] * self.num_envs
        self._lost = [False] * count  # a runner Ray reported dead, not yet replaced
        self._inner_restarts = [np.zeros(len(r), np.int64) for r in self.runner_envs]
        self._exitcodes: dict[int, int | None] = {}
        self._env_call: list[Any] = [None] * self.num_envs
        #: per runner: (its arena mapped here, its observations), for a runner on this node
        self._direct: list[tuple[SharedArena, Any] | None] = [None] * count
        #: per runner: its local control channel (a runner on this node), else ``None``
        self._channels: list[DriverChannel | None] = [None] * count
        self._node_id = ray.get_runtime_context().get_node_id()
        self._aliased = False  # self.observations is runner 0's arena (one runner here)
        self.runner_pids = [0] * count
        self.runner_node_ids = [""] * count
        self.worker_pids = [0] * self.num_envs
        self.node_ids = [""] * self.num_envs
        self._runner_class = ray.remote(EnvRunner)

        try:
            self._group = self._placement_group(placement_group, count)
            self.runners = [self._start_runner(r) for r in range(count)]
            self._dispatch([(index, "build", None) for index in range(self.num_envs)], CALL)
            self._state = AsyncState.WAITING_CALL
            self._adopt_spaces(self._finish_call("__init__", timeout))
            self._attach_driver_arena()
            self._observations_shared = is_shareable(self.single_observation_space)
            self._alias_observations()
            arena = self._arena
            self._action_arrays = (
                None if arena.layout.action_space is None else arena._group("action")
            )
        except BaseException:
            self.close(terminate=self._crashed, timeout=5.0)
            raise

    # ------------------------------------------------------------------ layout

    def runner_of(self, index: int) -> int:
        """The runner that hosts env ``index``.

        Raises:
            IndexError: ``index`` is not an env index.
        """
        if not -self.num_envs <= index < self.num_envs:
            raise IndexError(f"env index {index} is out of range for {self.num_envs} envs.")
        return int(self._runner_of[index])

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

    @property
    def num_runners(self) -> int:
        """How many runners there are."""
        return len(self.runner_envs)

    # ------------------------------------------------------------------ start-up

    def _placement_group(self, placement_group: Any, count: int) -> Any:
        if placement_group is None:
            return None
        if isinstance(placement_group, str):
            from ray.util.placement_group import placement_group as create

            bundles = [{"CPU": self.num_cpus * len(envs)} for envs in self.runner_envs]
            if self.num_cpus == 0:
                bundles = [{"CPU": 0.001} for _ in self.runner_envs]
            group = self._created_group = create(bundles, strategy=placement_group)
            return group
        if placement_group.bundle_count < count:
            raise ValueError(
                f"The placement group has {placement_group.bundle_count} bundles; "
                f"{count} runners need one each."
            )
        return placement_group

    def _start_runner(self, runner: int) -> Any:
        """A new runner actor (its envs are built by ``"build"`` commands)."""
        envs = self.runner_envs[runner]
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus * len(envs), "max_restarts": 0, "max_task_retries": 0,
        }
        if self._group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self._group, placement_group_bundle_index=runner
            )
            if self._created_group is not None and self.num_cpus == 0:
                options["num_cpus"] = 0.001
        elif "scheduling_strategy" not in self.runner_options[runner]:
            options["scheduling_strategy"] = "SPREAD"
        options.update(self.runner_options[runner])
        return self._runner_class.options(**options).remote(
            [self.env_fns[i] for i in envs], list(envs), self._inner_options
        )

    # ------------------------------------------------------------------ transport

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
        super()._dispatch(commands, owner)
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
                        except Exception:  # a runner died: read the ready ones one by one
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
                except Exception as error:  # e.g. a reply that cannot be unpickled here
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
            except Exception:
                pass
            break
        channel.cause = cause

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
        except Exception as error:  # e.g. a reply that cannot be unpickled here
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

    def _exitcode(self, index: int) -> int | None:
        return self._exitcodes.get(index)

    def _raise_crash(self, index: int, method: str, why: str = "died") -> None:
        """As the base class, naming every env the lost runner held."""
        runner = int(self._runner_of[index])
        try:
            super()._raise_crash(index, method, why)
        except WorkerCrashedError as error:
            envs = list(self.runner_envs[runner])
            if self._lost[runner]:
                error.add_note(
                    f"Env {index} ran in Ray runner {runner} (node "
                    f"{self.runner_node_ids[runner]}), which was lost with all its envs: "
                    f"{envs}."
                )
                error.env_indices = tuple(envs)  # type: ignore[attr-defined]
            else:
                error.env_indices = (index,)  # type: ignore[attr-defined]
            raise

    def _replace_worker(self, index: int) -> None:
        """Env ``index``'s runner is lost: replace it (once for all its envs) and build
        its envs there; or its emulator died inside a live runner: nothing to replace
        here, the replay command goes to that runner."""
        runner = int(self._runner_of[index])
        if self._lost[runner] or self.runners[runner] is None:
            dead, self.runners[runner] = self.runners[runner], None
            self._unmap_arena(runner)
            self._close_channel(runner)
            if dead is not None:
                self._await_verdict(dead)
                self._kill(dead)
            self.runners[runner] = actor = self._start_runner(runner)
            self._lost[runner] = False
            self._generation[runner] += 1
            reply = self._await(actor.build.remote(self.local_channel))
            if reply is None:
                self._lost[runner] = True
                raise ReplacementDied(f"Ray runner {runner}'s replacement died while building")
            answers = self._read_build(runner, list(self.runner_envs[runner]), reply)
            for other, answer in answers:
                if not answer[0]:
                    self._crashed = True
                    self._broken = f"the Ray runner of env {other} failed while being restarted"
                    self._raise_worker_error([other], {other: answer[1]}, "restart")
            for other, answer in answers:
                self._check_description(other, answer[1])
        self._env_generation[index] = self._generation[runner]

    def _await(self, ref: Any) -> Any:
        """``ray.get(ref)`` within ``timeout``, Ctrl-C working between slices; ``None``
        if its actor died."""
        ray = self._ray
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with self._guard.released():
            while not ray.wait([ref], timeout=WAIT_SLICE)[0]:
                if deadline is not None and time.monotonic() >= deadline:
                    from retrovec.errors import WorkerTimeoutError

                    self._crashed = True
                    self._broken = "a replacement Ray runner did not start in time"
                    raise WorkerTimeoutError("restart", self.timeout, [])
        try:
            return ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as error:
            self._crash_cause = error
            return None

    def _await_verdict(self, actor: Any) -> None:
        """Wait (at most ``timeout``) until Ray knows whether ``actor`` is dead: a
        replacement must not be placed on a node that is lost but not yet declared so."""
        ray = self._ray
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            ping = actor.ping.remote()
            while not ray.wait([ping], timeout=WAIT_SLICE)[0]:  # Ctrl-C works between
                if deadline is not None and time.monotonic() >= deadline:
                    return
            try:
                ray.get(ping)
            except ray.exceptions.ActorUnavailableError:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(WAIT_SLICE)
                continue
            except ray.exceptions.RayError:
                pass
            return

    # ------------------------------------------------------------------ shutdown

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Close every env in its runner, then kill the runners (and remove the placement
        group this vector env created).

        Args:
            timeout: Seconds to wait for the calls in flight, then as long again for the
                envs to close; ``None`` means 30 s. Runners still busy then are killed.
            terminate: Skip the envs' ``close()`` and kill the runners at once.
        """
        ray = getattr(self, "_ray", None)
        grace = self._close_grace = DEFAULT_CLOSE_TIMEOUT if timeout is None else timeout
        try:
            if ray is not None and not terminate and any(r is not None for r in self.runners):
                self._close_envs(grace)
        finally:
            self._state = AsyncState.DEFAULT
            if ray is not None:
                for actor in self.runners:
                    if actor is not None:
                        self._kill(actor)
                if self._created_group is not None:
                    try:
                        from ray.util.placement_group import remove_placement_group

                        remove_placement_group(self._created_group)
                    except Exception:  # pragma: no cover - Ray already shut down
                        pass
                    self._created_group = None
            if getattr(self, "_aliased", False):  # drop our views: the mapping can go now
                self._aliased = False
                self.observations = None
            for runner in range(len(getattr(self, "_direct", ()))):
                self._unmap_arena(runner)
            for runner in range(len(getattr(self, "_channels", ()))):
                self._close_channel(runner)
            self.runners = []
            self._calls = {}
            self._outbox = {}
            if self._arena is not None:
                self._actions = None
                self._read_actions = []
                self._action_arrays = None
                self._arena.close()
                self._arena = None
