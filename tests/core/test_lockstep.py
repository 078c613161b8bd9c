"""The lockstep fast path of ``AsyncRetroVectorEnv.step`` (retrovec/core/lockstep.py): the
same results as the general path, and every unusual event handed over to it with the slot
table as the general path would have left it (failures, timeouts, Ctrl-C, socket replies).
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError

from retrovec import AsyncRetroVectorEnv, WorkerCrashedError, WorkerTimeoutError
from retrovec.core.lockstep import LockstepMixin
from retrovec.core.slots import SlotState
from tests.envs import ToyError, probe_fns
from tests.failures import InterruptInsideRetrovec, actions, close

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class _HandOverSpy:
    """Counts the rounds the fast path handed over to the general path."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = LockstepMixin._hand_over

        def spy(envs, *args):
            self.count += 1
            return original(envs, *args)

        monkeypatch.setattr(LockstepMixin, "_hand_over", spy)


def _all_idle(envs) -> bool:
    return all(slot.state is SlotState.IDLE for slot in envs._slots)


def _expected(seeds, t) -> np.ndarray:
    return np.array([[seed, 0, t] for seed in seeds], dtype=np.float64)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_lockstep_steps_match_the_general_path_without_handing_over(context, monkeypatch):
    spy = _HandOverSpy(monkeypatch)
    fast = AsyncRetroVectorEnv(probe_fns(3), context=context)
    general = AsyncRetroVectorEnv(probe_fns(3), context=context)
    try:
        fast.reset(seed=5)
        general.reset(seed=5)
        for t in range(1, 30):
            result = fast.step(actions(3))
            general.step_async(actions(3))  # never the fast path
            reference = general.step_wait()
            np.testing.assert_array_equal(result[0], _expected([5, 6, 7], t))
            for got, want in zip(result[:4], reference[:4]):
                np.testing.assert_array_equal(got, want)
            assert result[4].keys() == reference[4].keys()
            for key in reference[4]:
                np.testing.assert_array_equal(result[4][key], reference[4][key])
            assert _all_idle(fast)
        # The first step after a reset sends its info schema on the socket: handed over.
        assert spy.count <= 1
    finally:
        close(fast)
        close(general)


@pytest.mark.timeout(60)
def test_socket_replies_every_step_are_handed_over_and_correct(monkeypatch):
    spy = _HandOverSpy(monkeypatch)
    envs = AsyncRetroVectorEnv(probe_fns(3, info_bytes=4), context="fork")
    try:
        envs.reset(seed=0)
        for t in range(1, 6):
            observations, rewards, _, _, infos = envs.step(actions(3))
            np.testing.assert_array_equal(observations, _expected([0, 1, 2], t))
            assert infos["t"].tolist() == [t] * 3
            assert list(infos["blob"]) == [bytes([t]) * 4] * 3
            assert rewards.tolist() == [1.0] * 3
        assert spy.count == 5  # an info that does not fit the columns comes on the socket
        assert _all_idle(envs)
    finally:
        close(envs)


@pytest.mark.timeout(60)
def test_a_timeout_names_the_late_env_and_leaves_the_step_pending():
    envs = AsyncRetroVectorEnv(probe_fns(3), context="fork", timeout=0.2)
    try:
        envs.reset(seed=0)
        envs.step(actions(3))
        envs.set_attr("delay", [0.0, 1.0, 0.0])
        with pytest.raises(WorkerTimeoutError) as caught:
            envs.step(actions(3))
        assert 1 in caught.value.env_indices  # (a loaded machine may be late with others)
        assert "step_wait" in str(caught.value) and "0.2 second" in str(caught.value)
        with pytest.raises(AlreadyPendingCallError):
            envs.step(actions(3))
    finally:
        close(envs)


@pytest.mark.timeout(60)
def test_after_a_timeout_step_wait_returns_the_step_and_lockstep_resumes(monkeypatch):
    spy = _HandOverSpy(monkeypatch)
    envs = AsyncRetroVectorEnv(probe_fns(3), context="fork", timeout=0.2)
    try:
        envs.reset(seed=0)
        envs.step(actions(3))
        envs.set_attr("delay", [0.0, 0.6, 0.0])
        with pytest.raises(WorkerTimeoutError):
            envs.step(actions(3))
        observations, *_ = envs.step_wait(timeout=5.0)
        np.testing.assert_array_equal(observations, _expected([0, 1, 2], 2))
        envs.set_attr("delay", 0.0)
        before = spy.count
        for t in range(3, 40):  # tokens left by the handed-over round must not stall these
            observations, *_ = envs.step(actions(3))
            np.testing.assert_array_equal(observations, _expected([0, 1, 2], t))
        assert spy.count == before
    finally:
        close(envs)


