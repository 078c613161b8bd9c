"""``RetroVectorEnvBase``: everything a retrovec vector env does that does not depend on how
commands reach the envs.

Both backends, worker processes (:class:`~retrovec.AsyncRetroVectorEnv`) and Ray actors
(:class:`~retrovec.core.ray_backend.RayRetroVectorEnv`), are this class plus a transport: four
methods that send one command to one env, wait for replies, replace a dead env and say how
it ended. The gymnasium API, argument checks, the async state machine, seeding, reset
masks, batching of observations, rewards, flags and infos, error re-raising, worker
restarts and EnvPool-style batches (:class:`~retrovec.core.batches.AsyncBatchesMixin`)
live here once, so the two backends cannot drift apart.

A transport implements:

* :meth:`RetroVectorEnvBase._post` — send ``(kind, argument)`` to env ``index``; the
  commands are ``"reset"``, ``"reset-noop"``, ``"step"``, ``"call"``, ``"setattr"`` and
  ``"reset-after-restart"``. Returns ``False`` when the env is known to be gone.
* :meth:`RetroVectorEnvBase._replies_from` — yield ``(index, reply)`` for envs in
  ``pending`` as they answer, where ``reply`` is ``(True, payload)``, ``(False,
  error_payload)``, or ``None`` for an env that died. A step's payload is
  ``(observation or None, info)``; its reward and flags are already in ``self._arena``.
* :meth:`RetroVectorEnvBase._restart_worker` — start a replacement and reset it.
* :meth:`RetroVectorEnvBase._exitcode` — how a dead env's process ended, if known.

and ``close_extras``, then calls :meth:`RetroVectorEnvBase._init_base` first thing in its
``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
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
    batch_differing_spaces,
    batch_space,
    concatenate,
    create_empty_array,
    iterate,
)

from retrovec.core.batches import AsyncBatchesMixin
from retrovec.errors import (
    BrokenVectorEnvError,
    RemoteTraceback,
    SpacesMismatchError,
    WorkerCrashedError,
    WorkerTimeoutError,
    describe_exitcode,
)
from retrovec.core.infos import batch_infos
from retrovec.core.arena import ArenaLayout, SharedArena, copy_structure, index_structure

__all__ = ["RetroVectorEnvBase"]


class RetroVectorEnvBase(AsyncBatchesMixin, VectorEnv):
    """The transport-agnostic part of retrovec's vector envs (see the module docstring).

    Subclasses set :attr:`_arena` (a :class:`~retrovec.core.arena.SharedArena` with at
    least rewards and done flags), :attr:`_write_actions`, :attr:`_observations_shared` and
    :attr:`observations` once the spaces are known.
    """

    #: What one env runs in, as messages name it.
    _worker_noun = "worker"

    # ------------------------------------------------------------------ transport hooks

    def _post(self, index: int, kind: str, argument: Any) -> bool:
        """Send one command to env ``index``; ``False`` if it is known to be gone."""
        raise NotImplementedError

    def _replies_from(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, reply)`` as envs in ``pending`` answer, removing each from
        ``pending``; stop when none is left or ``timeout`` passes. ``wanted`` hints how many
        replies the caller needs before it stops reading."""
        raise NotImplementedError

    def _restart_worker(self, index: int) -> tuple[Any, dict]:
        """Replace env ``index``'s dead worker with a new one, check its spaces and reset
        it; return that reset's ``(observation or None, info)``."""
        raise NotImplementedError

    def _exitcode(self, index: int) -> int | None:
        """How env ``index``'s dead worker ended (``None``: not known)."""
        return None

    # ------------------------------------------------------------------ set-up

    def _init_base(
        self,
        env_fns: Sequence[Callable[[], Env]],
        *,
        copy: bool,
        observation_mode: str | tuple[Space, Space],
        autoreset_mode: str | AutoresetMode,
        timeout: float | None,
        on_worker_failure: str,
        max_restarts: int,
        batch_size: int | None,
    ) -> list[Callable[[], Env]]:
        """Check the arguments every backend shares and set the state; returns the
        ``env_fns`` as a list."""
        self.closed = False
        self._arena: SharedArena | None = None
        self._write_actions: Callable[..., None] | None = None
        self._observations_shared = False
        self._state = AsyncState.DEFAULT
        self._pending: set[int] = set()
        self._replies: dict[int, Any] = {}
        self._broken: str | None = None
        self._crashed = False
        self._crash_cause: BaseException | None = None
        self._last_exitcode: int | None = None

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
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                "autoreset_mode must be an AutoresetMode (NEXT_STEP, SAME_STEP or DISABLED) or "
                f"its value {[mode.value for mode in AutoresetMode]}, got {autoreset_mode!r}."
            ) from None

        self.env_fns = env_fns
        self.num_envs = len(env_fns)
        self.copy = copy
        self.observation_mode = observation_mode
        self.timeout = timeout
        self.on_worker_failure = on_worker_failure
        self.max_restarts = max_restarts
        #: How many times each env's worker was restarted (``on_worker_failure="restart"``).
        self.restart_counts = np.zeros(self.num_envs, dtype=np.int64)
        self._ever_reset = np.zeros(self.num_envs, dtype=np.bool_)
        self._resetting = np.ones(self.num_envs, dtype=np.bool_)
        self._restarted_results: dict[int, tuple[Any, dict]] = {}
        self._init_async_batches(batch_size)
        return env_fns

    def _adopt_spaces(self, descriptions: list[dict[str, Any]]) -> None:
        """Take the spaces, metadata and render mode from the envs' descriptions."""
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
        """Raise ``SpacesMismatchError`` if env ``index`` does not fit the batch."""
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

    def _attach_driver_arena(self) -> None:
        """For transports whose envs do not share this machine's memory: a small arena in
        this process, without observations. It checks actions exactly as the process
        backend's does (:attr:`_read_actions` gives each env's back) and holds the batch's
        rewards and done flags, so every batching path here serves that transport too."""
        self.observations = create_empty_array(
            self.single_observation_space, n=self.num_envs, fn=np.zeros
        )
        layout = ArenaLayout.plan(
            self.num_envs, self.single_observation_space, self.single_action_space, False
        )
        self._arena = arena = SharedArena.create(layout)
        if layout.action_space is not None:
            self._write_actions = arena.action_writer()
            self._read_actions = [arena.action_reader(i) for i in range(self.num_envs)]

    # ------------------------------------------------------------------ waiting

    def _collect(self, method: str, timeout: float | None) -> list[Any]:
        """Wait for every pending reply and return the payloads by env index.

        Raises the env's exception (lowest index first), ``WorkerCrashedError`` for a
        dead worker, or ``WorkerTimeoutError`` leaving the call pending.
        """
        if timeout is None:
            timeout = self.timeout
        for index, reply in self._replies_from(self._pending, timeout):
            self._replies[index] = reply
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
            self._raise_crash(dead[0], method)
        failed = sorted(index for index, (ok, _) in replies.items() if not ok)
        if failed:
            if method in ("reset_wait", "step_wait"):
                self._broken = f"env {failed[0]} raised an exception in `{method}`"
            self._raise_worker_error(failed, replies, method)
        return [replies[index][1] for index in range(self.num_envs)]

    def _raise_crash(self, index: int, method: str, why: str = "died") -> None:
        """Mark the vector env unusable and raise ``WorkerCrashedError`` for env ``index``."""
        self._crashed = True
        self._broken = f"the {self._worker_noun} of env {index} {why}"
        error = WorkerCrashedError(index, self._exitcode(index), f"`{method}`")
        if self._crash_cause is not None:
            raise error from self._crash_cause
        raise error

    def _raise_worker_error(
        self, failed: list[int], replies: dict[int, Any], method: str
    ) -> None:
        """Re-raise the exception of the lowest failed env, noting the others."""
        index = failed[0]
        error, type_name, message, text = replies[index][1]
        if error is None:
            error = RuntimeError(f"{type_name}: {message}")
        error.add_note(f"Raised in the {self._worker_noun} of env {index} during `{method}`.")
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

    def _send(self, index: int, kind: str, argument: Any, method: str) -> None:
        """Send one command of a batch call; a worker that is gone becomes
        ``WorkerCrashedError``, or is replaced under ``on_worker_failure="restart"``."""
        if self._post(index, kind, argument):
            self._pending.add(index)
            return
        if self.on_worker_failure != "restart":
            self._raise_crash(index, method)
        payload = self._replace_dead_worker(index, method)
        if method == "step_async":  # report a truncated step; send no step
            self._replies[index] = (True, self._truncated_step(index, payload))
            return
        if method != "reset_async":
            self._restarted_results[index] = payload  # the episode ends at the next step
        self._send(index, kind, argument, method)  # the same command, to the new worker

    def _request(self, index: int, kind: str | None, argument: Any, method: str) -> Any:
        """One command to one worker (``kind=None``: only wait for its next reply), outside
        any batch call; returns the payload. Used while restarting a worker, so any failure
        leaves the vector env unusable."""
        if kind is not None and not self._post(index, kind, argument):
            self._raise_crash(index, method, "died again while being restarted")
        pending = {index}
        replies = list(self._replies_from(pending, self.timeout))
        if pending:
            self._crashed = True
            self._broken = (
                f"the {self._worker_noun} of env {index} did not answer while being restarted"
            )
            raise WorkerTimeoutError(method, self.timeout, [index])
        reply = replies[0][1]
        if reply is None:
            self._raise_crash(index, method, "died again while being restarted")
        if not reply[0]:
            self._crashed = True
            self._broken = f"the {self._worker_noun} of env {index} failed while being restarted"
            self._raise_worker_error([index], {index: reply}, method)
        return reply[1]

    def _replace_dead_worker(self, index: int, method: str) -> tuple[Any, dict]:
        """Start a new worker for env ``index`` and reset it; returns that reset's
        ``(observation or None, info)`` with ``info["worker_restarted"] = True``."""
        exitcode = self._last_exitcode = self._exitcode(index)
        self.restart_counts[index] += 1
        if self.restart_counts[index] > self.max_restarts:
            self._crashed = True
            self._broken = (
                f"the {self._worker_noun} of env {index} died {self.restart_counts[index]} times"
            )
            error = WorkerCrashedError(
                index, exitcode, f"`{method}`", gave_up_after=self.max_restarts
            )
            if self._crash_cause is not None:
                raise error from self._crash_cause
            raise error
        how = "died" if exitcode is None else describe_exitcode(exitcode)
        logger.warn(
            f"The {self._worker_noun} of env {index} {how} during `{method}`; "
            f"restarting it ({self.restart_counts[index]} of at most {self.max_restarts})."
        )
        observation, info = self._restart_worker(index)
        return observation, {**info, "worker_restarted": True}

    def _truncated_step(self, index: int, reset_payload: tuple[Any, dict]) -> tuple[Any, dict]:
        """The step result of an env whose worker was replaced: its episode is truncated
        (reward 0) and the observation is the replacement's reset observation."""
        observation, info = reset_payload
        arena = self._arena
        assert arena is not None
        arena.rewards[index] = 0.0
        arena.terminations[index] = False
        arena.truncations[index] = True
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            final = observation if not self._observations_shared else index_structure(
                self.observations, index
            )
            info = {"final_info": {"worker_restarted": True}, "final_obs": final, **info}
        return observation, info

    # ------------------------------------------------------------------ state checks

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

    def _assert_no_call_pending(self, method: str) -> None:
        if self._state != AsyncState.DEFAULT:
            raise AlreadyPendingCallError(
                f"Calling `{method}` while waiting for a pending call to "
                f"`{self._state.value}` to complete.",
                str(self._state.value),
            )

    def _begin(self, method: str, state: AsyncState) -> None:
        self._assert_no_batches(method)
        self._assert_no_call_pending(method)
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
        mask = None
        if options is not None and "reset_mask" in options:
            options = dict(options)
            mask = self._check_reset_mask(options.pop("reset_mask"))
        self._state = AsyncState.WAITING_RESET
        self._pending = set()
        self._resetting = np.ones(self.num_envs, np.bool_) if mask is None else mask.copy()
        for index in list(self._restarted_results):
            if self._resetting[index]:
                del self._restarted_results[index]  # the reset ends that episode anyway
        for index in range(self.num_envs):
            if self._resetting[index]:
                self._send(index, "reset", (seeds[index], options), "reset_async")
            else:
                self._send(index, "reset-noop", None, "reset_async")
        if mask is None or mask.all():
            self._broken = None  # a full reset starts every env afresh

    def _check_reset_mask(self, mask: Any) -> np.ndarray:
        """Check ``options["reset_mask"]`` as gymnasium does."""
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
        if mask.shape != (self.num_envs,):
            raise ValueError(
                f"`options['reset_mask']` must have shape `({self.num_envs},)`, got {mask.shape}"
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
        return mask

    def _seeds(self, seed: Any) -> list[int | None]:
        """One seed per env, as gymnasium spreads them; checks what the user gave."""
        if seed is None:
            seeds: list[Any] = [None] * self.num_envs
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
        return [None if value is None else int(value) for value in seeds]

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

    def _step_arguments(self, actions: Any, rows: np.ndarray | None = None) -> list[Any]:
        """Check a batch of actions (for the envs ``rows``, default all) and return each
        env's ``"step"`` argument: ``None`` where the action went into the arena, else the
        action itself."""
        count = self.num_envs if rows is None else len(rows)
        if self._write_actions is not None:
            self._write_actions(actions, rows=rows)
            return [None] * count
        space = self.action_space if rows is None else batch_space(
            self.single_action_space, count
        )
        split = list(iterate(space, actions))
        if len(split) != count:
            raise ValueError(f"Expected one action per env ({count}), got {len(split)}.")
        return split

    def step_async(self, actions: Any) -> None:
        """Send the actions to the envs; :meth:`step_wait` collects the results.

        Raises:
            ClosedEnvironmentError: The env was closed.
            AlreadyPendingCallError: Another call is pending.
            ValueError: The actions do not match the batched action space's shape or dtype.
        """
        self._assert_usable()
        self._assert_no_batches("step_async")
        self._assert_no_call_pending("step_async")
        arguments = self._step_arguments(actions)  # every action checked before any goes out
        if not self._ever_reset.all():
            raise ResetNeeded(
                "Call reset() before step(): envs "
                f"{np.flatnonzero(~self._ever_reset).tolist()} have never been reset."
            )
        self._begin("step_async", AsyncState.WAITING_STEP)
        restarted, self._restarted_results = self._restarted_results, {}
        for index, argument in enumerate(arguments):
            if index in restarted:  # replaced since the last step: its episode ended
                self._replies[index] = (True, self._truncated_step(index, restarted[index]))
            else:
                self._send(index, "step", argument, "step_async")

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
        """The batch of observations: the shared buffer (copied if ``copy``), or the
        payloads' observations concatenated into :attr:`observations`."""
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
            self._send(index, "call", (name, args, kwargs), "call_async")

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
            self._send(index, "setattr", (name, value), "set_attr")
        self._collect("set_attr", None)

    # ------------------------------------------------------------------ with-block, GC

    def __enter__(self) -> Any:
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
