"""Helpers shared by the failure-path tests of both backends."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import numpy as np
import psutil

import retrovec

#: Where retrovec's code lives: a Ctrl-C is raised only while the main thread runs it.
RETROVEC_DIR = os.path.dirname(os.path.abspath(retrovec.__file__))


def close(envs) -> None:
    """Best-effort cleanup in ``finally`` blocks (the test has failed if it matters)."""
    if envs is not None and not getattr(envs, "closed", True):
        with contextlib.suppress(Exception):
            envs.close(timeout=1.0)


def actions(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


def names_env(error: BaseException, index: int) -> bool:
    text = " ".join([str(error), *getattr(error, "__notes__", [])])
    return getattr(error, "env_index", None) == index or f"env {index}" in text


class InterruptInsideRetrovec:
    """A SIGINT handler that raises KeyboardInterrupt only while the main thread runs
    retrovec's code (as Ctrl-C would), and ignores the signal anywhere else, so that a
    late signal can never escape into pytest. ``fired`` says whether it raised."""

    def __init__(self):
        self.fired = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info):
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame):
        while frame is not None:
            if frame.f_code.co_filename.startswith(RETROVEC_DIR):
                self.fired = True
                raise KeyboardInterrupt
            frame = frame.f_back


def alive(pids) -> list[int]:
    """The processes among ``pids`` that run (zombies count as gone)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def wait_gone(pids, seconds: float) -> list[int]:
    """Wait up to ``seconds`` for ``pids`` to end; returns those still running."""
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive(pids)


def assert_envpool_runs_from_reset(envs, seed: int, recv_timeout: float | None = None) -> None:
    """After ``async_reset(seed=seed)`` of 3 probe envs: every env's first row is its reset
    (reward 0), then its steps count up from t=0 (reward 1)."""
    seen_reset = set()
    steps = {i: 0 for i in range(3)}
    for _ in range(6):
        observations, rewards, _, _, infos = envs.recv(timeout=recv_timeout)
        for row, env in enumerate(infos["env_id"].tolist()):
            if env not in seen_reset:
                seen_reset.add(env)
                np.testing.assert_array_equal(observations[row], [seed + env, 0, 0])
                assert rewards[row] == 0.0
            else:
                steps[env] += 1
                np.testing.assert_array_equal(observations[row], [seed + env, 0, steps[env]])
                assert rewards[row] == 1.0
        envs.send(actions(len(infos["env_id"])), infos["env_id"])
    assert seen_reset == {0, 1, 2} and sum(steps.values()) > 0
