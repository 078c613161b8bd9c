"""``RayRetroVectorEnv``: the same vector env API, with every emulator a Ray actor.

When one machine has too few cores, the emulators can run anywhere in a Ray cluster.
Each env is one actor (one worker process: stable-retro's one emulator per process still
holds) placed by Ray's scheduler; the driver keeps gymnasium's vector API, the autoreset
modes, info batching, errors and EnvPool-style batches of
:class:`~retrovec.AsyncRetroVectorEnv`. Data flows one way around the loop::

    driver ──actor call: step(action)──▶ actor i (any node) ──env.step──┐
    driver ◀──ray.wait + ray.get: (obs, reward, terminated, truncated, info)──┘
                       (through Ray's object store: zero-copy numpy reads on the same node)

Ray is an optional dependency (``pip install 'retrovec[ray]'``): importing this module does
not import it; building a :class:`RayRetroVectorEnv` does. See ``docs/ray.md``.

Example:
    >>> import ray, retrovec
    >>> ray.init(num_cpus=2, include_dashboard=False)  # doctest: +SKIP
    >>> envs = retrovec.make("Airstriker-Genesis-v0", num_envs=2, backend="ray")  # doctest: +SKIP
    >>> observations, infos = envs.reset(seed=0)  # doctest: +SKIP
    >>> envs.close()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
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

from retrovec.autoreset import autoreset_step
from retrovec.async_batches import _BatchInfos
from retrovec.errors import (
    BrokenVectorEnvError,
    RemoteTraceback,
    SpacesMismatchError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from retrovec.infos import batch_infos
from retrovec.shared_memory import ArenaLayout, SharedArena, copy_structure
from retrovec.worker import error_reply

__all__ = ["RayRetroVectorEnv", "import_ray"]

#: Seconds ``close()`` waits for the actors to close their envs when given no timeout.
DEFAULT_CLOSE_TIMEOUT = 30.0

#: Methods that ``call`` must not reach (they have their own commands), as in gymnasium.
_RESERVED_CALLS = ("reset", "step", "close", "_setattr", "_check_spaces")


def import_ray() -> Any:
    """Import Ray, or say how to install it.

    Raises:
        ImportError: Ray is not installed; the message gives the pip command.
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "The Ray backend needs Ray: pip install 'retrovec[ray]' (or pip install "
            f"'ray>=2.9'). ({error})"
        ) from error
    return ray


# --------------------------------------------------------------------------- actor side


