"""Drive a vector env with uniformly random actions and measure it.

:func:`run_random` is the measuring loop behind ``retrovec run``. It works with any
``gymnasium.vector.VectorEnv`` (not only retrovec's), so the episode bookkeeping can be
tested with a fake env in a ``SyncVectorEnv``.

Episode accounting follows the vector env's autoreset mode, read from
``envs.metadata["autoreset_mode"]`` (``NEXT_STEP`` when missing, as gymnasium assumes):

* ``NEXT_STEP``: after ``terminated | truncated`` at step ``t``, the output of step
  ``t + 1`` for that env is the reset observation with reward 0. That step belongs to no
  episode: its reward and length are not counted.
* ``SAME_STEP``: the env is reset inside the step that ends the episode; every step counts.
* ``DISABLED``: the loop resets ended envs itself with ``options={"reset_mask": mask}``.

Example:
    >>> import gymnasium as gym
    >>> envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)
    >>> stats = run_random(envs, total_steps=100, seed=0, progress=False)
    >>> stats.total_steps, stats.vector_steps
    (100, 50)
    >>> envs.close()
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from tqdm import tqdm

__all__ = ["RolloutStats", "autoreset_mode_of", "run_random"]


@dataclass(frozen=True)
class RolloutStats:
    """What a random-action run measured.

    Attributes:
        num_envs: Number of sub-environments.
        autoreset_mode: The vector env's autoreset mode, as its string value
            (``"NextStep"``, ``"SameStep"`` or ``"Disabled"``).
        vector_steps: Number of ``envs.step`` calls.
        total_steps: ``vector_steps * num_envs``: every (env, step call) pair, including the
            ``NEXT_STEP`` reset steps that belong to no episode.
        reset_seconds: Wall time of the initial ``envs.reset(seed=...)``.
        wall_seconds: Wall time of the step loop only (initial reset excluded).
        episode_returns: Undiscounted return of each finished episode, in finishing order.
        episode_lengths: Number of counted steps of each finished episode.
        episodes_truncated: How many of the finished episodes ended by truncation
            (and not termination).

    Example:
        >>> s = RolloutStats(num_envs=2, autoreset_mode="NextStep", vector_steps=5,
        ...                  total_steps=10, reset_seconds=0.1, wall_seconds=2.0,
        ...                  episode_returns=(1.0, 3.0), episode_lengths=(4, 6))
        >>> s.steps_per_second, s.episodes, s.return_mean, s.return_std
        (5.0, 2, 2.0, 1.0)
    """

    num_envs: int
    autoreset_mode: str
    vector_steps: int
    total_steps: int
    reset_seconds: float
    wall_seconds: float
    episode_returns: tuple[float, ...] = field(default_factory=tuple)
    episode_lengths: tuple[int, ...] = field(default_factory=tuple)
    episodes_truncated: int = 0

    @property
    def steps_per_second(self) -> float:
        """Env steps per second of the step loop (``total_steps / wall_seconds``)."""
        return self.total_steps / self.wall_seconds if self.wall_seconds > 0 else math.inf

    @property
    def episodes(self) -> int:
        """Number of finished episodes."""
        return len(self.episode_returns)

    @property
    def return_mean(self) -> float | None:
        """Mean episode return, or ``None`` when no episode finished."""
        return float(np.mean(self.episode_returns)) if self.episode_returns else None

    @property
    def return_std(self) -> float | None:
        """Population standard deviation (``ddof=0``) of the returns, or ``None``."""
        return float(np.std(self.episode_returns)) if self.episode_returns else None

    @property
    def length_mean(self) -> float | None:
        """Mean episode length, or ``None`` when no episode finished."""
        return float(np.mean(self.episode_lengths)) if self.episode_lengths else None

    @property
    def length_std(self) -> float | None:
        """Population standard deviation (``ddof=0``) of the lengths, or ``None``."""
        return float(np.std(self.episode_lengths)) if self.episode_lengths else None

    def to_dict(self) -> dict[str, Any]:
        """All fields and derived statistics as JSON-serialisable values.

        Missing statistics are ``None`` (JSON ``null``), never NaN.

        Example:
            >>> s = RolloutStats(num_envs=1, autoreset_mode="SameStep", vector_steps=3,
            ...                  total_steps=3, reset_seconds=0.0, wall_seconds=1.0)
            >>> d = s.to_dict()
            >>> d["episodes"], d["return_mean"], d["steps_per_second"]
            (0, None, 3.0)
        """
        return {
            "num_envs": self.num_envs,
            "autoreset_mode": self.autoreset_mode,
            "vector_steps": self.vector_steps,
            "total_steps": self.total_steps,
            "reset_seconds": self.reset_seconds,
            "wall_seconds": self.wall_seconds,
            "steps_per_second": self.steps_per_second,
            "episodes": self.episodes,
            "episodes_truncated": self.episodes_truncated,
            "return_mean": self.return_mean,
            "return_std": self.return_std,
            "length_mean": self.length_mean,
            "length_std": self.length_std,
            "episode_returns": list(self.episode_returns),
            "episode_lengths": list(self.episode_lengths),
        }


def autoreset_mode_of(envs: VectorEnv) -> AutoresetMode:
    """The autoreset mode a vector env declares in its metadata.

    Args:
        envs: Any gymnasium vector env.

    Returns:
        ``envs.metadata["autoreset_mode"]`` as an :class:`~gymnasium.vector.AutoresetMode`
        (a string value is converted); ``NEXT_STEP`` when the key is missing, as
        gymnasium's own wrappers assume.

    Example:
        >>> class E: metadata = {"autoreset_mode": "SameStep"}
        >>> autoreset_mode_of(E())
        <AutoresetMode.SAME_STEP: 'SameStep'>
    """
    mode = getattr(envs, "metadata", {}).get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return mode if isinstance(mode, AutoresetMode) else AutoresetMode(mode)


def run_random(
    envs: VectorEnv,
    total_steps: int | None = None,
    seconds: float | None = None,
    seed: int | None = 0,
    progress: bool = True,
) -> RolloutStats:
    """Step ``envs`` with random actions until a step or time budget is spent.

    Resets with ``envs.reset(seed=seed)`` and seeds ``envs.action_space`` with ``seed``,
    then calls ``envs.step(envs.action_space.sample())`` until ``total_steps`` env steps
    (rounded up to whole vector steps) have run or ``seconds`` have passed, whichever
    comes first. Does not close ``envs``.

    Args:
        envs: The vector env to drive.
        total_steps: Env-step budget, counted as ``num_envs`` per ``envs.step`` call.
        seconds: Wall-time budget for the step loop.
        seed: Seed for the reset and the action space; ``None`` for unseeded.
        progress: Show a tqdm progress bar on stderr (hidden anyway when stderr is not
            a terminal).

    Returns:
        The measurements, see :class:`RolloutStats`.

    Raises:
        ValueError: Neither budget is given, or a budget is not positive.

    Example:
        >>> import gymnasium as gym
        >>> envs = gym.vector.SyncVectorEnv(
        ...     [lambda: gym.make("CartPole-v1")] * 2, autoreset_mode="SameStep")
        >>> stats = run_random(envs, total_steps=1000, progress=False)
        >>> stats.episodes > 0 and all(n >= 1 for n in stats.episode_lengths)
        True
        >>> envs.close()
    """
    if total_steps is None and seconds is None:
        raise ValueError("give total_steps or seconds (or both)")
    if total_steps is not None and total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")

    num_envs = envs.num_envs
    mode = autoreset_mode_of(envs)

    running_returns = np.zeros(num_envs, dtype=np.float64)
    running_lengths = np.zeros(num_envs, dtype=np.int64)
    prev_dones = np.zeros(num_envs, dtype=bool)  # NEXT_STEP: this step is a reset step
    episode_returns: list[float] = []
    episode_lengths: list[int] = []
    episodes_truncated = 0

    t0 = time.perf_counter()
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    reset_seconds = time.perf_counter() - t0

    bar = tqdm(
        total=total_steps,
        unit="step",
        unit_scale=True,
        file=sys.stderr,
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    vector_steps = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else math.inf
    try:
        while True:
            if total_steps is not None and vector_steps * num_envs >= total_steps:
                break
            if time.perf_counter() >= deadline:
                break
            _, rewards, terminations, truncations, _ = envs.step(envs.action_space.sample())
            vector_steps += 1

            if mode == AutoresetMode.NEXT_STEP:
                counted = ~prev_dones
                running_returns[counted] += rewards[counted]
                running_lengths[counted] += 1
            else:
                running_returns += rewards
                running_lengths += 1

            dones = np.logical_or(terminations, truncations)
            if mode == AutoresetMode.NEXT_STEP:
                # A reset step never reports done, so `dones` is only set on counted steps.
                prev_dones = dones
            if dones.any():
                for i in np.flatnonzero(dones):
                    episode_returns.append(float(running_returns[i]))
                    episode_lengths.append(int(running_lengths[i]))
                    if truncations[i] and not terminations[i]:
                        episodes_truncated += 1
                running_returns[dones] = 0.0
                running_lengths[dones] = 0
                if mode == AutoresetMode.DISABLED:
                    envs.reset(options={"reset_mask": dones})
                bar.set_postfix(episodes=len(episode_returns), refresh=False)
            bar.update(num_envs)
    finally:
        wall_seconds = time.perf_counter() - start
        bar.close()

    return RolloutStats(
        num_envs=num_envs,
        autoreset_mode=mode.value,
        vector_steps=vector_steps,
        total_steps=vector_steps * num_envs,
        reset_seconds=reset_seconds,
        wall_seconds=wall_seconds,
        episode_returns=tuple(episode_returns),
        episode_lengths=tuple(episode_lengths),
        episodes_truncated=episodes_truncated,
    )
