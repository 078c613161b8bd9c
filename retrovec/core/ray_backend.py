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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gymnasium import Env, Space, logger
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.autoreset import autoreset_step
from retrovec.core.arena import copy_structure
from retrovec.core.base import RetroVectorEnvBase
from retrovec.core.worker import error_reply

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
    ``(False, error)`` (as :func:`retrovec.core.worker.error_reply` packs it), so an exception
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


class RayRetroVectorEnv(RetroVectorEnvBase):
    """Runs ``len(env_fns)`` envs, each in its own Ray actor, behind gymnasium's vector API.

    Behaves as :class:`~retrovec.AsyncRetroVectorEnv` (same methods, seeding, autoreset
    modes, info batching, errors, ``on_worker_failure``, EnvPool-style
    ``async_reset``/``send``/``recv``): both are
    :class:`~retrovec.core.base.RetroVectorEnvBase` with another transport. The envs
    may run on any node of a Ray cluster; no env is built in the driver. Connects to Ray
    with ``ray.init()`` when the driver has not already (``RAY_ADDRESS``, or a new local
    instance).

    Args:
        env_fns: Functions that each build one env; they run in the actors only.
        num_cpus: CPUs Ray reserves for each actor.
        actor_options: Extra ``ray.remote`` options for every actor (a dict), or one dict
            per env (a list): ``resources``, ``scheduling_strategy``, ``runtime_env``...
        copy: ``reset`` and ``step`` return fresh arrays (``True``) or the driver's batch
            buffer that the next call overwrites (``False``).
        observation_mode: ``"same"``, ``"different"`` or ``(batch_space, single_space)``.
        autoreset_mode: As gymnasium's :class:`~gymnasium.vector.AutoresetMode`.
        timeout: Default seconds for every ``*_wait`` call (``None``: no limit).
        on_worker_failure: ``"raise"`` (:class:`~retrovec.errors.WorkerCrashedError`) or
            ``"restart"`` (a new actor from the same ``env_fn``, reset, its episode
            reported truncated with ``info["worker_restarted"]``). An actor whose node
            is lost counts as dead.
        max_restarts: With ``"restart"``, restarts allowed per env.
        batch_size: How many envs :meth:`recv` returns (``None``: ``num_envs``).

    Raises:
        ImportError: Ray is not installed.
        ValueError: Bad ``env_fns`` or an argument outside the values listed.
        SpacesMismatchError: The envs do not share their spaces.
        Exception: Whatever an ``env_fn`` raised, with the actor's traceback as
            ``__cause__``; every actor is stopped first.
    """

    _worker_noun = "Ray actor"

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
        self.actors: list[Any] = []
        self._refs: dict[int, Any] = {}  # env index -> ObjectRef of its unanswered call
        self._kinds: dict[int, str] = {}  # env index -> the command of that call
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

        self._ray = ray = import_ray()
        self.num_cpus = num_cpus
        self.actor_options = per_env
        #: Each actor's process id and Ray node id (as ``ray.get_runtime_context()`` says).
        self.worker_pids: list[int] = [0] * self.num_envs
        self.node_ids: list[str] = [""] * self.num_envs
        if not ray.is_initialized():
            ray.init()
        self._actor_class = ray.remote(EnvActor)

        try:
            self.actors = [None] * self.num_envs
            self._state = AsyncState.WAITING_CALL
            for index in range(self.num_envs):
                self.actors[index] = self._start_actor(index)
                self._send(index, "build", None, "__init__")
            descriptions = self._collect("__init__", timeout)
            self._adopt_spaces(descriptions)
            self._attach_driver_arena()
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

    def _check_description(self, index: int, description: dict[str, Any]) -> None:
        super()._check_description(index, description)
        self.worker_pids[index] = description["pid"]
        self.node_ids[index] = description["node_id"]

    # ------------------------------------------------------------------ transport

    def _post(self, index: int, kind: str, argument: Any) -> bool:
        """Call the actor's method for ``kind``; a dead actor shows when its reply is read."""
        actor = self.actors[index]
        if kind == "step":
            action = self._read_actions[index]() if argument is None else argument
            ref = actor.step.remote(action)
        else:
            method = getattr(actor, kind.replace("-", "_"))
            ref = method.remote() if argument is None else method.remote(*argument)
        self._refs[index] = ref
        self._kinds[index] = kind
        return True

    def _replies_from(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Replies as ``ray.wait`` reports them ready: all of ``pending`` at once, or the
        first ``wanted``."""
        ray = self._ray
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            by_ref = {self._refs[index]: index for index in pending}
            count = len(by_ref) if wanted is None else max(1, min(wanted, len(by_ref)))
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(by_ref), num_returns=count, timeout=left)
            if not ready:
                return
            for ref in ready:
                index = by_ref[ref]
                pending.discard(index)
                del self._refs[index]
                if wanted is not None:
                    wanted -= 1
                yield index, self._reply(index, ref)

    def _reply(self, index: int, ref: Any) -> Any:
        """One finished call's reply, in the base class's form: ``None`` if the actor (or
        its node) died; a step's reward and flags go into the staging arena."""
        ray = self._ray
        kind = self._kinds.pop(index, None)
        try:
            reply = ray.get(ref)
        except ray.exceptions.RayActorError as error:  # ActorDiedError, node death...
            self._crash_cause = error
            return None
        except ray.exceptions.RayTaskError as error:  # e.g. a reply that would not pickle
            cause = getattr(error, "cause", None)
            if not isinstance(cause, BaseException):
                cause = error
            return False, (cause, type(cause).__qualname__, str(cause), str(error))
        if kind == "step" and reply[0]:
            observation, reward, terminated, truncated, info = reply[1]
            arena = self._arena
            arena.rewards[index] = reward
            arena.terminations[index] = terminated
            arena.truncations[index] = truncated
            if "final_obs" in info:  # copy it out of the object store (read-only views)
                info = {**info, "final_obs": copy_structure(info["final_obs"])}
            reply = (True, (observation, info))
        return reply

    def _restart_worker(self, index: int) -> tuple[Any, dict]:
        self._ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._start_actor(index)
        self._check_description(index, self._request(index, "build", None, "restart"))
        return self._request(index, "reset-after-restart", None, "restart")

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
            if self._state != AsyncState.DEFAULT and self._pending and not self._crashed:
                logger.warn(
                    f"Calling `close` while waiting for a pending call to "
                    f"`{self._state.value}` to complete."
                )
            if self._refs:  # pending calls and batches in flight
                ray.wait(list(self._refs.values()), num_returns=len(self._refs), timeout=grace)
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
        self._pending, self._replies, self._in_flight, self._arrived = set(), {}, {}, {}
        self._refs, self._kinds = {}, {}
        self._arrival_order = []
        self._state = AsyncState.DEFAULT
        if self._arena is not None:
            self._write_actions = None
            self._read_actions = []
            self._arena.close()
            self._arena = None
