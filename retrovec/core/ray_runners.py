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

This module holds the vector env's start-up, its handling of lost runners (replacing them,
naming their envs in errors) and its shutdown; the rest of the driver side is one mixin a
job: :mod:`~retrovec.core.runner_placement` (how many envs per runner, which envs, placement
groups, starting a runner), :mod:`~retrovec.core.runner_transport` (commands to the runners,
replies back as they are ready) and :mod:`~retrovec.core.runner_replies` (each reply read
into the driver's batch; the arenas and channels of runners on this node).

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

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import Env, Space
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.arena import SharedArena, is_shareable
from retrovec.core.base import ReplacementDied, RetroVectorEnvBase, base_arguments
from retrovec.core.env_runner import EnvRunner
from retrovec.core.ray_backend import WAIT_SLICE, RayActorsMixin, import_ray
from retrovec.core.runner_channel import DriverChannel
from retrovec.core.runner_placement import (
    RunnerPlacementMixin,
    check_cluster_fits,
    default_envs_per_runner,
    per_runner_options,
    runner_layout,
)
from retrovec.core.runner_replies import RunnerRepliesMixin
from retrovec.core.runner_transport import RunnerTransportMixin
from retrovec.core.slots import CALL
from retrovec.errors import WorkerCrashedError

__all__ = ["RayRunnerVectorEnv", "default_envs_per_runner", "runner_layout"]


class RayRunnerVectorEnv(
    RunnerPlacementMixin, RunnerTransportMixin, RunnerRepliesMixin, RayActorsMixin,
    RetroVectorEnvBase,
):
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
        if not isinstance(local_channel, bool):  # ValueError, as for every argument here
            raise ValueError(  # noqa: TRY004
                f"local_channel must be True or False, got {local_channel!r}."
            )
        self.local_channel = local_channel
        self._ray = ray = import_ray()
        if not ray.is_initialized():
            ray.init()
        cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]]
        if envs_per_runner is None:
            envs_per_runner = default_envs_per_runner(self.num_envs, cpus, num_cpus)
        self.envs_per_runner = min(envs_per_runner, self.num_envs)
        self.runner_envs = runner_layout(self.num_envs, self.envs_per_runner)
        count = len(self.runner_envs)
        per_runner = per_runner_options(runner_options, count, self.envs_per_runner)
        if placement_group is None and not any(
            "num_cpus" in options or "resources" in options for options in per_runner
        ):  # the user's own reservations are theirs to judge (an autoscaler may add nodes)
            check_cluster_fits(self.num_envs, num_cpus, self.envs_per_runner, cpus)
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

    # ------------------------------------------------------------------ faults

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

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Close every env in its runner, then kill the runners (and remove the placement
        group this vector env created).

        Args:
            timeout: Seconds to wait for the calls in flight, then as long again for the
                envs to close; ``None`` means 30 s. Runners still busy then are killed.
            terminate: Skip the envs' ``close()`` and kill the runners at once.
        """
        def release(ray: Any) -> None:
            if ray is not None:
                self._remove_placement_group()
            if getattr(self, "_aliased", False):  # drop our views: the mapping can go now
                self._aliased = False
                self.observations = None
            for runner in range(len(getattr(self, "_direct", ()))):
                self._unmap_arena(runner)
            for runner in range(len(getattr(self, "_channels", ()))):
                self._close_channel(runner)
            self.runners = []
            self._outbox = {}
            self._action_arrays = None

        self._close_actors(self.runners, timeout, terminate, release)
