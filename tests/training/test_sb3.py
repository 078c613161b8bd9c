"""retrovec.training.sb3: an AsyncRetroVectorEnv as a Stable-Baselines3 VecEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("torch")

from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecFrameStack, VecMonitor

import retrovec
from retrovec.training.sb3 import Sb3VecEnv, make_sb3, unbatch_infos
from tests.envs import fns, make_airstriker, make_toy

GAME = "Airstriker-Genesis-v0"
# grey 84x84, one channel first: SB3's CnnPolicy wants (C, H, W); VecFrameStack stacks C.
PRE = retrovec.Preprocessing(frame_skip=4, grayscale=True, resize=84, channels_first=True)


def toy_vec(mode: AutoresetMode, n: int = 2, **kwargs) -> retrovec.AsyncRetroVectorEnv:
    return retrovec.AsyncRetroVectorEnv(
        fns(make_toy, n, **kwargs), autoreset_mode=mode, context="fork"
    )


def test_unbatch_infos_splits_masks_and_nested_dicts():
    infos = {
        "t": np.array([3, 0]),
        "_t": np.array([True, False]),
        "nested": {"a": np.array([0, 7]), "_a": np.array([False, True])},
        "_nested": np.array([True, True]),
    }
    assert unbatch_infos(infos, 2) == [{"t": 3, "nested": {}}, {"nested": {"a": 7}}]


def test_rejects_a_next_step_env_with_a_clear_error():
    venv = toy_vec(AutoresetMode.NEXT_STEP)
    try:
        with pytest.raises(ValueError, match="autoreset_mode=SAME_STEP, got NEXT_STEP"):
            Sb3VecEnv(venv)
    finally:
        venv.close()


def test_make_sb3_rejects_another_autoreset_mode_before_starting_workers():
    with pytest.raises(ValueError, match="SAME_STEP"):
        make_sb3(GAME, 2, autoreset_mode=AutoresetMode.NEXT_STEP)


def test_vec_env_methods_on_toy_envs():
    def wrapped_toy():
        return gym.wrappers.TimeLimit(make_toy(render_mode="rgb_array"), max_episode_steps=50)

    venv = retrovec.AsyncRetroVectorEnv(
        [wrapped_toy] * 2, autoreset_mode=AutoresetMode.SAME_STEP, context="fork"
    )
    adapter = Sb3VecEnv(venv)
    try:
        assert adapter.seed(5) == [5, 6]
        obs = adapter.reset()
        assert set(obs) == {"position", "flag", "pair"} and obs["position"].shape == (2, 3)
        assert adapter.reset_infos[0]["reset_tag"] == "fresh"
        assert adapter.get_attr("max_steps") == [12, 12]
        adapter.set_attr("scale", 2.0, indices=[1])
        assert adapter.get_attr("scale") == [1.0, 2.0]
        assert adapter.get_attr("scale", indices=1) == [2.0]
        assert adapter.env_method("add", 1, b=2) == [3, 3]
        assert adapter.env_method("add", 1, indices=[0]) == [1]
        assert adapter.env_is_wrapped(gym.wrappers.TimeLimit) == [True, True]
        assert adapter.env_is_wrapped(gym.wrappers.OrderEnforcing, indices=[1]) == [False]
        images = adapter.get_images()
        assert len(images) == 2 and images[0].shape == (4, 6, 3)
        assert adapter.render_mode == "rgb_array"
    finally:
        adapter.close()


def test_reset_seeds_are_used_once_and_reproducible():
    adapter = Sb3VecEnv(toy_vec(AutoresetMode.SAME_STEP))
    try:
        adapter.seed(3)
        first = adapter.reset()["position"].copy()
        adapter.seed(3)
        again = adapter.reset()["position"].copy()
        unseeded = adapter.reset()["position"].copy()
    finally:
        adapter.close()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, unseeded)


def test_terminal_observation_matches_a_next_step_reference():
    """Airstriker cut into 5-step episodes: SB3's view of the episode end equals what a
    NEXT_STEP env shows (last obs at step 5, the reset obs at step 6)."""
    steps, actions = 7, np.zeros((2, 12), dtype=np.int8)
    actions[:, 0] = 1  # fire (B), both envs
    reference = retrovec.make(GAME, 2, preprocessing=PRE, max_episode_steps=5)
    try:
        reference.reset(seed=0)
        expected = [reference.step(actions) for _ in range(steps)]
    finally:
        reference.close()

    adapter = make_sb3(GAME, 2, preprocessing=PRE, max_episode_steps=5)
    try:
        adapter.seed(0)
        adapter.reset()
        got = []
        for _ in range(steps - 1):  # SB3 has no separate reset step
            adapter.step_async(actions.astype(np.float32))  # SB3 gives MultiBinary as floats
            obs, rewards, dones, infos = adapter.step_wait()
            got.append((obs.copy(), rewards, dones, infos))
    finally:
        adapter.close()

    for t in range(4):  # steps 1..4: the same transitions
        np.testing.assert_array_equal(got[t][0], expected[t][0])
        np.testing.assert_allclose(got[t][1], expected[t][1])
        assert not got[t][2].any() and "terminal_observation" not in got[t][3][0]
        assert got[t][3][0]["TimeLimit.truncated"] is False
    obs, rewards, dones, infos = got[4]  # step 5: the time limit
    assert dones.tolist() == [True, True]
    np.testing.assert_allclose(rewards, expected[4][1])
    for i in range(2):
        np.testing.assert_array_equal(infos[i]["terminal_observation"], expected[4][0][i])
        assert infos[i]["TimeLimit.truncated"] is True
        assert "lives" in infos[i]  # the last step's info, not the reset's
    np.testing.assert_array_equal(obs, expected[5][0])  # the reset obs (NEXT_STEP's step 6)
    np.testing.assert_array_equal(got[5][0], expected[6][0])  # then the new episode goes on


def test_ppo_cnn_policy_learns_with_vec_monitor_and_frame_stack():
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    class Episodes(BaseCallback):
        def __init__(self):
            super().__init__()
            self.episodes: list[dict] = []

        def _on_step(self) -> bool:
            self.episodes += [info["episode"] for info in self.locals["infos"] if "episode" in info]
            return True

    venv = VecFrameStack(VecMonitor(make_sb3(GAME, 2, preprocessing=PRE, max_episode_steps=20)), 4)
    try:
        assert venv.observation_space.shape == (4, 84, 84)
        model = PPO(
            "CnnPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
            verbose=0,
        )
        callback = Episodes()
        model.learn(300, callback=callback)
    finally:
        venv.close()
    assert model.num_timesteps >= 300
    assert len(callback.episodes) >= 2  # 2 envs x >= 128 steps, episodes of <= 20 steps
    assert all(1 <= e["l"] <= 20 for e in callback.episodes)
    assert len(model.ep_info_buffer) == len(callback.episodes)


# --------------------------------------------------------------------------- vs SubprocVecEnv


def _same_airstriker_twice(n: int = 2, max_episode_steps: int = 5):
    """The same env functions behind SB3's ``SubprocVecEnv`` and behind the adapter."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    env_fns = fns(make_airstriker, n, max_episode_steps=max_episode_steps)
    theirs = SubprocVecEnv(env_fns, start_method="fork")
    try:
        ours = Sb3VecEnv(retrovec.AsyncRetroVectorEnv(
            env_fns, autoreset_mode=AutoresetMode.SAME_STEP, context="fork"
        ))
    except BaseException:
        theirs.close()
        raise
    return ours, theirs


