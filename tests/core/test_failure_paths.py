"""Regression tests for failure paths of the process backend: dead workers, restarts,
timeouts, interrupts, unpicklable data and start-up failures, on small fake envs.

Every test uses the public API only (``envs.processes`` gives the workers' pids) and
runs under every start method unless the bug is tied to one.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import multiprocessing
import multiprocessing.process
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from functools import partial

import numpy as np
import psutil
import pytest

from retrovec import AsyncRetroVectorEnv, WorkerCrashedError, WorkerTimeoutError
from retrovec.errors import RetrovecError
from tests.conftest import _is_multiprocessing_helper
from tests.envs import (
    BigSpaceEnv,
    ProbeEnv,
    ToyError,
    UnpicklableEnvFn,
    make_probe_counting_builds,
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

START_METHODS = ["fork", "forkserver", "spawn"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Restarts warn ("... restarting it"); that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --------------------------------------------------------------------------- helpers


def _is_helper(process: psutil.Process) -> bool:
    """multiprocessing's fork server and resource tracker, and retrovec's reaper, outlive a
    test by design."""
    return _is_multiprocessing_helper(process)


def _workers_of(pid: int) -> set[int]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    return {child.pid for child in children if not _is_helper(child)}






def _kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def reaper():
    """Fail a test that leaves worker processes behind, and kill them so that they do not
    disturb the next tests (conftest's own check would only report them)."""
    before = _workers_of(os.getpid())
    yield
    left = set(wait_gone(_workers_of(os.getpid()) - before, 5.0))
    if left:
        _kill_all(left)
        wait_gone(left, 5.0)
        pytest.fail(f"worker processes left behind (killed now): {sorted(left)}")




def _kill_worker(envs, index: int) -> None:
    """SIGKILL env ``index``'s worker and wait until it is dead (the vector env is idle)."""
    process = envs.processes[index]
    os.kill(process.pid, signal.SIGKILL)
    process.join(5)
    assert not process.is_alive()




def _expected(seeds, level: int, t) -> np.ndarray:
    """ProbeEnv observations: ``[seed, level, t]`` per env."""
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (len(seeds),))
    return np.array([[seed, level, step] for seed, step in zip(seeds, t)], dtype=np.float64)




def _wait_for_file(path, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.001)




class _Watchdog:
    """Kills the vector env's workers if the block has not finished within ``seconds``: a
    parent blocked reading a pipe then gets EOF, instead of hanging the test session."""

    def __init__(self, envs, seconds: float):
        self.pids = [process.pid for process in envs.processes]
        self.timer = threading.Timer(seconds, _kill_all, (self.pids,))

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc_info):
        self.timer.cancel()