@pytest.mark.timeout(60)
def test_an_env_error_during_a_lockstep_step_is_raised_as_on_the_general_path():
    envs = AsyncRetroVectorEnv(probe_fns(3), context="fork")
    try:
        envs.reset(seed=0)
        envs.step(actions(3))
        envs.set_attr("fail_next_step", [False, True, False])
        with pytest.raises(ToyError) as caught:
            envs.step(actions(3))
        assert caught.value.env_index == 1
        assert _all_idle(envs)
        envs.reset(seed=0)
        observations, *_ = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([0, 1, 2], 1))
    finally:
        close(envs)


def _kill_later(pid: int, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (pid, signal.SIGKILL))
    timer.start()
    return timer


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
@pytest.mark.parametrize("on_worker_failure", ["raise", "restart"])
def test_a_worker_killed_during_a_lockstep_step(on_worker_failure, context):
    # copy=True (the default): the round's observations go to a lent bank, so the
    # restart path also brings the survivors' rows home to bank 0.
    envs = AsyncRetroVectorEnv(
        probe_fns(3), context=context, on_worker_failure=on_worker_failure
    )
    try:
        envs.reset(seed=0)
        envs.step(actions(3))
        envs.set_attr("delay", [0.0, 2.0, 0.0])
        timer = _kill_later(envs.processes[1].pid, 0.2)
        try:
            if on_worker_failure == "raise":
                with pytest.raises(WorkerCrashedError):
                    envs.step(actions(3))
                return
            observations, _, _, truncations, infos = envs.step(actions(3))
        finally:
            timer.cancel()
        assert truncations.tolist() == [False, True, False]
        assert infos["worker_restarted"].tolist() == [False, True, False]
        np.testing.assert_array_equal(observations[[0, 2]], _expected([0, 2], 2))
        envs.set_attr("delay", 0.0)
        observations, _, _, truncations, _ = envs.step(actions(3))
        assert not truncations.any()
        assert observations[:, 2].tolist() == [3, 0, 3]  # env 1: the next episode (NEXT_STEP)
    finally:
        close(envs)


@pytest.mark.timeout(60)
def test_ctrl_c_during_a_lockstep_step_leaves_it_pending_for_step_wait():
    envs = AsyncRetroVectorEnv(probe_fns(3), context="fork")
    try:
        envs.reset(seed=0)
        envs.step(actions(3))
        envs.set_attr("delay", [0.0, 0.5, 0.0])
        with InterruptInsideRetrovec() as handler:
            timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    envs.step(actions(3))
            finally:
                timer.join()
        assert handler.fired
        observations, rewards, *_ = envs.step_wait(timeout=5.0)
        np.testing.assert_array_equal(observations, _expected([0, 1, 2], 2))
        assert rewards.tolist() == [1.0] * 3
        envs.set_attr("delay", 0.0)
        observations, *_ = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([0, 1, 2], 3))
    finally:
        close(envs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_worker_0_dead_before_a_step_the_others_still_step(context, monkeypatch):
    # Worker 0 wakes the others each round; dead, the parent must wake them itself, and
    # its replacement must take over the relay for the rounds after.
    spy = _HandOverSpy(monkeypatch)
    envs = AsyncRetroVectorEnv(probe_fns(3), context=context, on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        envs.step(actions(3))
        process = envs.processes[0]
        dead_pid = process.pid
        process.kill()
        process.join(5)
        handed_over = spy.count
        observations, _, _, truncations, infos = envs.step(actions(3))
        assert spy.count == handed_over + 1
        assert truncations.tolist() == [True, False, False]
        assert infos["worker_restarted"].tolist() == [True, False, False]
        np.testing.assert_array_equal(observations[1:], _expected([1, 2], 2))
        for t in range(3, 8):  # the replacement relays: no more hand-overs after its schema
            observations, *_ = envs.step(actions(3))
            np.testing.assert_array_equal(observations[1:], _expected([1, 2], t))
        assert spy.count <= handed_over + 2
        assert envs.processes[0].pid != dead_pid
    finally:
        close(envs)
