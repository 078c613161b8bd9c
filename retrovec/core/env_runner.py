"""The runner side of :mod:`retrovec.core.ray_runners`: :class:`EnvRunner`, one Ray actor
hosting a process vector env for ``k`` emulators, and the helpers both sides use to move
rows of batch arrays.

The runner answers per-env commands (the commands of :mod:`retrovec.core.server`) with one
reply per call; its process vector env (an :class:`~retrovec.AsyncRetroVectorEnv`) runs
them, restarts dead emulators (``on_worker_failure="restart"``) and keeps the envs' own
slot table. Its ``step``, ``handle`` and ``close`` are Ray methods, or for a driver on
the same node, run by the thread serving its local channel
(:mod:`retrovec.core.runner_channel`); a lock lets one caller at a time drive the envs.
Importing this module does not import Ray.

Example:
    >>> import numpy as np
    >>> rows_index([2, 3, 4]), rows_index([0, 2]).tolist()
    (slice(2, 5, None), [0, 2])
    >>> batch = {"a": np.zeros((4, 2))}
    >>> put_rows(batch, slice(1, 3), {"a": np.ones((2, 2))})
    >>> batch["a"].sum(axis=1).tolist()
    [0.0, 2.0, 2.0, 0.0]
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import Env
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.actions import IN_ARENA
from retrovec.core.info_columns import InfoSchema
from retrovec.core.process_backend import AsyncRetroVectorEnv
from retrovec.core.restart import POLICY
from retrovec.core.server import error_reply
from retrovec.core.slots import CALL, SlotState
from retrovec.errors import WorkerCrashedError

__all__ = [
    "CRASHED",
    "OBSERVING",
    "EnvRunner",
    "compact_replies",
    "copy_rows",
    "put_rows",
    "rows_index",
    "take_rows",
]

#: Commands whose reply carries an observation (written into the batch, not the payload).
OBSERVING = frozenset(("step", "reset", "reset-noop", "reset-after-restart"))

#: Marks a runner's error payload for an emulator it restarted during a ``call`` or gave
#: up on: ``(CRASHED, exitcode, restarted, gave_up_after)``. The driver raises
#: :class:`~retrovec.errors.WorkerCrashedError` for it (which does not survive pickling).
CRASHED = "retrovec-emulator-crashed"


def rows_index(indices: Sequence[int]) -> slice | np.ndarray:
    """An index for ``indices`` in a batch array: a slice when they are consecutive (a
    plain copy), else an integer array."""
    first, count = indices[0], len(indices)
    if indices[-1] - first == count - 1 and (count < 3 or list(indices) == list(
        range(first, first + count)
    )):
        return slice(first, first + count)
    return np.asarray(indices, dtype=np.intp)


def take_rows(batch: Any, rows: Any) -> Any:
    """Rows ``rows`` of a nested dict/tuple of batch arrays (a copy)."""
    if isinstance(batch, np.ndarray):
        return batch[rows]
    if isinstance(batch, dict):
        return {key: take_rows(value, rows) for key, value in batch.items()}
    return tuple(take_rows(value, rows) for value in batch)


def put_rows(batch: Any, rows: Any, values: Any) -> None:
    """Write ``values`` (a nested dict/tuple of arrays) into rows ``rows`` of ``batch``."""
    if isinstance(batch, np.ndarray):
        batch[rows] = values
    elif isinstance(batch, dict):
        for key, value in batch.items():
            put_rows(value, rows, values[key])
    else:
        for value, part in zip(batch, values):
            put_rows(value, rows, part)


def copy_rows(batch: Any, rows: Any, source: Any, source_rows: Any) -> None:
    """``batch[rows] = source[source_rows]`` over a nested dict/tuple of batch arrays."""
    if isinstance(batch, np.ndarray):
        batch[rows] = source[source_rows]
    elif isinstance(batch, dict):
        for key, value in batch.items():
            copy_rows(value, rows, source[key], source_rows)
    else:
        for value, part in zip(batch, source):
            copy_rows(value, rows, part, source_rows)


def compact_replies(replies: list[Any]) -> Any:
    """Replies that all say "done; observation and info in the arena, info with this
    schema" (the common step) become that one schema, which travels in a few bytes."""
    if not replies or replies[0] is None or not replies[0][0]:
        return replies
    payload = replies[0][1]
    if type(payload) is not tuple or len(payload) != 2 or payload[0] is not None:
        return replies
    schema = payload[1]
    if type(schema) is not InfoSchema:
        return replies
    for reply in replies:
        if reply is None or not reply[0] or type(reply[1]) is not tuple or len(reply[1]) != 2 or (
            reply[1][0] is not None or reply[1][1] is not schema
        ):
            return replies
    return schema


# --------------------------------------------------------------------------- runner side


