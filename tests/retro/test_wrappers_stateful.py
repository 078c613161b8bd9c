"""FrameSkip, NoopReset and (gymnasium's) StickyAction: semantics pinned against references.

The real-emulator tests run the wrapper in retrovec's workers and compare with a bare
RetroEnv stepped frame by frame in a subprocess (tests/retro_reference.py): the expected
output is computed by hand from those raw frames. A tiny in-process image env checks pure
bookkeeping (early episode ends, buffer reuse) and the difference from gymnasium's
MaxAndSkipObservation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces import Box, Discrete

from retrovec.retro.factory import make
from retrovec.retro.wrappers import FrameSkip, NoopReset, Preprocessing
from tests.retro_reference import AIRSTRIKER, random_buttons, rollouts, sticky

BUTTONS = 12  # Airstriker's MultiBinary(12)


class Frames(gym.Env):
    """Frame ``t`` (0 = reset) has two rows that flicker differently; reward ``t``.

    The episode terminates at frame ``end_at``. With ``reuse=True`` every observation is
    the same array, overwritten in place (some envs do that).
    """

    observation_space = Box(0, 255, (2, 3, 3), np.uint8)
    action_space = Discrete(2)

    def __init__(self, end_at: int | None = None, reuse: bool = False) -> None:
        self.end_at = end_at
        self.reuse = reuse
        self.t = 0
        self.buffer = np.zeros(self.observation_space.shape, np.uint8)

    @staticmethod
    def frame(t: int) -> np.ndarray:
        frame = np.zeros((2, 3, 3), np.uint8)
        frame[0] = 200 if t % 2 else 10  # a sprite drawn every other frame
        frame[1] = (37 * t) % 256
        return frame

    def _observation(self) -> np.ndarray:
        if self.reuse:
            self.buffer[...] = self.frame(self.t)
            return self.buffer
        return self.frame(self.t)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._observation(), {"t": 0}

    def step(self, action: Any):
        self.t += 1
        return self._observation(), float(self.t), self.t == self.end_at, False, {"t": self.t}


def _pool(*frames: int) -> np.ndarray:
    return np.maximum(Frames.frame(frames[0]), Frames.frame(frames[1]))


# ----------------------------------------------------------- FrameSkip: bookkeeping


def test_frame_skip_equals_gymnasium_max_and_skip_without_early_ends() -> None:
    ours, theirs = FrameSkip(Frames(), skip=4), gym.wrappers.MaxAndSkipObservation(Frames())
    np.testing.assert_array_equal(ours.reset()[0], theirs.reset()[0])
    for _ in range(5):
        a, b = ours.step(0), theirs.step(0)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]


@pytest.mark.parametrize(
    ("end_at", "pooled", "reward"),
    [
        (5, None, 5.0),  # ends on the first frame of the second step: frame 5 alone
        (6, (5, 6), 11.0),
        (7, (6, 7), 18.0),
    ],
)
def test_frame_skip_pools_the_last_two_frames_actually_run(end_at, pooled, reward) -> None:
    env = FrameSkip(Frames(end_at=end_at), skip=4)
    env.reset()
    obs, r, terminated, truncated, info = env.step(0)
    np.testing.assert_array_equal(obs, _pool(3, 4))
    assert (r, terminated, info) == (10.0, False, {"t": 4})
    obs, r, terminated, truncated, info = env.step(0)
    expected = Frames.frame(end_at) if pooled is None else _pool(*pooled)
    np.testing.assert_array_equal(obs, expected)
    assert (r, terminated, truncated, info) == (reward, True, False, {"t": end_at})


def test_gymnasium_max_and_skip_returns_stale_frames_at_an_early_end() -> None:
    """Why FrameSkip is written by hand: gymnasium's terminal observation is stale."""
    env = gym.wrappers.MaxAndSkipObservation(Frames(end_at=5), skip=4)
    env.reset()
    env.step(0)
    obs, *_ = env.step(0)  # ended at frame 5
    np.testing.assert_array_equal(obs, _pool(3, 4))  # the previous step's frames
    assert not np.array_equal(obs, Frames.frame(5))


def test_frame_skip_copies_frames_from_envs_that_reuse_their_array() -> None:
    env = FrameSkip(Frames(reuse=True), skip=4)
    env.reset()
    np.testing.assert_array_equal(env.step(0)[0], _pool(3, 4))


