"""One behaviour suite, run on both backends: worker processes (``AsyncRetroVectorEnv``) and
Ray actors (``RayRetroVectorEnv``, on a small local Ray instance). Each test runs once per
backend, so the Ray backend is held to exactly what the process backend promises:
lockstep equality with gymnasium's AsyncVectorEnv on the real emulator in every autoreset
mode, errors of the original type with the remote traceback, dead workers, timeouts and
EnvPool-style batches. ``tests/core/test_ray_runners.py`` runs this same suite on the Ray env
runners (``RayRunnerVectorEnv``, what ``make(backend="ray")`` builds)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.vector import AutoresetMode

import retrovec
from retrovec import (
    AsyncRetroVectorEnv,
    BrokenVectorEnvError,
    RemoteTraceback,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from tests.core.test_batches import reference_trajectory
from tests.envs import FailingEnv, SlowEnv, ToyEnv, ToyError, fns, make_airstriker, make_toy
from tests.lockstep import run_lockstep as lockstep


@pytest.fixture(params=["process", "ray"])
def backend(request):
    if request.param == "ray":
        request.getfixturevalue("ray_local")
    return request.param


@pytest.fixture
def make_envs(backend):
    """Build a vector env on the backend under test; closed at the end of the test."""
    opened = []

    def build(env_fns, **kwargs):
        if backend == "ray":
            from retrovec.core.ray_backend import RayRetroVectorEnv

            envs = RayRetroVectorEnv(env_fns, **kwargs)
        else:
            envs = AsyncRetroVectorEnv(env_fns, **kwargs)
        opened.append(envs)
        return envs

    yield build
    for envs in opened:
        envs.close(timeout=10.0)


def worker_pids(envs) -> list[int]:
    if hasattr(envs, "processes"):
        return [process.pid for process in envs.processes]
    return list(envs.worker_pids)


def run_lockstep(make_envs, env_fns, mode: AutoresetMode, steps: int, seed: int = 123) -> int:
    """Step gymnasium's AsyncVectorEnv and ours with the same actions; count episode ends."""
    return lockstep(make_envs, env_fns, mode, steps, seed)


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_airstriker_matches_gymnasium_across_episode_ends(make_envs, mode):
    env_fns = fns(make_airstriker, 2, max_episode_steps=25)
    assert run_lockstep(make_envs, env_fns, mode, steps=55) >= 4


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_dict_tuple_spaces_and_varied_infos_match_gymnasium(make_envs, mode):
    assert run_lockstep(make_envs, fns(make_toy, 3), mode, steps=40) >= 4


def test_make_builds_the_backend_asked_for(backend):
    with retrovec.make(num_envs=2, backend=backend, max_episode_steps=10) as envs:
        observations, _ = envs.reset(seed=0)
        assert observations.shape == (2, 224, 320, 3) and observations.dtype == np.uint8
        for _ in range(12):
            observations, rewards, terminated, truncated, infos = envs.step(
                envs.action_space.sample()
            )
        assert observations.any() and "lives" in infos
        assert envs.get_attr("gamename") == ("Airstriker-Genesis-v0",) * 2


# --------------------------------------------------------------------------- API


def test_seeding_calls_attributes_and_render(make_envs):
    envs = make_envs(fns(make_toy, 3, render_mode="rgb_array"))
    envs.reset(seed=10)
    assert envs.np_random_seed == (10, 11, 12)
    envs.reset(seed=[5, None, 7])
    seeds = envs.np_random_seed
    assert seeds[0] == 5 and seeds[2] == 7
    assert envs.call("add", 1, b=2) == (3, 3, 3)
    envs.set_attr("scale", [1.0, 2.0, 3.0])
    assert envs.get_attr("scale") == (1.0, 2.0, 3.0)
    envs.set_attr("scale", 4.0)
    assert envs.get_attr("scale") == (4.0,) * 3
    frames = envs.render()
    assert len(frames) == 3 and frames[0].shape == (4, 6, 3)
    with pytest.raises(ValueError, match="length must match num_envs=3 but got length=2"):
        envs.reset(seed=[1, 2])


def test_out_of_order_and_closed_errors_are_gymnasiums(make_envs):
    envs = make_envs(fns(make_toy, 2))
    with pytest.raises(NoAsyncCallError, match=re.escape(
        "Calling `step_wait` without any prior call to `step_async`."
    )):
        envs.step_wait()
    envs.reset_async(seed=0)
    with pytest.raises(AlreadyPendingCallError, match="waiting for a pending call to `reset`"):
        envs.reset_async()
    envs.reset_wait()
    envs.close()
    with pytest.raises(ClosedEnvironmentError, match=re.escape(
        f"Trying to operate on `{type(envs).__name__}`, after a call to `close()`."
    )):
        envs.step(envs.action_space.sample())


