"""``RayRetroVectorEnv``: the same vector env API, with every emulator a Ray actor.

``retrovec.make(..., backend="ray")`` builds Ray env runners instead
(:mod:`retrovec.core.ray_runners`: one actor per ``k`` emulators, one batch per runner per
step), which are several times faster per step. This layout remains for envs that use Ray
themselves (``ray.get``/``ray.put`` inside ``step``, a GPU or custom resource that Ray
hands each env): here each env runs in the Ray worker process itself, where a runner's
emulators are plain child processes without a Ray connection (``docs/ray.md``).

When one machine has too few cores, the emulators can run anywhere in a Ray cluster.
Each env is one actor (one worker process: stable-retro's one emulator per process still
holds) placed by Ray's scheduler; the driver keeps gymnasium's vector API, the autoreset
modes, info batching, errors and EnvPool-style batches of
:class:`~retrovec.AsyncRetroVectorEnv`. Both are
:class:`~retrovec.core.base.RetroVectorEnvBase`; this module is only the Ray transport.
Data flows one way around the loop::

    driver ──actor.handle.remote("step", action)──▶ actor i (any node): EnvServer.step ──┐
    driver ◀──ray.wait + ray.get: (True, (obs, reward, terminated, truncated, info))─────┘
                       (through Ray's object store: zero-copy numpy reads on the same node)

The actor (:class:`EnvActor`) holds the same :class:`~retrovec.core.server.EnvServer` as a
worker process, so every command (``reset``, ``reset-noop``, ``reset-after-restart``,
``step``, ``call``, ``setattr``) behaves exactly as there. Its replies are
``(True, result)`` or :func:`~retrovec.core.server.error_reply`'s ``(False, error)``; the
driver puts a step's reward and flags into its driver arena
(:meth:`~retrovec.core.base.RetroVectorEnvBase._attach_driver_arena`), where the base
class batches them. An actor counts as dead when Ray says so for its reply
(``RayActorError``, or ``ObjectLostError`` for a reply lost with its node); the base
class's restart policy then applies.

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

from gymnasium import Env, Space
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.actions import IN_ARENA
from retrovec.core.arena import copy_structure
from retrovec.core.base import RetroVectorEnvBase, base_arguments
from retrovec.core.server import (
    EnvServer,
    ErrorPayload,
    describe,
    error_reply,
    one_thread_per_library,
)
from retrovec.core.slots import CALL

__all__ = ["RayRetroVectorEnv", "import_ray"]

#: Seconds ``close()`` waits for the actors to close their envs when given no timeout.
DEFAULT_CLOSE_TIMEOUT = 30.0

#: The longest single ``ray.wait``, in seconds: how soon Ctrl-C interrupts a wait.
WAIT_SLICE = 0.1

#: Commands that are actor methods of their own; every other one goes to
#: :meth:`EnvActor.handle`.
_ACTOR_METHODS = ("build", "close")

#: Commands whose argument comes from the user and may not pickle: checked by ``_encode``.
_CHECKED_ARGUMENTS = ("reset", "call", "setattr")


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
    """One env in a Ray actor: an :class:`~retrovec.core.server.EnvServer` behind
    :meth:`build`, :meth:`handle` and :meth:`close` (and :meth:`ping`). Each answers
    ``(True, result)`` or ``(False, error)`` (as :func:`~retrovec.core.server.error_reply`
    packs it), so an exception in the env never kills the actor and ``close()`` still
    closes the env cleanly.

    Args:
        env_fn: Builds the env (in the actor, by :meth:`build`).
        autoreset_mode: How ``step`` handles episode ends.
    """

    def __init__(self, env_fn: Callable[[], Env], autoreset_mode: AutoresetMode) -> None:
        self.env_fn = env_fn
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.server: EnvServer | None = None

    def build(self) -> tuple[bool, Any]:
        """Build the env.

        Returns:
            ``(True, description)``: :func:`~retrovec.core.server.describe`'s spaces,
            metadata and render mode, plus this actor's ``pid`` and Ray ``node_id``; or
            ``(False, error)`` with what ``env_fn`` raised.
        """
        import ray

        try:
            env = self.env_fn()
            one_thread_per_library()
            self.server = EnvServer(env, self.autoreset_mode)
            description = describe(env)
        except Exception as error:
            return error_reply(error)
        node_id = ray.get_runtime_context().get_node_id()
        return True, {**description, "pid": os.getpid(), "node_id": node_id}

    def handle(self, kind: str, argument: Any) -> tuple[bool, Any]:
        """Run one :class:`~retrovec.core.server.EnvServer` command.

        Args:
            kind: The command (``"step"``, ``"reset"``, ``"call"``...).
            argument: Its argument (for ``"step"``, the action).

        Returns:
            ``(True, result)`` (for ``"step"``: ``(observation, reward, terminated,
            truncated, info)``) or ``(False, error)``.
        """
        try:
            return True, self.server.handle(kind, argument)
        except Exception as error:
            return error_reply(error)

    def ping(self) -> bool:
        """Answer at once: the driver asks whether this actor is still alive."""
        return True

    def close(self) -> tuple[bool, Any]:
        """Close the env (if it was built): ``(True, None)`` or ``(False, error)``."""
        try:
            if self.server is not None:
                self.server.close()
        except Exception as error:
            return error_reply(error)
        return True, None


# --------------------------------------------------------------------------- driver side


class RayActorsMixin:
    """What both Ray transports (one actor per env here, env runners in
    :mod:`retrovec.core.ray_runners`) do alike: record where each env runs, kill actors, and
    check a command's argument pickles before anything is sent."""

    _ray: Any
    timeout: float | None
    worker_pids: list[int | None]
    node_ids: list[str]

    def _check_description(self, index: int, description: dict[str, Any]) -> None:
        super()._check_description(index, description)  # type: ignore[misc]
        self.worker_pids[index] = description["pid"]
        self.node_ids[index] = description["node_id"]

    def _close_actors(
        self,
        actors: list[Any],
        timeout: float | None,
        terminate: bool,
        release: Callable[[Any], None],
    ) -> None:
        """``close_extras`` of both transports: close the envs in ``actors`` (unless
        ``terminate``), kill the actors, then ``release(ray)`` what the transport holds
        besides, and the arena.

        Args:
            actors: The actors (``None`` for one already gone).
            timeout: Seconds to wait for the calls in flight, then as long again for the
                envs to close; ``None`` means 30 s.
            terminate: Skip the envs' ``close()`` and kill the actors at once.
            release: Drops the transport's own state (``ray`` is ``None`` when Ray never
                started).
        """
        ray = getattr(self, "_ray", None)
        grace = self._close_grace = DEFAULT_CLOSE_TIMEOUT if timeout is None else timeout
        try:
            if ray is not None and not terminate and any(a is not None for a in actors):
                self._close_envs(grace)
        finally:
            self._state = AsyncState.DEFAULT
            if ray is not None:
                for actor in actors:
                    if actor is not None:
                        self._kill(actor)
            release(ray)
            self._calls = {}
            if self._arena is not None:
                self._actions = None
                self._read_actions = []
                self._arena.close()
                self._arena = None

    def _kill(self, actor: Any) -> None:
        """Stop an actor for good (dead or not)."""
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # pragma: no cover - Ray already shut down
            pass

    def _await_verdict(self, actor: Any) -> None:
        """Wait (at most ``timeout``) until Ray knows whether ``actor`` is dead or alive.

        Ray calls an actor on a node that stopped answering *unavailable*
        (``ActorUnavailableError``) until its health check declares the node dead, a few
        seconds later. Until then the node is still in the cluster's view, and a
        replacement placed there (e.g. by a soft node affinity) would die with it. A ping
        answers at once for an actor Ray knows dead or alive, and otherwise once it
        knows."""
        ray = self._ray
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            ping = actor.ping.remote()
            while not ray.wait([ping], timeout=WAIT_SLICE)[0]:  # Ctrl-C works between
                if deadline is not None and time.monotonic() >= deadline:
                    return
            try:
                ray.get(ping)
            except ray.exceptions.ActorUnavailableError:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(WAIT_SLICE)  # no verdict yet: ask again
                continue
            except ray.exceptions.RayError:
                pass  # dead
            return

    # ------------------------------------------------------------------ shutdown

    def _encode(self, kind: str, argument: Any) -> tuple[str, Any]:
        """The command itself, once its argument is known to pickle.

        Only the user's arguments (``reset``'s options, ``call``'s and ``setattr``'s values)
        are checked: Ray would refuse them when sent, after other envs had theirs. A
        step's action comes from the action space and is not pickled twice.

        Raises:
            Exception: The argument cannot be pickled (e.g. ``TypeError``,
                ``pickle.PicklingError``); nothing was sent.
        """
        if kind in _CHECKED_ARGUMENTS:
            self._ray.cloudpickle.dumps(argument)
        return kind, argument


