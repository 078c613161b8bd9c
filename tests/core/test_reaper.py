"""retrovec.core.reaper: a parent's workers never outlive it, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from retrovec.core.reaper import reaper
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                for _ in range(3)]
    reaper.watch(children[0].pid)                                # starting
    reaper.watch(children[1].pid); reaper.serving(children[1].pid)  # serving
    reaper.watch(children[2].pid); reaper.forget(children[2].pid)   # stopped by us
    print(*(child.pid for child in children), flush=True)
    time.sleep(60)
    """
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_dead_parents_starting_workers_are_killed_serving_ones_get_their_grace(signum):
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    reapers = [child.pid for child in psutil.Process(parent.pid).children()
               if "retrovec-reaper" in " ".join(child.cmdline())]
    assert len(reapers) == 1
    try:
        parent.send_signal(signum)
        parent.wait(10)
        deadline = time.monotonic() + 1.0
        while not _gone(pids[0]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(pids[0]), "a worker that never served outlived its parent by 1 s"
        assert not _gone(pids[1]), "a serving worker was killed before its grace ended"
        assert not _gone(pids[2]), "a forgotten process was killed"
    finally:
        parent.stdout.close()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            deadline = time.monotonic() + 5
            while not _gone(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
    # With no serving worker left, the reaper exits by itself.
    deadline = time.monotonic() + 3
    while not _gone(reapers[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(reapers[0])


def test_forked_children_do_not_hold_the_reapers_pipe():
    from retrovec.core.reaper import reaper

    reaper.watch(os.getpid())
    reaper.forget(os.getpid())
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        targets = []
        for name in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{name}"))
            except OSError:
                pass
        os.write(write_end, "\n".join(targets).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_fds = pipe.read().splitlines()
    os.waitpid(child, 0)
    reaper_pipe = os.readlink(f"/proc/self/fd/{reaper._fd}")
    assert reaper_pipe not in child_fds
