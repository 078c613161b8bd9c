"""Starting and stopping worker processes, and noticing when one dies.

The parent never blocks on a pipe alone: :func:`wait_for_replies` waits on the pipes and
the processes' sentinels together (as loky does), so a worker that dies without a word is
seen at once instead of hanging the training loop.

Example:
    >>> import multiprocessing as mp
    >>> ctx = mp.get_context("fork")
    >>> worker = ctx.Process(target=int, daemon=True)
    >>> worker.start()
    >>> stop_processes([worker], timeout=5.0)
    >>> ctx.active_children()
    []
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from multiprocessing import connection
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

__all__ = ["ReplyWaiter", "stop_processes"]


class ReplyWaiter:
    """Waits for one reply from each of a set of workers, watching their sentinels.

    Args:
        connections: The parent's end of each worker's pipe, by env index.
        processes: The worker processes, by env index.
    """

    def __init__(self, connections: Sequence[Connection], processes: Sequence[BaseProcess]):
        self.connections = connections
        self.processes = processes

    def wait(
        self, pending: set[int], timeout: float | None
    ) -> Iterable[tuple[int, object, bool]]:
        """Yield ``(index, reply, alive)`` as replies arrive, until ``pending`` is empty.

        Indices are removed from ``pending`` as they are yielded. A worker that died yields
        ``(index, None, False)``; a reply it sent before dying is still delivered first.
        Returns early, leaving ``pending`` non-empty, when ``timeout`` runs out.

        Args:
            pending: Env indices still owing a reply (mutated).
            timeout: Seconds in all; ``None`` waits as long as it takes.

        Yields:
            ``(index, reply, alive)``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            # Fast path: one env, or replies already queued, need no wait() call.
            waitables: dict[object, int] = {}
            for index in pending:
                waitables[self.connections[index]] = index
                waitables[self.processes[index].sentinel] = index
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = connection.wait(list(waitables), remaining)
            if not ready:
                return
            for handle in ready:
                index = waitables[handle]
                if index not in pending:
                    continue  # its pipe and sentinel were both ready
                conn = self.connections[index]
                if conn.poll():
                    try:
                        reply = conn.recv()
                    except (EOFError, OSError):
                        pending.discard(index)
                        yield index, None, False
                        continue
                    pending.discard(index)
                    yield index, reply, True
                elif not self.processes[index].is_alive():
                    pending.discard(index)
                    yield index, None, False


def stop_processes(processes: Sequence[BaseProcess], timeout: float) -> None:
    """Join the processes; terminate, then kill, any still alive after ``timeout``.

    Args:
        processes: Processes asked to exit already (or to be forced to).
        timeout: Seconds to wait for a clean exit, in all.
    """
    deadline = time.monotonic() + timeout
    for process in processes:
        if process.pid is not None:
            process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        if process.pid is not None:
            process.join(1.0)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    for process in processes:
        if hasattr(process, "close"):
            try:
                process.close()
            except ValueError:  # pragma: no cover - still running after kill: leave it
                pass