# --------------------------------------------------------------------------- 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("victim", [0, 1])
def test_after_a_restart_under_fork_waiting_does_not_spin_and_timeouts_hold(victim):
    """After a restart under fork, the other workers still hold the dead worker's pipe and
    sentinel: the parent must neither busy-loop on them nor mistake them for replies."""
    envs = AsyncRetroVectorEnv(probe_fns(3), context="fork", on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        _kill_worker(envs, victim)
        _, _, _, truncations, _ = envs.step(actions(3))
        assert truncations.tolist() == [i == victim for i in range(3)]
        envs.reset(seed=10)

        # The restarted env answers at once, the others take 0.5 s.
        envs.set_attr("delay", [0.0 if i == victim else 0.5 for i in range(3)])
        envs.step_async(actions(3))
        cpu, wall = time.process_time(), time.monotonic()
        envs.step_wait()
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        assert wall >= 0.45
        assert cpu < 0.1, f"the parent used {cpu:.2f} s of CPU waiting {wall:.2f} s"

        # Every env takes 0.5 s: a 0.1 s timeout is a 0.1 s timeout.
        envs.set_attr("delay", 0.5)
        envs.step_async(actions(3))
        started = time.monotonic()
        with pytest.raises(WorkerTimeoutError):
            envs.step_wait(timeout=0.1)
        assert time.monotonic() - started < 0.35
        observations, rewards, terminations, truncations, infos = envs.step_wait()
        np.testing.assert_array_equal(observations, _expected([10, 11, 12], 0, 2))
        assert rewards.tolist() == [1.0] * 3
        assert not terminations.any() and not truncations.any()
        assert infos["t"].tolist() == [2, 2, 2]
    finally:
        close(envs)


# --------------------------------------------------------------------------- 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_worker_dying_in_reset_is_replaced_and_reset_with_the_same_seed_and_options(
    tmp_path, context
):
    env_fns = probe_fns(3, die_on_seed=11, die_marker=str(tmp_path / "died"))
    envs = AsyncRetroVectorEnv(env_fns, context=context, on_worker_failure="restart")
    try:
        observations, infos = envs.reset(seed=10, options={"level": 3})  # env 1 gets 11
        assert (tmp_path / "died").exists()  # it did die
        assert envs.restart_counts.tolist() == [0, 1, 0]
        np.testing.assert_array_equal(observations, _expected([10, 11, 12], 3, 0))
        assert infos["reset_seed"].tolist() == [10, 11, 12]
        assert infos["_worker_restarted"].tolist() == [False, True, False]
        assert infos["worker_restarted"][1]

        # The next step is an ordinary step for every env (not a reset step).
        observations, rewards, terminations, truncations, infos = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([10, 11, 12], 3, 1))
        assert rewards.tolist() == [1.0, 1.0, 1.0]
        assert not terminations.any() and not truncations.any()
        assert infos["t"].tolist() == [1, 1, 1]
        assert not infos.get("_worker_restarted", np.zeros(3, bool)).any()
    finally:
        close(envs)


