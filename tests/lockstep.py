"""Step gymnasium's AsyncVectorEnv and a retrovec vector env side by side and compare."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from tests.compare import assert_same


def run_lockstep(build: Callable, env_fns, mode: AutoresetMode, steps: int, seed: int = 123,
                 **kwargs) -> int:
    """Give both the same envs, seeds and actions; assert every result is identical.

    ``build(env_fns, autoreset_mode=mode, **kwargs)`` makes the retrovec side; ``kwargs``
    go to gymnasium's side too. Returns the number of episode ends crossed.
    """
    reference = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=mode, **kwargs)
    ours = None
    episode_ends = 0
    try:
        ours = build(env_fns, autoreset_mode=mode, **kwargs)
        assert ours.single_observation_space == reference.single_observation_space
        assert ours.observation_space == reference.observation_space
        assert ours.single_action_space == reference.single_action_space
        assert ours.action_space == reference.action_space
        assert ours.metadata == reference.metadata
        assert ours.render_mode == reference.render_mode

        assert_same(reference.reset(seed=seed), ours.reset(seed=seed), "reset")
        reference.action_space.seed(seed)
        for t in range(steps):
            actions = reference.action_space.sample()
            expected = reference.step(actions)
            assert_same(expected, ours.step(actions), f"step {t}")
            done = expected[2] | expected[3]
            episode_ends += int(done.sum())
            if mode == AutoresetMode.DISABLED and done.any():
                # gymnasium pops reset_mask from the dict it is given: give each its own
                assert_same(
                    reference.reset(options={"reset_mask": done.copy()}),
                    ours.reset(options={"reset_mask": done.copy()}),
                    f"masked reset after step {t}",
                )
    finally:
        reference.close()
        if ours is not None:
            ours.close()
    return episode_ends
