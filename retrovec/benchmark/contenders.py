"""What is compared: the workloads, and the contenders that run ``num_envs`` envs of them.

A contender's ``build`` returns a :class:`Runner`: something to reset once and then call
``step()`` on in the timed loop, which knows how many env steps one call makes
(``num_envs`` for a vector step, ``batch_size`` for an async batch) and which processes
are its workers. Every non-retrovec contender builds its envs with
:func:`retrovec.retro.factory.make_env` and the workload's :class:`~retrovec.retro.wrappers.Preprocessing`,
so every contender does the same work inside each env.

To add a contender, write a ``build(game, workload, num_envs, seed) -> Runner`` function
and add a :class:`Contender` to :data:`CONTENDERS` (with ``available`` if it needs an
optional package).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from retrovec.retro.wrappers.preprocessing import Preprocessing

__all__ = [
    "ACTION_BATCHES",
    "CONTENDERS",
    "WORKLOADS",
    "BatchRunner",
    "Contender",
    "EnvRunner",
    "RayRunner",
    "Runner",
    "Sb3Runner",
    "VectorRunner",
    "Workload",
    "contender_status",
    "draw_actions",
    "env_fns",
    "fast_env",
    "plain_env",
]

#: Distinct pre-drawn action batches cycled through by every timed loop.
ACTION_BATCHES = 64


# --------------------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    """What each env does per env step, identical for every contender.

    Attributes:
        name: Short id (``"rgb"``, ``"atari"``).
        description: One line for the report.
        preprocessing: Applied inside each env (worker-side), or ``None`` for raw frames.
    """

    name: str
    description: str
    preprocessing: Preprocessing | None = None

    @property
    def frame_skip(self) -> int:
        """Emulator frames per env step."""
        return self.preprocessing.frame_skip if self.preprocessing is not None else 1


WORKLOADS: dict[str, Workload] = {
    "rgb": Workload("rgb", "raw RGB frames (224x320x3 for Airstriker), no frame skip"),
    "atari": Workload(
        "atari",
        "Preprocessing.atari(): frame skip 4 + max-pool, grey, 84x84, stack 4 "
        "(one env step = 4 emulator frames)",
        Preprocessing.atari(),
    ),
}


def plain_env(game: str, workload: Workload) -> Any:
    """One env of ``workload`` as gymnasium's and SB3's users build it: a plain RetroEnv
    under the workload's wrapper chain, stepped frame by frame through ``RetroEnv.step``
    (``Preprocessing(fused=False)``). The LIMIT and the other contenders use it."""
    import stable_retro

    if workload.preprocessing is None:
        return stable_retro.make(game, render_mode=None)
    chain = dataclasses.replace(workload.preprocessing, fused=False)
    return chain.wrap(stable_retro.make(game, render_mode=None))


def fast_env(game: str, workload: Workload) -> Any:
    """One env of ``workload`` as :func:`retrovec.make` builds it in each worker: the
    fused frame loop with :class:`~retrovec.retro.scenario.FastScenario` (same results)."""
    from retrovec.retro.factory import make_env
    from retrovec.retro.wrappers.fused import fast_step

    env = make_env(game, preprocessing=workload.preprocessing)
    return fast_step(env) if workload.preprocessing is None else env


def env_fns(game: str, workload: Workload, num_envs: int) -> list[Callable[[], Any]]:
    """Picklable functions that each build one env of ``workload`` (for non-retrovec classes).

    Args:
        game: stable-retro game id.
        workload: What each env does per step.
        num_envs: How many functions.

    Returns:
        ``num_envs`` partials of :func:`plain_env`.
    """
    return [functools.partial(plain_env, game, workload)] * num_envs


# --------------------------------------------------------------------------- runners


class Runner(Protocol):
    """One contender, built: reset it once, then call :meth:`step` in the timed loop."""

    steps_per_call: int

    def reset(self) -> None: ...
    def step(self) -> None: ...
    def worker_pids(self) -> list[int]: ...
    def close(self) -> None: ...


def draw_actions(space: Any, num_envs: int, seed: int, count: int = ACTION_BATCHES) -> np.ndarray:
    """Pre-draw ``count`` batches of actions, shape ``(count, num_envs, *space.shape)``.

    Args:
        space: One env's action space (an array space: ``MultiBinary``, ``Discrete``, ...).
        num_envs: Actions per batch.
        seed: Seed of a private copy of ``space``.
        count: Number of batches.

    Returns:
        The actions.

    Example:
        >>> from gymnasium.spaces import MultiBinary
        >>> draw_actions(MultiBinary(12), 4, seed=0, count=8).shape
        (8, 4, 12)
    """
    space = copy.deepcopy(space)
    space.seed(seed)
    return np.stack([np.stack([space.sample() for _ in range(num_envs)]) for _ in range(count)])


class VectorRunner:
    """A gymnasium ``VectorEnv`` (retrovec's or gymnasium's): ``envs.step`` per call.

    Args:
        envs: The vector env, not yet reset.
        seed: Seed of the reset and of the pre-drawn actions.
        action_space: One env's action space; ``None``: ``envs.single_action_space``.
    """

    def __init__(self, envs: Any, seed: int, action_space: Any = None) -> None:
        self.envs = envs
        self.seed = seed
        self.steps_per_call = envs.num_envs
        space = envs.single_action_space if action_space is None else action_space
        self._actions = draw_actions(space, envs.num_envs, seed)
        self._index = 0

    def reset(self) -> None:
        self.envs.reset(seed=self.seed)

    def step(self) -> None:
        self.envs.step(self._actions[self._index % ACTION_BATCHES])
        self._index += 1

    def worker_pids(self) -> list[int]:
        return [process.pid for process in self.envs.processes]

    def close(self) -> None:
        self.envs.close()


class Sb3Runner(VectorRunner):
    """An SB3 ``VecEnv``: its ``action_space`` is one env's; ``reset`` takes no seed."""

    def __init__(self, venv: Any, seed: int) -> None:
        super().__init__(venv, seed, venv.action_space)

    def reset(self) -> None:
        self.envs.seed(self.seed)
        self.envs.reset()