# --------------------------------------------------------------------------- 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_masked_reset_with_a_dead_worker_outside_the_mask_keeps_its_episode_end(context):
    envs = AsyncRetroVectorEnv(probe_fns(3), context=context, on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        envs.step(actions(3))
        _kill_worker(envs, 2)
        envs.reset(options={"reset_mask": np.array([True, True, False])})
        _, _, terminations, truncations, infos = envs.step(actions(3))
        assert truncations.tolist() == [False, False, True]
        assert not terminations.any()
        assert infos["_worker_restarted"].tolist() == [False, False, True]
        assert infos["worker_restarted"][2]
        assert envs.restart_counts.tolist() == [0, 0, 1]
    finally:
        close(envs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_masked_reset_with_a_dead_worker_outside_the_mask_raises_in_raise_mode(context):
    envs = AsyncRetroVectorEnv(probe_fns(3), context=context)
    try:
        envs.reset(seed=0)
        _kill_worker(envs, 2)
        with pytest.raises(WorkerCrashedError) as caught:
            envs.reset(options={"reset_mask": np.array([True, True, False])})
        assert caught.value.env_index == 2
    finally:
        close(envs)


# --------------------------------------------------------------------------- 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
@pytest.mark.parametrize("then", ["reset", "async_reset"])
def test_envpool_recovers_with_a_reset_after_an_env_raised_in_step(context, then):
    # batch_size=num_envs: every recv() waits for env 1 too (with fewer, the scheduling
    # may leave env 1 running for a while). Envs 0 and 2 take 0.1 s per step, so they are
    # still running when env 1's exception comes back.
    envs = AsyncRetroVectorEnv(probe_fns(3), context=context, batch_size=3)
    try:
        envs.set_attr("fail_next_step", [False, True, False])
        envs.set_attr("delay", [0.1, 0.0, 0.1])
        envs.async_reset(seed=0)
        caught = None
        for _ in range(3):
            try:
                _, _, _, _, infos = envs.recv()
            except Exception as error:  # noqa: BLE001 - checked below
                caught = error
                break
            envs.send(actions(len(infos["env_id"])), infos["env_id"])
        assert caught is not None, "env 1's step never raised through recv()"
        assert isinstance(caught, ToyError), repr(caught)
        assert names_env(caught, 1)

        if then == "reset":
            observations, infos = envs.reset(seed=5)
            np.testing.assert_array_equal(observations, _expected([5, 6, 7], 0, 0))
            observations, rewards, _, truncations, _ = envs.step(actions(3))
            np.testing.assert_array_equal(observations, _expected([5, 6, 7], 0, 1))
            assert rewards.tolist() == [1.0] * 3 and not truncations.any()
        else:
            envs.async_reset(seed=5)
        # EnvPool-style use works (again): every env resets, then steps from t=0.
        # (Envs 0 and 2 still take 0.1 s per step.)
        if then == "reset":
            envs.async_reset(seed=5)
        assert_envpool_runs_from_reset(envs, 5)
    finally:
        close(envs)


# --------------------------------------------------------------------------- 5


def _assert_usable(envs, n: int, seed: int) -> None:
    assert envs.get_attr("tag") == tuple(range(n))
    assert envs.call("echo", 7) == (7,) * n
    observations, _ = envs.reset(seed=seed)
    np.testing.assert_array_equal(observations, _expected(range(seed, seed + n), 0, 0))
    observations, rewards, _, _, _ = envs.step(actions(n))
    np.testing.assert_array_equal(observations, _expected(range(seed, seed + n), 0, 1))
    assert rewards.tolist() == [1.0] * n


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_call_with_an_unpicklable_argument_raises_and_leaves_the_env_usable(context):
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context)
    try:
        envs.reset(seed=0)
        with pytest.raises((TypeError, pickle.PickleError)):
            envs.call("echo", threading.Lock())
        _assert_usable(envs, 2, seed=3)
    finally:
        close(envs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_set_attr_with_an_unpicklable_value_raises_and_leaves_the_env_usable(context):
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context)
    try:
        envs.reset(seed=0)
        with pytest.raises((TypeError, pickle.PickleError)):
            envs.set_attr("delay", [0.0, threading.Lock()])
        _assert_usable(envs, 2, seed=3)
        envs.set_attr("delay", [0.0, 0.0])
    finally:
        close(envs)


# --------------------------------------------------------------------------- 6


@pytest.mark.timeout(120)
@pytest.mark.parametrize("context", START_METHODS)
def test_a_reply_the_parent_cannot_unpickle_names_the_env_and_leaves_it_usable(context):
    envs = AsyncRetroVectorEnv(probe_fns(3), context=context)
    try:
        envs.reset(seed=0)
        with pytest.raises(Exception) as caught:
            envs.call("reply_for", 1)
        assert names_env(caught.value, 1), f"the error does not name env 1: {caught.value!r}"
        assert envs.call("reply_for", 99) == (0, 1, 2)
        observations, rewards, _, _, _ = envs.step(actions(3))
        np.testing.assert_array_equal(observations, _expected([0, 1, 2], 0, 1))
        assert rewards.tolist() == [1.0] * 3
        started = time.monotonic()
        envs.close()
        assert time.monotonic() - started < 5
    finally:
        close(envs)


# --------------------------------------------------------------------------- 7


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_a_replacement_worker_that_cannot_start_raises_and_close_still_works(context, monkeypatch):
    before = _workers_of(os.getpid())
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context, on_worker_failure="restart")
    pids = [process.pid for process in envs.processes]
    try:
        envs.reset(seed=0)
        _kill_worker(envs, 1)

        def no_memory(*args, **kwargs):
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

        monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", no_memory)
        monkeypatch.setattr(os, "fork", no_memory)
        with pytest.raises((RetrovecError, OSError)) as caught:
            envs.step(actions(2))
        assert not isinstance(caught.value, ValueError)
        envs.close()  # no ValueError ("process object is closed")
        monkeypatch.undo()
        assert envs.closed
        assert wait_gone(pids, 2.0) == []
        assert wait_gone(_workers_of(os.getpid()) - before, 5.0) == []
    finally:
        monkeypatch.undo()
        close(envs)