class EnvActor:
    """One env in a Ray actor. Every method answers ``(True, payload)`` or
    ``(False, error)`` (as :func:`retrovec.worker.error_reply` packs it), so an exception
    in the env never kills the actor and ``close()`` still closes the env cleanly."""

    def __init__(self, index: int, env_fn: Callable[[], Env], autoreset_mode: AutoresetMode):
        self.index = index
        self.env_fn = env_fn
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.env: Env | None = None
        self.needs_reset = False
        self.last_observation: Any = None

    def _answer(self, method: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        try:
            return True, method(*args)
        except Exception as error:
            return error_reply(error)

    def build(self) -> tuple[bool, Any]:
        """Build the env; answer its spaces, metadata, render mode, pid and node."""
        return self._answer(self._build)

    def _build(self) -> dict[str, Any]:
        import ray

        env = self.env = self.env_fn()
        return {
            "observation_space": env.observation_space,
            "action_space": env.action_space,
            "metadata": dict(env.metadata),
            "render_mode": env.render_mode,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    def reset(self, seed: int | None, options: dict | None) -> tuple[bool, Any]:
        return self._answer(self._reset, seed, options)

    def _reset(self, seed: int | None, options: dict | None) -> tuple[Any, dict]:
        observation, info = self.env.reset(seed=seed, options=options)
        self.needs_reset = False
        self.last_observation = observation
        return observation, info

    def reset_noop(self) -> tuple[bool, Any]:
        """A row of a masked reset that leaves this env alone: its current observation."""
        return True, (self.last_observation, {})

    def reset_after_restart(self) -> tuple[bool, Any]:
        """Reset a replacement actor's env. Its episode is reported as truncated, so under
        NEXT_STEP the next step is the reset step that follows an episode end."""
        answer = self._answer(self._reset, None, None)
        self.needs_reset = self.autoreset_mode is AutoresetMode.NEXT_STEP
        return answer

    def step(self, action: Any) -> tuple[bool, Any]:
        return self._answer(self._step, action)

    def _step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info, self.needs_reset = autoreset_step(
            self.env, action, self.autoreset_mode, self.needs_reset
        )
        self.last_observation = observation
        return observation, reward, terminated, truncated, info

    def call(self, name: str, args: tuple, kwargs: dict) -> tuple[bool, Any]:
        return self._answer(self._call, name, args, kwargs)

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in _RESERVED_CALLS:
            raise ValueError(
                f"Trying to call function `{name}` with `call`, use `{name}` directly instead."
            )
        attribute = self.env.get_wrapper_attr(name)
        return attribute(*args, **kwargs) if callable(attribute) else attribute

    def setattr(self, name: str, value: Any) -> tuple[bool, Any]:
        return self._answer(self.env.set_wrapper_attr, name, value)

    def close(self) -> tuple[bool, Any]:
        env, self.env = self.env, None
        return self._answer(env.close) if env is not None else (True, None)


# --------------------------------------------------------------------------- driver side


class RayRetroVectorEnv(VectorEnv):
    """Runs ``len(env_fns)`` envs, each in its own Ray actor, behind gymnasium's vector API.

    Behaves as :class:`~retrovec.AsyncRetroVectorEnv` (same methods, seeding, autoreset
    modes, info batching, errors, ``on_worker_failure``, EnvPool-style
    ``async_reset``/``send``/``recv``), but the envs may run on any node of a Ray
    cluster. No env is built in the driver. Connects to Ray with ``ray.init()`` when the
    driver has not already (``RAY_ADDRESS``, or a new local instance).

    Args:
        env_fns: Functions that each build one env; they run in the actors only.
        num_cpus: CPUs Ray reserves for each actor.
        actor_options: Extra ``ray.remote`` options for every actor (a dict), or one dict
            per env (a list): ``resources``, ``scheduling_strategy``, ``runtime_env``...
        copy: Accepted for drop-in use; observations are always fresh arrays unless
            ``copy=False``, which returns the driver's batch buffer that the next call
            overwrites.
        observation_mode: ``"same"``, ``"different"`` or ``(batch_space, single_space)``.
        autoreset_mode: As gymnasium's :class:`~gymnasium.vector.AutoresetMode`.
        timeout: Default seconds for every ``*_wait`` call (``None``: no limit).
        on_worker_failure: ``"raise"`` (:class:`~retrovec.errors.WorkerCrashedError`) or
            ``"restart"`` (a new actor from the same ``env_fn``, reset, its episode
            reported truncated with ``info["worker_restarted"]``).
        max_restarts: With ``"restart"``, restarts allowed per env.
        batch_size: How many envs :meth:`recv` returns (``None``: ``num_envs``).

    Raises:
        ImportError: Ray is not installed.
        ValueError: Bad ``env_fns`` or an argument outside the values listed.
        SpacesMismatchError: The envs do not share their spaces.
        Exception: Whatever an ``env_fn`` raised, with the actor's traceback as
            ``__cause__``; every actor is stopped first.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Env]],
        *,
        num_cpus: float = 1,
        actor_options: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        copy: bool = True,
        observation_mode: str | tuple[Space, Space] = "same",
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        timeout: float | None = None,
        on_worker_failure: str = "raise",
        max_restarts: int = 3,
        batch_size: int | None = None,
    ) -> None:
        self.closed = False
        self.actors: list[Any] = []
        self._staging: SharedArena | None = None
        self._state = AsyncState.DEFAULT
        self._pending: dict[int, Any] = {}  # env index -> ObjectRef of the pending call
        self._replies: dict[int, Any] = {}
        self._broken: str | None = None
        self._crashed = False
        self._in_flight: dict[int, tuple[str, Any]] = {}  # async batches: kind, ref
        self._arrived: dict[int, tuple[str, Any]] = {}
        self._arrival_order: list[int] = []

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
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be None or >= 0 seconds, got {timeout}.")
        if on_worker_failure not in ("raise", "restart"):
            raise ValueError(
                f"on_worker_failure must be 'raise' or 'restart', got {on_worker_failure!r}."
            )
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}.")
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0:
            raise ValueError(f"num_cpus must be a number >= 0, got {num_cpus!r}.")
        if actor_options is None or isinstance(actor_options, dict):
            per_env = [dict(actor_options or {}) for _ in env_fns]
        else:
            per_env = [dict(options) for options in actor_options]
            if len(per_env) != len(env_fns):
                raise ValueError(
                    f"actor_options must be a dict or one dict per env ({len(env_fns)}), "
                    f"got {len(per_env)}."
                )
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                "autoreset_mode must be an AutoresetMode (NEXT_STEP, SAME_STEP or DISABLED) or "
                f"its value {[mode.value for mode in AutoresetMode]}, got {autoreset_mode!r}."
            ) from None
        self.num_envs = len(env_fns)
        if batch_size is None:
            batch_size = self.num_envs
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
            1 <= batch_size <= self.num_envs
        ):
            raise ValueError(
                f"batch_size must be an int from 1 to num_envs={self.num_envs}, got {batch_size!r}."
            )

        self._ray = ray = import_ray()
        self.env_fns = env_fns
        self.num_cpus = num_cpus
        self.actor_options = per_env
        self.copy = copy
        self.observation_mode = observation_mode
        self.timeout = timeout
        self.on_worker_failure = on_worker_failure
        self.max_restarts = max_restarts
        #: How many envs :meth:`recv` returns.
        self.batch_size = batch_size
        #: How many times each env's actor was restarted (``on_worker_failure="restart"``).
        self.restart_counts = np.zeros(self.num_envs, dtype=np.int64)
        #: Each actor's process id and Ray node id (as ``ray.get_runtime_context()`` says).
        self.worker_pids: list[int] = [0] * self.num_envs
        self.node_ids: list[str] = [""] * self.num_envs
        self._ever_reset = np.zeros(self.num_envs, dtype=np.bool_)
        self._restarted_results: dict[int, tuple[Any, dict]] = {}
        if not ray.is_initialized():
            ray.init()
        self._actor_class = ray.remote(EnvActor)

        try:
            self.actors = [None] * self.num_envs
            self._state = AsyncState.WAITING_CALL
            for index in range(self.num_envs):
                self.actors[index] = self._start_actor(index)
                self._pending[index] = self.actors[index].build.remote()
            descriptions = self._collect("__init__", timeout)
            self._adopt_spaces(descriptions)
        except BaseException:
            self.close(terminate=True)
            raise

    # ------------------------------------------------------------------ start-up

    def _start_actor(self, index: int) -> Any:
        options = {"num_cpus": self.num_cpus, "max_restarts": 0, "max_task_retries": 0}
        options.update(self.actor_options[index])
        return self._actor_class.options(**options).remote(
            index, self.env_fns[index], self.autoreset_mode
        )

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
        self.observations = create_empty_array(
            self.single_observation_space, n=self.num_envs, fn=np.zeros
        )
        # A small local arena without observations: it checks actions exactly as the
        # process backend does and holds the batch's rewards and done flags.
        layout = ArenaLayout.plan(
            self.num_envs, self.single_observation_space, self.single_action_space, False
        )
        self._staging = SharedArena.create(layout)
        if layout.action_space is not None:
            self._write_actions = self._staging.action_writer()
            self._read_actions = [self._staging.action_reader(i) for i in range(self.num_envs)]
        else:
            self._write_actions = None

    def _check_description(self, index: int, description: dict[str, Any]) -> None:
        mode = self.observation_mode
        space = description["observation_space"]
        if not isinstance(mode, tuple):
            same = (
                space == self.single_observation_space
                if mode == "same"
                else is_space_dtype_shape_equiv(space, self.single_observation_space)
            )
            if not same:
                raise SpacesMismatchError(
                    f"The observation space of env {index} ({space}) differs from "
                    f"{self.single_observation_space} (observation_mode={mode!r})."
                )
        if description["action_space"] != self.single_action_space:
            raise SpacesMismatchError(
                f"The action space of env {index} ({description['action_space']}) differs "
                f"from env 0's ({self.single_action_space}). In order to batch actions, "
                "the action spaces from all environments must be equal."
            )
        self.worker_pids[index] = description["pid"]
        self.node_ids[index] = description["node_id"]

    # ------------------------------------------------------------------ waiting

    def _result(self, index: int, ref: Any) -> Any:
        """One finished call's reply ``(ok, payload)``, or ``None`` if its actor died."""
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as error:  # ActorDiedError, node death...
            self._death = error
            return None
        except ray.exceptions.RayTaskError as error:  # e.g. a reply that would not pickle
            cause = getattr(error, "cause", None)
            if not isinstance(cause, BaseException):
                cause = error
            return False, (cause, type(cause).__qualname__, str(cause), str(error))

    def _wait(self, refs: dict[int, Any], count: int, timeout: float | None) -> list[int]:
        """Wait for ``count`` of ``refs`` (env index -> ref); return the finished indices."""
        if not refs:
            return []
        by_ref = {ref: index for index, ref in refs.items()}
        ready, _ = self._ray.wait(
            list(by_ref), num_returns=min(count, len(by_ref)), timeout=timeout
        )
        return [by_ref[ref] for ref in ready]

    def _collect(self, method: str, timeout: float | None) -> list[Any]:
        """Wait for every pending reply and return the payloads by env index.

        Raises the env's exception (lowest index first), ``WorkerCrashedError`` for a
        dead actor, or ``WorkerTimeoutError`` leaving the call pending.
        """
        if timeout is None:
            timeout = self.timeout
        for index in self._wait(self._pending, len(self._pending), timeout):
            self._replies[index] = self._result(index, self._pending.pop(index))
        if self._pending:
            raise WorkerTimeoutError(method, timeout, sorted(self._pending))

        replies, self._replies = self._replies, {}
        self._state = AsyncState.DEFAULT
        dead = sorted(index for index, reply in replies.items() if reply is None)
        if dead and self.on_worker_failure == "restart" and method != "__init__":
            for index in dead:
                payload = self._replace_dead_actor(index, method)
                if method == "step_wait":
                    replies[index] = (True, self._truncated_step(index, payload))
                elif method == "reset_wait":
                    replies[index] = (True, payload)
                else:  # the episode ends at the next step
                    self._restarted_results[index] = payload
            if method not in ("reset_wait", "step_wait"):
                raise WorkerCrashedError(dead[0], None, f"`{method}`", restarted=True)
        elif dead:
            self._raise_crash(dead[0], method)
        failed = sorted(index for index, (ok, _) in replies.items() if not ok)
        if failed:
            if method in ("reset_wait", "step_wait"):
                self._broken = f"env {failed[0]} raised an exception in `{method}`"
            self._raise_env_error(failed, replies, method)
        return [replies[index][1] for index in range(self.num_envs)]

    def _raise_crash(self, index: int, method: str, why: str = "died") -> None:
        self._crashed = True
        self._broken = f"the actor of env {index} {why}"
        raise WorkerCrashedError(index, None, f"`{method}`") from getattr(self, "_death", None)

    def _raise_env_error(self, failed: list[int], replies: dict[int, Any], method: str) -> None:
        index = failed[0]
        error, type_name, message, text = replies[index][1]
        if error is None:
            error = RuntimeError(f"{type_name}: {message}")
        error.add_note(f"Raised in the Ray actor of env {index} during `{method}`.")
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

    def _request(self, index: int, ref: Any, method: str) -> Any:
        """Wait for one call of a replacement actor; returns its payload."""
        if not self._wait({index: ref}, 1, self.timeout):
            self._crashed = True
            self._broken = f"the actor of env {index} did not answer while being restarted"
            raise WorkerTimeoutError(method, self.timeout, [index])
        reply = self._result(index, ref)
        if reply is None:
            self._raise_crash(index, method, "died again while being restarted")
        if not reply[0]:
            self._crashed = True
            self._broken = f"the actor of env {index} failed while being restarted"
            self._raise_env_error([index], {index: reply}, method)
        return reply[1]

    def _replace_dead_actor(self, index: int, method: str) -> tuple[Any, dict]:
        """Start a new actor for env ``index`` and reset it; returns that reset's
        ``(observation, info)`` with ``info["worker_restarted"] = True``."""
        self.restart_counts[index] += 1
        if self.restart_counts[index] > self.max_restarts:
            self._crashed = True
            self._broken = f"the actor of env {index} died {self.restart_counts[index]} times"
            raise WorkerCrashedError(
                index, None, f"`{method}`", gave_up_after=self.max_restarts
            ) from getattr(self, "_death", None)
        logger.warn(
            f"The Ray actor of env {index} died during `{method}`; restarting it "
            f"({self.restart_counts[index]} of at most {self.max_restarts})."
        )
        self._ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = actor = self._start_actor(index)
        self._check_description(index, self._request(index, actor.build.remote(), "restart"))
        observation, info = self._request(index, actor.reset_after_restart.remote(), "restart")
        return observation, {**info, "worker_restarted": True}

    def _truncated_step(self, index: int, reset_payload: tuple[Any, dict]) -> tuple:
        """The step result of an env whose actor was replaced: truncated, reward 0."""
        observation, info = reset_payload
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            info = {"final_info": {"worker_restarted": True}, "final_obs": observation, **info}
        return observation, 0.0, False, True, info

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

    def _assert_no_batches(self, method: str) -> None:
        if self._in_flight or self._arrived:
            waiting = sorted({*self._in_flight, *self._arrived})
            raise AlreadyPendingCallError(
                f"Calling `{method}` while envs {waiting} are still running after "
                "`send`/`async_reset`; `recv()` them first.",
                "recv",
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
        self._pending = {}

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
        """Reset every env (or those in ``options["reset_mask"]``) and batch the results."""
        self.reset_async(seed=seed, options=options)
        return self.reset_wait()

    def reset_async(
        self,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Send ``reset`` to the envs; :meth:`reset_wait` collects the results."""
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
        self._pending = {}
        self._resetting = np.ones(self.num_envs, np.bool_) if mask is None else mask.copy()
        for index in list(self._restarted_results):
            if self._resetting[index]:
                del self._restarted_results[index]  # the reset ends that episode anyway
        for index, actor in enumerate(self.actors):
            if self._resetting[index]:
                self._pending[index] = actor.reset.remote(seeds[index], options)
            else:
                self._pending[index] = actor.reset_noop.remote()
        if mask is None or mask.all():
            self._broken = None  # a full reset starts every env afresh

    def _check_reset_mask(self, mask: Any) -> np.ndarray:
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
                isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0
            ):
                raise ValueError(f"Every seed must be None or an int >= 0, got {value!r}.")
        if len(seeds) != self.num_envs:
            raise ValueError(
                "If seeds are passed as a list the length must match "
                f"num_envs={self.num_envs} but got length={len(seeds)}."
            )
        return [None if value is None else int(value) for value in seeds]

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """Wait for :meth:`reset_async`'s results (``WorkerTimeoutError`` keeps it pending)."""
        self._expect("reset_wait", AsyncState.WAITING_RESET, "reset_async")
        payloads = self._collect("reset_wait", timeout)
        self._ever_reset |= self._resetting
        infos = batch_infos([info for _, info in payloads], self)
        return self._batch_observations([obs for obs, _ in payloads]), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every env with its action and batch the results."""
        self.step_async(actions)
        return self.step_wait()

    def _split_actions(self, actions: Any, rows: np.ndarray | None, count: int) -> list[Any]:
        """Check a batch of actions as the process backend does; one action per env."""
        if self._write_actions is not None:
            self._write_actions(actions, rows=rows)
            indices = range(self.num_envs) if rows is None else rows.tolist()
            return [self._read_actions[i]() for i in indices]
        space = self.action_space if rows is None else batch_space(self.single_action_space, count)
        split = list(iterate(space, actions))
        if len(split) != count:
            raise ValueError(f"Expected one action per env ({count}), got {len(split)}.")
        return split

    def step_async(self, actions: Any) -> None:
        """Send the actions to the envs; :meth:`step_wait` collects the results."""
        self._assert_usable()
        self._assert_no_batches("step_async")
        self._assert_no_call_pending("step_async")
        split = self._split_actions(actions, None, self.num_envs)
        if not self._ever_reset.all():
            raise ResetNeeded(
                "Call reset() before step(): envs "
                f"{np.flatnonzero(~self._ever_reset).tolist()} have never been reset."
            )
        self._begin("step_async", AsyncState.WAITING_STEP)
        restarted, self._restarted_results = self._restarted_results, {}
        for index, (actor, action) in enumerate(zip(self.actors, split)):
            if index in restarted:  # replaced since the last step: its episode ended
                self._replies[index] = (True, self._truncated_step(index, restarted[index]))
            else:
                self._pending[index] = actor.step.remote(action)

    def step_wait(
        self, timeout: float | None = None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Wait for :meth:`step_async`'s results (``WorkerTimeoutError`` keeps it pending)."""
        self._expect("step_wait", AsyncState.WAITING_STEP, "step_async")
        payloads = self._collect("step_wait", timeout)
        infos = batch_infos([self._own_info(payload[4]) for payload in payloads], self)
        return (*self._batch_steps(payloads), infos)

    def _batch_steps(self, payloads: list[tuple]) -> tuple:
        """Observations, rewards, terminations and truncations of step payloads."""
        rewards = np.array([p[1] for p in payloads], dtype=np.float64)
        terminations = np.array([p[2] for p in payloads], dtype=np.bool_)
        truncations = np.array([p[3] for p in payloads], dtype=np.bool_)
        observations = self._batch_observations([p[0] for p in payloads])
        return observations, rewards, terminations, truncations

    @staticmethod
    def _own_info(info: dict) -> dict:
        """Copy ``final_obs`` out of Ray's object store (its arrays are read-only views
        that would pin the store's memory)."""
        if "final_obs" in info:
            info = {**info, "final_obs": copy_structure(info["final_obs"])}
        return info

    def _batch_observations(self, observations: list[Any]) -> Any:
        """Copy the observations (zero-copy views of Ray's object store on this node) into
        one batch: a new one, or the reused buffer with ``copy=False``."""
        space = self.single_observation_space
        if len(observations) != self.num_envs or self.copy:
            buffer = create_empty_array(space, n=len(observations), fn=np.empty)
            return concatenate(space, observations, buffer)
        self.observations = concatenate(space, observations, self.observations)
        return self.observations

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a method (or read an attribute) of every env; one result per env."""
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def render(self) -> tuple[Any, ...] | None:
        """Returns a tuple of rendered frames from the environments."""
        return self.call("render")

    def call_async(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Send a call to every env; :meth:`call_wait` collects the results."""
        self._assert_usable()
        self._begin("call_async", AsyncState.WAITING_CALL)
        for index, actor in enumerate(self.actors):
            self._pending[index] = actor.call.remote(name, args, kwargs)

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """Wait for :meth:`call_async`'s results."""
        self._expect("call_wait", AsyncState.WAITING_CALL, "call_async")
        return tuple(self._collect("call_wait", timeout))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Get an attribute from every env."""
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | object) -> None:
        """Set an attribute on every env: one value per env (list or tuple) or one for all."""
        self._assert_usable()
        if not isinstance(values, (list, tuple)):
            values = [values for _ in range(self.num_envs)]
        if len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of "
                f"environments. Got `{len(values)}` values for {self.num_envs} environments."
            )
        self._begin("set_attr", AsyncState.WAITING_CALL)
        for index, (actor, value) in enumerate(zip(self.actors, values)):
            self._pending[index] = actor.setattr.remote(name, value)
        self._collect("set_attr", None)

    # ------------------------------------------------------------------ async batches

    def async_reset(
        self, seed: int | list[int | None] | None = None, options: dict | None = None
    ) -> None:
        """Reset every env without waiting; :meth:`recv` returns the results in batches."""
        self._assert_usable(allow_reset=True)
        self._assert_no_batches("async_reset")
        self._assert_no_call_pending("async_reset")
        seeds = self._seeds(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be None or a dict, got {options!r}.")
        self._restarted_results.clear()
        for index, actor in enumerate(self.actors):
            self._in_flight[index] = ("reset", actor.reset.remote(seeds[index], options))
        self._ever_reset[:] = True
        self._broken = None

    def send(self, actions: Any, env_id: Any = None) -> None:
        """Step the envs ``env_id`` (default: all) with ``actions``, without waiting."""
        self._assert_usable()
        self._assert_no_call_pending("send")
        ids = np.arange(self.num_envs) if env_id is None else np.asarray(env_id).reshape(-1)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"env_id must hold integer env indices, got {env_id!r}.")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs):
            raise ValueError(f"env_id must be in [0, {self.num_envs}), got {ids.tolist()}.")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"env_id holds an env twice: {ids.tolist()}.")
        busy = [int(i) for i in ids if i in self._in_flight or i in self._arrived]
        if busy:
            raise ValueError(
                f"Envs {busy} are still running or their results were not received yet: "
                "send only to envs that recv() returned."
            )
        if not self._ever_reset[ids].all():
            raise ResetNeeded("Call async_reset() (or reset()) before send().")
        split = self._split_actions(actions, ids, len(ids))
        for index, action in zip(ids.tolist(), split):
            if index in self._restarted_results:  # replaced since its last step
                payload = self._truncated_step(index, self._restarted_results.pop(index))
                self._arrive(index, "step", payload)
            else:
                self._in_flight[index] = ("step", self.actors[index].step.remote(action))

    def recv(
        self, timeout: float | None = None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Wait for the first :attr:`batch_size` envs to finish and return their results,
        with ``infos["env_id"]``; see :meth:`retrovec.AsyncRetroVectorEnv.recv`."""
        self._assert_usable()
        size = self.batch_size
        if len(self._arrived) + len(self._in_flight) < size:
            raise RuntimeError(
                f"recv() returns batch_size={size} envs, but only "
                f"{len(self._arrived) + len(self._in_flight)} are running or finished: "
                "send() to more envs first (or call async_reset())."
            )
        if timeout is None:
            timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._arrived) < size:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            refs = {index: ref for index, (_, ref) in self._in_flight.items()}
            ready = self._wait(refs, size - len(self._arrived), left)
            if not ready:
                raise WorkerTimeoutError("recv", timeout, sorted(self._in_flight))
            for index in ready:
                self._absorb(index)

        batch, self._arrival_order = self._arrival_order[:size], self._arrival_order[size:]
        results = [self._arrived.pop(index) for index in batch]
        rows = [
            payload if kind == "step" else (payload[0], 0.0, False, False, payload[1])
            for kind, payload in results
        ]
        observations, rewards, terminations, truncations = self._batch_steps(rows)
        infos = batch_infos([self._own_info(row[4]) for row in rows], _BatchInfos(size))
        infos["env_id"] = np.array(batch, dtype=np.int32)
        return observations, rewards, terminations, truncations, infos

    def _arrive(self, index: int, kind: str, payload: Any) -> None:
        self._arrived[index] = (kind, payload)
        self._arrival_order.append(index)

    def _absorb(self, index: int) -> None:
        kind, ref = self._in_flight.pop(index)
        reply = self._result(index, ref)
        if reply is None:
            if self.on_worker_failure != "restart":
                self._raise_crash(index, "recv")
            payload = self._replace_dead_actor(index, "recv")
            if kind == "step":
                payload = self._truncated_step(index, payload)
            self._arrive(index, kind, payload)
        elif not reply[0]:
            self._broken = f"env {index} raised an exception in `{kind}`"
            self._raise_env_error([index], {index: reply}, "recv")
        else:
            self._arrive(index, kind, reply[1])

    # ------------------------------------------------------------------ shutdown

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Close every env in its actor, then kill the actors.

        Args:
            timeout: Seconds to wait for a pending call and for the envs to close;
                ``None`` means 30 s. Actors still busy then are killed.
            terminate: Skip the envs' ``close()`` and kill the actors at once.
        """
        grace = DEFAULT_CLOSE_TIMEOUT if timeout is None else timeout
        ray = self._ray if hasattr(self, "_ray") else None
        actors = [actor for actor in self.actors if actor is not None]
        if ray is not None and actors and not terminate:
            busy = {**self._pending, **{i: ref for i, (_, ref) in self._in_flight.items()}}
            if self._state != AsyncState.DEFAULT and self._pending and not self._crashed:
                logger.warn(
                    f"Calling `close` while waiting for a pending call to "
                    f"`{self._state.value}` to complete."
                )
            if busy:
                ray.wait(list(busy.values()), num_returns=len(busy), timeout=grace)
            refs = [actor.close.remote() for actor in actors]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=grace)
            for ref in ready:
                try:
                    ok, payload = ray.get(ref)
                except ray.exceptions.RayError:
                    continue  # a dead actor has nothing to close
                if not ok:
                    logger.warn(f"An env raised while closing:\n{payload[3]}")
        if ray is not None:
            for actor in actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # pragma: no cover - Ray already shut down
                    pass
        self.actors = []
        self._pending, self._replies, self._in_flight, self._arrived = {}, {}, {}, {}
        self._arrival_order = []
        self._state = AsyncState.DEFAULT
        if self._staging is not None:
            self._write_actions = None
            self._read_actions = []
            self._staging.close()
            self._staging = None

    def __enter__(self) -> RayRetroVectorEnv:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Close on leaving a ``with`` block, also when it raised."""
        self.close()

    def __del__(self) -> None:
        """Kill the actors if the user did not close the env."""
        if not getattr(self, "closed", True) and hasattr(self, "_state"):
            try:
                self.close(timeout=5.0)
            except Exception:  # pragma: no cover - best effort during garbage collection
                pass