def test_frame_skip_without_max_pool_and_skip_one() -> None:
    env = FrameSkip(Frames(), skip=3, max_pool=False)
    env.reset()
    np.testing.assert_array_equal(env.step(0)[0], Frames.frame(3))
    env = FrameSkip(Frames(), skip=1)
    env.reset()
    obs, reward, *_ = env.step(0)
    np.testing.assert_array_equal(obs, Frames.frame(1))
    assert reward == 1.0


def test_frame_skip_sums_per_player_rewards() -> None:
    """RetroEnv with multi_rewards returns one reward per player: summed per player."""

    class TwoPlayers(gym.Wrapper):
        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, [reward, -2 * reward], terminated, truncated, info

    env = FrameSkip(TwoPlayers(Frames()), skip=3)
    env.reset()
    _, reward, *_ = env.step(0)
    np.testing.assert_array_equal(reward, np.array([6.0, -12.0]))
    assert reward.dtype == np.float64


@pytest.mark.parametrize("skip", [0, -1, 2.0, True, "4"])
def test_frame_skip_rejects_bad_skip(skip) -> None:
    with pytest.raises(ValueError, match="skip must be an int >= 1"):
        FrameSkip(Frames(), skip=skip)


def test_frame_skip_max_pool_needs_a_box() -> None:
    with pytest.raises(ValueError, match="pass max_pool=False"):
        FrameSkip(gym.make("FrozenLake-v1"), skip=4)
    FrameSkip(gym.make("FrozenLake-v1"), skip=4, max_pool=False)


# --------------------------------------------------------- FrameSkip: real emulator


@pytest.mark.parametrize("max_pool", [True, False])
def test_frame_skip_matches_the_frames_of_a_bare_env(tmp_path: Path, max_pool: bool) -> None:
    skip, steps = 4, 50
    rng = np.random.default_rng(1)
    actions = [random_buttons(rng, steps, BUTTONS) for _ in range(2)]  # one per env
    references = rollouts(tmp_path, [np.repeat(a, skip, axis=0) for a in actions])

    envs = make(
        AIRSTRIKER, 2, wrappers=[functools.partial(FrameSkip, skip=skip, max_pool=max_pool)]
    )
    try:
        obs, _ = envs.reset(seed=0)
        for i, ref in enumerate(references):
            np.testing.assert_array_equal(obs[i], ref.observations[0])
        pooling_mattered = False
        for t in range(steps):
            step = envs.step(np.stack([a[t] for a in actions]))
            obs, rewards, terminations, truncations, _ = step
            for i, ref in enumerate(references):
                last = skip * (t + 1)  # index of the step's last frame
                expected = ref.observations[last]
                if max_pool:
                    expected = np.maximum(ref.observations[last - 1], expected)
                    pooling_mattered |= not np.array_equal(expected, ref.observations[last])
                np.testing.assert_array_equal(obs[i], expected, err_msg=f"env {i} step {t}")
                assert rewards[i] == ref.rewards[last - skip : last].sum()
                assert not terminations[i] and not truncations[i]
        assert pooling_mattered == max_pool
        assert any(ref.rewards.sum() > 0 for ref in references)  # rewards were summed
    finally:
        envs.close()


@pytest.mark.parametrize(("limit", "last_step_frames"), [(5, 1), (6, 2)])
def test_frame_skip_stops_at_an_episode_end_inside_the_skip(
    tmp_path: Path, limit: int, last_step_frames: int
) -> None:
    """A TimeLimit *under* FrameSkip truncates after frame ``limit``, inside step 2."""
    rng = np.random.default_rng(2)
    actions = random_buttons(rng, 2, BUTTONS)
    (ref,) = rollouts(tmp_path, [np.repeat(actions, 4, axis=0)])
    envs = make(
        AIRSTRIKER,
        1,
        wrappers=[
            functools.partial(gym.wrappers.TimeLimit, max_episode_steps=limit),
            functools.partial(FrameSkip, skip=4),
        ],
    )
    try:
        envs.reset(seed=0)
        envs.step(actions[:1])
        obs, rewards, terminations, truncations, _ = envs.step(actions[1:])
        assert truncations[0] and not terminations[0]
        expected = ref.observations[limit]
        if last_step_frames == 2:
            expected = np.maximum(ref.observations[limit - 1], expected)
        np.testing.assert_array_equal(obs[0], expected)
        assert rewards[0] == ref.rewards[4:limit].sum()
    finally:
        envs.close()