# --------------------------------------------------------------------------- 8


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["forkserver", "spawn"])  # fork pickles no env_fn
def test_start_up_failure_after_some_workers_started_closes_their_envs(tmp_path, context):
    marker = str(tmp_path / "closed")
    env_fns = [
        partial(ProbeEnv, tag=0, close_marker=marker),
        partial(ProbeEnv, tag=1, close_marker=marker),
        UnpicklableEnvFn(tag=2, close_marker=marker),
        partial(ProbeEnv, tag=3, close_marker=marker),
    ]
    before = _workers_of(os.getpid())
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        AsyncRetroVectorEnv(env_fns, context=context)
    elapsed = time.monotonic() - started
    chain, error = [], caught.value
    while error is not None and len(chain) < 10:
        chain.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    assert any("cannot be pickled" in text for text in chain), chain
    assert wait_gone(_workers_of(os.getpid()) - before, 5.0) == []
    assert elapsed < 3.0, f"the failed start-up took {elapsed:.1f} s"
    closed = sorted(os.listdir(tmp_path))
    assert closed == ["closed.0", "closed.1"], f"envs closed: {closed}"


# --------------------------------------------------------------------------- 9


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_idle_kill_then_reset_reports_the_restart(context):
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context, on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        _kill_worker(envs, 1)
        observations, infos = envs.reset(seed=5)
        np.testing.assert_array_equal(observations, _expected([5, 6], 0, 0))
        assert infos["_worker_restarted"].tolist() == [False, True]
        assert infos["worker_restarted"][1]
        assert envs.restart_counts.tolist() == [0, 1]
    finally:
        close(envs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_idle_kill_then_call_raises_restarted_and_the_env_stays_usable(context):
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context, on_worker_failure="restart")
    try:
        envs.reset(seed=0)
        _kill_worker(envs, 1)
        with pytest.raises(WorkerCrashedError) as caught:
            envs.call("echo", 1)
        assert caught.value.restarted and caught.value.env_index == 1
        assert envs.restart_counts.tolist() == [0, 1]
        assert envs.get_attr("tag") == (0, 1)
        _, _, _, truncations, infos = envs.step(actions(2))
        assert truncations.tolist() == [False, True]
        assert infos["_worker_restarted"].tolist() == [False, True]
    finally:
        close(envs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_idle_kill_then_call_raises_in_raise_mode(context):
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context)
    try:
        envs.reset(seed=0)
        _kill_worker(envs, 1)
        with pytest.raises(WorkerCrashedError) as caught:
            envs.call("echo", 1)
        assert caught.value.env_index == 1 and not caught.value.restarted
    finally:
        close(envs)


# --------------------------------------------------------------------------- 10


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_async_reset_refuses_a_reset_mask(context):
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context, batch_size=1)
    try:
        with pytest.raises(ValueError, match="reset_mask"):
            envs.async_reset(seed=0, options={"reset_mask": np.array([True, False])})
        observations, _ = envs.reset(seed=0)  # nothing was left running
        np.testing.assert_array_equal(observations, _expected([0, 1], 0, 0))
    finally:
        close(envs)


# --------------------------------------------------------------------------- 11


def _fd_identities(pid: int) -> dict[tuple[int, int], str]:
    """``(st_dev, st_ino) -> link target`` for the process's sockets, pipes and arenas."""
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{name}"
        try:
            target = os.readlink(path)
            stat = os.stat(path)
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")) or "retrovec-arena" in target:
            found[(stat.st_dev, stat.st_ino)] = target
    return found


@pytest.mark.timeout(60)
def test_fork_workers_do_not_inherit_another_vector_envs_fds():
    first = second = None
    try:
        before = _fd_identities(os.getpid())
        first = AsyncRetroVectorEnv(probe_fns(2), context="fork")
        first.reset(seed=0)
        firsts = set(_fd_identities(os.getpid())) - set(before)
        assert any("retrovec-arena" in target for target in _fd_identities(os.getpid()).values())

        second = AsyncRetroVectorEnv(probe_fns(2), context="fork")
        second.reset(seed=0)

        def check(when: str) -> None:
            for index, process in enumerate(second.processes):
                fds = _fd_identities(process.pid)
                arenas = [target for target in fds.values() if "retrovec-arena" in target]
                assert len(arenas) == 1, f"{when}: worker {index} holds arenas {arenas}"
                inherited = sorted(fds[key] for key in set(fds) & firsts)
                assert not inherited, f"{when}: worker {index} holds the first env's {inherited}"

        check("while the first vector env is open")
        first.close()
        check("after the first vector env closed")
    finally:
        close(first)
        close(second)


