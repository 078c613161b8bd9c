"""Failure paths of the Ray backend (``RayRetroVectorEnv``), on small fake envs: arguments and
replies that cannot travel, actors killed while idle or in the middle of a command (the
restart policy of ``docs/errors.md``), replacements that die or raise while being built,
raise mode, EnvPool batches, start-up failures, ``close()`` with work in flight and Ctrl-C
during a wait.

The process backend's versions of these tests are in ``test_failure_paths.py``. Everything
here uses the public API (``envs.actors`` and ``envs.worker_pids`` name each env's actor and
its process) on the one local Ray instance of the ``ray_local`` fixture; every test is
skipped when Ray is not installed. conftest's ``no_leaks`` checks after each test that no
actor process is left.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from functools import partial

import numpy as np
import psutil
import pytest
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError

from retrovec import BrokenVectorEnvError, RemoteTraceback, WorkerCrashedError, WorkerTimeoutError
from retrovec.core.ray_backend import RayRetroVectorEnv  # does not import Ray
from tests.envs import (
    FailingEnv,
    ProbeEnv,
    ToyError,
    UnpicklableEnvFn,
    make_probe_counting_builds,
    make_probe_raising_on_build,
    make_probe_slow_on_build,
    marked_probe_fns,
    probe_fns,
)
from tests.failures import (
    InterruptInsideRetrovec,
    actions,
    alive,
    assert_envpool_runs_from_reset,
    close,
    names_env,
    wait_gone,
)

# Restarts warn ("... restarting it"); that is expected here.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def ray(ray_local):
    """Every test runs on the session's local Ray instance (skipped without Ray)."""
    return ray_local


@pytest.fixture(autouse=True, params=["actors", "runners", "runners-ray-calls"])
def layout(request, monkeypatch):
    """Every test runs three times: one Ray actor per env (``RayRetroVectorEnv``), and Ray
    env runners of one env each (``RayRunnerVectorEnv(envs_per_runner=1)``), their
    commands through the local channel (the default) or through Ray actor calls
    (``local_channel=False``). Killing "env i's actor" kills its runner and SIGKILL to
    ``worker_pids[i]`` kills its emulator inside the runner: either way env i's process is
    gone, and the results are the same."""
    if request.param != "actors":
        from retrovec.core.ray_runners import RayRunnerVectorEnv

        monkeypatch.setitem(
            globals(), "RayRetroVectorEnv", partial(
                RayRunnerVectorEnv, envs_per_runner=1,
                local_channel=request.param == "runners",
            )
        )
    return request.param


# --------------------------------------------------------------------------- helpers




def _expected(seeds, level, t) -> np.ndarray:
    """ProbeEnv observations: ``[seed, level, t]`` per env (``level``, ``t``: one or per env)."""
    n = len(seeds)
    level = np.broadcast_to(np.asarray(level, dtype=np.float64), (n,))
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,))
    return np.stack([np.asarray(seeds, dtype=np.float64), level, t], axis=1)