# ----------------------------------------------------------------------- NoopReset


def _noop_counts(seed: int, num_envs: int, noop_max: int, draws: int = 1) -> np.ndarray:
    """The counts NoopReset draws: env i's np_random is default_rng(seed + i) (a RetroEnv
    reset draws nothing itself); each reset draws one integer in [1, noop_max]."""
    rngs = [np.random.default_rng(seed + i) for i in range(num_envs)]
    return np.array([rng.integers(1, noop_max + 1, size=draws) for rng in rngs])


def test_noop_reset_starts_envs_apart_and_redraws_on_autoreset(tmp_path: Path) -> None:
    seed, noop_max, steps = 11, 30, 4
    counts = _noop_counts(seed, 3, noop_max, draws=2)
    assert len(set(counts[:, 0])) == 3, counts  # three different starts
    rng = np.random.default_rng(3)
    actions = random_buttons(rng, steps, BUTTONS)
    zeros = np.zeros((noop_max, BUTTONS), np.int8)
    sequences = []
    for first, second in counts:
        sequences += [np.concatenate([zeros[:first], actions]), zeros[:second]]
    references = rollouts(tmp_path, sequences)

    envs = make(
        AIRSTRIKER,
        3,
        wrappers=[
            functools.partial(NoopReset, noop_max=noop_max),
            functools.partial(gym.wrappers.TimeLimit, max_episode_steps=steps),
        ],
    )
    try:
        obs, infos = envs.reset(seed=seed)
        assert {"score", "lives"} <= set(infos)  # the no-op steps' info
        for i, (first, _) in enumerate(counts):
            np.testing.assert_array_equal(obs[i], references[2 * i].observations[first])
        assert not np.array_equal(obs[0], obs[1]) and not np.array_equal(obs[1], obs[2])
        for t in range(steps):
            obs, _, _, truncations, _ = envs.step(np.stack([actions[t]] * 3))
            for i, (first, _) in enumerate(counts):
                np.testing.assert_array_equal(obs[i], references[2 * i].observations[first + t + 1])
        assert truncations.all()
        obs, *_ = envs.step(np.stack([actions[0]] * 3))  # autoreset: no seed, next draw
        for i, (_, second) in enumerate(counts):
            np.testing.assert_array_equal(obs[i], references[2 * i + 1].observations[second])
    finally:
        envs.close()


def test_noop_reset_rejects_bad_noop_max() -> None:
    with pytest.raises(ValueError, match="noop_max must be an int >= 1"):
        NoopReset(Frames(), noop_max=0)


def test_noop_reset_resets_again_when_the_noops_end_the_episode() -> None:
    env = NoopReset(Frames(end_at=2), noop_max=30, noop_action=0)
    obs, info = env.reset(seed=0)
    count = np.random.default_rng(0).integers(1, 31)
    assert count > 2
    expected = count % 2  # every 2nd no-op ends the episode, and NoopReset resets
    assert info == {"t": expected}
    np.testing.assert_array_equal(obs, Frames.frame(expected))


# --------------------------------------------------------------------- StickyAction


def test_sticky_actions_are_seeded_per_env(tmp_path: Path) -> None:
    seed, p, steps = 5, 0.5, 40
    rng = np.random.default_rng(4)
    actions = list(random_buttons(rng, steps, BUTTONS))
    executed = [sticky(np.random.default_rng(seed + i), actions, p)[0] for i in range(2)]
    assert not np.array_equal(executed[0], executed[1])
    references = rollouts(tmp_path, [np.stack(e) for e in executed])

    envs = make(AIRSTRIKER, 2, preprocessing=Preprocessing(sticky_action_prob=p))
    try:
        envs.reset(seed=seed)
        for t in range(steps):
            obs, *_ = envs.step(np.stack([actions[t]] * 2))
            for i, ref in enumerate(references):
                np.testing.assert_array_equal(obs[i], ref.observations[t + 1], f"env {i} t {t}")
    finally:
        envs.close()