class RayRetroVectorEnv(RayActorsMixin, RetroVectorEnvBase):
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
        validate_actions: As for :class:`~retrovec.AsyncRetroVectorEnv`: ``False`` sends
            each env its action as the user gave it; ``True`` (what :func:`retrovec.make`
            uses for retro envs) checks every batch against the action space in the
            driver and converts it to the space's dtype before any actor gets it.

    Attributes:
        actors: Each env's actor handle, by env index (a restarted env's is its
            replacement).
        worker_pids: Each actor's process id, on its node.
        node_ids: Each actor's Ray node id (as ``ray.get_runtime_context()`` says).

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
        validate_actions: bool = False,
    ) -> None:
        self.actors: list[Any] = []
        #: env index -> (command, ObjectRef) of its unanswered actor call.
        self._calls: dict[int, tuple[str, Any]] = {}
        env_fns = self._init_base(**base_arguments(locals()))
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
        self.worker_pids: list[int] = [0] * self.num_envs
        self.node_ids: list[str] = [""] * self.num_envs
        if not ray.is_initialized():
            ray.init()
        self._actor_class = ray.remote(EnvActor)

        try:
            self.actors = [self._start_actor(index) for index in range(self.num_envs)]
            self._dispatch([(index, "build", None) for index in range(self.num_envs)], CALL)
            self._state = AsyncState.WAITING_CALL
            self._adopt_spaces(self._finish_call("__init__", timeout))
            self._attach_driver_arena()
        except BaseException:
            self.close(terminate=self._crashed, timeout=5.0)
            raise

    # ------------------------------------------------------------------ start-up

    def _start_actor(self, index: int) -> Any:
        """A new actor for env ``index`` (its env is built by a ``"build"`` command)."""
        options = {"num_cpus": self.num_cpus, "max_restarts": 0, "max_task_retries": 0}
        options.update(self.actor_options[index])
        return self._actor_class.options(**options).remote(
            self.env_fns[index], self.autoreset_mode
        )

    # ------------------------------------------------------------------ transport

    def _post(self, index: int, message: tuple[str, Any]) -> bool:
        """Call the actor's method for the command; a dead actor shows when its reply is
        read. ``False`` only for an env whose actor could not be started."""
        actor = self.actors[index]
        if actor is None:
            return False
        kind, argument = message
        if kind in _ACTOR_METHODS:
            ref = getattr(actor, kind).remote()
        else:
            if kind == "step" and argument is IN_ARENA:  # the action is in the driver arena
                argument = self._read_actions[index]()
            ref = actor.handle.remote(kind, argument)
        self._calls[index] = (kind, ref)
        return True

    def _replies(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Replies as ``ray.wait`` reports them ready: all of ``pending`` at once, or the
        first ``wanted``.

        It waits in slices of :data:`WAIT_SLICE` seconds: not every Ray release that
        ``retrovec[ray]`` admits returns from ``ray.wait`` for a signal (2.60 does), and
        between two slices Ctrl-C raises before any reply is read."""
        ray = self._ray
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending and (wanted is None or wanted > 0):
            by_ref = {self._calls[index][1]: index for index in pending}
            count = len(by_ref) if wanted is None else min(wanted, len(by_ref))
            seconds = WAIT_SLICE if deadline is None else min(
                WAIT_SLICE, max(0.0, deadline - time.monotonic())
            )
            with self._guard.released():
                ready, _ = ray.wait(list(by_ref), num_returns=count, timeout=seconds)
            if not ready and deadline is not None and time.monotonic() >= deadline:
                return
            for ref in ready:
                index = by_ref[ref]
                pending.discard(index)
                if wanted is not None:
                    wanted -= 1
                yield index, self._reply(index, ref)

    def _reply(self, index: int, ref: Any) -> tuple[bool, Any] | None:
        """One finished call's reply in the base class's form: ``None`` if the actor (or
        its node, with the reply) is gone; a step's reward and flags go into the driver
        arena and its payload becomes ``(observation, info)``."""
        ray = self._ray
        kind, _ = self._calls.pop(index)
        try:
            reply = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as error:
            self._crash_cause = error  # ActorDiedError, a lost node, a lost reply...
            return None
        except ray.exceptions.RayTaskError as error:  # e.g. a reply that would not pickle
            return False, _task_error(error)
        except Exception as error:  # e.g. a reply that cannot be unpickled here
            error.add_note(f"The reply of env {index} could not be read in the driver.")
            return error_reply(error)
        if kind != "step" or not reply[0]:
            return reply
        observation, reward, terminated, truncated, info = reply[1]
        arena = self._arena
        arena.rewards[index] = reward
        arena.terminations[index] = terminated
        arena.truncations[index] = truncated
        if "final_obs" in info:  # copy it out of the object store (read-only views)
            info = {**info, "final_obs": copy_structure(info["final_obs"])}
        return True, (observation, info)

    def _replace_worker(self, index: int) -> None:
        """Once Ray has a verdict on env ``index``'s actor, kill it, start a new one and
        build its env there."""
        dead, self.actors[index] = self.actors[index], None
        self._calls.pop(index, None)
        if dead is not None:
            self._await_verdict(dead)
            self._kill(dead)
        self.actors[index] = self._start_actor(index)
        self._check_description(index, self._replacement_payload(index, "build", None, "build"))

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Close every env in its actor, then kill the actors.

        Args:
            timeout: Seconds to wait for the calls in flight, then as long again for the
                envs to close; ``None`` means 30 s. Actors still busy then are killed
                without closing their envs.
            terminate: Skip the envs' ``close()`` and kill the actors at once.
        """
        def release(ray: Any) -> None:
            self.actors = []

        self._close_actors(self.actors, timeout, terminate, release)


def _task_error(error: Exception) -> ErrorPayload:
    """The error payload of an actor call that raised outside the env (Ray's
    ``RayTaskError``: e.g. its reply would not pickle), with the actor's traceback."""
    cause = getattr(error, "cause", None)
    if not isinstance(cause, BaseException):
        cause = error
    return cause, type(cause).__qualname__, str(cause), str(error)
