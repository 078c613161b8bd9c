"""make() with each stable-retro action mode and with RAM observations, on the real emulator.

Each env in the vector env must step exactly like a bare RetroEnv given the same actions:
the batched action row ``i`` must reach env ``i`` intact (actions travel through shared
memory), and RAM observations must arrive in shared memory byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gymnasium.spaces import Box, Discrete, MultiBinary, MultiDiscrete
from gymnasium.vector.utils import batch_space
from stable_retro import Actions, Observations

from retrovec.retro.factory import make
from retrovec.retro.wrappers import Preprocessing
from tests.retro_reference import AIRSTRIKER, PONG, rollouts

# Airstriker's spaces in each mode: 12 buttons; valid combos grouped [3, 3, 14]. Batched
# as gymnasium's batch_space does (a MultiBinary or MultiDiscrete batches to a Box).
SPACES = {
    Actions.FILTERED: (MultiBinary(12), Box(0, 1, (2, 12), np.int8)),
    Actions.ALL: (MultiBinary(12), Box(0, 1, (2, 12), np.int8)),
    Actions.DISCRETE: (Discrete(126), MultiDiscrete([126, 126])),
    Actions.MULTI_DISCRETE: (
        MultiDiscrete([3, 3, 14]),
        Box(0, np.array([[2, 2, 13]] * 2), (2, 3), np.int64),
    ),
}


@pytest.mark.parametrize("mode", list(SPACES), ids=lambda m: m.name)
def test_every_action_mode_is_batched_and_steps_like_a_bare_env(tmp_path: Path, mode) -> None:
    steps = 40
    single, batched = SPACES[mode]
    batched.seed(9)
    actions = np.stack([batched.sample() for _ in range(steps)])  # (steps, 2, ...)
    assert actions.dtype == (np.int8 if isinstance(single, MultiBinary) else np.int64)
    references = rollouts(tmp_path, [actions[:, i] for i in range(2)], actions=mode.name)
    envs = make(AIRSTRIKER, 2, use_restricted_actions=mode)
    try:
        assert envs.single_action_space == single
        assert envs.action_space == batched == batch_space(single, 2)
        envs.reset(seed=0)
        for t in range(steps):
            obs, rewards, *_ = envs.step(actions[t])
            for i, ref in enumerate(references):
                np.testing.assert_array_equal(obs[i], ref.observations[t + 1], f"env {i} t {t}")
                assert rewards[i] == ref.rewards[t]
    finally:
        envs.close()
    assert not np.array_equal(references[0].observations, references[1].observations)


def test_filtered_drops_start_and_all_passes_it(tmp_path: Path) -> None:
    """Airstriker's integration allows no START: FILTERED drops it, ALL pauses the game."""
    start = np.zeros((60, 1, 12), np.int8)
    start[10:14, 0, 3] = 1  # START, pressed for 4 frames
    (nothing,) = rollouts(tmp_path, [np.zeros_like(start[:, 0])])
    frames = {}
    for mode in (Actions.FILTERED, Actions.ALL):
        envs = make(AIRSTRIKER, 1, use_restricted_actions=mode)
        try:
            envs.reset(seed=0)
            frames[mode] = np.stack([envs.step(action)[0][0] for action in start])
        finally:
            envs.close()
    np.testing.assert_array_equal(frames[Actions.FILTERED], nothing.observations[1:])
    assert not np.array_equal(frames[Actions.ALL], nothing.observations[1:])


@pytest.mark.parametrize(("game", "size"), [(AIRSTRIKER, 65536), (PONG, 128)])
def test_ram_observations_arrive_byte_for_byte(tmp_path: Path, game: str, size: int) -> None:
    steps, buttons = 30, 12 if game == AIRSTRIKER else 8
    rng = np.random.default_rng(10)
    actions = rng.integers(0, 2, (steps, 2, buttons)).astype(np.int8)
    references = rollouts(
        tmp_path, [actions[:, i] for i in range(2)], game=game, obs_type="RAM", ram=True
    )
    envs = make(game, 2, obs_type=Observations.RAM)
    try:
        assert envs.single_observation_space == Box(0, 255, (size,), np.uint8)
        assert envs.observation_space.shape == (2, size)
        obs, _ = envs.reset(seed=0)
        for t in range(steps + 1):
            if t:
                obs, *_ = envs.step(actions[t - 1])
            for i, ref in enumerate(references):
                np.testing.assert_array_equal(obs[i], ref.ram[t], f"env {i} t {t}")
                np.testing.assert_array_equal(obs[i], ref.observations[t])
        assert not np.array_equal(obs[0], obs[1])
        rams = envs.call("get_ram")  # read in the workers, now
        for i in range(2):
            np.testing.assert_array_equal(obs[i], rams[i])
    finally:
        envs.close()


def test_ram_observations_with_frame_skip_and_stack(tmp_path: Path) -> None:
    steps = 6
    actions = np.random.default_rng(11).integers(0, 2, (steps, 8)).astype(np.int8)
    (ref,) = rollouts(tmp_path, [np.repeat(actions, 4, axis=0)], game=PONG, obs_type="RAM")
    preprocessing = Preprocessing(frame_skip=4, max_pool=False, frame_stack=3)
    envs = make(PONG, 1, obs_type=Observations.RAM, preprocessing=preprocessing)
    try:
        assert envs.single_observation_space.shape == (3, 128)
        obs, _ = envs.reset(seed=0)
        np.testing.assert_array_equal(obs[0], np.stack([ref.observations[0]] * 3))
        for t in range(1, steps + 1):
            obs, *_ = envs.step(actions[t - 1 : t])
        expected = ref.observations[[4 * (steps - 2), 4 * (steps - 1), 4 * steps]]
        np.testing.assert_array_equal(obs[0], expected)
    finally:
        envs.close()
