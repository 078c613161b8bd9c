"""Preprocessing: the value (checks, pickling, shapes) and the whole chain through make().

The chain is the reference for any faster implementation, so the Atari test recomputes it
by hand from a bare env's raw frames: the no-op count and every sticky-action draw from the
env's seeded np_random, frame skip with max-pooling on RGB frames, OpenCV grayscale and
INTER_AREA resize, then the frame stack.
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces import Box
from stable_retro import Observations

import retrovec
from retrovec.retro.factory import make
from retrovec.retro.wrappers import Preprocessing
from tests.retro_reference import AIRSTRIKER, PONG, image_env, random_buttons, rollouts, sticky

make_module = importlib.import_module("retrovec.retro.factory")


# ------------------------------------------------------------------------ the value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(frame_skip=0), "frame_skip must be an int >= 1, got 0"),
        (dict(frame_skip=4.0), "frame_skip must be an int >= 1, got 4.0"),
        (dict(frame_skip=True), "frame_skip must be an int >= 1, got True"),
        (dict(noop_max=-1), "noop_max must be an int >= 0"),
        (dict(frame_stack=0), "frame_stack must be an int >= 1"),
        (dict(max_pool=1), "max_pool must be a bool, got 1"),
        (dict(grayscale="yes"), "grayscale must be a bool"),
        (dict(channels_first=None), "channels_first must be a bool"),
        (dict(sticky_action_prob=1.0), r"sticky_action_prob must be a number in \[0, 1\)"),
        (dict(sticky_action_prob=-0.1), r"sticky_action_prob must be a number in \[0, 1\)"),
        (dict(sticky_action_prob="0.25"), r"sticky_action_prob must be a number"),
        (dict(crop=(1, 2, 3)), r"crop must be None or \(top, bottom, left, right\)"),
        (dict(crop=(1, 2, 3, -4)), r"crop must be None or \(top, bottom, left, right\)"),
        (dict(crop=(1, 2, 3, 4.5)), r"crop must be None or \(top, bottom, left, right\)"),
        (dict(resize=(84, 0)), r"resize must be None or \(height, width\)"),
        (dict(resize=(84,)), r"resize must be None or \(height, width\)"),
        (dict(resize="84"), r"resize must be None or \(height, width\)"),
    ],
)
def test_bad_fields_raise_value_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Preprocessing(**kwargs)
    with pytest.raises(ValueError, match=message):
        Preprocessing.atari(**kwargs)


def test_fields_are_normalised_frozen_hashable_and_picklable() -> None:
    value = Preprocessing(crop=[1, 2, 3, np.int64(4)], resize=np.int32(84), sticky_action_prob=0)
    assert value.crop == (1, 2, 3, 4) and type(value.crop[3]) is int
    assert value.resize == (84, 84) and value.sticky_action_prob == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.frame_skip = 2  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(value)) == value
    assert hash(value) == hash(Preprocessing(crop=(1, 2, 3, 4), resize=(84, 84)))
    bound = pickle.loads(pickle.dumps(value.wrap))  # what make() sends to the workers
    assert bound.__self__ == value
    assert retrovec.Preprocessing is Preprocessing


def test_atari_defaults_and_overrides() -> None:
    atari = Preprocessing.atari()
    assert (atari.frame_skip, atari.max_pool, atari.noop_max) == (4, True, 30)
    assert (atari.grayscale, atari.resize, atari.frame_stack) == (True, (84, 84), 4)
    assert (atari.sticky_action_prob, atari.crop, atari.channels_first) == (0.0, None, False)
    assert Preprocessing.atari(frame_stack=1, sticky_action_prob=0.25) == dataclasses.replace(
        atari, frame_stack=1, sticky_action_prob=0.25
    )


def test_nothing_enabled_wraps_nothing() -> None:
    env = image_env((4, 4, 3))
    assert Preprocessing().wrap(env) is env
    assert Preprocessing().image_steps == ()


CONFIGS = [
    Preprocessing.atari(),
    Preprocessing.atari(channels_first=True),
    Preprocessing.atari(frame_stack=1),
    Preprocessing.atari(frame_stack=1, channels_first=True),
    Preprocessing(frame_skip=2, crop=(10, 20, 0, 8), resize=(56, 80)),
    Preprocessing(resize=(56, 80), frame_stack=3),
    Preprocessing(resize=(56, 80), frame_stack=3, channels_first=True),
    Preprocessing(grayscale=True, channels_first=True),
    Preprocessing(channels_first=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_observation_shape_is_the_wrapped_space(config: Preprocessing) -> None:
    env = config.wrap(image_env((224, 320, 3)))
    assert env.observation_space.shape == config.observation_shape((224, 320, 3))
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and obs.dtype == np.uint8
    assert env.observation_space.contains(env.step(0)[0])


def test_channels_first_stack_is_frame_major() -> None:
    """(k*C, H, W): frame 0's R, G, B planes, then frame 1's, ... (oldest first)."""
    frames = iter(np.random.default_rng(0).integers(0, 256, (10, 6, 5, 3), dtype=np.uint8))
    space = Box(0, 255, (6, 5, 3), np.uint8)
    seen: list[np.ndarray] = []

    def next_frame(_: object) -> np.ndarray:
        seen.append(next(frames))
        return seen[-1]

    env = gym.wrappers.TransformObservation(gym.make("CartPole-v1"), next_frame, space)
    env = Preprocessing(frame_stack=3, channels_first=True).wrap(env)
    env.reset(seed=0)
    env.step(0)
    obs, *_ = env.step(0)
    expected = np.concatenate([f.transpose(2, 0, 1) for f in (seen[0], seen[1], seen[2])])
    np.testing.assert_array_equal(obs, expected)


@pytest.mark.parametrize("config", [Preprocessing(frame_skip=4), Preprocessing(resize=84)])
def test_image_steps_on_ram_fail_in_wrap(config: Preprocessing) -> None:
    with pytest.raises(ValueError, match="need image observations.*RAM"):
        config.wrap(image_env((128,)))


# --------------------------------------------------------------------- make()


@pytest.fixture
def no_workers(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a bad input reached AsyncRetroVectorEnv")

    monkeypatch.setattr(make_module, "AsyncRetroVectorEnv", refuse)


def test_make_rejects_bad_preprocessing_before_any_worker(no_workers) -> None:
    with pytest.raises(TypeError, match=r"Preprocessing.atari\(\), got 'atari'"):
        make(AIRSTRIKER, 2, preprocessing="atari")
    with pytest.raises(ValueError, match="grayscale, resize need image observations"):
        make(
            AIRSTRIKER,
            2,
            obs_type=Observations.RAM,
            preprocessing=Preprocessing(grayscale=True, resize=84),
        )
    with pytest.raises(ValueError, match="max_pool need image observations"):
        make(AIRSTRIKER, 2, obs_type=Observations.RAM, preprocessing=Preprocessing(frame_skip=4))


def _atari_reference(
    rng: np.random.Generator, actions: np.ndarray, p: float, noop_max: int
) -> tuple[int, np.ndarray]:
    """The frame-by-frame actions of Preprocessing.atari(sticky_action_prob=p), by hand.

    RNG draws, in order, from the env's np_random: the no-op count; then, per emulator
    frame (no-ops included, all but the first after a reset), StickyAction's draws.
    """
    noops = int(rng.integers(1, noop_max + 1))
    zeros = np.zeros_like(actions[0])
    executed, last = sticky(rng, [zeros] * noops, p)
    for action in actions:
        frames, last = sticky(rng, [action] * 4, p, last)
        executed += frames
    return noops, np.stack(executed)


def _process(frame: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA)


def test_atari_chain_on_pong_matches_a_hand_reference(tmp_path: Path) -> None:
    seed, steps, p = 21, 70, 0.25
    actions = random_buttons(np.random.default_rng(12), steps, 8)
    plans = [_atari_reference(np.random.default_rng(seed + i), actions, p, 30) for i in range(2)]
    assert plans[0][0] != plans[1][0]  # the two envs start after different no-ops
    references = rollouts(tmp_path, [executed for _, executed in plans], game=PONG)

    envs = make(PONG, 2, preprocessing=Preprocessing.atari(sticky_action_prob=p))
    try:
        assert envs.single_observation_space == Box(0, 255, (4, 84, 84), np.uint8)
        obs, _ = envs.reset(seed=seed)
        starts = [
            ref.observations[noops] for (noops, _), ref in zip(plans, references, strict=True)
        ]
        stacks = [[_process(start)] * 4 for start in starts]
        for i in range(2):
            np.testing.assert_array_equal(obs[i], np.stack(stacks[i]))
        total = np.zeros(2)
        for t in range(steps):
            obs, rewards, terminations, truncations, _ = envs.step(np.stack([actions[t]] * 2))
            for i, ((noops, _), ref) in enumerate(zip(plans, references, strict=True)):
                last = noops + 4 * (t + 1)
                pooled = np.maximum(ref.observations[last - 1], ref.observations[last])
                stacks[i] = stacks[i][1:] + [_process(pooled)]
                np.testing.assert_array_equal(obs[i], np.stack(stacks[i]), f"env {i} t {t}")
                assert rewards[i] == ref.rewards[last - 4 : last].sum()
                assert not terminations[i] and not truncations[i]
            total += rewards
        assert (total != 0).any()  # a point was scored: rewards were summed
    finally:
        envs.close()


def test_max_episode_steps_counts_agent_steps_after_frame_skip(tmp_path: Path) -> None:
    actions = random_buttons(np.random.default_rng(13), 3, 12)
    (ref,) = rollouts(tmp_path, [np.repeat(actions, 4, axis=0)])
    envs = make(AIRSTRIKER, 1, preprocessing=Preprocessing(frame_skip=4), max_episode_steps=3)
    try:
        envs.reset(seed=0)
        truncated = []
        for t in range(3):
            obs, rewards, _, truncations, _ = envs.step(actions[t : t + 1])
            truncated.append(bool(truncations[0]))
        assert truncated == [False, False, True]  # after 3 steps = 12 frames
        expected = np.maximum(ref.observations[11], ref.observations[12])
        np.testing.assert_array_equal(obs[0], expected)
    finally:
        envs.close()


def test_spawned_workers_get_the_preprocessing(tmp_path: Path) -> None:
    """Under spawn the Preprocessing value is pickled; an RGB channels-first stack."""
    config = Preprocessing(frame_skip=2, resize=(56, 80), frame_stack=3, channels_first=True)
    actions = random_buttons(np.random.default_rng(14), 2, 12)
    (ref,) = rollouts(tmp_path, [np.repeat(actions, 2, axis=0)])
    envs = make(AIRSTRIKER, 1, preprocessing=config, context="spawn")
    try:
        assert envs.single_observation_space.shape == (9, 56, 80)
        envs.reset(seed=0)
        for t in range(2):
            obs, *_ = envs.step(actions[t : t + 1])
    finally:
        envs.close()

    def process(frame: np.ndarray) -> np.ndarray:
        return cv2.resize(frame, (80, 56), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)

    pooled = [np.maximum(ref.observations[j - 1], ref.observations[j]) for j in (2, 4)]
    expected = np.concatenate([process(ref.observations[0]), *map(process, pooled)])
    np.testing.assert_array_equal(obs[0], expected)


def test_gymnasium_make_applies_preprocessing_inside_max_episode_steps() -> None:
    code = (
        "import gymnasium, numpy as np, retrovec\n"
        "env = gymnasium.make(retrovec.ENV_ID, game='Airstriker-Genesis-v0',\n"
        "                     preprocessing=retrovec.Preprocessing.atari(), max_episode_steps=2)\n"
        "obs, _ = env.reset(seed=0)\n"
        "action = np.zeros(12, np.int8)\n"
        "print(obs.shape, [env.step(action)[3] for _ in range(2)])\n"
        "env.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "(4, 84, 84) [False, True]"