class BatchRunner(VectorRunner):
    """EnvPool-style async batches: ``recv()`` a batch, ``send`` it actions, per call."""

    def __init__(self, envs: Any, seed: int, batch_size: int) -> None:
        super().__init__(envs, seed)
        self.batch_size = batch_size
        self.steps_per_call = batch_size

    def reset(self) -> None:
        self.envs.async_reset(seed=self.seed)

    def step(self) -> None:
        *_, info = self.envs.recv()
        self.envs.send(
            self._actions[self._index % ACTION_BATCHES][: self.batch_size], info["env_id"]
        )
        self._index += 1

    def close(self) -> None:
        with warnings.catch_warnings():  # batches are still in flight: expected here
            warnings.simplefilter("ignore")
            self.envs.close()


class EnvRunner:
    """One env in this process (the LIMIT measurement): reset it when an episode ends."""

    steps_per_call = 1

    def __init__(self, env: Any, seed: int) -> None:
        self.env = env
        self.seed = seed
        self._actions = draw_actions(env.action_space, 1, seed)[:, 0]
        self._index = 0

    def reset(self) -> None:
        self.env.reset(seed=self.seed)

    def step(self) -> None:
        _, _, terminated, truncated, _ = self.env.step(self._actions[self._index % ACTION_BATCHES])
        self._index += 1
        if terminated or truncated:
            self.env.reset()

    def worker_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        self.env.close()


# --------------------------------------------------------------------------- contenders


@dataclasses.dataclass(frozen=True)
class Contender:
    """One way of running ``num_envs`` envs in parallel.

    Attributes:
        id: Short id for ``--contenders``.
        label: Name in tables, plots and the JSON.
        description: What it is, for the report.
        build: ``(game, workload, num_envs, seed) -> Runner``; builds the envs (not reset).
        available: ``() -> None`` when it can run here, else the reason it is skipped.
        min_envs: Smallest ``num_envs`` it runs with.
    """

    id: str
    label: str
    description: str
    build: Callable[[str, Workload, int, int], Runner]
    available: Callable[[], str | None] = lambda: None
    min_envs: int = 1


def _build_retrovec(
    game: str, workload: Workload, num_envs: int, seed: int, *, copy: bool, **kwargs: Any
) -> Runner:
    from retrovec.retro.factory import make

    envs = make(game, num_envs, preprocessing=workload.preprocessing, copy=copy, **kwargs)
    return VectorRunner(envs, seed)


def _batch_size(num_envs: int) -> int:
    return num_envs // 2


def _build_retrovec_batches(game: str, workload: Workload, num_envs: int, seed: int) -> Runner:
    from retrovec.retro.factory import make

    batch_size = _batch_size(num_envs)
    envs = make(game, num_envs, preprocessing=workload.preprocessing, batch_size=batch_size)
    return BatchRunner(envs, seed, batch_size)


def _retrovec_batches_available() -> str | None:
    from retrovec.core.process_backend import AsyncRetroVectorEnv

    if hasattr(AsyncRetroVectorEnv, "recv"):
        return None
    return "AsyncRetroVectorEnv has no async_reset()/send()/recv() yet"


def _build_gymnasium(game: str, workload: Workload, num_envs: int, seed: int) -> Runner:
    from gymnasium.vector import AsyncVectorEnv

    envs = AsyncVectorEnv(env_fns(game, workload, num_envs), shared_memory=True)
    return VectorRunner(envs, seed)


def _build_sb3(game: str, workload: Workload, num_envs: int, seed: int) -> Runner:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    return Sb3Runner(SubprocVecEnv(env_fns(game, workload, num_envs)), seed)


def _sb3_available() -> str | None:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError as exc:
        return (
            f"stable-baselines3 is not importable ({exc}): pip install 'retrovec[bench]' (from "
            "a clone of the repository: pip install -e '.[bench]')"
        )
    return None


