"""The gymnasium vector API, tested against gymnasium's AsyncVectorEnv AND retrovec's class.

Every test here runs twice, once per class: code and tests written for
``gymnasium.vector.AsyncVectorEnv`` keep working when the class is swapped.
"""

from __future__ import annotations

import multiprocessing
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.vector import AutoresetMode

from retrovec import AsyncRetroVectorEnv
from tests.envs import SlowEnv, TextEnv, ToyEnv, fns, make_toy


@pytest.fixture(params=[gym.vector.AsyncVectorEnv, AsyncRetroVectorEnv], ids=["gymnasium", "retrovec"])
def vector_cls(request):
    return request.param


@pytest.fixture
def make_envs(vector_cls):
    opened = []

    def build(env_fns=None, **kwargs):
        envs = vector_cls(env_fns or fns(make_toy, 3), **kwargs)
        opened.append(envs)
        return envs

    yield build
    for envs in opened:
        envs.close(terminate=True)


def test_spaces_and_metadata(make_envs):
    envs = make_envs()
    assert envs.num_envs == 3
    assert envs.single_observation_space == ToyEnv().observation_space
    assert envs.observation_space == gym.vector.utils.batch_space(ToyEnv().observation_space, 3)
    assert envs.single_action_space == ToyEnv().action_space
    assert envs.action_space == gym.vector.utils.batch_space(ToyEnv().action_space, 3)
    assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert envs.metadata["render_fps"] == 30
    assert envs.render_mode is None
    assert repr(envs) == f"{type(envs).__name__}(num_envs=3)"


def test_seeds_int_means_seed_plus_index(make_envs):
    envs = make_envs()
    envs.reset(seed=10)
    assert envs.np_random_seed == (10, 11, 12)
    envs.reset(seed=[5, None, 7])
    seeds = envs.np_random_seed
    assert seeds[0] == 5 and seeds[2] == 7


def test_seed_list_of_wrong_length(make_envs):
    envs = make_envs()
    with pytest.raises(ValueError, match="length must match num_envs=3 but got length=2"):
        envs.reset(seed=[1, 2])


def test_same_seed_same_observations(make_envs):
    envs = make_envs()
    first, _ = envs.reset(seed=3)
    second, _ = envs.reset(seed=3)
    np.testing.assert_array_equal(first["position"], second["position"])


def test_async_pairs(make_envs):
    envs = make_envs()
    envs.reset_async(seed=0)
    observations, infos = envs.reset_wait()
    assert infos["reset_tag"].tolist() == ["fresh"] * 3
    envs.step_async(envs.action_space.sample())
    observations, rewards, terminations, truncations, infos = envs.step_wait()
    assert rewards.dtype == np.float64 and rewards.shape == (3,)
    assert terminations.dtype == np.bool_ and truncations.dtype == np.bool_
    assert infos["t"].tolist() == [1, 1, 1] and infos["_t"].all()
    envs.call_async("add", 1, b=2)
    assert envs.call_wait() == (4, 4, 4)


def test_infos_batched_with_masks(make_envs):
    envs = make_envs()
    envs.reset(seed=0)
    envs.step(envs.action_space.sample())
    _, _, _, _, infos = envs.step(envs.action_space.sample())
    assert infos["even"].dtype == np.bool_ and infos["_even"].all()
    assert infos["nested"]["label"].dtype == object
    assert infos["nested"]["half"].tolist() == [1, 1, 1]
    assert infos["vector"].shape == (3, 2)


def test_call_get_attr_set_attr(make_envs):
    envs = make_envs()
    envs.reset(seed=0)
    assert envs.get_attr("max_steps") == (12, 12, 12)
    envs.set_attr("max_steps", [1, 2, 3])
    assert envs.get_attr("max_steps") == (1, 2, 3)
    envs.set_attr("max_steps", 7)
    assert envs.call("max_steps") == (7, 7, 7)
    assert envs.call("add", 5) == (5, 5, 5)
    with pytest.raises(ValueError, match="Got `2` values for 3 environments"):
        envs.set_attr("max_steps", [1, 2])


def test_render_returns_a_tuple_of_frames(make_envs):
    envs = make_envs(fns(make_toy, 2, render_mode="rgb_array"))
    envs.reset(seed=0)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 2
    assert frames[0].shape == (4, 6, 3)
    assert envs.render_mode == "rgb_array"


def test_out_of_order_calls(make_envs):
    envs = make_envs()
    with pytest.raises(NoAsyncCallError, match=re.escape("Calling `step_wait` without any prior call to `step_async`.")):
        envs.step_wait()
    with pytest.raises(NoAsyncCallError, match=re.escape("Calling `reset_wait` without any prior call to `reset_async`.")):
        envs.reset_wait()
    with pytest.raises(NoAsyncCallError, match=re.escape("Calling `call_wait` without any prior call to `call_async`.")):
        envs.call_wait()
    envs.reset_async(seed=0)
    with pytest.raises(AlreadyPendingCallError, match=re.escape("Calling `step_async` while waiting for a pending call to `reset` to complete.")):
        envs.step_async(envs.action_space.sample())
    with pytest.raises(AlreadyPendingCallError, match="Calling `reset_async` while waiting for a pending call to `reset` to complete"):
        envs.reset_async()
    with pytest.raises(AlreadyPendingCallError, match=re.escape("Calling `call_async` while waiting for a pending call to `reset` to complete.")):
        envs.call_async("add", 1)
    envs.reset_wait()


