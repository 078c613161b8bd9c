"""``AsyncRetroVectorEnv``: the parent side of the vector env.

A drop-in replacement for :class:`gymnasium.vector.AsyncVectorEnv` built for emulators that
allow one instance per process. Data flows one way around a loop::

    parent ──actions (shared memory) + one small command per worker (pipe)──▶ worker i
    worker i ──obs, reward, terminated, truncated (shared memory) + info (pipe)──▶ parent

The differences from gymnasium's class are all on the side of never hanging and never
losing work: no env is built in the parent; a worker that dies raises
:class:`~retrovec.errors.WorkerCrashedError` instead of blocking; a worker's exception is
re-raised with its own type and traceback; a timed-out call stays pending rather than
letting a late reply answer the next call; and ``close()`` always ends every process.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import weakref
from collections.abc import Callable, Sequence
from copy import deepcopy
from multiprocessing.reduction import send_handle
from typing import Any

import numpy as np
from gymnasium import Env, Space, logger
from gymnasium.error import (
    AlreadyPendingCallError,
    ClosedEnvironmentError,
    NoAsyncCallError,
    ResetNeeded,
)
from gymnasium.spaces.utils import is_space_dtype_shape_equiv
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.async_vector_env import AsyncState
from gymnasium.vector.utils import (
    CloudpickleWrapper,
    batch_differing_spaces,
    batch_space,
    clear_mpi_env_vars,
    concatenate,
    create_empty_array,
    iterate,
)

from retrovec.async_batches import AsyncBatchesMixin
from retrovec.errors import (
    BrokenVectorEnvError,
    describe_exitcode,
    RemoteTraceback,
    SpacesMismatchError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from retrovec.infos import batch_infos
from retrovec.processes import ReplyWaiter, frozen_heap, stop_processes
from retrovec.shared_memory import (
    ArenaLayout,
    SharedArena,
    copy_structure,
    index_structure,
    is_shareable,
)
from retrovec.worker import STEP_COMMAND, ErrorPayload, worker_main

__all__ = ["AsyncRetroVectorEnv", "AsyncState"]

#: Seconds ``close()`` waits for workers to close their envs when given no timeout.
DEFAULT_CLOSE_TIMEOUT = 30.0


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


class AsyncRetroVectorEnv(AsyncBatchesMixin, VectorEnv):
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
            (``async_reset``/``send``/``recv``; see :mod:`retrovec.async_batches`).
            ``None``: ``num_envs``. ``step()`` always steps every env.

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
    ) -> None:
        self.closed = False
        self._connections: list[Any] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._arena: SharedArena | None = None
        self._state = AsyncState.DEFAULT
        self._pending: set[int] = set()
        self._replies: dict[int, Any] = {}
        self._broken: str | None = None
        self._crashed = False

        env_fns = list(env_fns)
        if not env_fns:
            raise ValueError("env_fns must hold at least one function that builds an env.")
        for index, env_fn in enumerate(env_fns):
            if not callable(env_fn):
                raise ValueError(
                    f"env_fns[{index}] must be a callable that returns an env, got {env_fn!r}."
                )
        if not (
            observation_mode in ("same", "different")
            or (isinstance(observation_mode, tuple) and len(observation_mode) == 2)
        ):
            raise ValueError(
                "Invalid `observation_mode`, expected: 'same' or 'different' or tuple of single "
                f"and batch observation space, actual got {observation_mode}"
            )
        if isinstance(observation_mode, tuple) and not all(
            isinstance(space, Space) for space in observation_mode
        ):
            raise TypeError(
                "Expected both elements of observation_mode to be Spaces, got "
                f"{type(observation_mode[0])} and {type(observation_mode[1])}"
            )
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be None or >= 0 seconds, got {timeout}.")
        if on_worker_failure not in ("raise", "restart"):
            raise ValueError(
                f"on_worker_failure must be 'raise' or 'restart', got {on_worker_failure!r}."
            )
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}.")

        self.env_fns = env_fns
        self.num_envs = len(env_fns)
        self.shared_memory = shared_memory
        self.copy = copy
        self.context = context
        self.daemon = daemon
        self.observation_mode = observation_mode
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                "autoreset_mode must be an AutoresetMode (NEXT_STEP, SAME_STEP or DISABLED) or "
                f"its value {[mode.value for mode in AutoresetMode]}, got {autoreset_mode!r}."
            ) from None
        self.timeout = timeout
        self.on_worker_failure = on_worker_failure
        self.max_restarts = max_restarts
        #: How many times each env's worker was restarted (``on_worker_failure="restart"``).
        self.restart_counts = np.zeros(self.num_envs, dtype=np.int64)
        self._ever_reset = np.zeros(self.num_envs, dtype=np.bool_)
        self._restarted_results: dict[int, tuple[Any, dict]] = {}
        self._ctx = multiprocessing.get_context(context)
        self._step_command = STEP_COMMAND
        self._init_async_batches(batch_size)

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
                  self.autoreset_mode),
            daemon=self.daemon,
        )
        with clear_mpi_env_vars():
            process.start()
        child_conn.close()
        return parent_conn, process

    def _start_workers(self) -> None:
        with frozen_heap(self._ctx.get_start_method()):
            for index in range(self.num_envs):
                parent_conn, process = self._spawn(index)
                self._connections.append(parent_conn)
                self.processes.append(process)
        self._waiter = ReplyWaiter(self._connections, self.processes)

    def _adopt_spaces(self, descriptions: list[dict[str, Any]]) -> None:
        first = descriptions[0]
        self.metadata = dict(first["metadata"])
        self.metadata["autoreset_mode"] = self.autoreset_mode
        self.render_mode = first["render_mode"]
        self.single_action_space = first["action_space"]
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        mode = self.observation_mode
        if isinstance(mode, tuple):
            self.observation_space, self.single_observation_space = mode
        elif mode == "same":
            self.single_observation_space = first["observation_space"]
            self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        else:
            self.single_observation_space = first["observation_space"]
            self.observation_space = batch_differing_spaces(
                [d["observation_space"] for d in descriptions]
            )

        for index, description in enumerate(descriptions):
            self._check_description(index, description)

    def _check_description(self, index: int, description: dict[str, Any]) -> None:
        mode = self.observation_mode
        space = description["observation_space"]
        same = (
            space == self.single_observation_space
            if mode == "same"
            else is_space_dtype_shape_equiv(space, self.single_observation_space)
        )
        if not same:
            hint = (
                " If this is intentional, use `observation_mode='different'` instead."
                if mode == "same"
                else ""
            )
            raise SpacesMismatchError(
                f"The observation space of env {index} ({space}) differs from "
                f"{self.single_observation_space} (observation_mode={mode!r}).{hint}"
            )
        if description["action_space"] != self.single_action_space:
            raise SpacesMismatchError(
                f"The action space of env {index} ({description['action_space']}) differs "
                f"from env 0's ({self.single_action_space}). In order to batch actions, "
                "the action spaces from all environments must be equal."
            )

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

    # ------------------------------------------------------------------ waiting

    def _collect(self, method: str, timeout: float | None) -> list[Any]:
        """Wait for every pending reply and return the payloads by env index.

        Raises the worker's exception (lowest index first), ``WorkerCrashedError`` for a
        dead worker, or ``WorkerTimeoutError`` leaving the call pending.
        """
        if timeout is None:
            timeout = self.timeout
        for index, reply, alive in self._waiter.wait(self._pending, timeout):
            self._replies[index] = reply if alive else None
        if self._pending:
            raise WorkerTimeoutError(method, timeout, sorted(self._pending))

        replies, self._replies = self._replies, {}
        self._state = AsyncState.DEFAULT
        dead = sorted(index for index, reply in replies.items() if reply is None)
        if dead and self.on_worker_failure == "restart" and method != "__init__":
            for index in dead:
                payload = self._replace_dead_worker(index, method)
                if method == "step_wait":
                    replies[index] = (True, self._truncated_step(index, payload))
                elif method == "reset_wait":
                    replies[index] = (True, payload)
                else:  # the episode ends at the next step
                    self._restarted_results[index] = payload
            if method not in ("reset_wait", "step_wait"):
                raise WorkerCrashedError(
                    dead[0], self._last_exitcode, f"`{method}`", restarted=True
                )
        elif dead:
            index = dead[0]
            self._crashed = True
            self._broken = f"the worker of env {index} died"
            self.processes[index].join(1.0)  # its pipe may close before it is reaped
            raise WorkerCrashedError(index, self.processes[index].exitcode, f"`{method}`")
        failed = sorted(index for index, (ok, _) in replies.items() if not ok)
        if failed:
            if method in ("reset_wait", "step_wait"):
                self._broken = f"env {failed[0]} raised an exception in `{method}`"
            self._raise_worker_error(failed, replies, method)
        return [replies[index][1] for index in range(self.num_envs)]

    def _raise_worker_error(
        self, failed: list[int], replies: dict[int, Any], method: str
    ) -> None:
        index = failed[0]
        payload: ErrorPayload = replies[index][1]
        error, type_name, message, text = payload
        if error is None:
            error = RuntimeError(f"{type_name}: {message}")
        error.add_note(f"Raised in the worker of env {index} during `{method}`.")
        if len(failed) > 1:
            others = ", ".join(
                f"env {i}: {replies[i][1][1]}: {replies[i][1][2]}" for i in failed[1:]
            )
            error.add_note(f"Other envs failed too: {others}")
        try:
            error.env_index = index  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - exceptions with __slots__
            pass
        raise error from RemoteTraceback(index, text)

    def _assert_is_running(self) -> None:
        if self.closed:
            raise ClosedEnvironmentError(
                f"Trying to operate on `{type(self).__name__}`, after a call to `close()`."
            )

    def _assert_usable(self, allow_reset: bool = False) -> None:
        self._assert_is_running()
        if self._broken is not None and (self._crashed or not allow_reset):
            action = "Close it and build a new one." if self._crashed else (
                "Call reset() to start new episodes, or close()."
            )
            raise BrokenVectorEnvError(
                f"This {type(self).__name__} cannot {'continue' if not allow_reset else 'reset'}"
                f": {self._broken}. {action}"
            )

    def _transmit(self, index: int, message: Any) -> bool:
        """Send one command (pre-pickled bytes or an object); ``False`` if the worker's
        pipe is broken, i.e. the worker is gone."""
        conn = self._connections[index]
        try:
            if isinstance(message, bytes):
                conn.send_bytes(message)
            else:
                conn.send(message)
        except OSError:
            return False
        return True

    def _send(self, index: int, message: Any, method: str) -> None:
        """Send one command; a worker that is gone becomes ``WorkerCrashedError``."""
        if self._transmit(index, message):
            self._pending.add(index)
            return
        process = self.processes[index]
        process.join(1.0)
        if self.on_worker_failure != "restart":
            self._crashed = True
            self._broken = f"the worker of env {index} died"
            raise WorkerCrashedError(index, process.exitcode, f"`{method}`")
        payload = self._replace_dead_worker(index, method)
        if method == "step_async":  # report a truncated step; send no step
            self._replies[index] = (True, self._truncated_step(index, payload))
            return
        if method != "reset_async":
            self._restarted_results[index] = payload  # the episode ends at the next step
        self._send(index, message, method)  # the same command, to the new worker

    def _request(self, index: int, message: Any, method: str) -> Any:
        """One command to one worker, outside any batch call; returns its payload."""
        if message is not None:
            self._connections[index].send(message)
        pending = {index}
        replies = list(self._waiter.wait(pending, self.timeout))
        if pending:
            raise WorkerTimeoutError(method, self.timeout, [index])
        _, reply, alive = replies[0]
        if not alive:
            self._crashed = True
            self._broken = f"the worker of env {index} died again while being restarted"
            raise WorkerCrashedError(index, self.processes[index].exitcode, f"`{method}`")
        if not reply[0]:
            self._crashed = True
            self._broken = f"the worker of env {index} failed while being restarted"
            self._raise_worker_error([index], {index: reply}, method)
        return reply[1]

    def _replace_dead_worker(self, index: int, method: str) -> tuple[Any, dict]:
        """Start a new worker for env ``index`` and reset it; returns that reset's
        ``(observation or None, info)`` with ``info["worker_restarted"] = True``."""
        process = self.processes[index]
        process.join(1.0)
        exitcode = self._last_exitcode = process.exitcode
        self.restart_counts[index] += 1
        if self.restart_counts[index] > self.max_restarts:
            self._crashed = True
            self._broken = f"the worker of env {index} died {self.restart_counts[index]} times"
            raise WorkerCrashedError(
                index, exitcode, f"`{method}`", gave_up_after=self.max_restarts
            )
        logger.warn(
            f"The worker of env {index} {describe_exitcode(exitcode)} during `{method}`; "
            f"restarting it ({self.restart_counts[index]} of at most {self.max_restarts})."
        )
        self._connections[index].close()
        process.close()
        with frozen_heap(self._ctx.get_start_method()):
            self._connections[index], self.processes[index] = self._spawn(index)
        self._waiter.watch(index)
        self._check_description(index, self._request(index, None, "restart"))
        conn = self._connections[index]
        conn.send(("attach", self._layout))
        send_handle(conn, self._arena.fd, self.processes[index].pid)
        self._request(index, None, "restart")
        observation, info = self._request(index, ("reset-after-restart", None), "restart")
        return observation, {**info, "worker_restarted": True}

    def _truncated_step(self, index: int, reset_payload: tuple[Any, dict]) -> tuple[Any, dict]:
        """The step result of an env whose worker was replaced: its episode is truncated
        (reward 0) and the observation is the replacement's reset observation."""
        observation, info = reset_payload
        arena = self._arena
        arena.rewards[index] = 0.0
        arena.terminations[index] = False
        arena.truncations[index] = True
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            final = observation if not self._observations_shared else index_structure(
                self.observations, index
            )
            info = {"final_info": {"worker_restarted": True}, "final_obs": final, **info}
        return observation, info

    def _assert_no_call_pending(self, method: str) -> None:
        if self._state != AsyncState.DEFAULT:
            raise AlreadyPendingCallError(
                f"Calling `{method}` while waiting for a pending call to "
                f"`{self._state.value}` to complete.",
                str(self._state.value),
            )

    def _begin(self, method: str, state: AsyncState) -> None:
        self._assert_no_batches(method)
        if self._state != AsyncState.DEFAULT:
            raise AlreadyPendingCallError(
                f"Calling `{method}` while waiting for a pending call to "
                f"`{self._state.value}` to complete.",
                str(self._state.value),
            )
        self._state = state
        self._pending = set()  # filled by _send as each command goes out

    def _expect(self, method: str, state: AsyncState, started_by: str) -> None:
        self._assert_is_running()
        if self._state != state:
            raise NoAsyncCallError(
                f"Calling `{method}` without any prior call to `{started_by}`.", state.value
            )

    # ------------------------------------------------------------------ gymnasium API

    @property
    def np_random_seed(self) -> tuple[int, ...]:
        """Returns a tuple of np_random seeds for all the wrapped envs."""
        return self.get_attr("np_random_seed")

    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:
        """Returns the tuple of the numpy random number generators for the wrapped envs."""
        return self.get_attr("np_random")

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every env (or those in ``options["reset_mask"]``) and batch the results.

        Args:
            seed: ``None``, an int (env ``i`` gets ``seed + i``) or one seed per env.
            options: Passed to every env's ``reset``; ``"reset_mask"`` (a bool array of
                shape ``(num_envs,)``) chooses which envs reset.

        Returns:
            The batched observations and infos.
        """
        self.reset_async(seed=seed, options=options)
        return self.reset_wait()

    def reset_async(
        self,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Send ``reset`` to the envs; :meth:`reset_wait` collects the results.

        Raises:
            ClosedEnvironmentError: The env was closed.
            AlreadyPendingCallError: Another call is pending.
            ValueError: Seeds or ``reset_mask`` of the wrong length or shape.
        """
        self._assert_usable(allow_reset=True)
        self._assert_no_batches("reset_async")
        seeds = self._seeds(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be None or a dict, got {options!r}.")
        if self._state != AsyncState.DEFAULT:
            raise AlreadyPendingCallError(
                "Calling `reset_async` while waiting for a pending call to "
                f"`{self._state.value}` to complete",
                str(self._state.value),
            )
        self._send_resets(seeds, options)

    def _seeds(self, seed: Any) -> list[int | None]:
        """One seed per env, as gymnasium spreads them; checks what the user gave."""
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        elif isinstance(seed, (list, tuple, np.ndarray)):
            seeds = list(seed)
        else:
            raise TypeError(
                f"seed must be None, an int (env i gets seed + i) or a list with one int or "
                f"None per env, got {seed!r}."
            )
        for value in seeds:
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < 0
            ):
                raise ValueError(f"Every seed must be None or an int >= 0, got {value!r}.")
        if len(seeds) != self.num_envs:
            raise ValueError(
                "If seeds are passed as a list the length must match "
                f"num_envs={self.num_envs} but got length={len(seeds)}."
            )
        return seeds

    def _send_resets(self, seeds: list[int | None], options: dict[str, Any] | None) -> None:
        mask = None
        if options is not None and "reset_mask" in options:
            options = dict(options)
            mask = options.pop("reset_mask")
            if not isinstance(mask, np.ndarray):
                raise TypeError(
                    f"`options['reset_mask']` must be a numpy array, got {type(mask)}"
                )
            if mask.shape != (self.num_envs,):
                raise ValueError(
                    f"`options['reset_mask']` must have shape `({self.num_envs},)`, "
                    f"got {mask.shape}"
                )
            if mask.dtype != np.bool_:
                raise TypeError(
                    f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}"
                )
            if not np.any(mask):
                raise ValueError(
                    "`options['reset_mask']` must contain a boolean array with at least one "
                    f"True value, got reset_mask={mask}"
                )
        self._state = AsyncState.WAITING_RESET
        self._pending = set()
        self._resetting = np.ones(self.num_envs, np.bool_) if mask is None else mask.copy()
        for index in list(self._restarted_results):
            if self._resetting[index]:
                del self._restarted_results[index]  # the reset ends that episode anyway
        for index in range(self.num_envs):
            if mask is None or mask[index]:
                self._send(index, ("reset", (seeds[index], options)), "reset_async")
            else:
                self._send(index, ("reset-noop", None), "reset_async")
        if mask is None or mask.all():
            self._broken = None  # a full reset starts every env afresh

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """Wait for :meth:`reset_async`'s results.

        Args:
            timeout: Seconds to wait (``None``: the constructor's ``timeout``).

        Returns:
            The batched observations and infos.

        Raises:
            NoAsyncCallError: No ``reset_async`` is pending.
            WorkerTimeoutError: Some envs did not answer in time; the call stays pending.
        """
        self._expect("reset_wait", AsyncState.WAITING_RESET, "reset_async")
        payloads = self._collect("reset_wait", timeout)
        self._ever_reset |= self._resetting
        infos = batch_infos([info for _, info in payloads], self)
        return self._batch_observations(payloads), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every env with its action and batch the results.

        Args:
            actions: An element of :attr:`action_space`.

        Returns:
            ``(observations, rewards, terminations, truncations, infos)``.
        """
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        """Send the actions to the envs; :meth:`step_wait` collects the results.

        Raises:
            ClosedEnvironmentError: The env was closed.
            AlreadyPendingCallError: Another call is pending.
            ValueError: The actions do not match the batched action space's shape or dtype.
        """
        self._assert_usable()
        if self._state != AsyncState.DEFAULT:
            self._begin("step_async", AsyncState.WAITING_STEP)  # raises
        # Check and place every action before the first command goes out.
        if self._write_actions is not None:
            self._write_actions(actions)
            messages: list[Any] = [STEP_COMMAND] * self.num_envs
        else:
            messages = [("step", action) for action in iterate(self.action_space, actions)]
            if len(messages) != self.num_envs:
                raise ValueError(
                    f"Expected one action per env ({self.num_envs}), got {len(messages)}."
                )
        if not self._ever_reset.all():
            raise ResetNeeded(
                "Call reset() before step(): envs "
                f"{np.flatnonzero(~self._ever_reset).tolist()} have never been reset."
            )
        self._begin("step_async", AsyncState.WAITING_STEP)
        restarted, self._restarted_results = self._restarted_results, {}
        for index, message in enumerate(messages):
            if index in restarted:  # replaced since the last step: its episode ended
                self._replies[index] = (True, self._truncated_step(index, restarted[index]))
            else:
                self._send(index, message, "step_async")

    def step_wait(
        self, timeout: float | None = None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Wait for :meth:`step_async`'s results.

        Args:
            timeout: Seconds to wait (``None``: the constructor's ``timeout``).

        Returns:
            ``(observations, rewards, terminations, truncations, infos)``.

        Raises:
            NoAsyncCallError: No ``step_async`` is pending.
            WorkerTimeoutError: Some envs did not answer in time; the call stays pending.
        """
        self._expect("step_wait", AsyncState.WAITING_STEP, "step_async")
        payloads = self._collect("step_wait", timeout)
        infos = batch_infos([info for _, info in payloads], self)
        arena = self._arena
        assert arena is not None
        return (
            self._batch_observations(payloads),
            arena.rewards.copy(),
            arena.terminations.copy(),
            arena.truncations.copy(),
            infos,
        )

    def _batch_observations(self, payloads: list[tuple[Any, dict]]) -> Any:
        if not self._observations_shared:
            self.observations = concatenate(
                self.single_observation_space,
                [observation for observation, _ in payloads],
                self.observations,
            )
            return deepcopy(self.observations) if self.copy else self.observations
        return copy_structure(self.observations) if self.copy else self.observations

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a method (or read an attribute) of every env.

        Returns:
            One result per env.
        """
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def render(self) -> tuple[Any, ...] | None:
        """Returns a tuple of rendered frames from the environments."""
        return self.call("render")

    def call_async(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Send a call to every env; :meth:`call_wait` collects the results.

        Raises:
            ClosedEnvironmentError: The env was closed.
            AlreadyPendingCallError: Another call is pending.
        """
        self._assert_usable()
        self._begin("call_async", AsyncState.WAITING_CALL)
        for index in range(self.num_envs):
            self._send(index, ("call", (name, args, kwargs)), "call_async")

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """Wait for :meth:`call_async`'s results.

        Raises:
            NoAsyncCallError: No ``call_async`` is pending.
            WorkerTimeoutError: Some envs did not answer in time; the call stays pending.
        """
        self._expect("call_wait", AsyncState.WAITING_CALL, "call_async")
        return tuple(self._collect("call_wait", timeout))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Get an attribute from every env."""
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | object) -> None:
        """Set an attribute on every env.

        Args:
            name: The attribute.
            values: One value per env (a list or tuple), or one value for all.

        Raises:
            ValueError: A list or tuple whose length is not ``num_envs``.
        """
        self._assert_usable()
        if not isinstance(values, (list, tuple)):
            values = [values for _ in range(self.num_envs)]
        if len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of "
                f"environments. Got `{len(values)}` values for {self.num_envs} environments."
            )
        self._begin("set_attr", AsyncState.WAITING_CALL)
        for index, value in enumerate(values):
            self._send(index, ("setattr", (name, value)), "set_attr")
        self._collect("set_attr", None)

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

    def __enter__(self) -> AsyncRetroVectorEnv:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Close on leaving a ``with`` block, also when it raised."""
        self.close()

    def __del__(self) -> None:
        """Close the workers if the user did not (envs are closed, not just killed)."""
        if not getattr(self, "closed", True) and hasattr(self, "_state"):
            try:
                self.close(timeout=5.0)
            except Exception:  # pragma: no cover - best effort during garbage collection
                pass
