"""Every test ends by checking that no worker process and no shared memory is left behind."""

from __future__ import annotations

import gc
import os
import time

import psutil
import pytest

#: Ray's own session processes (GCS, raylet, agents, idle workers): the ``ray_local``
#: fixture starts them once and stops them at the end of the session. An env's actor
#: (``ray::EnvActor``) is not among them: it must be gone after every test.
_RAY_SERVICES = ("site-packages/ray/", "ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _is_multiprocessing_helper(process: psutil.Process) -> bool:
    # The forkserver, resource tracker and retrovec's reaper outlive a test by design: they
    # serve later ones.
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return True
    if any(marker in command for marker in _RAY_SERVICES):
        return True
    return "forkserver" in command or "resource_tracker" in command or "retrovec-reaper" in command


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
    from retrovec.retro.roms import import_ale_roms

    import_ale_roms()


@pytest.fixture(scope="session")
def ray_session():
    """Ray, imported (tests that use Ray are skipped without it); stopped at session end."""
    ray = pytest.importorskip("ray")
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_local(ray_session):
    """A small local Ray instance, started once per session (again if a test stopped it).

    The actors import ``tests.envs``, so the repository goes on the workers' PYTHONPATH.
    """
    ray = ray_session
    if not ray.is_initialized():
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), saved) if p
        )
        try:
            ray.init(
                num_cpus=4,
                include_dashboard=False,
                object_store_memory=200 * 1024**2,
                log_to_driver=False,
                configure_logging=False,
            )
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
    return ray


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
