"""retrovec and gymnasium's AsyncVectorEnv, given the same envs, seeds and actions, agree
exactly, step for step, in every autoreset mode and across episode ends."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from retrovec import AsyncRetroVectorEnv
from tests.compare import assert_same
from tests.envs import fns, make_airstriker, make_toy


def run_lockstep(env_fns, mode: AutoresetMode, steps: int, seed: int = 123, **kwargs) -> int:
    """Step both vector envs with the same actions; return the number of episode ends."""
    reference = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=mode, **kwargs)
    ours = None
    episode_ends = 0
    try:
        ours = AsyncRetroVectorEnv(env_fns, autoreset_mode=mode, **kwargs)
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


@pytest.mark.parametrize("mode", list(AutoresetMode))
@pytest.mark.parametrize("shared_memory", [True, False])
def test_toy_envs_with_dict_and_tuple_spaces_match_gymnasium(mode, shared_memory):
    episode_ends = run_lockstep(fns(make_toy, 3), mode, steps=60, shared_memory=shared_memory)
    assert episode_ends >= 6  # the comparison crossed many episode ends


@pytest.mark.parametrize("copy", [True, False])
def test_toy_envs_match_gymnasium_without_copies(copy):
    assert run_lockstep(fns(make_toy, 2), AutoresetMode.NEXT_STEP, steps=30, copy=copy) >= 2


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_airstriker_matches_gymnasium(mode):
    env_fns = fns(make_airstriker, 2, max_episode_steps=25)
    episode_ends = run_lockstep(env_fns, mode, steps=60)
    assert episode_ends >= 4


def test_airstriker_frames_change_and_differ_from_zero():
    """Guards the lockstep test against comparing two blank buffers."""
    envs = AsyncRetroVectorEnv(fns(make_airstriker, 2))
    try:
        first, _ = envs.reset(seed=0)
        assert first.shape == (2, 224, 320, 3) and first.dtype == np.uint8
        for _ in range(60):
            frames, *_ = envs.step(envs.action_space.sample())
        assert frames.any()
        assert not np.array_equal(first, frames)
    finally:
        envs.close()
