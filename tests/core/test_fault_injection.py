"""Failures injected into real emulator workers, under every start method: dead workers are
noticed (never a hang), restarts keep the other envs' episodes, shutdown always cleans up."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial

import numpy as np
import psutil
import pytest
from gymnasium.error import ResetNeeded

import retrovec
from retrovec import (
    AsyncRetroVectorEnv,
    BrokenVectorEnvError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from tests.envs import fns, make_airstriker, make_airstriker_killed_once, make_slow_airstriker
from tests.failures import wait_gone

START_METHODS = ["fork", "forkserver", "spawn"]
STEPS = {"reset": 0, "step": 3, "poke": 0}


def vector(method: str, marker: str, context: str, **kwargs) -> AsyncRetroVectorEnv:
    """Env 1 of 3 dies once in ``method``; envs 0 and 2 are healthy."""
    env_fns = [
        partial(make_airstriker, max_episode_steps=1000),
        partial(make_airstriker_killed_once, method, marker, after=STEPS[method]),
        partial(make_airstriker, max_episode_steps=1000),
    ]
    return AsyncRetroVectorEnv(env_fns, context=context, **kwargs)


def drive(envs: AsyncRetroVectorEnv, method: str):
    """Run the call in which env 1 dies; return its result."""
    if method == "reset":
        return envs.reset(seed=0)
    envs.reset(seed=0)
    actions = np.zeros((3, 12), dtype=np.int8)
    if method == "poke":
        return envs.call("poke")
    for _ in range(STEPS["step"]):
        envs.step(actions)
    return envs.step(actions)


@pytest.mark.parametrize("context", START_METHODS)
@pytest.mark.parametrize("method", ["reset", "step", "poke"])
def test_dead_worker_raises_within_a_second_or_so(tmp_path, context, method):
    envs = vector(method, str(tmp_path / "died"), context)
    try:
        started = time.monotonic()
        with pytest.raises(WorkerCrashedError) as caught:
            drive(envs, method)
        assert time.monotonic() - started < 5
        assert caught.value.env_index == 1
        assert caught.value.signal_name == "SIGKILL"
        assert "env 1" in str(caught.value) and "SIGKILL" in str(caught.value)
        with pytest.raises(BrokenVectorEnvError):
            envs.step(np.zeros((3, 12), dtype=np.int8))
    finally:
        envs.close()


@pytest.mark.parametrize("context", START_METHODS)
def test_worker_killed_while_idle(context):
    envs = AsyncRetroVectorEnv(fns(make_airstriker, 2), context=context)
    try:
        envs.reset(seed=0)
        victim = envs.processes[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(5)
        with pytest.raises(WorkerCrashedError, match="env 1"):
            envs.step(np.zeros((2, 12), dtype=np.int8))
    finally:
        envs.close()


@pytest.mark.parametrize("context", START_METHODS)
def test_restart_during_step_truncates_only_that_env(tmp_path, context):
    envs = vector("step", str(tmp_path / "died"), context, on_worker_failure="restart")
    try:
        first, _ = envs.reset(seed=0)
        actions = np.zeros((3, 12), dtype=np.int8)
        for _ in range(STEPS["step"]):
            envs.step(actions)
        with pytest.warns(UserWarning, match="restarting it"):
            observations, rewards, terminations, truncations, infos = envs.step(actions)
        assert truncations.tolist() == [False, True, False]
        assert not terminations.any() and rewards[1] == 0.0
        assert infos["_worker_restarted"].tolist() == [False, True, False]
        np.testing.assert_array_equal(observations[1], first[1])  # a fresh reset frame
        assert envs.restart_counts.tolist() == [0, 1, 0]
        assert envs.get_attr("_elapsed_steps") == (4, 0, 4)  # the others kept their episodes
        # NEXT_STEP: the step after a truncation is the reset step
        _, rewards, _, truncations, _ = envs.step(actions)
        assert rewards[1] == 0.0 and not truncations.any()
        assert envs.get_attr("_elapsed_steps") == (5, 0, 5)
        envs.step(actions)
        assert envs.get_attr("_elapsed_steps") == (6, 1, 6)
    finally:
        envs.close()


@pytest.mark.parametrize("context", START_METHODS)
def test_restart_during_reset_and_call(tmp_path, context):
    envs = vector("reset", str(tmp_path / "died-reset"), context, on_worker_failure="restart")
    try:
        with pytest.warns(UserWarning, match="restarting it"):
            observations, infos = envs.reset(seed=0)
        assert infos["_worker_restarted"].tolist() == [False, True, False]
        assert observations.shape == (3, 224, 320, 3)
    finally:
        envs.close()

    envs = vector("poke", str(tmp_path / "died-poke"), context, on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        with pytest.warns(UserWarning), pytest.raises(WorkerCrashedError, match="restarted") as caught:
            envs.call("poke")
        assert caught.value.restarted
        assert envs.get_attr("render_mode") == (None, None, None)  # usable again
        assert all(process.is_alive() for process in envs.processes)
        _, _, _, truncations, infos = envs.step(np.zeros((3, 12), dtype=np.int8))
        assert truncations.tolist() == [False, True, False]
        assert infos["_worker_restarted"].tolist() == [False, True, False]
    finally:
        envs.close()


@pytest.mark.parametrize("context", START_METHODS)
def test_restart_after_an_idle_kill_reports_at_the_next_step(context):
    envs = AsyncRetroVectorEnv(fns(make_airstriker, 2), on_worker_failure="restart", context=context)
    try:
        envs.reset(seed=0)
        os.kill(envs.processes[0].pid, signal.SIGKILL)
        envs.processes[0].join(5)
        with pytest.warns(UserWarning, match="restarting it"):
            _, _, _, truncations, infos = envs.step(np.zeros((2, 12), dtype=np.int8))
        assert truncations.tolist() == [True, False]
        assert infos["worker_restarted"][0]
    finally:
        envs.close()


@pytest.mark.parametrize("context", START_METHODS)
def test_restarts_give_up_after_max_restarts(tmp_path, context):
    envs = vector("step", str(tmp_path / "died"), context, on_worker_failure="restart", max_restarts=0)
    try:
        with pytest.raises(WorkerCrashedError, match="max_restarts"):
            drive(envs, "step")
        with pytest.raises(BrokenVectorEnvError):
            envs.reset()
    finally:
        envs.close()


@pytest.mark.parametrize("context", START_METHODS)
def test_bad_input_is_refused_before_it_reaches_a_worker(context):
    envs = AsyncRetroVectorEnv(fns(make_airstriker, 2), context=context, validate_actions=True)
    try:
        with pytest.raises(ResetNeeded, match=r"Call reset\(\) before step\(\): envs \[0, 1\]"):
            envs.step(np.zeros((2, 12), dtype=np.int8))
        with pytest.raises(ValueError, match="seed must be None or an int >= 0"):
            envs.reset(seed=-1)
        with pytest.raises(TypeError, match="seed must be None, an int"):
            envs.reset(seed=1.5)
        with pytest.raises(TypeError, match="options must be None or a dict"):
            envs.reset(options=["level"])
        envs.reset(seed=0)
        buttons = np.zeros((2, 12), dtype=np.int64)
        buttons[1, 4] = 2
        with pytest.raises(ValueError, match=r"action of env 1 is outside .* element \(4,\) is 2"):
            envs.step(buttons)
        envs.step(np.ones((2, 12), dtype=np.int8))  # still fine afterwards
    finally:
        envs.close()


def test_discrete_actions_out_of_range():
    import stable_retro

    envs = retrovec.make(num_envs=2, use_restricted_actions=stable_retro.Actions.DISCRETE)
    try:
        envs.reset(seed=0)
        n = envs.single_action_space.n
        with pytest.raises(ValueError, match=f"expected 0 to {n - 1}"):
            envs.step(np.array([0, n]))
        envs.step(np.array([0, n - 1]))
    finally:
        envs.close()


@pytest.mark.parametrize("context", START_METHODS)
def test_timeouts_on_the_real_emulator(context):
    env_fns = [partial(make_airstriker, max_episode_steps=1000), partial(make_slow_airstriker, 0.5)]
    envs = AsyncRetroVectorEnv(env_fns, context=context)
    try:
        envs.reset(seed=0)
        envs.step_async(np.zeros((2, 12), dtype=np.int8))
        with pytest.raises(WorkerTimeoutError, match=r"envs \[1\] had not answered"):
            envs.step_wait(timeout=0.05)
        observations, *_ = envs.step_wait()  # the same step, completed
        assert observations.shape == (2, 224, 320, 3)
        envs.step_async(np.zeros((2, 12), dtype=np.int8))
        with pytest.raises(WorkerTimeoutError):
            envs.step_wait(timeout=0.05)
    finally:
        started = time.monotonic()
        envs.close(timeout=2.0)  # a pending call and a slow worker: close still ends
        assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- shutdown

_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np, retrovec
    envs = retrovec.make(num_envs=2, context=sys.argv[1])
    envs.reset(seed=0)
    print(" ".join(str(p.pid) for p in envs.processes), flush=True)
    if sys.argv[2] == "exit-without-close":
        sys.exit(0)
    while True:
        envs.step(np.zeros((2, 12), dtype=np.int8))
    """
)






