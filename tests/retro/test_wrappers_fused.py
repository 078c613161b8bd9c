"""FusedFrameSkip gives exactly what StickyAction -> NoopReset -> FrameSkip give.

Each test runs one vector env whose env 0 uses the fused loop and env 1 the separate
wrappers, from the same seed with the same actions; every step must agree, including
episodes that end inside a frame skip (a scenario that ends the episode when a life is
lost) and the no-op starts and sticky draws that follow each reset.
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import stable_retro

from retrovec import AsyncRetroVectorEnv, Preprocessing
from retrovec.retro.wrappers.fused import FusedFrameSkip, can_fuse

LIFE_LOST_ENDS_EPISODE = {
    "done": {"variables": {"lives": {"op": "less-than", "reference": 3}}},
    "reward": {"variables": {"score": {"reward": 1.0}}},
}


def make_preprocessed(preprocessing: Preprocessing, scenario: str | None):
    env = stable_retro.make("Airstriker-Genesis-v0", render_mode=None, scenario=scenario)
    wrapped = preprocessing.wrap(env)
    wrapped.uses_fused = _uses_fused(wrapped)  # read back through get_attr
    return wrapped


def _uses_fused(env) -> bool:
    while hasattr(env, "env"):
        if isinstance(env, FusedFrameSkip):
            return True
        env = env.env
    return False


@pytest.mark.parametrize(
    "preprocessing",
    [
        Preprocessing(frame_skip=4),
        Preprocessing(frame_skip=4, max_pool=False),
        Preprocessing(frame_skip=3, sticky_action_prob=0.25, noop_max=30),
        Preprocessing.atari(sticky_action_prob=0.25),
        Preprocessing(frame_skip=1, noop_max=5),
    ],
    ids=["skip4", "skip4-nopool", "skip3-sticky-noop", "atari-sticky", "noop-only"],
)
def test_fused_equals_the_wrapper_chain(tmp_path, preprocessing):
    scenario = tmp_path / "life_lost.json"
    scenario.write_text(json.dumps(LIFE_LOST_ENDS_EPISODE))
    fused = partial(make_preprocessed, preprocessing, str(scenario))
    chain = partial(
        make_preprocessed,
        Preprocessing(**{**preprocessing.__dict__, "fused": False}),
        str(scenario),
    )
    envs = AsyncRetroVectorEnv([fused, chain])
    try:
        assert envs.get_attr("uses_fused") == (True, False)
        first = envs.reset(seed=[5, 5])
        np.testing.assert_array_equal(first[0][0], first[0][1], "reset")
        _assert_rows_agree(first[1], "reset")
        rng = np.random.default_rng(0)
        episode_ends = 0
        for t in range(2800 // preprocessing.frame_skip):
            action = rng.integers(0, 2, 12, dtype=np.int8)
            observations, rewards, terminations, truncations, infos = envs.step(
                np.stack([action, action])
            )
            where = f"step {t}"
            np.testing.assert_array_equal(observations[0], observations[1], where)
            assert rewards[0] == rewards[1], where
            assert terminations[0] == terminations[1] and truncations[0] == truncations[1], where
            _assert_rows_agree(infos, where)
            if terminations[0]:
                episode_ends += 1
        # the scenario ends episodes often, and some inside a skip
        assert episode_ends >= 2, episode_ends
    finally:
        envs.close()


def _assert_rows_agree(infos: dict, where: str) -> None:
    """Env 0's and env 1's entries of a batched info dict are the same, masks included."""
    for key, value in infos.items():
        if isinstance(value, dict):
            _assert_rows_agree(value, f"{where} {key}")
        else:
            assert value[0] == value[1], f"{where}: info {key!r} {value[0]!r} != {value[1]!r}"


def test_can_fuse_only_bare_retro_envs():
    import gymnasium as gym

    assert not can_fuse(gym.make("CartPole-v1"))
