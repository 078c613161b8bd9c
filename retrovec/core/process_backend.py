"""``AsyncRetroVectorEnv``: the parent side of the vector env.

A drop-in replacement for :class:`gymnasium.vector.AsyncVectorEnv` built for emulators that
allow one instance per process. Data flows one way around a loop::

    parent ──actions (shared memory) + one small command per worker (pipe)──▶ worker i
    worker i ──obs, reward, terminated, truncated (shared memory) + info (pipe)──▶ parent

This module is the process transport; everything else (the gymnasium API, batching,
errors, restarts, EnvPool-style batches) is
:class:`~retrovec.core.base.RetroVectorEnvBase`, which the Ray backend shares. The
differences from gymnasium's class are all on the side of never hanging and never losing
work: no env is built in the parent; a worker that dies raises
:class:`~retrovec.errors.WorkerCrashedError` instead of blocking; a worker's exception is
re-raised with its own type and traceback; a timed-out call stays pending rather than
letting a late reply answer the next call; and ``close()`` always ends every process.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.reduction import send_handle
from typing import Any

import numpy as np
from gymnasium import Env, Space, logger
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState
from gymnasium.vector.utils import CloudpickleWrapper, clear_mpi_env_vars, create_empty_array

from retrovec.core.processes import ReplyWaiter, available_cores, frozen_heap, stop_processes
from retrovec.core.arena import ArenaLayout, SharedArena, is_shareable
from retrovec.core.base import RetroVectorEnvBase
from retrovec.core.worker import STEP_COMMAND, worker_main

__all__ = ["AsyncRetroVectorEnv", "AsyncState", "spin_plan"]

#: Seconds ``close()`` waits for workers to close their envs when given no timeout.
DEFAULT_CLOSE_TIMEOUT = 30.0

#: How long a waiting process spins under ``spin_seconds=None``: longer than one
#: emulator frame, short enough that an idle vector env is asleep within moments.
DEFAULT_SPIN_SECONDS = 0.002


def spin_plan(spin_seconds: float | None, num_envs: int, cores: int) -> tuple[float, float]:
    """``(worker, parent)`` spin seconds for ``spin_seconds`` (see the class docstring).

    ``None`` spins only where a CPU would otherwise go idle: the workers when there are no
    more envs than cores, the parent when there are fewer (with more envs than cores,
    another worker is always ready to run, and a spinning parent only takes its CPU).

    Example:
        >>> spin_plan(None, 1, 2), spin_plan(None, 2, 2), spin_plan(None, 8, 2)
        ((0.002, 0.002), (0.002, 0.0), (0.0, 0.0))
        >>> spin_plan(0.0, 1, 2)
        (0.0, 0.0)
    """
    if spin_seconds is not None:
        return spin_seconds, spin_seconds
    worker = DEFAULT_SPIN_SECONDS if num_envs <= cores else 0.0
    parent = DEFAULT_SPIN_SECONDS if num_envs < cores else 0.0
    return worker, parent


_open_envs: weakref.WeakSet[AsyncRetroVectorEnv] = weakref.WeakSet()
_atexit_registered = False


def _close_open_envs() -> None:
    """At interpreter exit, close envs the user left open (before multiprocessing's own
    exit hook terminates daemonic workers, which would skip ``env.close()``)."""
    for env in list(_open_envs):
        try:
            env.close(timeout=5.0)
        except Exception:  # pragma: no cover - best effort at exit
            pass


class AsyncRetroVectorEnv(RetroVectorEnvBase):
    """Runs ``len(env_fns)`` envs, each in its own process, behind gymnasium's vector API.

    Args:
        env_fns: Functions that each build one env; they run in the workers only.
        shared_memory: Observations travel through shared memory (``True``) or pickled
            through the pipes (``False``). Spaces with a leaf of no fixed shape (Text,
            Graph, Sequence, OneOf) always travel through the pipes, with a warning.
        copy: ``reset`` and ``step`` return copies of the observations (``True``) or views
            of the shared buffer that the next call overwrites (``False``).
        context: ``multiprocessing`` start method (``"fork"``, ``"forkserver"``,
            ``"spawn"``), or ``None`` for the platform's default.
        daemon: Start the workers as daemonic processes.
        observation_mode: ``"same"``, ``"different"`` (same shape and dtype, other
            bounds) or a tuple ``(observation_space, single_observation_space)``.
        autoreset_mode: What ``step`` does at an episode end; see gymnasium's
            :class:`~gymnasium.vector.AutoresetMode` and ``docs/autoreset.md``.
        timeout: Default seconds for every ``*_wait`` call (``None``: wait as long as it
            takes; a dead worker is noticed either way).
        on_worker_failure: What a dead worker does to the vector env. ``"raise"``:
            :class:`~retrovec.errors.WorkerCrashedError`, after which only ``close()``
            works. ``"restart"``: a new worker is built from the same ``env_fn`` and
            reset, that env's episode is reported as truncated with
            ``info["worker_restarted"]``, and the other envs keep their episodes.
        max_restarts: With ``"restart"``, how many times each env may be restarted before
            the vector env gives up with ``WorkerCrashedError``. The counts are in
            :attr:`restart_counts`.
        batch_size: How many envs :meth:`recv` returns in EnvPool-style asynchronous use
            (``async_reset``/``send``/``recv``; see :mod:`retrovec.core.batches`).
            ``None``: ``num_envs``. ``step()`` always steps every env.
        spin_seconds: How long a waiting process (a worker between commands, this
            process waiting for replies) keeps polling before it sleeps, yielding its CPU
            to any other runnable process between polls. On virtual machines a CPU that
            goes idle runs the next step on cold caches (see
            :func:`retrovec.core.processes.spin_poll`). ``None``: 2 ms where a CPU
            would otherwise go idle (:func:`spin_plan`: workers when ``num_envs`` <=
            cores, this process when ``num_envs`` < cores), else none; a number applies
            to every process; ``0`` sleeps at once.

    Raises:
        ValueError: ``env_fns`` is empty or holds something not callable, or an argument
            has a value outside the ones listed.
        SpacesMismatchError: The envs do not share their spaces.
        Exception: Whatever an ``env_fn`` raised, with the worker's traceback as
            ``__cause__``; every worker is stopped before it propagates.

    Example:
        >>> import gymnasium as gym
        >>> from retrovec import AsyncRetroVectorEnv
        >>> envs = AsyncRetroVectorEnv([lambda: gym.make("CartPole-v1")] * 2)
        >>> observations, infos = envs.reset(seed=42)
        >>> observations.shape
        (2, 4)
        >>> _ = envs.action_space.seed(42)
        >>> observations, rewards, terminations, truncations, infos = envs.step(
        ...     envs.action_space.sample())
        >>> rewards
        array([1., 1.])
        >>> envs.close()
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Env]],
        shared_memory: bool = True,
        copy: bool = True,
        context: str | None = None,
        daemon: bool = True,
        observation_mode: str | tuple[Space, Space] = "same",
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        timeout: float | None = None,
        on_worker_failure: str = "raise",
        max_restarts: int = 3,
        batch_size: int | None = None,
        spin_seconds: float | None = None,
    ) -> None:
        if spin_seconds is not None and (
            isinstance(spin_seconds, bool)
            or not isinstance(spin_seconds, (int, float))
            or not 0 <= spin_seconds <= 1
        ):
            raise ValueError(
                f"spin_seconds must be None or a number of seconds in [0, 1], got "
                f"{spin_seconds!r}"
            )
        self.spin_seconds = None if spin_seconds is None else float(spin_seconds)
        self._connections: list[Any] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        env_fns = self._init_base(
            env_fns,
            copy=copy,
            observation_mode=observation_mode,
            autoreset_mode=autoreset_mode,
            timeout=timeout,
            on_worker_failure=on_worker_failure,
            max_restarts=max_restarts,
            batch_size=batch_size,
        )
        self.shared_memory = shared_memory
        self.context = context
        self.daemon = daemon
        self._ctx = multiprocessing.get_context(context)

        try:
            self._start_workers()
            self._state = AsyncState.WAITING_CALL
            self._pending = set(range(self.num_envs))
            descriptions = self._collect("__init__", timeout)
            self._adopt_spaces(descriptions)
            self._attach_arena()
        except BaseException:
            self.close(terminate=self._crashed, timeout=5.0)
            raise

        global _atexit_registered
        if not _atexit_registered:
            atexit.register(_close_open_envs)
            _atexit_registered = True
        _open_envs.add(self)

    # ------------------------------------------------------------------ start-up

    def _spawn(self, index: int) -> tuple[Any, multiprocessing.process.BaseProcess]:
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main,
            name=f"Worker<{type(self).__name__}>-{index}",
            args=(index, CloudpickleWrapper(self.env_fns[index]), child_conn, os.getpid(),
                  self.autoreset_mode, self._spins[0]),
            daemon=self.daemon,
        )
        with clear_mpi_env_vars():
            process.start()
        child_conn.close()
        return parent_conn, process

    def _start_workers(self) -> None:
        self._spins = spin_plan(self.spin_seconds, self.num_envs, available_cores())
        with frozen_heap(self._ctx.get_start_method()):
            for index in range(self.num_envs):
                parent_conn, process = self._spawn(index)
                self._connections.append(parent_conn)
                self.processes.append(process)
        self._waiter = ReplyWaiter(self._connections, self.processes, self._spins[1])

    def _attach_arena(self) -> None:
        self._observations_shared = self.shared_memory and is_shareable(
            self.single_observation_space
        )
        if self.shared_memory and not self._observations_shared:
            logger.warn(
                f"The observation space {self.single_observation_space} has a leaf without a "
                "fixed shape and dtype, so observations travel pickled through the pipes "
                "(as with shared_memory=False)."
            )
        layout = ArenaLayout.plan(
            self.num_envs,
            self.single_observation_space,
            self.single_action_space,
            observations=self._observations_shared,
        )
        self._arena = arena = SharedArena.create(layout)
        self._write_actions = arena.action_writer() if layout.action_space is not None else None
        if self._observations_shared:
            self.observations = arena.observations()
        else:
            self.observations = create_empty_array(
                self.single_observation_space, n=self.num_envs, fn=np.zeros
            )
        for conn, process in zip(self._connections, self.processes):
            conn.send(("attach", layout))
            send_handle(conn, arena.fd, process.pid)
        self._layout = layout
        self._state = AsyncState.WAITING_CALL
        self._pending = set(range(self.num_envs))
        self._collect("__init__", self.timeout)

    # ------------------------------------------------------------------ transport

    def _post(self, index: int, kind: str, argument: Any) -> bool:
        """Send one command down the worker's pipe; ``False`` if the pipe is broken, i.e.
        the worker is gone. A step whose action is in the arena goes as pre-pickled bytes."""
        conn = self._connections[index]
        try:
            if kind == "step" and argument is None:
                conn.send_bytes(STEP_COMMAND)
            else:
                conn.send((kind, argument))
        except OSError:
            return False
        return True

    def _replies_from(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Replies as they arrive, from one epoll wait over pipes and process sentinels."""
        for index, reply, alive in self._waiter.wait(pending, timeout):
            yield index, (reply if alive else None)

    def _exitcode(self, index: int) -> int | None:
        process = self.processes[index]
        process.join(1.0)  # its pipe may close before it is reaped
        return process.exitcode

    def _restart_worker(self, index: int) -> tuple[Any, dict]:
        self._connections[index].close()
        self.processes[index].close()
        with frozen_heap(self._ctx.get_start_method()):
            self._connections[index], self.processes[index] = self._spawn(index)
        self._waiter.watch(index)
        self._check_description(index, self._request(index, None, None, "restart"))
        if not self._post(index, "attach", self._layout):
            self._raise_crash(index, "restart", "died again while being restarted")
        send_handle(self._connections[index], self._arena.fd, self.processes[index].pid)
        self._request(index, None, None, "restart")
        return self._request(index, "reset-after-restart", None, "restart")

    # ------------------------------------------------------------------ shutdown

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Close every env in its worker, then stop the workers and free the arena.

        Args:
            timeout: Seconds to wait for a pending call and for the envs to close;
                ``None`` means 30 s (``close`` never hangs). Workers still running then
                are terminated, then killed.
            terminate: Skip the envs' ``close()`` and terminate the workers at once.
        """
        _open_envs.discard(self)
        grace = DEFAULT_CLOSE_TIMEOUT if timeout is None else timeout
        if terminate:
            grace = 0.0
        waiter = getattr(self, "_waiter", None)
        quiet = self._crashed
        if getattr(self, "_in_flight", None):  # EnvPool-style batches still running: normal
            self._pending |= set(self._in_flight)
            self._in_flight.clear()
            self._state = AsyncState.WAITING_STEP
            quiet = True
        if waiter is not None and self._state != AsyncState.DEFAULT and self._pending:
            if not quiet:
                logger.warn(
                    f"Calling `close` while waiting for a pending call to "
                    f"`{self._state.value}` to complete."
                )
            for _ in waiter.wait(self._pending, grace):
                pass
            terminate = terminate or bool(self._pending)
        self._state = AsyncState.DEFAULT
        self._replies = {}

        if waiter is not None and not terminate:
            closing = set()
            for index, (conn, process) in enumerate(zip(self._connections, self.processes)):
                if process.is_alive():
                    try:
                        conn.send(("close", None))
                        closing.add(index)
                    except OSError:
                        pass
            for index, reply, alive in waiter.wait(closing, grace):
                if alive and reply is not None and not reply[0]:
                    logger.warn(f"Env {index} raised while closing:\n{reply[1][3]}")
            terminate = bool(closing)  # these never answered: do not wait for them again
        # Workers that closed their env exit by themselves within moments.
        stop_processes(self.processes, timeout=0.0 if terminate else 5.0)
        if waiter is not None:
            waiter.close()
        for conn in self._connections:
            conn.close()
        if self._arena is not None:
            # Drop our own views first so the mapping can go now (a user's copy=False
            # views keep it alive until they are gone).
            self._write_actions = None
            if self._observations_shared:
                self.observations = None
            self._arena.close()
            self._arena = None