class _RunnerEnvs(AsyncRetroVectorEnv):
    """The runner's process vector env. The driver checks every env's spaces (with its
    global index), so this one only keeps the descriptions for it."""

    def _adopt_spaces(self, descriptions: list[dict[str, Any]]) -> None:
        self.descriptions = descriptions
        super()._adopt_spaces(descriptions)

    def _check_description(self, index: int, description: dict[str, Any]) -> None:
        pass  # the driver does it, naming the env by its index in the whole vector env


class EnvRunner:
    """One Ray env runner: a process vector env for the envs ``indices`` of the driver's
    vector env, answering per-env commands in one call.

    Every method answers; none raises (an env's exception travels back as
    :func:`~retrovec.core.server.error_reply`'s payload), so the actor dies only when its
    process or node does.

    Args:
        env_fns: Builds each of its envs (in worker processes of this actor).
        indices: The envs' indices in the driver's vector env (for messages).
        options: Keyword arguments of :class:`~retrovec.AsyncRetroVectorEnv`
            (``autoreset_mode``, ``on_worker_failure``, ``max_restarts``, ``context``,
            ``spin_seconds``...).
    """

    def __init__(
        self, env_fns: Sequence[Callable[[], Env]], indices: Sequence[int], options: dict
    ) -> None:
        self.env_fns = list(env_fns)
        self.indices = list(indices)
        self.options = dict(options)
        self.envs: _RunnerEnvs | None = None
        self._steps: list[tuple[int, str, Any]] | None = None
        #: one caller at a time drives the envs: a Ray method or the local channel's thread
        self._lock = threading.RLock()

    def build(self, channel: bool = False) -> tuple[bool, Any]:
        """Start the process vector env.

        Args:
            channel: Also listen for a driver on this node
                (:mod:`retrovec.core.runner_channel`): its address is in the reply.

        Returns:
            ``(True, description)`` with each env's ``descriptions`` and ``worker_pids``,
            this actor's ``pid``, Ray ``node_id``, ``arena`` and ``channel`` (an address or
            ``None``); or ``(False, (local index or None, error payload))``.
        """
        import ray

        from retrovec.core import runner_channel

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.envs = envs = _RunnerEnvs(
                    self.env_fns, copy=False, validate_actions=False, **self.options
                )
        except Exception as error:
            return False, (getattr(error, "env_index", None), error_reply(error)[1])
        address = None
        if channel:  # after the emulators started: they do not inherit the listener
            try:
                listener, address = runner_channel.listen()
            except OSError:  # no Unix sockets here: the driver keeps the Ray path
                address = None
            else:
                runner_channel.serve(listener, self, self._lock)
        return True, {
            "descriptions": envs.descriptions,
            "worker_pids": [process.pid for process in envs.processes],
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            # a driver on this node maps the arena and reads observations from it
            "arena": (envs._arena.fd, envs._layout) if envs._observations_shared else None,
            "channel": address,
        }

    def ping(self) -> bool:
        """Answer at once: the driver asks whether this runner is still alive."""
        return True

    def step(self, actions: Any, observe: bool) -> tuple:
        """Step every env of this runner with its action in ``actions`` (the common call,
        kept short): :meth:`handle` with a ``"step"`` for each env in order. ``actions``
        may be the batch's raw bytes (an action space with one array leaf)."""
        with self._lock:
            return self._step(actions, observe)

    def _step(self, actions: Any, observe: bool) -> tuple:
        steps = self._steps
        if steps is None:
            steps = self._steps = [(local, "step", IN_ARENA) for local in range(len(self.env_fns))]
        if type(actions) is bytes:  # one array of the action space's dtype, as raw bytes
            space = self.envs.single_action_space
            actions = np.frombuffer(actions, space.dtype).reshape(len(steps), *space.shape)
        return self._handle(steps, actions, observe)

    def handle(
        self, commands: list[tuple[int, str, Any]], actions: Any, observe: bool = True
    ) -> tuple:
        """Run per-env commands on this runner's envs and answer with one batch.

        Args:
            commands: ``(local index, kind, argument)``, at most one per env; a ``"step"``
                whose argument is :data:`~retrovec.core.actions.IN_ARENA` takes its action
                from ``actions``.
            actions: The actions of those steps, one batch in their order (or ``None``).
            observe: Put the observations in the reply (``False``: the driver, on this
                node, reads them from this runner's arena).

        Returns:
            ``(replies, observations, scalars, extras)``: ``replies`` by command
            (``(True, payload)``, ``(False, error)`` or ``None`` for an emulator that died
            and was not restarted; or one ``InfoSchema``, see :func:`compact_replies`);
            ``observations`` the rows of the commands that observe, in command order
            (``None`` unless ``observe``); ``scalars`` one ``bytes``: the steps' rewards,
            terminations and truncations, then the observing commands' info columns;
            ``extras`` ``None``, or after an emulator restart or death: the
            ``restart_counts``, new ``pids``, ``exitcodes``, warning ``notices`` and
            whether the process vector env is ``broken``.
        """
        with self._lock:
            return self._handle(commands, actions, observe)

    def _handle(
        self, commands: list[tuple[int, str, Any]], actions: Any, observe: bool = True
    ) -> tuple:
        envs = self.envs
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                before = envs.restart_counts.copy()
                replies, exitcodes = self._run(envs, commands, actions)
            notices = [
                f"The emulator of env {self.indices[local]} died during `{kind}`; its Ray "
                f"runner is restarting it ({envs.restart_counts[local]} of at most "
                f"{envs.max_restarts})."
                for local, kind, _ in commands
                if envs.restart_counts[local] > before[local]
            ]
            notices += [
                str(w.message) for w in caught if "restarting it" not in str(w.message)
            ]
        except Exception as error:  # pragma: no cover - a bug here, not in an env
            payload = error_reply(error)
            return [payload] * len(commands), None, None, None
        arena = envs._arena
        observing = [local for local, kind, _ in commands if kind in OBSERVING]
        stepping = [local for local, kind, _ in commands if kind == "step"]
        observations = None
        parts = []
        if stepping:
            rows = rows_index(stepping)
            parts += [arena.rewards[rows].tobytes(), arena.terminations[rows].tobytes(),
                      arena.truncations[rows].tobytes()]
        if observing:
            rows = rows_index(observing)
            parts.append(arena.info_columns[rows].tobytes())
            if envs._observations_shared and observe:
                observations = take_rows(envs.observations, rows)
        extras = None
        restarted = envs.restart_counts != before
        if restarted.any() or exitcodes or notices or envs._crashed:
            extras = {
                "restart_counts": envs.restart_counts.copy(),
                "pids": {int(local): envs.processes[local].pid
                         for local in np.flatnonzero(restarted)},
                "exitcodes": exitcodes,
                "notices": notices,
                "broken": envs._broken if envs._crashed else None,
            }
        return compact_replies(replies), observations, b"".join(parts), extras

    def _run(
        self, envs: _RunnerEnvs, commands: list[tuple[int, str, Any]], actions: Any
    ) -> tuple[list[Any], dict[int, int | None]]:
        steps = [(local, argument) for local, kind, argument in commands if kind == "step"]
        others = [command for command in commands if command[1] != "step"]
        sent = list(others)
        if steps:
            locals_ = [local for local, _ in steps]
            if actions is not None:
                arguments = envs._step_arguments(actions, np.asarray(locals_, np.int64))
            else:
                arguments = [argument for _, argument in steps]
            sent += envs._step_commands(locals_, arguments, CALL)
        envs._dispatch(sent, CALL)
        envs._state = AsyncState.WAITING_CALL
        try:
            envs._wait_for(set(envs._slots.busy(CALL)), None)
        finally:
            envs._state = AsyncState.DEFAULT
        table = envs._slots.entries
        replies: list[Any] = []
        exitcodes: dict[int, int | None] = {}
        for local, kind, _ in commands:
            slot = table[local]
            if slot.state is SlotState.DEAD:
                replies.append(self._dead(envs, local, kind, exitcodes))
                continue
            if slot.state is SlotState.DONE:
                replies.append((True, slot.result))
            else:
                replies.append((False, slot.result))
            envs._slots.release([local])
        return replies, exitcodes

    def _dead(
        self, envs: _RunnerEnvs, local: int, kind: str, exitcodes: dict[int, int | None]
    ) -> Any:
        """A dead emulator: restarted here under ``on_worker_failure="restart"`` (the
        reply is then its command's outcome), else reported dead (``None``)."""
        slot = envs._slots[local]
        if envs.on_worker_failure != "restart" or kind not in POLICY:
            exitcodes[local] = envs._exitcode(local)
            return None
        try:
            outcome = envs._revive(local, kind)
        except WorkerCrashedError as error:  # it died more than max_restarts times
            envs._slots.release([local])
            return False, (CRASHED, error.exitcode, False, envs.max_restarts)
        except Exception as error:  # its env_fn raised while being rebuilt
            envs._slots.release([local])
            return False, error_reply(error)[1]
        result = slot.result
        envs._slots.release([local])
        if outcome == "raise_restarted":
            return False, (CRASHED, envs._last_exitcode, True, None)
        return True, result

    def close(self, timeout: float | None = None) -> tuple[bool, Any]:
        """Close the envs (if they were built): ``(True, None)`` or ``(False, error)``."""
        with self._lock:
            return self._close(timeout)

    def _close(self, timeout: float | None) -> tuple[bool, Any]:
        try:
            if self.envs is not None:
                envs, self.envs = self.envs, None
                envs.close(timeout=timeout)
        except Exception as error:
            return error_reply(error)
        return True, None
