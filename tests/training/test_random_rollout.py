"""Episode bookkeeping of retrovec.training.random_rollout.run_random.

These use a tiny fake env in gymnasium's SyncVectorEnv: they test the accounting around
episode ends in each autoreset mode, not retro emulation.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from retrovec.training.random_rollout import RolloutStats, autoreset_mode_of, run_random


class CountingEnv(gym.Env[np.ndarray, np.int64]):
    """Episodes of exactly ``length`` steps; step k of an episode (1-based) gives reward k.

    So every episode has return ``length * (length + 1) / 2``. Ends by truncation instead
    of termination when ``truncate`` is true. Records the actions it receives.
    """

    metadata: ClassVar[dict[str, Any]] = {}

    def __init__(self, length: int, truncate: bool = False) -> None:
        self.length = length
        self.truncate = truncate
        self.observation_space = gym.spaces.Box(0, 1000, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.t = 0
        self.actions: list[int] = []
        self.resets = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.resets += 1
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        assert self.t < self.length, "stepped past the end of an episode without a reset"
        self.actions.append(int(action))
        self.t += 1
        ended = self.t == self.length
        obs = np.array([self.t], dtype=np.float32)
        return obs, float(self.t), ended and not self.truncate, ended and self.truncate, {}


def make_envs(lengths: list[int], mode: AutoresetMode, truncate: bool = False) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda n=n: CountingEnv(n, truncate) for n in lengths], autoreset_mode=mode
    )


def tri(n: int) -> float:
    return n * (n + 1) / 2


# Env 0 has 3-step episodes, env 1 has 5-step episodes; 12 vector steps (24 env steps).
#
# NEXT_STEP: each episode is followed by one reset step that belongs to no episode, so the
# cycles are 4 and 6 vector steps: env 0 ends at steps 3, 7, 11; env 1 at 5, 11.
# SAME_STEP and DISABLED: env 0 ends at steps 3, 6, 9, 12; env 1 at 5, 10.
# Episodes ending in the same step are listed in env order.
EXPECTED = {
    AutoresetMode.NEXT_STEP: [3, 5, 3, 3, 5],
    AutoresetMode.SAME_STEP: [3, 5, 3, 3, 5, 3],
    AutoresetMode.DISABLED: [3, 5, 3, 3, 5, 3],
}


@pytest.mark.parametrize("mode", list(EXPECTED), ids=lambda m: m.value)
@pytest.mark.parametrize("truncate", [False, True], ids=["terminated", "truncated"])
def test_episode_accounting_is_exact(mode: AutoresetMode, truncate: bool) -> None:
    envs = make_envs([3, 5], mode, truncate)
    try:
        stats = run_random(envs, total_steps=24, seed=0, progress=False)
    finally:
        envs.close()

    lengths = EXPECTED[mode]
    assert stats.autoreset_mode == mode.value
    assert stats.vector_steps == 12
    assert stats.total_steps == 24
    assert list(stats.episode_lengths) == lengths
    assert list(stats.episode_returns) == [tri(n) for n in lengths]
    assert stats.episodes == len(lengths)
    assert stats.episodes_truncated == (len(lengths) if truncate else 0)
    assert stats.return_mean == pytest.approx(np.mean([tri(n) for n in lengths]))
    assert stats.return_std == pytest.approx(np.std([tri(n) for n in lengths]))
    assert stats.length_mean == pytest.approx(np.mean(lengths))
    assert stats.length_std == pytest.approx(np.std(lengths))


def test_next_step_reset_step_reward_is_not_counted() -> None:
    """A vector env that (wrongly or not) reports a reward on the NEXT_STEP reset step."""

    class Scripted(gym.vector.VectorEnv):
        def __init__(self) -> None:
            self.num_envs = 1
            self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
            self.single_action_space = gym.spaces.Discrete(2)
            self.action_space = gym.vector.utils.batch_space(self.single_action_space, 1)
            self.single_observation_space = gym.spaces.Discrete(2)
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, 1)
            # (reward, terminated) per step: an episode of 2, a reset step with reward 100,
            # an episode of 2.
            self.script = [(1.0, False), (2.0, True), (100.0, False), (4.0, False), (8.0, True)]

        def reset(self, *, seed=None, options=None):
            return np.zeros(1, dtype=np.int64), {}

        def step(self, actions):
            reward, term = self.script.pop(0)
            return (
                np.zeros(1, dtype=np.int64),
                np.array([reward]),
                np.array([term]),
                np.array([False]),
                {},
            )

    stats = run_random(Scripted(), total_steps=5, progress=False)
    assert stats.episode_returns == (3.0, 12.0)
    assert stats.episode_lengths == (2, 2)


def test_unfinished_episodes_are_not_reported() -> None:
    envs = make_envs([50, 50], AutoresetMode.NEXT_STEP)
    try:
        stats = run_random(envs, total_steps=20, progress=False)
    finally:
        envs.close()
    assert stats.episodes == 0
    assert stats.return_mean is None and stats.length_std is None
    d = stats.to_dict()
    assert d["return_mean"] is None and d["episode_returns"] == []
    json.dumps(d, allow_nan=False)  # valid strict JSON: no NaN


def test_step_budget_rounds_up_to_whole_vector_steps() -> None:
    envs = make_envs([4, 4, 4], AutoresetMode.SAME_STEP)
    try:
        stats = run_random(envs, total_steps=10, progress=False)
    finally:
        envs.close()
    assert stats.vector_steps == 4
    assert stats.total_steps == 12


def test_seconds_budget_stops_the_loop() -> None:
    envs = make_envs([7, 9], AutoresetMode.NEXT_STEP)
    try:
        stats = run_random(envs, seconds=0.2, progress=False)
    finally:
        envs.close()
    assert stats.wall_seconds >= 0.2
    assert stats.vector_steps > 0
    assert stats.total_steps == 2 * stats.vector_steps
    assert stats.steps_per_second == pytest.approx(stats.total_steps / stats.wall_seconds)


def test_both_budgets_stop_at_whichever_comes_first() -> None:
    envs = make_envs([7], AutoresetMode.NEXT_STEP)
    try:
        stats = run_random(envs, total_steps=5, seconds=60.0, progress=False)
    finally:
        envs.close()
    assert stats.total_steps == 5


def test_seed_makes_actions_reproducible() -> None:
    def actions(seed: int) -> list[list[int]]:
        envs = make_envs([5, 5], AutoresetMode.SAME_STEP)
        try:
            run_random(envs, total_steps=40, seed=seed, progress=False)
            return [env.unwrapped.actions for env in envs.envs]
        finally:
            envs.close()

    assert actions(0) == actions(0)
    assert actions(0) != actions(1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "total_steps or seconds"),
        ({"total_steps": 0}, "positive"),
        ({"seconds": -1.0}, "positive"),
    ],
)
def test_bad_budgets_raise(kwargs: dict[str, Any], match: str) -> None:
    envs = make_envs([3], AutoresetMode.NEXT_STEP)
    try:
        with pytest.raises(ValueError, match=match):
            run_random(envs, progress=False, **kwargs)
    finally:
        envs.close()


def test_autoreset_mode_of() -> None:
    class NoMode:
        metadata: ClassVar[dict[str, Any]] = {}

    class StrMode:
        metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": "SameStep"}

    assert autoreset_mode_of(NoMode()) is AutoresetMode.NEXT_STEP
    assert autoreset_mode_of(StrMode()) is AutoresetMode.SAME_STEP


def test_rollout_stats_derived_values() -> None:
    s = RolloutStats(
        num_envs=2,
        autoreset_mode="NextStep",
        vector_steps=5,
        total_steps=10,
        reset_seconds=0.0,
        wall_seconds=4.0,
        episode_returns=(1.0, 3.0),
        episode_lengths=(10, 20),
    )
    assert s.steps_per_second == 2.5
    assert (s.return_mean, s.return_std, s.length_mean, s.length_std) == (2.0, 1.0, 15.0, 5.0)


@pytest.mark.parametrize("mode", list(EXPECTED), ids=lambda m: m.value)
def test_episode_accounting_with_async_retro_vector_env(mode: AutoresetMode) -> None:
    """The same bookkeeping holds for retrovec's own vector env (worker processes)."""
    from retrovec import AsyncRetroVectorEnv

    envs = AsyncRetroVectorEnv(
        [lambda: CountingEnv(3), lambda: CountingEnv(5)], autoreset_mode=mode
    )
    try:
        stats = run_random(envs, total_steps=24, seed=0, progress=False)
    finally:
        envs.close()
    lengths = EXPECTED[mode]
    assert stats.autoreset_mode == mode.value
    assert list(stats.episode_lengths) == lengths
    assert list(stats.episode_returns) == [tri(n) for n in lengths]