def _plain(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "terminal_observation"}


def test_steps_match_subproc_vec_env_rewards_dtype_and_time_limit_in_every_info():
    ours, theirs = _same_airstriker_twice()
    try:
        actions = np.zeros((2, 12), dtype=np.int8)
        actions[:, 0] = 1
        np.testing.assert_array_equal(ours.reset(), theirs.reset())
        assert ours.reset_infos == list(theirs.reset_infos)
        for t in range(12):  # two time limits (steps 5 and 10)
            for venv in (ours, theirs):
                venv.step_async(actions)
            obs, rewards, dones, infos = ours.step_wait()
            obs_ref, rewards_ref, dones_ref, infos_ref = theirs.step_wait()
            np.testing.assert_array_equal(obs, obs_ref)
            assert rewards.dtype == rewards_ref.dtype == np.float64
            np.testing.assert_array_equal(rewards, rewards_ref)
            assert dones.dtype == dones_ref.dtype and dones.tolist() == dones_ref.tolist()
            assert dones.tolist() == [t % 5 == 4] * 2
            for i in range(2):
                assert _plain(infos[i]) == _plain(infos_ref[i]), (t, i)
                assert infos[i]["TimeLimit.truncated"] is (t % 5 == 4)
                assert ("terminal_observation" in infos[i]) is bool(dones[i])
                if dones[i]:
                    np.testing.assert_array_equal(
                        infos[i]["terminal_observation"], infos_ref[i]["terminal_observation"]
                    )
            assert ours.reset_infos == list(theirs.reset_infos)
    finally:
        ours.close()
        theirs.close()