def _start_script(context: str, mode: str) -> tuple[subprocess.Popen, list[int]]:
    script = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, context, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT must reach the script as it would from a terminal (not inherited ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    pids = [int(pid) for pid in script.stdout.readline().split()]
    assert len(pids) == 2, script.stderr.read()
    return script, pids


@pytest.mark.parametrize("context", START_METHODS)
def test_parent_killed_with_sigkill_workers_exit_on_their_own(context):
    script, pids = _start_script(context, "loop")
    time.sleep(0.3)  # mid-loop
    script.kill()
    script.wait()
    assert wait_gone(pids, 3.0) == []


@pytest.mark.parametrize("context", START_METHODS)
def test_ctrl_c_in_the_middle_of_stepping_leaves_nothing(context):
    script, pids = _start_script(context, "loop")
    time.sleep(0.3)
    script.send_signal(signal.SIGINT)
    _, stderr = script.communicate(timeout=60)
    assert "KeyboardInterrupt" in stderr
    assert wait_gone(pids, 3.0) == []


@pytest.mark.parametrize("context", START_METHODS)
def test_interpreter_exit_without_close_leaves_nothing(context):
    script, pids = _start_script(context, "exit-without-close")
    assert script.wait(timeout=60) == 0
    assert wait_gone(pids, 3.0) == []


@pytest.mark.parametrize("context", START_METHODS)
def test_garbage_collection_closes_the_workers(context):
    envs = retrovec.make(num_envs=2, context=context)
    envs.reset(seed=0)
    pids = [process.pid for process in envs.processes]
    del envs
    gc.collect()
    assert wait_gone(pids, 3.0) == []


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("context", START_METHODS)
def test_many_open_close_cycles_do_not_grow(context):
    def cycle():
        envs = retrovec.make(num_envs=2, context=context)
        try:
            envs.reset(seed=0)
            envs.step(np.zeros((2, 12), dtype=np.int8))
        finally:
            envs.close()

    cycle()  # the first cycle may start a forkserver / resource tracker
    gc.collect()
    fds = _open_fds()
    children = len(psutil.Process().children(recursive=True))
    shm = set(os.listdir("/dev/shm"))
    for _ in range(8):
        cycle()
    gc.collect()
    assert _open_fds() == fds
    assert len(psutil.Process().children(recursive=True)) == children
    assert set(os.listdir("/dev/shm")) == shm