def _actor_processes() -> list[int]:
    """The pids of this session's env actors and runners (``ray::EnvActor...``,
    ``ray::EnvRunner...``; conftest's ``no_leaks`` checks that none is left after a test)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            line = " ".join(child.cmdline())
            if ("EnvActor" in line or "EnvRunner" in line) and alive([child.pid]):
                found.append(child.pid)
        except psutil.Error:
            pass
    return found


def _kill_actor(ray, envs, index: int, how: str) -> None:
    """Kill env ``index``'s actor (``ray.kill`` of its handle, or SIGKILL to its process)
    and wait until its process is gone."""
    pid = envs.worker_pids[index]
    assert alive([pid])
    if how == "ray.kill":
        if hasattr(envs, "runners"):  # env runners: the runner of env index
            pid = envs.runner_pids[envs.runner_of(index)]
            ray.kill(envs.runners[envs.runner_of(index)], no_restart=True)
        else:
            ray.kill(envs.actors[index], no_restart=True)
    else:
        os.kill(pid, signal.SIGKILL)
    assert wait_gone([pid], 10.0) == [], f"env {index}'s actor (pid {pid}) did not die"


def _wait_for_file(path, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)




def _assert_usable(envs, n: int, seed: int) -> None:
    """Calls, resets and steps all work, with exactly the expected results."""
    assert envs.get_attr("tag") == tuple(range(n))
    assert envs.call("echo", 7) == (7,) * n
    observations, infos = envs.reset(seed=seed)
    np.testing.assert_array_equal(observations, _expected(range(seed, seed + n), 0, 0))
    assert "worker_restarted" not in infos
    observations, rewards, terminations, truncations, _ = envs.step(actions(n))
    np.testing.assert_array_equal(observations, _expected(range(seed, seed + n), 0, 1))
    assert rewards.tolist() == [1.0] * n
    assert not terminations.any() and not truncations.any()




# --------------------------------------------------------------------------- arguments


def test_call_with_an_unpicklable_argument_raises_and_sends_nothing():
    envs = RayRetroVectorEnv(probe_fns(2))
    try:
        envs.reset(seed=0)
        with pytest.raises((TypeError, pickle.PickleError)):
            envs.call("echo", threading.Lock())
        # Nothing is pending and nothing reached an env.
        assert envs.call("echo", 3) == (3, 3)
        observations, *_ = envs.step(actions(2))
        np.testing.assert_array_equal(observations, _expected([0, 1], 0, 1))
        _assert_usable(envs, 2, seed=3)
    finally:
        close(envs)


def test_set_attr_with_an_unpicklable_value_raises_and_sets_nothing():
    envs = RayRetroVectorEnv(probe_fns(2))
    try:
        envs.reset(seed=0)
        with pytest.raises((TypeError, pickle.PickleError)):
            envs.set_attr("level", [7, threading.Lock()])
        assert envs.get_attr("level") == (0, 0)  # env 0 did not get its value either
        _assert_usable(envs, 2, seed=3)
        envs.set_attr("level", [7, 8])
        assert envs.get_attr("level") == (7, 8)
    finally:
        close(envs)


def test_reset_with_unpicklable_options_raises_and_resets_nothing():
    envs = RayRetroVectorEnv(probe_fns(2))
    try:
        envs.reset(seed=0)
        envs.step(actions(2))
        with pytest.raises((TypeError, pickle.PickleError)):
            envs.reset(seed=5, options={"level": 2, "lock": threading.Lock()})
        assert envs.get_attr("seed_seen") == (0, 1) and envs.get_attr("t") == (1, 1)
        observations, *_ = envs.step(actions(2))
        np.testing.assert_array_equal(observations, _expected([0, 1], 0, 2))
        _assert_usable(envs, 2, seed=3)
    finally:
        close(envs)


# --------------------------------------------------------------------------- replies


def test_a_reply_the_actor_cannot_pickle_raises_naming_the_env_and_leaves_it_usable():
    envs = RayRetroVectorEnv(marked_probe_fns(3))
    try:
        envs.reset(seed=0)
        with pytest.raises((TypeError, pickle.PickleError)) as caught:
            envs.call("unpicklable_for", 1)
        assert names_env(caught.value, 1), f"the error does not name env 1: {caught.value!r}"
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert "lock" in str(caught.value).lower()
        assert envs.call("unpicklable_for", 99) == (0, 1, 2)
        observations, rewards, _, _, _ = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([0, 1, 2], 0, 1))
        assert rewards.tolist() == [1.0] * 3
        started = time.monotonic()
        envs.close()
        assert time.monotonic() - started < 5
    finally:
        close(envs)


def test_a_reply_the_driver_cannot_unpickle_raises_naming_the_env_and_leaves_it_usable():
    envs = RayRetroVectorEnv(probe_fns(3))
    try:
        envs.reset(seed=0)
        with pytest.raises(Exception) as caught:
            envs.call("reply_for", 1)
        assert names_env(caught.value, 1), f"the error does not name env 1: {caught.value!r}"
        assert "cannot be unpickled here" in str(caught.value)
        assert envs.call("reply_for", 99) == (0, 1, 2)
        observations, rewards, _, _, _ = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([0, 1, 2], 0, 1))
        assert rewards.tolist() == [1.0] * 3
        started = time.monotonic()
        envs.close()
        assert time.monotonic() - started < 5
    finally:
        close(envs)


# --------------------------------------------------------------------------- restart mode


def test_actor_dying_in_reset_is_replaced_and_reset_with_the_same_seed_and_options(tmp_path):
    """The env kills its own actor (``os._exit``) in ``reset``."""
    envs = RayRetroVectorEnv(
        probe_fns(3, die_on_seed=11, die_marker=str(tmp_path / "died")),
        on_worker_failure="restart",
    )
    try:
        old = list(envs.worker_pids)
        observations, infos = envs.reset(seed=10, options={"level": 3})  # env 1 gets 11
        assert (tmp_path / "died").exists()  # it did die
        assert envs.restart_counts.tolist() == [0, 1, 0]
        assert envs.worker_pids[1] != old[1] and envs.worker_pids[::2] == old[::2]
        np.testing.assert_array_equal(observations, _expected([10, 11, 12], 3, 0))
        assert infos["reset_seed"].tolist() == [10, 11, 12]
        assert infos["_worker_restarted"].tolist() == [False, True, False]
        assert infos["worker_restarted"][1]

        # The next step is an ordinary step for every env (not a reset step).
        observations, rewards, terminations, truncations, infos = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([10, 11, 12], 3, 1))
        assert rewards.tolist() == [1.0] * 3
        assert not terminations.any() and not truncations.any()
        assert infos["t"].tolist() == [1, 1, 1]
        assert "worker_restarted" not in infos
    finally:
        close(envs)


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_actor_killed_during_reset_is_replaced_and_reset_with_the_same_seed(ray, tmp_path, how):
    marker = str(tmp_path / "entered")
    envs = RayRetroVectorEnv(marked_probe_fns(3), on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        envs.set_attr("reset_delay", [0.0, 30.0, 0.0])
        envs.set_attr("entered_marker", [None, marker, None])
        envs.reset_async(seed=10, options={"level": 3})
        _wait_for_file(marker)
        _kill_actor(ray, envs, 1, how)
        started = time.monotonic()
        observations, infos = envs.reset_wait(timeout=20)
        assert time.monotonic() - started < 15  # not the 30 s the old actor would sleep
        np.testing.assert_array_equal(observations, _expected([10, 11, 12], 3, 0))
        assert infos["_worker_restarted"].tolist() == [False, True, False]
        assert envs.restart_counts.tolist() == [0, 1, 0]
        assert envs.get_attr("reset_delay") == (0.0, 0.0, 0.0)  # a new env from env_fn

        observations, rewards, terminations, truncations, infos = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([10, 11, 12], 3, 1))
        assert rewards.tolist() == [1.0] * 3
        assert not terminations.any() and not truncations.any()
        assert "worker_restarted" not in infos
    finally:
        close(envs)


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_actor_killed_during_step_gives_a_truncated_transition(ray, tmp_path, how):
    marker = str(tmp_path / "entered")
    envs = RayRetroVectorEnv(marked_probe_fns(3), on_worker_failure="restart")
    try:
        envs.reset(seed=10)
        envs.step(actions(3))
        envs.set_attr("delay", [0.0, 0.0, 30.0])
        envs.set_attr("entered_marker", [None, None, marker])
        envs.step_async(actions(3))
        _wait_for_file(marker)
        _kill_actor(ray, envs, 2, how)
        observations, rewards, terminations, truncations, infos = envs.step_wait(timeout=20)
        # Env 2: the replacement's first observation (reset without a seed), reward 0.
        np.testing.assert_array_equal(observations, _expected([10, 11, -1], 0, [2, 2, 0]))
        assert rewards.tolist() == [1.0, 1.0, 0.0]
        assert truncations.tolist() == [False, False, True] and not terminations.any()
        assert infos["_worker_restarted"].tolist() == [False, False, True]
        assert infos["worker_restarted"][2]
        assert envs.restart_counts.tolist() == [0, 0, 1]

        # NEXT_STEP: env 2's next step is its reset step; then it steps on.
        observations, rewards, _, truncations, infos = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([10, 11, -1], 0, [3, 3, 0]))
        assert rewards.tolist() == [1.0, 1.0, 0.0] and not truncations.any()
        assert "worker_restarted" not in infos
        observations, rewards, *_ = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([10, 11, -1], 0, [4, 4, 1]))
        assert rewards.tolist() == [1.0] * 3
    finally:
        close(envs)


def test_idle_kill_then_reset_replays_the_reset(ray):
    envs = RayRetroVectorEnv(probe_fns(2), on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        _kill_actor(ray, envs, 1, "SIGKILL")
        observations, infos = envs.reset(seed=5, options={"level": 2})
        np.testing.assert_array_equal(observations, _expected([5, 6], 2, 0))
        assert infos["_worker_restarted"].tolist() == [False, True]
        assert infos["worker_restarted"][1]
        assert envs.restart_counts.tolist() == [0, 1]
        observations, rewards, _, truncations, _ = envs.step(actions(2))
        np.testing.assert_array_equal(observations, _expected([5, 6], 2, 1))
        assert rewards.tolist() == [1.0, 1.0] and not truncations.any()
    finally:
        close(envs)


@pytest.mark.parametrize("command", ["call", "get_attr", "set_attr"])
def test_idle_kill_then_call_raises_restarted_and_the_env_stays_usable(ray, command):
    envs = RayRetroVectorEnv(probe_fns(2), on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        envs.step(actions(2))
        _kill_actor(ray, envs, 1, "ray.kill")
        with pytest.raises(WorkerCrashedError) as caught:
            if command == "call":
                envs.call("echo", 1)
            elif command == "get_attr":
                envs.get_attr("tag")
            else:
                envs.set_attr("level", 4)
        assert caught.value.restarted and caught.value.env_index == 1
        assert "restarted" in str(caught.value)
        assert envs.restart_counts.tolist() == [0, 1]
        if command == "set_attr":  # the live env got its value
            assert envs.get_attr("level")[0] == 4
        assert envs.get_attr("tag") == (0, 1)
        assert envs.call("echo", 2) == (2, 2)

        # Env 1's next step reports its old episode as truncated; then its reset step.
        observations, rewards, terminations, truncations, infos = envs.step(actions(2))
        assert truncations.tolist() == [False, True] and not terminations.any()
        assert rewards.tolist() == [1.0, 0.0]
        assert infos["_worker_restarted"].tolist() == [False, True]
        assert observations[1].tolist() == [-1, 0, 0]  # the replacement's reset observation
        observations, rewards, _, truncations, _ = envs.step(actions(2))
        assert not truncations.any() and rewards.tolist() == [1.0, 0.0]
        observations, rewards, *_ = envs.step(actions(2))
        assert observations[1].tolist() == [-1, 0, 1] and rewards.tolist() == [1.0, 1.0]
    finally:
        close(envs)


def test_idle_kill_then_masked_reset_leaving_the_env_out_keeps_its_episode_end(ray):
    envs = RayRetroVectorEnv(probe_fns(3), on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        envs.step(actions(3))
        _kill_actor(ray, envs, 2, "SIGKILL")
        observations, infos = envs.reset(
            seed=[5, 6, None], options={"reset_mask": np.array([True, True, False])}
        )
        # Env 2's row is its replacement's first observation.
        np.testing.assert_array_equal(observations, _expected([5, 6, -1], 0, 0))
        assert envs.restart_counts.tolist() == [0, 0, 1]
        observations, rewards, terminations, truncations, infos = envs.step(actions(3))
        assert truncations.tolist() == [False, False, True] and not terminations.any()
        assert rewards.tolist() == [1.0, 1.0, 0.0]
        assert infos["_worker_restarted"].tolist() == [False, False, True]
        assert infos["worker_restarted"][2]
        np.testing.assert_array_equal(observations, _expected([5, 6, -1], 0, [1, 1, 0]))
    finally:
        close(envs)


def test_idle_kill_then_step_gives_a_truncated_transition(ray):
    envs = RayRetroVectorEnv(probe_fns(2), on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        _kill_actor(ray, envs, 0, "SIGKILL")
        observations, rewards, terminations, truncations, infos = envs.step(actions(2))
        np.testing.assert_array_equal(observations, _expected([-1, 1], 0, [0, 1]))
        assert truncations.tolist() == [True, False] and not terminations.any()
        assert rewards.tolist() == [0.0, 1.0]
        assert infos["_worker_restarted"].tolist() == [True, False]
    finally:
        close(envs)


def test_a_replacement_that_dies_while_building_is_retried(ray, tmp_path):
    counter = str(tmp_path / "builds")
    env_fns = [
        partial(ProbeEnv, tag=0),
        # builds: 1 at start-up, 2 for the first restart (dies), 3 is the retry
        partial(make_probe_counting_builds, counter, die_on=2, tag=1),
    ]
    envs = RayRetroVectorEnv(env_fns, on_worker_failure="restart", max_restarts=5)
    try:
        envs.reset(seed=0)
        _kill_actor(ray, envs, 1, "SIGKILL")
        observations, rewards, _, truncations, infos = envs.step(actions(2))
        assert truncations.tolist() == [False, True]
        assert infos["_worker_restarted"].tolist() == [False, True]
        with open(counter) as file:
            assert file.read() == "3"
        assert envs.restart_counts.tolist() == [0, 2]
        assert envs.get_attr("tag") == (0, 1)
        observations, _ = envs.reset(seed=4)
        np.testing.assert_array_equal(observations, _expected([4, 5], 0, 0))
        observations, rewards, *_ = envs.step(actions(2))
        assert rewards.tolist() == [1.0, 1.0]
    finally:
        close(envs)


def test_a_replacement_whose_env_fn_raises_ends_restarting(ray, tmp_path):
    counter = str(tmp_path / "builds")
    env_fns = [
        partial(ProbeEnv, tag=0),
        partial(make_probe_raising_on_build, counter, raise_on=2, tag=1),
    ]
    envs = RayRetroVectorEnv(env_fns, on_worker_failure="restart", max_restarts=5)
    try:
        envs.reset(seed=0)
        _kill_actor(ray, envs, 1, "SIGKILL")
        with pytest.raises(ToyError, match="boom in build 2") as caught:
            envs.step(actions(2))
        assert caught.value.env_index == 1
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert envs.restart_counts.tolist() == [0, 1]
        for attempt in (
            lambda: envs.step(actions(2)),
            lambda: envs.reset(seed=0),
            lambda: envs.call("echo", 1),
        ):
            with pytest.raises(BrokenVectorEnvError):
                attempt()
        with open(counter) as file:
            assert file.read() == "2"  # no further attempt
        started = time.monotonic()
        envs.close()
        assert time.monotonic() - started < 5
    finally:
        close(envs)


def test_an_env_dying_more_than_max_restarts_times_gives_up(ray):
    envs = RayRetroVectorEnv(probe_fns(2), on_worker_failure="restart", max_restarts=1)
    try:
        envs.reset(seed=0)
        _kill_actor(ray, envs, 1, "SIGKILL")
        _, _, _, truncations, _ = envs.step(actions(2))
        assert truncations.tolist() == [False, True]
        _kill_actor(ray, envs, 1, "ray.kill")
        with pytest.raises(WorkerCrashedError, match="max_restarts") as caught:
            envs.step(actions(2))
        assert caught.value.env_index == 1 and not caught.value.restarted
        assert envs.restart_counts.tolist() == [0, 2]
        with pytest.raises(BrokenVectorEnvError):
            envs.reset(seed=0)
        envs.close()
    finally:
        close(envs)


# --------------------------------------------------------------------------- raise mode


@pytest.mark.parametrize("command", ["step", "reset", "masked_reset", "call"])
def test_raise_mode_raises_worker_crashed_then_only_close_works(ray, command):
    envs = RayRetroVectorEnv(probe_fns(3))
    try:
        envs.reset(seed=0)
        pids = list(envs.worker_pids)
        _kill_actor(ray, envs, 2, "SIGKILL")
        started = time.monotonic()
        with pytest.raises(WorkerCrashedError) as caught:
            if command == "step":
                envs.step(actions(3))
            elif command == "reset":
                envs.reset(seed=1)
            elif command == "masked_reset":
                envs.reset(options={"reset_mask": np.array([True, True, False])})
            else:
                envs.call("echo", 1)
        assert time.monotonic() - started < 10
        assert caught.value.env_index == 2 and not caught.value.restarted
        assert "env 2" in str(caught.value)
        assert envs.restart_counts.tolist() == [0, 0, 0]
        for attempt in (
            lambda: envs.step(actions(3)),
            lambda: envs.reset(seed=0),
            lambda: envs.call("echo", 1),
            lambda: envs.set_attr("level", 1),
            lambda: envs.async_reset(seed=0),
        ):
            with pytest.raises(BrokenVectorEnvError):
                attempt()
        started = time.monotonic()
        envs.close()
        assert time.monotonic() - started < 5
        assert wait_gone(pids, 5.0) == []
        with pytest.raises(ClosedEnvironmentError):
            envs.step(actions(3))
    finally:
        close(envs)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("then", ["reset", "async_reset"])
def test_envpool_recovers_with_a_reset_after_an_env_raised_in_step(then):
    envs = RayRetroVectorEnv(probe_fns(3), batch_size=2)
    try:
        envs.set_attr("fail_next_step", [False, True, False])
        envs.async_reset(seed=0)
        caught = None
        for _ in range(20):
            try:
                _, _, _, _, infos = envs.recv(timeout=20)
            except Exception as error:  # noqa: BLE001 - checked below
                caught = error
                break
            envs.send(actions(len(infos["env_id"])), infos["env_id"])
        assert caught is not None, "env 1's step never raised through recv()"
        assert isinstance(caught, ToyError), repr(caught)
        assert names_env(caught, 1)
        with pytest.raises(BrokenVectorEnvError):
            envs.send(actions(1), [0])

        if then == "reset":
            observations, infos = envs.reset(seed=5)
            np.testing.assert_array_equal(observations, _expected([5, 6, 7], 0, 0))
            observations, rewards, _, truncations, _ = envs.step(actions(3))
            np.testing.assert_array_equal(observations, _expected([5, 6, 7], 0, 1))
            assert rewards.tolist() == [1.0] * 3 and not truncations.any()
        # EnvPool-style use works (again): every env resets, then steps from t=0.
        envs.async_reset(seed=5)
        assert_envpool_runs_from_reset(envs, 5, recv_timeout=20)
    finally:
        close(envs)


def test_envpool_actor_killed_between_recv_and_send_gives_a_truncated_row(ray):
    envs = RayRetroVectorEnv(probe_fns(3), batch_size=1, on_worker_failure="restart")
    try:
        envs.async_reset(seed=0)
        received = []
        for _ in range(3):
            _, _, _, _, infos = envs.recv(timeout=20)
            received.append(int(infos["env_id"][0]))
        assert sorted(received) == [0, 1, 2]
        _kill_actor(ray, envs, 1, "SIGKILL")
        envs.send(actions(1), [1])
        observations, rewards, terminations, truncations, infos = envs.recv(timeout=20)
        assert infos["env_id"].tolist() == [1]
        np.testing.assert_array_equal(observations, [[-1, 0, 0]])
        assert rewards.tolist() == [0.0] and truncations.tolist() == [True]
        assert not terminations.any() and infos["worker_restarted"].tolist() == [True]
        assert envs.restart_counts.tolist() == [0, 1, 0]
        # Its reset step, then ordinary steps; the others were never disturbed.
        envs.send(actions(1), [1])
        observations, rewards, _, truncations, _ = envs.recv(timeout=20)
        np.testing.assert_array_equal(observations, [[-1, 0, 0]])
        assert rewards.tolist() == [0.0] and not truncations.any()
        envs.send(actions(3), [0, 1, 2])
        got = {}
        for _ in range(3):
            observations, rewards, *_, infos = envs.recv(timeout=20)
            got[int(infos["env_id"][0])] = (observations[0].tolist(), float(rewards[0]))
        assert got == {0: ([0, 0, 1], 1.0), 1: ([-1, 0, 1], 1.0), 2: ([2, 0, 1], 1.0)}
    finally:
        close(envs)


def test_async_reset_refuses_a_reset_mask():
    envs = RayRetroVectorEnv(probe_fns(2), batch_size=1)
    try:
        with pytest.raises(ValueError, match="reset_mask"):
            envs.async_reset(seed=0, options={"reset_mask": np.array([True, False])})
        observations, _ = envs.reset(seed=0)  # nothing was left running
        np.testing.assert_array_equal(observations, _expected([0, 1], 0, 0))
        envs.async_reset(seed=3)
        observations, *_ = envs.recv(timeout=20)
        assert observations.shape == (1, 3)
    finally:
        close(envs)


# --------------------------------------------------------------------------- start-up


def test_start_up_failure_closes_the_envs_that_did_build(tmp_path):
    marker = str(tmp_path / "closed")
    env_fns = [
        partial(ProbeEnv, tag=0, close_marker=marker),
        partial(ProbeEnv, tag=1, close_marker=marker),
        partial(FailingEnv, "init"),
        partial(ProbeEnv, tag=3, close_marker=marker),
    ]
    started = time.monotonic()
    with pytest.raises(ToyError, match="boom in init") as caught:
        RayRetroVectorEnv(env_fns)
    elapsed = time.monotonic() - started
    assert caught.value.env_index == 2
    assert 'raise ToyError("boom in init")' in str(caught.value.__cause__)
    assert elapsed < 15, f"the failed start-up took {elapsed:.1f} s"
    closed = sorted(os.listdir(tmp_path))
    assert closed == ["closed.0", "closed.1", "closed.3"], f"envs closed: {closed}"


def test_start_up_with_an_env_fn_that_cannot_be_pickled_raises_and_leaves_no_actor():
    """Ray refuses env 2's function after the actors of envs 0 and 1 were created: those
    must not come up (an actor takes about a second to start, so 3 s would show one)."""
    assert _actor_processes() == []
    env_fns = [partial(ProbeEnv, tag=0), partial(ProbeEnv, tag=1), UnpicklableEnvFn(tag=2)]
    started = time.monotonic()
    with pytest.raises(Exception, match="cannot be pickled"):
        RayRetroVectorEnv(env_fns)
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert _actor_processes() == [], "an actor of the failed start-up is running"
        time.sleep(0.05)


# --------------------------------------------------------------------------- close


def test_close_while_a_call_is_pending_waits_for_it_then_closes_every_env(tmp_path):
    marker = str(tmp_path / "closed")
    envs = RayRetroVectorEnv(probe_fns(2, delay=0.5, close_marker=marker))
    try:
        envs.reset(seed=0)
        pids = list(envs.worker_pids)
        envs.step_async(actions(2))
        with pytest.raises(WorkerTimeoutError):
            envs.step_wait(timeout=0.05)
        started = time.monotonic()
        with pytest.warns(UserWarning, match="while waiting for a pending call"):
            envs.close(timeout=5)
        elapsed = time.monotonic() - started
        assert elapsed < 4, f"close() took {elapsed:.1f} s"
        assert envs.closed
        assert sorted(os.listdir(tmp_path)) == ["closed.0", "closed.1"]
        assert wait_gone(pids, 5.0) == []
    finally:
        close(envs)


def test_close_with_a_stuck_actor_is_bounded_and_kills_it(tmp_path):
    marker = str(tmp_path / "closed")
    envs = RayRetroVectorEnv(probe_fns(2, close_marker=marker))
    try:
        envs.reset(seed=0)
        pids = list(envs.worker_pids)
        envs.set_attr("delay", [0.0, 60.0])
        envs.step_async(actions(2))
        started = time.monotonic()
        envs.close(timeout=0.5)
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"close(timeout=0.5) took {elapsed:.1f} s"  # not the 60 s step
        assert envs.closed
        # Env 0 answered and was closed; env 1 never answered and was killed unclosed.
        assert sorted(os.listdir(tmp_path)) == ["closed.0"]
        assert wait_gone(pids, 5.0) == []
    finally:
        close(envs)


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("call", ["step", "reset", "call"])
def test_ctrl_c_during_a_wait_leaves_the_call_pending_and_wait_returns_its_result(call):
    envs = RayRetroVectorEnv(marked_probe_fns(2))
    try:
        envs.reset(seed=0)
        delay = 1.5
        if call == "step":
            envs.set_attr("delay", delay)
        elif call == "reset":
            envs.set_attr("reset_delay", delay)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        result = None
        with InterruptInsideRetrovec() as handler:
            started = time.monotonic()
            timer.start()
            try:
                if call == "step":
                    result = envs.step(actions(2))
                elif call == "reset":
                    result = envs.reset(seed=4, options={"level": 2})
                else:
                    result = envs.call("slow_echo", "hi", seconds=delay)
            except KeyboardInterrupt:
                pass
            finally:
                timer.join()
            interrupted_after = time.monotonic() - started
        assert handler.fired and result is None, "the blocking call was not interrupted"
        assert interrupted_after < delay - 0.3, f"Ctrl-C took {interrupted_after:.2f} s to act"

        # The call is still pending: a new one is refused, the *_wait returns its result.
        with pytest.raises(AlreadyPendingCallError):
            envs.call_async("echo", 1)
        if call == "step":
            observations, rewards, _, truncations, infos = envs.step_wait(timeout=20)
            np.testing.assert_array_equal(observations, _expected([0, 1], 0, 1))
            assert rewards.tolist() == [1.0, 1.0] and not truncations.any()
            assert infos["t"].tolist() == [1, 1]
        elif call == "reset":
            observations, infos = envs.reset_wait(timeout=20)
            np.testing.assert_array_equal(observations, _expected([4, 5], 2, 0))
            assert infos["reset_seed"].tolist() == [4, 5]
        else:
            assert envs.call_wait(timeout=20) == ("hi", "hi")
        assert envs.call("echo", 3) == (3, 3)  # no reply left over to answer a later call
        envs.set_attr("delay", 0.0)
        envs.set_attr("reset_delay", 0.0)
        _assert_usable(envs, 2, seed=7)
    finally:
        close(envs)


def test_ctrl_c_while_a_replacement_is_built_does_not_count_as_another_death(ray, tmp_path):
    counter = tmp_path / "builds"
    env_fns = [
        partial(ProbeEnv, tag=0),
        # builds: 1 at start-up, 2 (the replacement) takes 2 s
        partial(make_probe_slow_on_build, str(counter), slow_on=2, seconds=2.0, tag=1),
    ]
    envs = RayRetroVectorEnv(env_fns, on_worker_failure="restart", max_restarts=1)

    def interrupt_while_building():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if counter.exists() and counter.read_text() == "2":
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    try:
        envs.reset(seed=0)
        _kill_actor(ray, envs, 1, "SIGKILL")
        thread = threading.Thread(target=interrupt_while_building)
        result = None
        with InterruptInsideRetrovec() as handler:
            thread.start()
            try:
                result = envs.step(actions(2))
            except KeyboardInterrupt:
                pass
            finally:
                thread.join()
        assert handler.fired and result is None, "the restart was not interrupted"
        # One death, one restart: the interrupted wait resumes it.
        _, rewards, _, truncations, _ = envs.step_wait(timeout=30)
        assert truncations.tolist() == [False, True] and rewards.tolist() == [1.0, 0.0]
        assert envs.restart_counts.tolist() == [0, 1]
        _, rewards, *_ = envs.step(actions(2))
        assert rewards.tolist() == [1.0, 0.0]  # env 1's reset step
    finally:
        close(envs)
