"""Crop, Grayscale and ChannelsFirst (and gymnasium's ResizeObservation) on real frames.

The wrappers run in retrovec's workers; the expected observations are computed by hand from
a bare env's frames (tests/retro_reference.py). Input checks use small in-process envs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces import Box

from retrovec.retro.factory import make
from retrovec.retro.wrappers import ChannelsFirst, Crop, Grayscale
from tests.retro_reference import AIRSTRIKER, PONG, image_env, random_buttons, rollouts


def bt601(frame: np.ndarray) -> np.ndarray:
    r, g, b = (frame[..., c].astype(np.float64) for c in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


# ------------------------------------------------------------------ real frames


@pytest.mark.parametrize("game", [AIRSTRIKER, PONG])
def test_crop_grayscale_resize_channels_first_on_real_frames(tmp_path: Path, game: str) -> None:
    steps, margins = 12, dict(top=14, bottom=6, left=8, right=2)
    buttons = 12 if game == AIRSTRIKER else 8
    actions = random_buttons(np.random.default_rng(6), steps, buttons)
    (ref,) = rollouts(tmp_path, [actions], game=game)

    envs = make(
        game,
        1,
        wrappers=[
            functools.partial(Crop, **margins),
            Grayscale,
            functools.partial(gym.wrappers.ResizeObservation, shape=(50, 40)),
            ChannelsFirst,
        ],
    )
    try:
        assert envs.single_observation_space == Box(0, 255, (1, 50, 40), np.uint8)
        obs, _ = envs.reset(seed=0)
        observations = [obs[0]]
        for t in range(steps):
            observations.append(envs.step(actions[t : t + 1])[0][0])
    finally:
        envs.close()
    height, width = ref.observations.shape[1:3]
    for t, frame in enumerate(ref.observations):
        cropped = frame[14 : height - 6, 8 : width - 2]
        gray = cv2.cvtColor(cropped, cv2.COLOR_RGB2GRAY)
        assert np.abs(gray - bt601(cropped)).max() <= 0.5 + 1e-9  # rounded BT.601 luma
        resized = cv2.resize(gray, (40, 50), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(observations[t], resized[None], err_msg=f"frame {t}")


def test_rgb_channels_first_and_grayscale_keep_dim(tmp_path: Path) -> None:
    actions = random_buttons(np.random.default_rng(7), 3, 12)
    (ref,) = rollouts(tmp_path, [actions])
    envs = make(AIRSTRIKER, 2, wrappers=[ChannelsFirst])
    try:
        assert envs.observation_space.shape == (2, 3, 224, 320)
        envs.reset(seed=0)
        for t in range(3):
            obs = envs.step(np.stack([actions[t]] * 2))[0]
        np.testing.assert_array_equal(obs[1], np.moveaxis(ref.observations[3], -1, 0))
    finally:
        envs.close()
    frame = ref.observations[3]
    kept = Grayscale(image_env(frame.shape), keep_dim=True)
    assert kept.observation_space.shape == (224, 320, 1)
    np.testing.assert_array_equal(
        kept.observation(frame), cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[..., None]
    )


# ------------------------------------------------------------------ pure checks


def test_grayscale_is_opencv_fixed_point_bt601() -> None:
    """The exact integers, for a faster implementation to reproduce."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    r, g, b = (frame[..., c].astype(np.int64) for c in range(3))
    if int(cv2.__version__.split(".")[0]) >= 5:
        expected = (9798 * r + 19235 * g + 3735 * b + 16384) >> 15
    else:
        expected = (4899 * r + 9617 * g + 1868 * b + 8192) >> 14
    gray = Grayscale(image_env(frame.shape)).observation(frame)
    np.testing.assert_array_equal(gray, expected.astype(np.uint8))
    assert gray.flags.c_contiguous


def test_grayscale_accepts_flipped_views() -> None:
    frame = np.random.default_rng(1).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    env = Grayscale(image_env(frame.shape))
    np.testing.assert_array_equal(env.observation(frame[::-1]), env.observation(frame)[::-1])


def test_crop_margins_and_space() -> None:
    env = Crop(image_env((10, 8)), top=1, bottom=2, left=3, right=0)
    assert env.observation_space == Box(0, 255, (7, 5), np.uint8)
    frame = np.arange(80, dtype=np.uint8).reshape(10, 8)
    cropped = env.observation(frame)
    np.testing.assert_array_equal(cropped, frame[1:8, 3:8])
    assert cropped.flags.c_contiguous and not np.shares_memory(cropped, frame)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(top=-1), "top must be an int >= 0"),
        (dict(left=1.5), "left must be an int >= 0"),
        (dict(top=6, bottom=4), "leaves no rows of a frame 10 high"),
        (dict(left=8), "leaves no columns of a frame 8 wide"),
    ],
)
def test_crop_rejects_bad_margins(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Crop(image_env((10, 8, 3)), **kwargs)


@pytest.mark.parametrize("wrapper", [Crop, Grayscale, ChannelsFirst])
def test_image_wrappers_reject_ram_observations(wrapper) -> None:
    with pytest.raises(ValueError, match="needs image observations.*RAM"):
        wrapper(image_env((128,)))


def test_grayscale_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        Grayscale(image_env((10, 8, 4)))
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        Grayscale(image_env((10, 8, 3), dtype=np.float32))


def test_channels_first_shapes() -> None:
    assert ChannelsFirst(image_env((84, 84))).observation_space.shape == (1, 84, 84)
    env = ChannelsFirst(image_env((4, 5, 3)))
    frame = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(env.observation(frame), frame.transpose(2, 0, 1))