# --------------------------------------------------------------------------- 12

_START_UP_LOOP = textwrap.dedent(
    """
    import sys
    from retrovec import AsyncRetroVectorEnv
    from tests.envs import BigSpaceEnv
    print("ready", flush=True)
    while True:
        AsyncRetroVectorEnv([BigSpaceEnv] * 4, context=sys.argv[1]).close()
    """
)

#: Trials per start method and signal (the lead runs more: RETROVEC_KILL_TRIALS=100).
KILL_TRIALS = int(os.environ.get("RETROVEC_KILL_TRIALS", "10"))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("context", START_METHODS)
@pytest.mark.parametrize(
    "signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_parent_killed_during_start_up_leaves_no_worker(context, signum, tmp_path):
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, environment.get("PYTHONPATH")) if p
    )
    survivors = {}
    rng = random.Random(int(signum) * 1000 + START_METHODS.index(context))
    for trial in range(KILL_TRIALS):
        workers: set[int] = set()
        with open(tmp_path / f"stderr-{trial}", "w") as stderr:
            script = subprocess.Popen(
                [sys.executable, "-c", _START_UP_LOOP, context],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=REPO,
                env=environment,
                # SIGINT must reach the script as from a terminal (not inherited ignored)
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
            )
        try:
            if script.stdout.readline().strip() != "ready":
                script.wait(timeout=60)
                pytest.fail((tmp_path / f"stderr-{trial}").read_text())
            time.sleep(rng.uniform(0.0, 1.0))
            workers = _workers_of(script.pid)
            script.send_signal(signum)
            try:
                script.wait(timeout=20)
            except subprocess.TimeoutExpired:
                survivors[trial] = "the parent itself did not exit within 20 s"
                continue
            left = wait_gone(workers, 1.0)
            if left:
                survivors[trial] = left
        finally:
            script.stdout.close()
            if script.poll() is None:
                script.kill()
                script.wait()
            left = alive(workers)
            _kill_all(left)
            wait_gone(left, 5.0)
    assert not survivors, f"workers alive 1 s after their parent ended, by trial: {survivors}"


# --------------------------------------------------------------------------- 13


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("context", START_METHODS)
def test_ctrl_c_during_construction_raises_keyboard_interrupt_and_leaves_nothing(context):
    env_fns = [BigSpaceEnv] * 4
    durations = []
    for _ in range(3):  # the first may start a fork server
        started = time.monotonic()
        AsyncRetroVectorEnv(env_fns, context=context).close()
        durations.append(time.monotonic() - started)
    duration = min(durations)
    before = _workers_of(os.getpid())
    rng = random.Random(START_METHODS.index(context))
    interrupted = 0
    for trial in range(20):
        outcome = "built"
        # A parent that hangs is freed by killing the new workers (it then sees them die).
        watchdog = threading.Timer(
            duration + 15, lambda: _kill_all(_workers_of(os.getpid()) - before)
        )
        with InterruptInsideRetrovec():
            timer = threading.Timer(
                rng.uniform(0.0, duration), os.kill, (os.getpid(), signal.SIGINT)
            )
            envs = None
            started = time.monotonic()
            watchdog.start()
            timer.start()
            try:
                envs = AsyncRetroVectorEnv(env_fns, context=context)
            except KeyboardInterrupt:
                outcome = "interrupted"
            except Exception as error:  # noqa: BLE001 - the point of the test
                outcome = repr(error)
            finally:
                timer.join()
        elapsed = time.monotonic() - started
        watchdog.cancel()
        if envs is not None:
            envs.close()
        left = wait_gone(_workers_of(os.getpid()) - before, 3.0)
        _kill_all(left)
        # "Nothing hangs": a few seconds to stop workers caught mid-reply are tolerated.
        assert elapsed < duration + 3, f"trial {trial}: took {elapsed:.1f} s ({outcome})"
        assert outcome in ("built", "interrupted"), f"trial {trial}: {outcome}"
        assert not left, f"trial {trial}: workers left after the interrupt: {left}"
        interrupted += outcome == "interrupted"
    assert interrupted, "no trial was interrupted inside the constructor"