def test_indices_reach_only_the_chosen_envs_as_in_subproc_vec_env():
    ours, theirs = _same_airstriker_twice(n=3)
    try:
        for venv in (ours, theirs):  # SubprocVecEnv's worker dies on an error: no raising
            venv.reset()
            # a side effect in env 1 only: a new attribute on its outermost wrapper
            assert venv.env_method("__setattr__", "marker", 7, indices=[1]) == [None]
            assert venv.get_attr("marker", indices=1) == [7]
            venv.set_attr("foo", 7, indices=[2, 0])  # a new attribute, two envs
            assert venv.get_attr("foo", indices=[0, 2]) == [7, 7]
            names = venv.env_method("__dir__")  # the outermost wrapper's attributes
            assert [("marker" in n, "foo" in n) for n in names] == [
                (False, True), (True, False), (False, True)
            ]
            venv.set_attr("bar", [1, 2])  # every env: a list is one value
            assert venv.get_attr("bar") == [[1, 2]] * 3
            assert venv.env_method("get_ram", indices=[]) == []
        with pytest.raises(AttributeError, match="marker"):
            ours.get_attr("marker", indices=[0])
        rams = ours.env_method("get_ram", indices=[2, 0])
        rams_ref = theirs.env_method("get_ram", indices=[2, 0])
        for mine, reference in zip(rams, rams_ref, strict=True):
            np.testing.assert_array_equal(mine, reference)
    finally:
        ours.close()
        theirs.close()


def test_env_method_keeps_the_methods_own_keywords():
    venv = retrovec.AsyncRetroVectorEnv(
        fns(make_toy, 2), autoreset_mode=AutoresetMode.SAME_STEP, context="fork"
    )
    adapter = Sb3VecEnv(venv)
    try:
        adapter.reset()
        assert adapter.env_method("add", 1, b=2, indices=[1]) == [3]
        assert adapter.env_method("add", a=1, b=2) == [3, 3]
    finally:
        adapter.close()


def test_indices_on_a_vector_env_without_targeted_calls_say_so():
    venv = gym.vector.SyncVectorEnv(
        [make_toy] * 2, autoreset_mode=AutoresetMode.SAME_STEP
    )
    adapter = Sb3VecEnv(venv)
    try:
        adapter.reset()
        assert adapter.get_attr("max_steps") == [12, 12]
        with pytest.raises(NotImplementedError, match="pass indices=None"):
            adapter.env_method("add", 1, indices=[1])
        with pytest.raises(NotImplementedError, match="SyncVectorEnv"):
            adapter.set_attr("scale", 2.0, indices=0)
    finally:
        adapter.close()
