"""Helpers shared by the failure-path tests of both backends."""

from __future__ import annotations

import contextlib
import os
import signal

import numpy as np

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
