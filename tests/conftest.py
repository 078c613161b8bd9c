"""Every test ends by checking that no worker process and no shared memory is left behind."""

from __future__ import annotations

import gc
import os
import time

import psutil
import pytest


def _is_multiprocessing_helper(process: psutil.Process) -> bool:
    # The forkserver and resource tracker outlive a test by design: they serve later ones.
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return True
    return "forkserver" in command or "resource_tracker" in command


def _worker_children() -> set[int]:
    return {
        child.pid
        for child in psutil.Process().children(recursive=True)
        if not _is_multiprocessing_helper(child)
    }


def _arena_fds() -> list[str]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if "retrovec-arena" in target:
            found.append(target)
    return found


def _shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def pytest_sessionstart(session):
    """Make the Atari games playable: import ale-py's ROMs (idempotent, under a second)."""
    from retrovec.roms import import_ale_roms

    import_ale_roms()


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail the test if it leaves a child process, an arena fd or a /dev/shm segment."""
    children_before = _worker_children()
    shm_before = _shm_entries()
    yield
    deadline = time.monotonic() + 5.0
    leaked = _worker_children() - children_before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _worker_children() - children_before
    assert not leaked, f"child processes left behind: {sorted(leaked)}"
    gc.collect()  # views a test still held keep their mapping (and its fd) alive until now
    assert not _arena_fds(), f"arena file descriptors left open: {_arena_fds()}"
    assert not (_shm_entries() - shm_before), "shared-memory segments left in /dev/shm"