def test_calls_after_close(make_envs, vector_cls):
    envs = make_envs()
    envs.close()
    envs.close()  # idempotent
    message = re.escape(f"Trying to operate on `{vector_cls.__name__}`, after a call to `close()`.")
    for call in (
        lambda: envs.reset(),
        lambda: envs.step(envs.action_space.sample()),
        lambda: envs.call("add", 1),
        lambda: envs.get_attr("t"),
        lambda: envs.set_attr("t", 1),
    ):
        with pytest.raises(ClosedEnvironmentError, match=message):
            call()
    assert envs.closed


def test_step_wait_timeout(make_envs):
    envs = make_envs(fns(SlowEnv, 2, delay=1.0))
    envs.reset(seed=0)
    envs.step_async(envs.action_space.sample())
    with pytest.raises(multiprocessing.TimeoutError):
        envs.step_wait(timeout=0.05)


def test_reset_mask_validation(make_envs):
    envs = make_envs(autoreset_mode=AutoresetMode.DISABLED)
    envs.reset(seed=0)
    with pytest.raises(TypeError, match="must be a numpy array"):
        envs.reset(options={"reset_mask": [True, False, True]})
    with pytest.raises(ValueError, match=re.escape("must have shape `(3,)`")):
        envs.reset(options={"reset_mask": np.array([True, False])})
    with pytest.raises(TypeError, match="must have `dtype=np.bool_`"):
        envs.reset(options={"reset_mask": np.array([1, 0, 1])})
    with pytest.raises(ValueError, match="at least one True value"):
        envs.reset(options={"reset_mask": np.zeros(3, dtype=bool)})


def test_reset_mask_resets_only_masked_envs(make_envs):
    envs = make_envs(autoreset_mode=AutoresetMode.DISABLED)
    envs.reset(seed=0)
    for _ in range(3):
        envs.step(envs.action_space.sample())
    mask = np.array([True, False, True])
    _, infos = envs.reset(options={"reset_mask": mask, "level": 2})
    assert infos["_reset_tag"].tolist() == [True, False, True]
    assert infos["options_seen"][0] == ["level"]
    assert envs.get_attr("t") == (0, 3, 0)


def test_same_step_final_obs_and_final_info(make_envs):
    envs = make_envs(fns(make_toy, 2, max_steps=2), autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    envs.step(envs.action_space.sample())
    _, _, _, truncations, infos = envs.step(envs.action_space.sample())
    assert truncations.all()
    assert infos["final_obs"].dtype == object and infos["_final_obs"].all()
    assert isinstance(infos["final_obs"][0], dict)
    assert infos["final_info"]["t"].tolist() == [2, 2]
    assert infos["reset_tag"].tolist() == ["fresh", "fresh"]


def test_next_step_autoreset_returns_reset_observation_with_zero_reward(make_envs):
    envs = make_envs(fns(make_toy, 2, max_steps=1))
    envs.reset(seed=0)
    _, _, _, truncations, _ = envs.step(envs.action_space.sample())
    assert truncations.all()
    _, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
    assert rewards.tolist() == [0.0, 0.0]
    assert not terminations.any() and not truncations.any()
    assert infos["reset_tag"].tolist() == ["fresh", "fresh"]


def test_observation_mode_different(make_envs):
    env_fns = [lambda: ToyEnv(scale=1.0), lambda: ToyEnv(scale=2.0)]
    envs = make_envs(env_fns, observation_mode="different")
    assert envs.observation_space["position"].high[1].tolist() == [2.0, 2.0, 2.0]
    observations, _ = envs.reset(seed=0)
    assert observations["position"].shape == (2, 3)


def test_observation_mode_same_rejects_different_spaces(make_envs):
    env_fns = [lambda: ToyEnv(scale=1.0), lambda: ToyEnv(scale=2.0)]
    with pytest.raises(RuntimeError, match="observation_mode='different'"):
        make_envs(env_fns)


def test_non_shared_memory_spaces(make_envs):
    envs = make_envs([TextEnv, TextEnv], shared_memory=False)
    observations, _ = envs.reset()
    assert observations == ("start", "start")
    observations, *_ = envs.step(np.array([1, 0]))
    assert observations == ("act1", "act0")


def test_copy_false_returns_the_shared_buffer(make_envs):
    envs = make_envs(copy=False)
    first, _ = envs.reset(seed=0)
    second, *_ = envs.step(envs.action_space.sample())
    assert first["position"] is second["position"] or np.shares_memory(
        first["position"], second["position"]
    )


def test_copy_true_returns_independent_arrays(make_envs):
    envs = make_envs(copy=True)
    first, _ = envs.reset(seed=0)
    kept = first["position"].copy()
    envs.step(envs.action_space.sample())
    np.testing.assert_array_equal(first["position"], kept)