# --------------------------------------------------------------------------- 14


@pytest.mark.timeout(120)
@pytest.mark.parametrize("context", START_METHODS)
def test_worker_stalled_halfway_through_a_large_reply_times_out_and_completes(context, tmp_path):
    size = 30_000_000
    marker = str(tmp_path / "stepped")
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context)
    pid = None
    try:
        envs.reset(seed=0)
        envs.set_attr("info_bytes", [0, size])
        envs.set_attr("step_marker", [None, marker])
        pid = envs.processes[1].pid
        with _Watchdog(envs, 30):
            envs.step_async(actions(2))
            _wait_for_file(marker)
            time.sleep(0.2)  # the worker is sending: the socket buffer is full, it blocks
            os.kill(pid, signal.SIGSTOP)
            # A parent that blocks reading the rest would be freed by this SIGCONT only.
            resume = threading.Timer(5.0, os.kill, (pid, signal.SIGCONT))
            resume.start()
            try:
                started = time.monotonic()
                with pytest.raises(WorkerTimeoutError):
                    envs.step_wait(timeout=2)
                elapsed = time.monotonic() - started
            finally:
                resume.cancel()
                os.kill(pid, signal.SIGCONT)
            assert 1.9 <= elapsed < 2.5, f"step_wait(timeout=2) took {elapsed:.2f} s"

            observations, rewards, terminations, truncations, infos = envs.step_wait()
            np.testing.assert_array_equal(observations, _expected([0, 1], 0, 1))
            assert rewards.tolist() == [1.0, 1.0]
            assert not terminations.any() and not truncations.any()
            assert infos["t"].tolist() == [1, 1]
            assert infos["_blob"].tolist() == [False, True]
            assert infos["blob"][1] == bytes([1]) * size

            envs.set_attr("info_bytes", 0)
            observations, *_ = envs.step(actions(2))
            np.testing.assert_array_equal(observations, _expected([0, 1], 0, 2))
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        close(envs)


# --------------------------------------------------------------------------- 15


@pytest.mark.timeout(180)
@pytest.mark.parametrize("context", START_METHODS)
def test_keyboard_interrupt_while_reading_a_large_reply_loses_nothing(context, tmp_path):
    size = 20_000_000
    marker = tmp_path / "stepped"
    envs = AsyncRetroVectorEnv(probe_fns(2), context=context)
    rng = random.Random(START_METHODS.index(context))
    t = 0

    def check(result) -> None:
        observations, rewards, terminations, truncations, infos = result
        np.testing.assert_array_equal(observations, _expected([0, 1], 0, t))
        assert rewards.tolist() == [1.0, 1.0]
        assert not terminations.any() and not truncations.any()
        assert infos["t"].tolist() == [t, t]
        assert infos["blob"][1] == bytes([t % 256]) * size
        assert all(process.is_alive() for process in envs.processes)

    try:
        envs.reset(seed=0)
        envs.set_attr("info_bytes", [0, size])
        envs.set_attr("step_marker", [None, str(marker)])
        pid = envs.processes[1].pid
        with _Watchdog(envs, 30):
            # How long the parent takes to read the reply, once the worker has stepped.
            reading = []
            for _ in range(2):
                marker.unlink(missing_ok=True)
                envs.step_async(actions(2))
                _wait_for_file(marker)
                started = time.monotonic()
                result = envs.step_wait()
                reading.append(time.monotonic() - started)
                t += 1
                check(result)
            window = max(reading)

            # Certainly mid-read: the worker stops halfway through its reply while the
            # parent reads it, and Ctrl-C comes then.
            for _ in range(3):
                marker.unlink(missing_ok=True)
                envs.step_async(actions(2))
                _wait_for_file(marker)
                time.sleep(0.2)  # the worker blocks in its send: the socket buffer is full
                os.kill(pid, signal.SIGSTOP)
                timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
                with InterruptInsideRetrovec() as handler:
                    timer.start()
                    try:
                        envs.step_wait()
                    except KeyboardInterrupt:
                        pass
                    finally:
                        timer.join()
                        os.kill(pid, signal.SIGCONT)
                assert handler.fired, "step_wait() returned with its worker stopped"
                t += 1
                check(envs.step_wait())

            # Ctrl-C at a random moment of step() while the parent reads the reply.
            for _ in range(6):
                marker.unlink(missing_ok=True)

                def interrupt():
                    _wait_for_file(marker)
                    time.sleep(rng.uniform(0.0, window))
                    os.kill(os.getpid(), signal.SIGINT)

                thread = threading.Thread(target=interrupt)
                result = None
                with InterruptInsideRetrovec() as handler:
                    thread.start()
                    try:
                        result = envs.step(actions(2))
                    except KeyboardInterrupt:
                        pass
                    finally:
                        thread.join()
                t += 1
                if handler.fired:
                    assert result is None
                    result = envs.step_wait()
                check(result)
    finally:
        with contextlib.suppress(Exception):
            os.kill(envs.processes[1].pid, signal.SIGCONT)
        close(envs)


