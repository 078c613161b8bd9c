"""``RetroVectorEnvBase``: everything a retrovec vector env does that does not depend on how
commands reach the envs.

Both backends, worker processes (:class:`~retrovec.AsyncRetroVectorEnv`) and Ray actors
(:class:`~retrovec.core.ray_backend.RayRetroVectorEnv`), are this class plus a transport.
What each env is doing lives in one :class:`~retrovec.core.slots.SlotTable`; the gymnasium
calls, their ``*_async``/``*_wait`` halves, EnvPool-style batches
(:class:`~retrovec.core.batches.AsyncBatchesMixin`) and targeted calls to chosen envs
(``envs.at(indices)``, :mod:`retrovec.core.selection`) are views of it. A dead worker is
handled by one restart policy keyed by the command it was given
(:mod:`retrovec.core.restart`).

A transport implements:

* :meth:`RetroVectorEnvBase._encode` — turn ``(kind, argument)`` into what ``_post``
  sends; raises (e.g. ``pickle.PicklingError``) before anything is sent.
* :meth:`RetroVectorEnvBase._post` — send an encoded command to env ``index``; ``False``
  when the env is known to be gone.
* :meth:`RetroVectorEnvBase._replies` — yield ``(index, reply)`` for the envs in
  ``pending`` as they answer, where ``reply`` is ``(True, payload)``, ``(False,
  error_payload)``, or ``None`` for an env that died. A step's payload is
  ``(observation or None, info)``; its reward and flags are already in ``self._arena``.
* :meth:`RetroVectorEnvBase._replace_worker` — start a replacement for a dead env and
  bring it to where it can take commands (spaces checked, arena attached).
* :meth:`RetroVectorEnvBase._exitcode` — how a dead env's process ended, if known.

and ``close_extras``, then calls :meth:`RetroVectorEnvBase._init_base` first thing in its
``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import Env, Space
from gymnasium.error import (
    AlreadyPendingCallError,
    ClosedEnvironmentError,
    NoAsyncCallError,
    ResetNeeded,
)
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.async_vector_env import AsyncState
from gymnasium.vector.utils import (
    concatenate,
)

from retrovec.core.actions import ActionRouter
from retrovec.core.arena import SharedArena, copy_structure
from retrovec.core.batches import AsyncBatchesMixin
from retrovec.core.checks import (
    base_arguments,
    check_autoreset_mode,
    check_env_fns,
    check_failure_handling,
    check_observation_mode,
    check_reset_mask,
    spread_seeds,
)
from retrovec.core.commands import CommandsMixin
from retrovec.core.info_columns import InfoSchema, batch_info_columns, decode_info
from retrovec.core.infos import batch_infos
from retrovec.core.leases import ObservationLeases
from retrovec.core.restart import ReplacementDied, RestartMixin
from retrovec.core.selection import SelectionMixin
from retrovec.core.signals import InterruptGuard
from retrovec.core.slots import CALL, SlotTable
from retrovec.core.spaces import SpacesMixin
from retrovec.errors import (
    BrokenVectorEnvError,
)

__all__ = ["ReplacementDied", "RetroVectorEnvBase", "base_arguments"]  # for transports


class RetroVectorEnvBase(
    CommandsMixin, RestartMixin, SelectionMixin, SpacesMixin, AsyncBatchesMixin, VectorEnv
):
    """The transport-agnostic part of retrovec's vector envs (see the module docstring).

    Subclasses set :attr:`_arena` (a :class:`~retrovec.core.arena.SharedArena` with at
    least rewards, done flags and info columns), :attr:`_actions` (an
    :class:`~retrovec.core.actions.ActionRouter`), :attr:`_observations_shared` and
    :attr:`observations` once the spaces are known.
    """

    #: What one env runs in, as messages name it.
    _worker_noun = "worker"

    # ------------------------------------------------------------------ transport hooks

    def _encode(self, kind: str, argument: Any) -> Any:
        """What :meth:`_post` sends for ``(kind, argument)``; raises if it cannot travel."""
        raise NotImplementedError

    def _post(self, index: int, message: Any) -> bool:
        """Send an encoded command to env ``index``; ``False`` if it is known to be gone."""
        raise NotImplementedError

    def _replies(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, reply)`` as envs in ``pending`` answer, removing each from
        ``pending``; stop when none is left, ``wanted`` were yielded, or ``timeout`` passes."""
        raise NotImplementedError

    def _replace_worker(self, index: int) -> None:
        """Start a new worker for env ``index`` and make it ready for commands.

        Raises:
            ReplacementDied: It died before it was ready.
            OSError: It could not be started.
            Exception: What its ``env_fn`` raised (re-raised as the env's error).
        """
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
        validate_actions: bool = False,
    ) -> list[Callable[[], Env]]:
        """Check the arguments every backend shares and set the state; returns the
        ``env_fns`` as a list."""
        self.closed = False
        self._arena: SharedArena | None = None
        self._actions: ActionRouter | None = None
        self._read_actions: list[Callable[[], Any]] = []  # transports that read the arena here
        self._observations_shared = False
        # copy=True lockstep results lent from extra banks (retrovec.core.leases), and
        # whether some env's latest observation is in one of them rather than in bank 0.
        self._leases: ObservationLeases | None = None
        self._banks_dirty = False
        self._state = AsyncState.DEFAULT
        self._parked: tuple[Any] | None = None  # a finished call's result, not handed over yet
        self._broken: str | None = None
        self._crashed = False
        self._crash_cause: BaseException | None = None
        self._last_exitcode: int | None = None
        self._guard = InterruptGuard()

        env_fns = check_env_fns(env_fns)
        check_observation_mode(observation_mode)
        check_failure_handling(timeout, on_worker_failure, max_restarts)
        self.autoreset_mode = check_autoreset_mode(autoreset_mode)

        self.env_fns = env_fns
        self.num_envs = len(env_fns)
        self.copy = copy
        self.observation_mode = observation_mode
        self.timeout = timeout
        self.on_worker_failure = on_worker_failure
        self.max_restarts = max_restarts
        self.validate_actions = bool(validate_actions)
        #: How many times each env's worker was restarted (``on_worker_failure="restart"``).
        self.restart_counts = np.zeros(self.num_envs, dtype=np.int64)
        self._slots = SlotTable(self.num_envs)
        self._ever_reset = np.zeros(self.num_envs, dtype=np.bool_)
        self._resetting = np.ones(self.num_envs, dtype=np.bool_)
        self._init_async_batches(batch_size)
        return env_fns

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
        self._release_batches_for_reset("reset_async")
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
        resetting = np.ones(self.num_envs, np.bool_) if mask is None else mask.copy()
        commands = [
            (index, "reset", (seeds[index], options)) if resetting[index]
            else (index, "reset-noop", None)
            for index in range(self.num_envs)
        ]
        with self._guard:  # a Ctrl-C while sending is raised once the call is pending
            self._dispatch(commands, CALL)
            self._state = AsyncState.WAITING_RESET
            self._resetting = resetting
        for index in np.flatnonzero(resetting):
            self._slots[index].episode_end = None  # the reset ends that episode anyway
        if mask is None or mask.all():
            self._broken = None  # a full reset starts every env afresh

    def _check_reset_mask(self, mask: Any) -> np.ndarray:
        return check_reset_mask(mask, self.num_envs)

    def _seeds(self, seed: Any) -> list[int | None]:
        return spread_seeds(seed, self.num_envs)

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
        return self._finish_call("reset_wait", timeout, self._reset_result)

    def _reset_result(self, payloads: list[tuple[Any, dict]]) -> tuple[Any, dict[str, Any]]:
        self._ever_reset |= self._resetting
        infos = self._batch_infos(None, [info for _, info in payloads], self)
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
        env's ``"step"`` argument (:data:`~retrovec.core.actions.IN_ARENA` where the action
        went into the arena); see :class:`~retrovec.core.actions.ActionRouter`."""
        return self._actions.route(actions, rows)

    def _step_commands(self, indices: Sequence[int], arguments: Sequence[Any], owner: str) -> list:
        """The ``step`` commands for ``indices``; an env whose worker was replaced since its
        last step gets its truncated transition at once instead (no step is sent)."""
        commands = []
        table = self._slots.entries
        for index, argument in zip(indices, arguments):
            slot = table[index]
            if slot.episode_end is not None:
                ended, slot.episode_end = slot.episode_end, None
                self._slots.finish(index, "step", self._truncated_step(index, ended), owner)
            else:
                commands.append((index, "step", argument))
        return commands

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
        with self._guard:  # a Ctrl-C while sending is raised once the call is pending
            self._dispatch(self._step_commands(range(self.num_envs), arguments, CALL), CALL)
            self._state = AsyncState.WAITING_STEP

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
        return self._finish_call("step_wait", timeout, self._step_result)

    def _step_result(
        self, payloads: list[tuple[Any, dict]]
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """The batched step result of every env's ``(observation, info)`` payload."""
        return self._step_tuple(
            self._batch_observations(payloads), [info for _, info in payloads]
        )

    def _step_tuple(
        self, observations: Any, infos: list[Any]
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """``(observations, rewards, terminations, truncations, infos)`` with the scalars
        from the arena and ``infos`` (one per env: a dict, or the ``InfoSchema`` of an
        info in the arena's columns) batched."""
        batched = self._batch_infos(None, infos, self)
        arena = self._arena
        assert arena is not None
        return (
            observations,
            arena.rewards.copy(),
            arena.terminations.copy(),
            arena.truncations.copy(),
            batched,
        )

    def _info_dict(self, index: int, info: Any) -> dict:
        """Env ``index``'s info as a dict (read from the info columns if it came there)."""
        if type(info) is InfoSchema:
            return decode_info(self._arena.info_columns[index], info)
        return info

    def _batch_infos(self, rows: np.ndarray | None, infos: list[Any], owner: Any) -> dict:
        """Batch the infos of the envs ``rows`` (``None``: all) as gymnasium does; infos
        that came in the arena's columns with one schema are batched from there at once."""
        if infos and type(infos[0]) is InfoSchema:
            batched = batch_info_columns(self._arena.info_columns, rows, infos)
            if batched is not None:
                return batched
        indices = range(len(infos)) if rows is None else rows
        return batch_infos(
            [self._info_dict(int(index), info) for index, info in zip(indices, infos)], owner
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
        if self._banks_dirty:  # lockstep steps left observations in other banks
            self._leases.bring_home()
            self._banks_dirty = False
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

    def _begin(self, method: str) -> None:
        self._assert_usable()
        self._assert_no_batches(method)
        self._assert_no_call_pending(method)

    def call_async(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Send a call to every env; :meth:`call_wait` collects the results.

        Raises:
            ClosedEnvironmentError: The env was closed.
            AlreadyPendingCallError: Another call is pending.
            Exception: The arguments cannot be pickled (nothing was sent).
        """
        self._begin("call_async")
        argument = (name, args, kwargs)
        with self._guard:  # a Ctrl-C while sending is raised once the call is pending
            self._dispatch([(index, "call", argument) for index in range(self.num_envs)], CALL)
            self._state = AsyncState.WAITING_CALL

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """Wait for :meth:`call_async`'s results.

        Raises:
            NoAsyncCallError: No ``call_async`` is pending (or only a targeted one, sent
                by ``envs.at(...).call_async``).
            WorkerTimeoutError: Some envs did not answer in time; the call stays pending.
        """
        self._expect("call_wait", AsyncState.WAITING_CALL, "call_async")
        self._assert_not_selected("call_wait")
        return self._finish_call("call_wait", timeout, tuple)

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
        self._begin("set_attr")
        if not isinstance(values, (list, tuple)):
            values = [values for _ in range(self.num_envs)]
        if len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of "
                f"environments. Got `{len(values)}` values for {self.num_envs} environments."
            )
        with self._guard:  # a Ctrl-C while sending is raised once the call is pending
            self._dispatch(
                [(index, "setattr", (name, value)) for index, value in enumerate(values)], CALL
            )
            self._state = AsyncState.WAITING_CALL
        self._finish_call("set_attr", None)

    # ------------------------------------------------------------------ with-block, GC

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close on leaving a ``with`` block, also when it raised."""
        self.close()

    def __del__(self) -> None:
        """Close the workers if the user did not (envs are closed, not just killed)."""
        if not getattr(self, "closed", True) and hasattr(self, "_slots"):
            try:
                self.close(timeout=5.0)
            except Exception:  # pragma: no cover - best effort during garbage collection
                pass