class RayRunner(VectorRunner):
    """retrovec's Ray backend (env runners): its processes are the runners and their
    emulators."""

    def worker_pids(self) -> list[int]:
        # all on this node: a local Ray instance
        return [*self.envs.worker_pids, *self.envs.runner_pids]


def _local_ray() -> bool:
    """Start a local Ray instance once per bench process (stopped at exit), as a cluster
    is up before a vector env is built: its start-up is not the backend's. Returns whether
    this process started it (else the driver was already connected to a cluster)."""
    import atexit
    import os

    import ray

    if ray.is_initialized():
        return getattr(_local_ray, "started", False)
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    atexit.register(ray.shutdown)
    _local_ray.started = True  # type: ignore[attr-defined]
    return True


def _build_retrovec_ray(game: str, workload: Workload, num_envs: int, seed: int) -> Runner:
    import ray

    from retrovec.retro.factory import make

    options = {}
    if _local_ray():  # one runner for all the envs: this machine's CPUs shared among them
        options["num_cpus"] = ray.cluster_resources().get("CPU", 1.0) / num_envs
    envs = make(game, num_envs, preprocessing=workload.preprocessing, backend="ray", **options)
    return RayRunner(envs, seed)


def _ray_available() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return (
            f"ray is not importable ({exc}): pip install 'retrovec[ray]' (from a clone of the "
            "repository: pip install -e '.[ray]')"
        )
    try:
        _local_ray()  # here, before any measurement: a cluster is up before envs are built
    except Exception as exc:  # noqa: BLE001 - the reason is the report's
        return f"no Ray instance to run on: ray.init() failed ({exc})"
    return None


CONTENDERS: dict[str, Contender] = {
    c.id: c
    for c in (
        Contender(
            "retrovec",
            "retrovec copy=True",
            "retrovec.make(game, n, preprocessing=...): AsyncRetroVectorEnv, workers on the "
            "fused loop with FastScenario, observations of the caller's own: lent banks of "
            "the shared arena on the lockstep path, copies otherwise (the default)",
            functools.partial(_build_retrovec, copy=True),
        ),
        Contender(
            "retrovec-nocopy",
            "retrovec copy=False",
            "the same with copy=False: step returns views of the shared arena",
            functools.partial(_build_retrovec, copy=False),
        ),
        Contender(
            "retrovec-nospin",
            "retrovec spin_seconds=0",
            "retrovec copy=True whose workers and parent sleep as soon as they wait "
            "(no polling first)",
            functools.partial(_build_retrovec, copy=True, spin_seconds=0.0),
        ),
        Contender(
            "retrovec-batch",
            "retrovec async batches",
            "retrovec.make(..., batch_size=n//2): EnvPool-style async_reset(), then recv() a "
            "batch and send(actions, info['env_id']); an env step is one env of a batch",
            _build_retrovec_batches,
            _retrovec_batches_available,
            min_envs=2,
        ),
        Contender(
            "gymnasium",
            "gymnasium AsyncVectorEnv",
            "gymnasium.vector.AsyncVectorEnv(env_fns, shared_memory=True) over plain_env "
            "(RetroEnv + the standard wrapper chain); builds one probe env in the parent "
            "(closed before the workers start)",
            _build_gymnasium,
        ),
        Contender(
            "sb3",
            "SB3 SubprocVecEnv",
            "stable_baselines3.common.vec_env.SubprocVecEnv(env_fns) over plain_env, its "
            "default start method; observations pickled through pipes",
            _build_sb3,
            _sb3_available,
        ),
        Contender(
            "retrovec-ray",
            "retrovec ray",
            "retrovec.make(game, n, backend='ray'): RayRunnerVectorEnv, Ray env runners "
            "each hosting a process vector env (one runner of n envs on a local instance), "
            "one batch per runner per step (on the driver's node: commands over the "
            "runner's local channel, observations read from its shared memory); a local Ray "
            "instance started once per bench run (not counted in start-up) unless the "
            "driver is already connected to a cluster",
            _build_retrovec_ray,
            _ray_available,
        ),
    )
}


def contender_status(ids: Sequence[str] | None = None) -> tuple[list[Contender], dict[str, str]]:
    """Which contenders run here, and why the others are skipped.

    Args:
        ids: Contender ids to consider, in this order; ``None``: all of :data:`CONTENDERS`.

    Returns:
        ``(runnable, skipped)``: the contenders that can run, and ``{label: reason}``.

    Raises:
        ValueError: An unknown id.
    """
    runnable: list[Contender] = []
    skipped: dict[str, str] = {}
    for cid in ids if ids is not None else list(CONTENDERS):
        if cid not in CONTENDERS:
            raise ValueError(f"unknown contender {cid!r}; known: {', '.join(CONTENDERS)}")
        contender = CONTENDERS[cid]
        reason = contender.available()
        if reason is None:
            runnable.append(contender)
        else:
            skipped[contender.label] = reason
    return runnable, skipped
