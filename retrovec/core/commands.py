"""Commands out, replies in: the slot table's transitions, and how failures are raised.

Every gymnasium call and EnvPool batch of :class:`~retrovec.core.base.RetroVectorEnvBase`
goes through :meth:`CommandsMixin._dispatch` (encode everything, then send, each slot
changing only once its send worked) and :meth:`CommandsMixin._resolve` (finished slots to
payloads: the restart policy for dead ones, the env's own exception for failed ones).
Every wait runs under the vector env's :class:`~retrovec.core.signals.InterruptGuard`, so
Ctrl-C never splits a reply.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from typing import Any

from gymnasium import logger
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.restart import POLICY
from retrovec.core.slots import BATCH, CALL, SlotState
from retrovec.errors import RemoteTraceback, WorkerCrashedError, WorkerTimeoutError

__all__ = ["CommandsMixin"]


class CommandsMixin:
    """Sending, waiting and resolving on the slot table (see the module docstring)."""

    def _dispatch(self, commands: Sequence[tuple[int, str, Any]], owner: str | None) -> None:
        """Send ``(index, kind, argument)`` commands; each slot changes only once its send
        worked (or shows its worker gone). Every command is encoded before the first goes
        out, so one that cannot be pickled leaves every slot as it was."""
        messages: dict[tuple[str, int], Any] = {}
        encoded = []
        for index, kind, argument in commands:
            key = (kind, id(argument))  # one encoding per distinct command (a step: one)
            message = messages.get(key)
            if message is None:
                try:
                    message = messages[key] = self._encode(kind, argument)
                except Exception as error:
                    error.add_note(
                        f"The `{kind}` command for env {index} cannot be sent to its "
                        f"{self._worker_noun}; nothing was sent, and the vector env is as it was."
                    )
                    raise
            encoded.append((index, kind, argument, message))
        with self._guard:
            self._drain([index for index, *_ in encoded])
            slots = self._slots
            table = slots.entries
            post = self._post
            for index, kind, argument, message in encoded:
                if table[index].state is not SlotState.DEAD and post(index, message):
                    slots.send(index, kind, argument, owner)
                else:
                    slots.died(index, kind, argument, owner)

    def _drain(self, indices: Sequence[int]) -> None:
        """Read and drop the replies of abandoned commands to ``indices`` (a reply must
        never answer a later command)."""
        table = self._slots.entries
        abandoned = {i for i in indices if table[i].state is SlotState.BUSY}
        if abandoned:
            self._wait_for(abandoned, self.timeout)
            if abandoned:
                raise WorkerTimeoutError("drain", self.timeout, sorted(abandoned))

    def _wait_for(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> None:
        """Settle slots as their replies arrive (``pending`` shrinks as they do)."""
        settle = self._slots.settle
        with self._guard:
            for index, reply in self._replies(pending, timeout, wanted):
                settle(index, reply)

    def _finish_call(
        self,
        method: str,
        timeout: float | None,
        build: Callable[[list[Any]], Any] | None = None,
    ) -> Any:
        """Wait for every slot of the pending call, resolve them and hand over
        ``build(payloads)`` (default: the payloads by env index).

        The result is parked before it is handed over: a Ctrl-C that arrives once it is
        complete raises ``KeyboardInterrupt`` with the call still pending, and the same
        ``*_wait`` then returns the parked result. Raises the env's exception (lowest index
        first), ``WorkerCrashedError`` for a dead worker (or after a restart, for
        ``call``/``set_attr``), or ``WorkerTimeoutError`` leaving the call pending.
        """
        if self._parked is None:
            if timeout is None:
                timeout = self.timeout
            with self._guard:
                busy = set(self._slots.busy(CALL))
                self._wait_for(busy, timeout)
                if busy:
                    raise WorkerTimeoutError(method, timeout, sorted(busy))
                try:
                    payloads = self._resolve(self._slots.owned(CALL), method)
                    self._parked = (payloads if build is None else build(payloads),)
                except Exception:
                    self._state = AsyncState.DEFAULT  # the call ended with this error
                    raise
        (result,), self._parked = self._parked, None
        self._state = AsyncState.DEFAULT
        return result

    def _resolve(self, indices: list[int], method: str) -> list[Any]:
        """:meth:`_resolve_slots`, whose errors leave its frames without locals: an error's
        traceback holds those frames and they hold the error (and ``self``), a cycle that
        kept a crashed vector env, its spaces and replies alive until a full collection."""
        try:
            return self._resolve_slots(indices, method)
        except BaseException as error:
            traceback.clear_frames(error.__traceback__)  # skips this frame: it is running
            raise

    def _resolve_slots(self, indices: list[int], method: str) -> list[Any]:
        """Turn finished slots into payloads (by position in ``indices``), applying the
        restart policy to dead ones and raising for failed ones; every slot ends IDLE."""
        slots = self._slots
        table = slots.entries
        dead = [i for i in indices if table[i].state is SlotState.DEAD]
        restarted_in_call = []
        if dead:
            recoverable = self.on_worker_failure == "restart" and all(
                slots[i].kind in POLICY for i in dead
            )
            if not recoverable:
                slots.release([i for i in indices if table[i].state is not SlotState.DEAD])
                self._raise_crash(dead[0], method)
            for index in dead:
                if self._revive(index, method) == "raise_restarted":
                    restarted_in_call.append(index)
        results = [table[index].result for index in indices]
        failed = [
            (index, table[index].kind, table[index].result) for index in indices
            if table[index].state is SlotState.FAILED
        ]
        slots.release(indices)
        if failed and any(kind in ("reset", "step") for _, kind, _ in failed):
            self._broken = f"env {failed[0][0]} raised an exception in `{method}`"
        if restarted_in_call:
            index = restarted_in_call[0]
            error = WorkerCrashedError(index, self._last_exitcode, f"`{method}`", restarted=True)
            for index, _, result in failed:
                error.add_note(f"Env {index} raised too: {result[1]}: {result[2]}")
            raise error from self._crash_cause
        if failed:
            self._raise_worker_error(
                [index for index, *_ in failed], {index: result for index, _, result in failed},
                method,
            )
        return results

    def _raise_crash(self, index: int, method: str, why: str = "died") -> None:
        """Mark the vector env unusable and raise ``WorkerCrashedError`` for env ``index``."""
        self._crashed = True
        self._broken = f"the {self._worker_noun} of env {index} {why}"
        error = WorkerCrashedError(index, self._exitcode(index), f"`{method}`")
        if self._crash_cause is not None:
            raise error from self._crash_cause
        raise error

    def _raise_worker_error(
        self, failed: list[int], errors: dict[int, Any], method: str
    ) -> None:
        """Re-raise the exception of the lowest failed env, noting the others."""
        index = failed[0]
        error, type_name, message, text = errors[index]
        if error is None:
            error = RuntimeError(f"{type_name}: {message}")
        error.add_note(f"Raised in the {self._worker_noun} of env {index} during `{method}`.")
        if len(failed) > 1:
            others = ", ".join(
                f"env {i}: {errors[i][1]}: {errors[i][2]}" for i in failed[1:]
            )
            error.add_note(f"Other envs failed too: {others}")
        try:
            error.env_index = index  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - exceptions with __slots__
            pass
        raise error from RemoteTraceback(index, text)

    def _close_envs(self, grace: float) -> set[int]:
        """The common part of every transport's ``close_extras``: let the commands in
        flight finish (``grace`` seconds), then have every env that is neither dead nor
        still busy close itself (``grace`` seconds again). Returns the envs that never
        answered, for the transport to stop by force."""
        slots = self._slots
        if self._state != AsyncState.DEFAULT and not self._crashed and slots.busy(CALL):
            logger.warn(
                "Calling `close` while waiting for a pending call to "
                f"`{self._state.value}` to complete."
            )
        self._state = AsyncState.DEFAULT
        self._parked = self._parked_batch = None
        slots.abandon(CALL)
        slots.abandon(BATCH)
        stuck = set(slots.busy(any_owner=True))
        if stuck:
            self._wait_for(stuck, grace)  # leaves those that did not answer
        message = self._encode("close", None)
        with self._guard:
            closing = {
                slot.index for slot in slots
                if slot.index not in stuck and slot.state is not SlotState.DEAD
                and self._post(slot.index, message)
            }
            for index, reply in self._replies(closing, grace):
                if reply is not None and not reply[0]:
                    logger.warn("Env %d raised while closing:\n%s", index, reply[1][3])
        return stuck | closing
