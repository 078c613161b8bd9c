"""Behaviour retrovec adds on top of gymnasium's contract: worker errors with their
traceback, dead workers noticed, timeouts that leave a known state, no env in the parent,
parallel start-up, every start method, and actions checked before they reach a worker."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from functools import partial

import numpy as np
import psutil
import pytest
from gymnasium.error import AlreadyPendingCallError

from retrovec import (
    AsyncRetroVectorEnv,
    BrokenVectorEnvError,
    RemoteTraceback,
    SpacesMismatchError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from tests.envs import (
    CrashingEnv,
    FailingEnv,
    SlowEnv,
    TextEnv,
    ToyEnv,
    ToyError,
    fns,
    make_airstriker,
    make_toy,
)

START_METHODS = ["fork", "forkserver", "spawn"]


def _assert_remote(error: BaseException, index: int, method: str, line: str) -> None:
    assert getattr(error, "env_index", None) == index
    assert any(f"env {index} during `{method}`" in note for note in error.__notes__)
    cause = error.__cause__
    assert isinstance(cause, RemoteTraceback) and cause.env_index == index
    assert line in str(cause), str(cause)  # the worker's own source line
    assert "tests/envs.py" in str(cause)


@pytest.mark.parametrize("context", START_METHODS)
def test_exception_while_building_an_env(context):
    env_fns = [make_toy, partial(FailingEnv, "init"), make_toy]
    with pytest.raises(ToyError, match="boom in init") as caught:
        AsyncRetroVectorEnv(env_fns, context=context)
    _assert_remote(caught.value, 1, "__init__", 'raise ToyError("boom in init")')


def test_exception_in_reset_then_reset_recovers_is_refused_for_step():
    envs = AsyncRetroVectorEnv([make_toy, partial(FailingEnv, "reset")])
    try:
        with pytest.raises(ToyError, match="boom in reset") as caught:
            envs.reset(seed=0)
        _assert_remote(caught.value, 1, "reset_wait", 'raise ToyError("boom in reset")')
        with pytest.raises(BrokenVectorEnvError, match="env 1 raised an exception in `reset_wait`"):
            envs.step(envs.action_space.sample())
    finally:
        envs.close()


def test_exception_in_step_marks_the_env_broken_until_reset():
    envs = AsyncRetroVectorEnv([make_toy, partial(FailingEnv, "step", after=2), make_toy])
    try:
        envs.reset(seed=0)
        envs.step(envs.action_space.sample())
        envs.step(envs.action_space.sample())
        with pytest.raises(ToyError, match="boom in step") as caught:
            envs.step(envs.action_space.sample())
        _assert_remote(caught.value, 1, "step_wait", 'raise ToyError("boom in step")')
        with pytest.raises(BrokenVectorEnvError, match="Call reset"):
            envs.step(envs.action_space.sample())
        envs.set_attr("after", 100) if False else None
        observations, _ = envs.reset(seed=1)  # a full reset starts every env afresh
        assert observations["position"].shape == (3, 3)
    finally:
        envs.close()


def test_exception_in_call_keeps_the_env_usable():
    envs = AsyncRetroVectorEnv([make_toy, partial(FailingEnv, "never")])
    try:
        envs.reset(seed=0)
        with pytest.raises(AttributeError) as caught:
            envs.call("explode")  # env 0 has no such method; env 1 raises ToyError
        assert caught.value.env_index == 0
        assert any("env 1: ToyError: boom in call" in note for note in caught.value.__notes__)
        envs.step(envs.action_space.sample())  # still fine
        with pytest.raises(ValueError, match="use `step` directly"):
            envs.call("step", None)
    finally:
        envs.close()


def test_unpicklable_exception_arrives_as_runtime_error():
    class Local(Exception):  # defined in a function: cannot be pickled
        pass

    def build():
        raise Local("not picklable")

    with pytest.raises(RuntimeError, match="Local: not picklable") as caught:
        AsyncRetroVectorEnv([build], context="fork")
    assert "not picklable" in str(caught.value.__cause__)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSEGV", "exit"])
def test_worker_dying_in_step_raises_worker_crashed_error(how):
    envs = AsyncRetroVectorEnv([make_toy, partial(CrashingEnv, how)])
    try:
        envs.reset(seed=0)
        started = time.monotonic()
        with pytest.raises(WorkerCrashedError) as caught:
            envs.step(envs.action_space.sample())
        assert time.monotonic() - started < 5
        error = caught.value
        assert error.env_index == 1
        if how == "exit":
            assert error.exitcode == 3 and error.signal_name is None
        else:
            assert error.signal_name == how and error.exitcode == -getattr(signal, how)
        assert "env 1" in str(error) and "step_wait" in str(error)
        with pytest.raises(BrokenVectorEnvError, match="died"):
            envs.reset()
    finally:
        envs.close()


def test_worker_killed_while_idle_is_noticed_at_the_next_call():
    envs = AsyncRetroVectorEnv(fns(make_toy, 2))
    try:
        envs.reset(seed=0)
        os.kill(envs.processes[0].pid, signal.SIGKILL)
        envs.processes[0].join(5)
        with pytest.raises(WorkerCrashedError, match="SIGKILL"):
            envs.step(envs.action_space.sample())
    finally:
        envs.close()


def test_timeout_leaves_the_call_pending_and_the_late_reply_is_kept():
    envs = AsyncRetroVectorEnv([make_toy, partial(SlowEnv, 0.5)])
    try:
        envs.reset(seed=0)
        envs.step_async(envs.action_space.sample())
        with pytest.raises(WorkerTimeoutError, match=r"envs \[1\] had not answered") as caught:
            envs.step_wait(timeout=0.05)
        assert isinstance(caught.value, multiprocessing.TimeoutError)
        assert caught.value.env_indices == (1,)
        with pytest.raises(AlreadyPendingCallError):
            envs.step_async(envs.action_space.sample())
        _, _, _, _, infos = envs.step_wait()  # the same call, completed
        assert infos["t"].tolist() == [1, 1]
        _, _, _, _, infos = envs.step(envs.action_space.sample())
        assert infos["t"].tolist() == [2, 2]  # no late reply was taken for this one
    finally:
        envs.close()


def test_default_timeout_from_the_constructor():
    envs = AsyncRetroVectorEnv([partial(SlowEnv, 0.5)], timeout=0.05)
    try:
        envs.reset(seed=0)
        with pytest.raises(WorkerTimeoutError):
            envs.step(envs.action_space.sample())
    finally:
        envs.close()


def test_close_with_a_pending_call_and_a_hung_worker_does_not_hang():
    envs = AsyncRetroVectorEnv([make_toy, partial(SlowEnv, 30.0)])
    envs.reset(seed=0)
    envs.step_async(envs.action_space.sample())
    pids = [process.pid for process in envs.processes]
    started = time.monotonic()
    envs.close(timeout=0.2)
    assert time.monotonic() - started < 5
    assert not [pid for pid in pids if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_no_env_is_built_in_the_parent():
    parent = os.getpid()

    def build():
        assert os.getpid() != parent, "env built in the parent"
        return ToyEnv()

    envs = AsyncRetroVectorEnv([build, build], context="fork")
    envs.close()


def test_workers_build_their_envs_in_parallel():
    barrier = multiprocessing.get_context("fork").Barrier(3, timeout=10)

    def build():
        barrier.wait()  # only passes if all three envs are being built at once
        return ToyEnv()

    envs = AsyncRetroVectorEnv([build] * 3, context="fork")
    envs.close()


def test_differing_observation_spaces_say_what_gymnasium_says():
    class Wider(ToyEnv):
        def __init__(self):
            super().__init__()
            from gymnasium import spaces

            self.observation_space = spaces.Dict(
                {**self.observation_space.spaces, "extra": spaces.Discrete(2)}
            )

    with pytest.raises(SpacesMismatchError, match="observation spaces are not equivalent"):
        AsyncRetroVectorEnv([ToyEnv, Wider], context="fork")


def test_spaces_mismatch_of_actions_is_a_clear_error():
    class OtherActions(ToyEnv):
        def __init__(self):
            super().__init__()
            from gymnasium import spaces

            self.action_space = spaces.Discrete(2)

    with pytest.raises(SpacesMismatchError, match="action space of env 1"):
        AsyncRetroVectorEnv([ToyEnv, OtherActions], context="fork")


def test_bad_constructor_arguments_fail_before_any_worker_starts():
    with pytest.raises(ValueError, match="at least one"):
        AsyncRetroVectorEnv([])
    with pytest.raises(ValueError, match=r"env_fns\[1\] must be a callable"):
        AsyncRetroVectorEnv([make_toy, "CartPole-v1"])
    with pytest.raises(ValueError, match="Invalid `observation_mode`"):
        AsyncRetroVectorEnv([make_toy], observation_mode="other")
    with pytest.raises(ValueError, match="autoreset"):
        AsyncRetroVectorEnv([make_toy], autoreset_mode="sometimes")
    for spin in (-0.001, 2, "fast", True):
        with pytest.raises(ValueError, match=r"spin_seconds must be None or a number"):
            AsyncRetroVectorEnv([make_toy], spin_seconds=spin)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("spin_seconds", [None, 0.002, 0.0])
def test_idle_workers_and_parent_sleep_after_their_spin(spin_seconds):
    """Spinning fills only the gap between steps: an idle vector env uses no CPU."""
    psutil = pytest.importorskip("psutil")
    envs = AsyncRetroVectorEnv(fns(make_toy, 1), spin_seconds=spin_seconds)
    try:
        envs.reset(seed=0)
        for _ in range(50):
            envs.step(envs.action_space.sample())
        processes = [psutil.Process(p.pid) for p in envs.processes] + [psutil.Process()]
        before = [sum(p.cpu_times()[:2]) for p in processes]
        time.sleep(0.5)
        used = [sum(p.cpu_times()[:2]) - b for p, b in zip(processes, before)]
        # A busy-waiting process would use about 0.5 s here; a 2 ms spin, 2 ms.
        assert max(used) < 0.1, used
        assert len(envs.step(envs.action_space.sample())[1]) == 1  # still serving
    finally:
        envs.close()
    # The parent's spin is as short: waiting out a slow step takes next to no CPU.
    slow = AsyncRetroVectorEnv([partial(SlowEnv, 0.5)], spin_seconds=spin_seconds)
    try:
        slow.reset(seed=0)
        started = time.process_time()
        slow.step(slow.action_space.sample())
        assert time.process_time() - started < 0.1
    finally:
        slow.close()


def test_actions_of_the_wrong_shape_never_reach_a_worker_and_dtypes_pass_as_in_gymnasium():
    envs = AsyncRetroVectorEnv(fns(make_airstriker, 2))
    try:
        envs.reset(seed=0)
        with pytest.raises(ValueError, match=r"Expected 2 actions \(one per env\), got 3"):
            envs.step(np.zeros((3, 12), dtype=np.int8))
        with pytest.raises(TypeError, match="Expected a batch of 2 actions"):
            envs.step(np.int8(0))  # a scalar for a vector env, as gymnasium's iterate says
        observations, *_ = envs.step(np.zeros((2, 12), dtype=np.float32))  # the env decides
        assert observations.shape == (2, 224, 320, 3)
        observations, *_ = envs.step(np.zeros((2, 12), dtype=np.int64))
        observations, *_ = envs.step([[0] * 12, [1] * 12])  # nested lists, as gymnasium allows
    finally:
        envs.close()
    checked = AsyncRetroVectorEnv(fns(make_airstriker, 2), validate_actions=True)
    try:
        checked.reset(seed=0)
        with pytest.raises(ValueError, match=r"Expected actions of shape \(2, 12\)"):
            checked.step(np.zeros((3, 12), dtype=np.int8))
        with pytest.raises(ValueError, match="0.5"):
            checked.step(np.full((2, 12), 0.5, dtype=np.float32))
        checked.step(np.ones((2, 12), dtype=np.float32))  # a Bernoulli sample: exactly 0/1
    finally:
        checked.close()


def test_text_observations_travel_through_the_pipes_when_shared_memory_is_on():
    envs = AsyncRetroVectorEnv([TextEnv, TextEnv], shared_memory=True)
    try:
        observations, _ = envs.reset()
        assert observations == ("start", "start")
        observations, *_ = envs.step(np.array([0, 1]))
        assert observations == ("act0", "act1")
    finally:
        envs.close()


@pytest.mark.parametrize("context", START_METHODS)
def test_airstriker_under_every_start_method(context):
    envs = AsyncRetroVectorEnv(fns(make_airstriker, 2, render_mode="rgb_array"), context=context)
    try:
        observations, _ = envs.reset(seed=0)
        assert observations.shape == (2, 224, 320, 3)
        for _ in range(5):
            observations, rewards, *_ = envs.step(envs.action_space.sample())
        frames = envs.render()
        assert isinstance(frames, tuple) and len(frames) == 2
        np.testing.assert_array_equal(frames[0], observations[0])
        assert envs.get_attr("render_mode") == ("rgb_array", "rgb_array")
    finally:
        envs.close()


def test_copy_false_views_stay_valid_after_close():
    envs = AsyncRetroVectorEnv(fns(make_toy, 2), copy=False)
    observations, _ = envs.reset(seed=0)
    kept = observations["position"].copy()
    envs.close()
    np.testing.assert_array_equal(observations["position"], kept)  # no use-after-unmap
    del observations


def test_with_block_closes_the_workers_also_after_an_exception():
    with AsyncRetroVectorEnv(fns(make_toy, 2)) as envs:
        envs.reset(seed=0)
    assert envs.closed
    with pytest.raises(ToyError), AsyncRetroVectorEnv(fns(make_toy, 2)) as envs:
        raise ToyError("in the loop")
    assert envs.closed
