"""Workers never outlive their parent, even while they are still starting.

A worker that serves exits by itself when its parent dies: its next write fails (no other
process holds the parent's end of its socket) and it checks every 0.5 s while idle, closing
its env first. A worker that is still starting runs none of that code yet: under spawn and
forkserver it first imports retrovec and its dependencies, a second or more on a busy
machine, and a parent killed meanwhile (SIGKILL, SIGTERM, a crash) would leave it behind.

The reaper covers that window: one small process per parent, started on first use (in its
own session, so a Ctrl-C in the terminal does not reach it), that reads the parent's
registrations from a pipe only the parent holds. When the pipe closes (the parent ended,
however it ended) it kills at once the workers that never started serving, gives those that
did :data:`GRACE` seconds to close their envs (recordings are finalised), then kills what is
left. A registration carries the process's start time, so a recycled pid is never killed.
Written by hand: ``multiprocessing`` only offers this for its own resource tracker.

Example:
    >>> reaper = Reaper()
    >>> reaper.watch(os.getpid())  # registrations are fire-and-forget lines
    >>> reaper.forget(os.getpid())
    >>> reaper.close()
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading

from retrovec.core.processes import disown_fd, own_fd

__all__ = ["GRACE", "MARKER", "Reaper", "reaper"]

#: Seconds a worker that was serving gets to close its env once its parent is gone.
GRACE = 30.0

#: The reaper's command line holds this word (tests tell it from a leaked worker by it).
MARKER = "retrovec-reaper"

_SCRIPT = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
grace = float(sys.argv[2])

def started_at(pid):
    # (start time in clock ticks, running); None when gone. Field 22 of /proc/pid/stat.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[19], fields[0] != b"Z"

watched = {}  # pid -> [start time, serving]
for line in sys.stdin.buffer:
    kind, pid = line[:1], int(line[1:])
    if kind == b"+":
        found = started_at(pid)
        if found is not None:
            watched[pid] = [found[0], False]
    elif kind == b"*" and pid in watched:
        watched[pid][1] = True
    elif kind == b"-":
        watched.pop(pid, None)

def alive(pid):
    found = started_at(pid)
    return found is not None and found[1] and found[0] == watched[pid][0]

def kill(pids):
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

kill([pid for pid, (_, serving) in watched.items() if not serving])
deadline = time.monotonic() + grace
serving = [pid for pid, (_, serving) in watched.items() if serving]
while serving and time.monotonic() < deadline:
    time.sleep(0.05)
    serving = [pid for pid in serving if alive(pid)]
kill(serving)
"""


class Reaper:
    """The parent's end of its reaper (see the module docstring). Every method is safe to
    call when the reaper could not be started or has died: registrations are then lost,
    and workers still exit by themselves once they run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._fd = -1
        self._pid = os.getpid()
        self._exit_hook = False

    def _write(self, line: bytes) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: that reaper is its parent's
                self._process, self._fd, self._pid = None, -1, os.getpid()
            if self._process is None or self._process.poll() is not None:
                if not self._start():
                    return
            try:
                os.write(self._fd, line)
            except OSError:
                self._process = None

    def _start(self) -> bool:
        if not os.path.isdir("/proc"):  # pragma: no cover - the script reads /proc
            return False
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _SCRIPT, MARKER, str(GRACE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,
            )
        except OSError:
            return False
        if self._fd >= 0:
            disown_fd(self._fd)
        if self._process is None and not self._exit_hook:
            atexit.register(self.close)  # before any env's own exit hook: runs after it
            self._exit_hook = True
        self._process = process
        self._fd = own_fd(process.stdin.fileno())  # no child may keep the pipe open
        return True

    def watch(self, pid: int) -> None:
        """Kill ``pid`` if this process ends before it serves (or :meth:`forget` is called)."""
        self._write(b"+%d\n" % pid)

    def serving(self, pid: int) -> None:
        """``pid`` serves: give it :data:`GRACE` seconds to close its env when this process
        ends."""
        self._write(b"*%d\n" % pid)

    def forget(self, pid: int) -> None:
        """``pid`` ended, or is being stopped by this process."""
        self._write(b"-%d\n" % pid)

    def close(self) -> None:
        """End the reaper: it kills the workers still watched that never served, and gives
        the others their grace (at interpreter exit every env was closed first, so there
        are none). Waits at most 1 s for it."""
        with self._lock:
            process = self._process
            if process is not None and self._pid == os.getpid():
                disown_fd(self._fd)
                process.stdin.close()
                try:
                    process.wait(1.0)
                except subprocess.TimeoutExpired:
                    # Waiting out a worker's grace: it ends by itself, nothing to reap here.
                    process.returncode = 0
            self._process, self._fd = None, -1


#: This process's reaper.
reaper = Reaper()