# --------------------------------------------------------------------------- 16


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", START_METHODS)
def test_a_replacement_that_dies_while_building_is_retried(context, tmp_path):
    counter = str(tmp_path / "builds")
    env_fns = [
        partial(ProbeEnv, tag=0),
        # builds: 1 at start-up, 2 for the first restart, 3 dies, 4 is the retry
        partial(make_probe_counting_builds, counter, die_on=3, tag=1),
    ]
    envs = AsyncRetroVectorEnv(
        env_fns, context=context, on_worker_failure="restart", max_restarts=5
    )
    try:
        envs.reset(seed=0)
        _kill_worker(envs, 1)
        _, _, _, truncations, _ = envs.step(actions(2))
        assert truncations.tolist() == [False, True]
        assert envs.restart_counts.tolist() == [0, 1]
        envs.step(actions(2))  # env 1's reset step

        _kill_worker(envs, 1)
        observations, rewards, _, truncations, infos = envs.step(actions(2))
        assert truncations.tolist() == [False, True]
        assert infos["_worker_restarted"].tolist() == [False, True]
        with open(counter) as file:
            assert file.read() == "4"
        assert envs.restart_counts.tolist() == [0, 3]
        assert envs.get_attr("tag") == (0, 1)
        observations, _ = envs.reset(seed=4)
        np.testing.assert_array_equal(observations, _expected([4, 5], 0, 0))
        observations, rewards, *_ = envs.step(actions(2))
        assert rewards.tolist() == [1.0, 1.0]
    finally:
        close(envs)


# --------------------------------------------------------------------------- 17


def _rss() -> int:
    return psutil.Process().memory_info().rss


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("context", START_METHODS)
@pytest.mark.parametrize("on_worker_failure", ["raise", "restart"])
def test_parent_memory_does_not_grow_on_the_crash_path(context, on_worker_failure):
    """Build, kill a worker, step, close, many times: the parent's memory stays flat
    without any help from the garbage collector (no reference cycle keeps a closed vector
    env alive). Each vector env holds ~0.8 MB of space bounds and an arena of 0.4 MB, so
    one that lingers shows. 12 cycles under spawn and forkserver, to save time."""
    cycles = 40 if context == "fork" else 12
    env_fns = [partial(BigSpaceEnv, shape=(256, 256, 3))] * 2

    def cycle():
        envs = AsyncRetroVectorEnv(env_fns, context=context, on_worker_failure=on_worker_failure)
        try:
            envs.reset(seed=0)
            _kill_worker(envs, 1)
            try:
                envs.step(actions(2))
            except WorkerCrashedError:
                assert on_worker_failure == "raise"
        finally:
            envs.close()

    for _ in range(3):
        cycle()
    gc.collect()
    baseline = peak = _rss()
    for _ in range(cycles):
        cycle()
        peak = max(peak, _rss())
    growth = (peak - baseline) / 2**20
    assert growth < 20, f"the parent grew by {growth:.0f} MiB in {cycles} cycles"
