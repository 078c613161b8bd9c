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
import itertools
import multiprocessing
import os
import pickle
import weakref
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np
from gymnasium import Env, Space, logger
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState
from gymnasium.vector.utils import CloudpickleWrapper, create_empty_array

from retrovec.core.actions import IN_ARENA, ActionRouter
from retrovec.core.arena import ArenaLayout, SharedArena, is_shareable
from retrovec.core.base import ReplacementDied, RetroVectorEnvBase, base_arguments
from retrovec.core.channel import PIPE_REPLY, ChannelWaiter, WorkerChannel
from retrovec.core.info_columns import InfoSchema
from retrovec.core.leases import LEASE_BANKS, ObservationLeases, share_on_fork
from retrovec.core.lockstep import Doorbell, LockstepMixin
from retrovec.core.processes import available_cores, disown_fd, frozen_heap, own_fd, stop_processes
from retrovec.core.server import error_reply
from retrovec.core.slots import CALL
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


class AsyncRetroVectorEnv(LockstepMixin, RetroVectorEnvBase):
    """Runs ``len(env_fns)`` envs, each in its own process, behind gymnasium's vector API.

    Args:
        env_fns: Functions that each build one env; they run in the workers only.
        shared_memory: Observations travel through shared memory (``True``) or pickled
            through the pipes (``False``). Spaces with a leaf of no fixed shape (Text,
            Graph, Sequence, OneOf) always travel through the pipes, with a warning.
        copy: ``reset`` and ``step`` return observations of their own, which no later
            call changes (``True``), or views of the shared buffer that the next call
            overwrites (``False``). With ``True``, a plain ``step()`` hands out a spare
            bank of shared memory that the workers wrote into, and does not reuse it
            until every array viewing it is gone, instead of copying (see
            ``retrovec/core/leases.py``); such arrays do not own their data
            (``.base`` is set), and behave as copies otherwise, in forked processes too.
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
        validate_actions: ``False`` (gymnasium's behaviour): each env receives its action
            exactly as the user gave it (a float64 array for a float32 Box stays float64,
            a list of ints gives ints) and judges out-of-space actions itself; the arrays
            go through shared memory when their dtype already is the space's.
            ``True`` (what :func:`retrovec.make` uses for retro envs): every batch is
            checked against the action space in this process before any env gets it
            (a clear ``ValueError`` for an out-of-range button or a 0.5), button actions
            given as floats or bools that are exactly 0/1 are accepted, and everything
            goes through shared memory in the space's dtype.

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
        validate_actions: bool = False,
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
        self._channels: list[WorkerChannel] = []
        self._waiter: ChannelWaiter | None = None
        self._arena_fds: list[int] = []
        self._generations = itertools.count()  # each worker's, for its completion records
        env_fns = self._init_base(**base_arguments(locals()))
        self.shared_memory = shared_memory
        self.context = context
        self.daemon = daemon
        self._ctx = multiprocessing.get_context(context)

        try:
            self._start_workers()
            self._state = AsyncState.WAITING_CALL
            descriptions = self._finish_call("__init__", timeout)
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

    @property
    def processes(self) -> list[multiprocessing.process.BaseProcess]:
        """The worker processes, by env index (a restarted env's is its replacement)."""
        return [channel.process for channel in self._channels]

    # ------------------------------------------------------------------ start-up

    def _process_factory(self, index: int, generation: int) -> Callable[[Connection], Any]:
        def make_process(child_end: Connection) -> multiprocessing.process.BaseProcess:
            return self._ctx.Process(
                target=worker_main,
                name=f"Worker<{type(self).__name__}>-{index}",
                args=(index, CloudpickleWrapper(self.env_fns[index]), child_end, os.getpid(),
                      self.autoreset_mode, self._spins[0], generation),
                daemon=self.daemon,
            )

        return make_process

    def _start_workers(self) -> None:
        self._spins = spin_plan(self.spin_seconds, self.num_envs, available_cores())
        self._waiter = ChannelWaiter(self._spins[1], self._guard)
        self._doorbell = Doorbell()
        # Ctrl-C is held while a worker starts (a worker started but not yet recorded
        # would be left running) and raised between two starts.
        with self._guard, frozen_heap(self._ctx.get_start_method()):
            for index in range(self.num_envs):
                try:
                    self._guard.checkpoint()
                    generation = next(self._generations)
                    channel = WorkerChannel.start(
                        index, self._process_factory(index, generation), self._waiter, generation
                    )
                except BaseException:
                    for never in range(index, self.num_envs):  # no worker to close
                        self._slots.died(never, "build", None, None)
                    raise
                self._channels.append(channel)
                self._slots.send(index, "build", None, CALL)

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
            # copy=True results of lockstep steps are lent banks, not copies (core/leases)
            observation_banks=1 + LEASE_BANKS if self.copy else 1,
        )
        # Held from here: a Ctrl-C never leaves the arena unrecorded (close() frees what is
        # recorded), nor splits a message from its descriptors.
        with self._guard:
            self._arena = arena = SharedArena.create(layout)
            self._arena_fds = [own_fd(fd) for fd in arena.descriptors()]
            if layout.observation_banks > 1:
                self._leases = ObservationLeases(arena)
            if self._observations_shared:
                share_on_fork(arena)  # copy=False views stay readable in the caller's forks
            self._actions = ActionRouter(
                self.single_action_space, self.num_envs, arena, self.validate_actions
            )
            self._schemas: list[InfoSchema | None] = [None] * self.num_envs
            if self._observations_shared:
                self.observations = arena.observations()
            else:
                self.observations = create_empty_array(
                    self.single_observation_space, n=self.num_envs, fn=np.zeros
                )
            self._layout = layout
            message = self._encode("attach", layout)
            for index in range(self.num_envs):
                if self._attach(index, message):
                    self._slots.send(index, "attach", None, CALL)
                else:
                    self._slots.died(index, "attach", None, CALL)
            self._state = AsyncState.WAITING_CALL
        self._finish_call("__init__", self.timeout)

    def _attach(self, index: int, message: bytes) -> bool:
        channel = self._channels[index]
        return channel.send(message) and channel.send_fds(
            [self._arena.fd, self._waiter.completion_fd, *self._doorbell.worker_fds()]
        )

    # ------------------------------------------------------------------ transport

    def _encode(self, kind: str, argument: Any) -> bytes:
        """Pickle a command; a step whose action is in the arena is constant bytes."""
        if kind == "step" and argument is IN_ARENA:
            return STEP_COMMAND
        return bytes(ForkingPickler.dumps((kind, argument)))

    def _post(self, index: int, message: bytes) -> bool:
        return self._channels[index].send(message)

    def _replies(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Replies as they arrive, from one epoll wait over sockets and process sentinels.
        A reply that cannot be unpickled here becomes that env's error."""
        channels = {index: self._channels[index] for index in pending}
        for index, message in self._waiter.wait(channels, timeout, wanted):
            pending.discard(index)
            if message is None:
                yield index, None
            elif message is PIPE_REPLY:  # the common step: everything is in the arena
                yield index, (True, (None, self._schemas[index]))
            else:
                yield index, self._decode_reply(index, message)

    def _decode_reply(self, index: int, message: bytes) -> tuple[bool, Any]:
        try:
            reply = pickle.loads(message)
        except Exception as error:
            error.add_note(f"The reply of env {index} could not be unpickled in the parent.")
            return error_reply(error)
        payload = reply[1]
        if reply[0] and type(payload) is tuple and len(payload) == 2 and (
            type(payload[1]) is InfoSchema
        ):
            self._schemas[index] = payload[1]  # later replies say "the same as before"
        return reply

    def _exitcode(self, index: int) -> int | None:
        return self._channels[index].exitcode()

    def _replace_worker(self, index: int) -> None:
        """Start the replacement first; retire the dead worker only once it runs."""
        with self._guard, frozen_heap(self._ctx.get_start_method()):
            generation = next(self._generations)
            channel = WorkerChannel.start(
                index, self._process_factory(index, generation), self._waiter, generation
            )
        self._channels[index], dead = channel, self._channels[index]
        dead.retire(self._waiter, grace=0.0)
        self._check_description(index, self._replacement_payload(index, None, None, "build"))
        with self._guard:
            attached = self._attach(index, self._encode("attach", self._layout))
        if not attached:
            raise ReplacementDied(f"env {index}'s replacement died before attaching")
        self._replacement_payload(index, None, None, "attach")

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
        stuck: set[int] = set()
        try:
            if self._waiter is not None and not terminate:
                stuck = self._close_envs(grace)
        finally:
            self._stop_everything(terminate or bool(stuck))

    def _stop_everything(self, force: bool) -> None:
        self._state = AsyncState.DEFAULT
        # Workers that closed their env exit by themselves within moments.
        for channel in self._channels:
            channel.release(self._waiter)
        stop_processes(self.processes, timeout=0.0 if force else 5.0)
        if self._waiter is not None:
            self._waiter.close()
        if self._doorbell is not None:
            self._doorbell.close()
        if self._arena is not None:
            for fd in self._arena_fds:
                disown_fd(fd)
            # Drop our own views first so the mapping can go now (a user's copy=False
            # views keep it alive until they are gone).
            self._actions = None
            if self._leases is not None:
                self._leases.close()
                self._leases = None
            if self._observations_shared:
                self.observations = None
            self._arena.close()
            self._arena = None
