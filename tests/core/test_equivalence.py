"""retrovec and gymnasium's AsyncVectorEnv, given the same envs, seeds and actions, agree
exactly, step for step, in every autoreset mode and across episode ends."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from retrovec import AsyncRetroVectorEnv
from tests.envs import fns, make_airstriker, make_toy
from tests.lockstep import run_lockstep as lockstep


def run_lockstep(env_fns, mode: AutoresetMode, steps: int, seed: int = 123, **kwargs) -> int:
    """Lockstep against gymnasium's AsyncVectorEnv; returns the number of episode ends."""
    return lockstep(AsyncRetroVectorEnv, env_fns, mode, steps, seed, **kwargs)


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