def test_env_exception_keeps_its_type_and_remote_traceback(make_envs):
    envs = make_envs([partial(FailingEnv, "nowhere"), partial(FailingEnv, "step", after=2)])
    envs.reset(seed=0)
    with pytest.raises(ToyError, match="boom in call"):  # a call error leaves it usable
        envs.call("explode")
    for _ in range(2):
        envs.step(envs.action_space.sample())
    with pytest.raises(ToyError, match="boom in step") as caught:
        envs.step(envs.action_space.sample())
    assert caught.value.env_index == 1
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert 'raise ToyError("boom in step")' in str(caught.value.__cause__)
    with pytest.raises(BrokenVectorEnvError):
        envs.step(envs.action_space.sample())
    envs.reset(seed=1)  # a reset starts afresh


def test_exception_while_building_an_env(make_envs):
    with pytest.raises(ToyError, match="boom in init") as caught:
        make_envs([partial(make_toy), partial(FailingEnv, "init")])
    assert 'raise ToyError("boom in init")' in str(caught.value.__cause__)


def test_step_wait_timeout_keeps_the_call_pending(make_envs):
    envs = make_envs(fns(SlowEnv, 2, delay=1.0))
    envs.reset(seed=0)
    envs.step_async(envs.action_space.sample())
    started = time.monotonic()
    with pytest.raises(WorkerTimeoutError) as caught:
        envs.step_wait(timeout=0.1)
    assert time.monotonic() - started < 0.9
    assert caught.value.env_indices == (0, 1)
    _, rewards, *_ = envs.step_wait(timeout=10)
    assert rewards.shape == (2,)


# --------------------------------------------------------------------------- dead workers


def test_killed_worker_raises_worker_crashed_error(make_envs):
    envs = make_envs(fns(make_toy, 2))
    envs.reset(seed=0)
    os.kill(worker_pids(envs)[1], signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(WorkerCrashedError) as caught:
        for _ in range(3):  # the first step may go out before the death is known
            envs.step(envs.action_space.sample())
    assert caught.value.env_index == 1
    assert time.monotonic() - started < 15
    with pytest.raises(BrokenVectorEnvError):
        envs.reset()


def test_killed_worker_is_restarted_and_its_episode_truncated(make_envs):
    envs = make_envs(fns(make_toy, 2, max_steps=1000), on_worker_failure="restart")
    envs.reset(seed=0)
    old = worker_pids(envs)[0]
    os.kill(old, signal.SIGKILL)
    with pytest.warns(UserWarning, match="restarting it"):
        _, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
    assert truncated.tolist() == [True, False] and not terminated.any()
    assert rewards[0] == 0.0
    assert infos["worker_restarted"][0] and infos["_worker_restarted"].tolist() == [True, False]
    assert envs.restart_counts.tolist() == [1, 0]
    assert worker_pids(envs)[0] != old
    for _ in range(3):
        envs.step(envs.action_space.sample())


# --------------------------------------------------------------------------- async batches


def test_async_batches_follow_each_envs_own_trajectory(make_envs):
    n, batch, steps = 4, 2, 30
    space = ToyEnv().action_space
    plans = []
    for env in range(n):
        space.seed(100 + env)
        plans.append([space.sample() for _ in range(steps * 4)])
    envs = make_envs(fns(make_toy, n), batch_size=batch)
    got: list[list] = [[] for _ in range(n)]
    envs.async_reset(seed=7)
    with pytest.raises(AlreadyPendingCallError):
        envs.step(envs.action_space.sample())
    while min(len(g) for g in got) <= steps:
        observations, rewards, terminations, truncations, infos = envs.recv(timeout=30)
        ids = infos["env_id"].tolist()
        assert infos["env_id"].dtype == np.int32
        assert len(ids) == batch and len(set(ids)) == batch
        for row, env in enumerate(ids):
            got[env].append((observations["position"][row], rewards[row],
                             terminations[row], truncations[row]))
        t = [len(got[env]) - 1 for env in ids]
        actions = (
            np.array([plans[env][i][0] for env, i in zip(ids, t)]),
            np.stack([plans[env][i][1] for env, i in zip(ids, t)]),
        )
        envs.send(actions, ids)
    episode_ends = 0
    for env in range(n):
        expected = reference_trajectory(7 + env, plans[env], steps)
        for t, (mine, theirs) in enumerate(zip(got[env], expected)):
            np.testing.assert_array_equal(mine[0], theirs[0]["position"], f"env {env} t {t}")
            assert (float(mine[1]), bool(mine[2]), bool(mine[3])) == theirs[1:]
            episode_ends += bool(theirs[2] or theirs[3])
    assert episode_ends >= 4


# --------------------------------------------------------------------------- Ray only


def test_make_refuses_an_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of \['process', 'ray'\]"):
        retrovec.make(num_envs=1, backend="threads")


def test_importing_retrovec_does_not_import_ray():
    code = "import sys, retrovec; assert 'ray' not in sys.modules, 'ray was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_ray_backend_checks_its_own_arguments(ray_local):
    from retrovec.core.ray_backend import RayRetroVectorEnv

    with pytest.raises(ValueError, match="actor_options must be a dict or one dict per env"):
        RayRetroVectorEnv(fns(make_toy, 2), actor_options=[{}])
    with pytest.raises(ValueError, match="num_cpus must be a number >= 0"):
        RayRetroVectorEnv(fns(make_toy, 2), num_cpus=-1)
