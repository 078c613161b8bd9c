"""The per-env slot table: the one place that knows what each env is doing.

Every env is in exactly one state, and the blocking calls, the ``*_async``/``*_wait`` pairs
and EnvPool-style batches are all views of this one table::

            send worked                reply read
    IDLE ──────────────▶ BUSY ──────────────────────▶ DONE ──┐
     ▲  │                 │   env raised / reply unreadable    │ collected
     │  │ send failed:    ├────────────────────────▶ FAILED ──┤
     │  │ worker gone     │   worker died                      │
     │  └────────────────▶└────────────────────────▶ DEAD ────┤ restart policy
     └─────────────────────────────────────────────────────────┘ (or the env breaks)

A slot changes state only after the send has succeeded or the reply has been read in
full; a command that cannot be pickled never leaves the parent, so its slot stays IDLE.
Each slot remembers the command it was given (``kind``, ``argument``): the restart policy
(:mod:`retrovec.core.restart`) replays it on a replacement worker. Each busy or finished
slot has an ``owner``: ``"call"`` (the pending gymnasium call), ``"batch"`` (an EnvPool
batch) or ``None`` (abandoned: its reply is read and dropped before the env is used
again).

Example:
    >>> table = SlotTable(2)
    >>> table.send(0, "step", None, CALL)
    >>> table.settle(0, (True, "payload"))
    >>> table[0].state, table[0].result, table.busy(CALL)
    (<SlotState.DONE: 'done'>, 'payload', [])
    >>> table.release([0])
    >>> table[0].state
    <SlotState.IDLE: 'idle'>
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["BATCH", "CALL", "Slot", "SlotState", "SlotTable"]

#: Owner of the slots of the pending gymnasium call (``reset``, ``step``, ``call`` ...).
CALL = "call"
#: Owner of the slots of EnvPool-style batches (``async_reset``, ``send``, ``recv``).
BATCH = "batch"


class SlotState(enum.Enum):
    """What one env is doing."""

    IDLE = "idle"  #: nothing in flight, nothing to collect
    BUSY = "busy"  #: a command was sent and not answered yet
    DONE = "done"  #: answered; ``result`` is the payload
    FAILED = "failed"  #: the env raised, or its reply could not be read; ``result`` is the error
    DEAD = "dead"  #: the worker is gone; ``kind``/``argument`` wait for the restart policy


_FINISHED = (SlotState.DONE, SlotState.FAILED, SlotState.DEAD)


@dataclass(eq=False)
class Slot:
    """One env's entry in the table.

    Attributes:
        index: The env index.
        state: See :class:`SlotState`.
        kind: The command in flight, or the one that produced ``result``.
        argument: Its argument.
        owner: :data:`CALL`, :data:`BATCH` or ``None`` (abandoned).
        result: The payload (DONE) or error payload (FAILED).
        finished_at: A counter value: the order in which slots finished.
        episode_end: A replacement worker's reset ``(observation, info)`` whose old episode
            is still to be reported as truncated, by this env's next step.
    """

    index: int
    state: SlotState = SlotState.IDLE
    kind: str | None = None
    argument: Any = None
    owner: str | None = None
    result: Any = None
    finished_at: int = 0
    episode_end: tuple[Any, dict] | None = None


class SlotTable:
    """One :class:`Slot` per env; every transition goes through a method here."""

    def __init__(self, num_envs: int) -> None:
        self._slots = [Slot(index) for index in range(num_envs)]
        self._clock = 0

    @property
    def entries(self) -> list[Slot]:
        """The slots themselves, by env index (read them; change them through methods)."""
        return self._slots

    def __getitem__(self, index: int) -> Slot:
        return self._slots[index]

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots)

    def send(self, index: int, kind: str, argument: Any, owner: str | None) -> None:
        """IDLE -> BUSY: the command reached the worker."""
        slot = self._slots[index]
        slot.state, slot.kind, slot.argument, slot.owner = SlotState.BUSY, kind, argument, owner
        slot.result = None

    def died(self, index: int, kind: str, argument: Any, owner: str | None) -> None:
        """IDLE -> DEAD: the worker was gone before ``kind`` could reach it."""
        slot = self._slots[index]
        slot.state, slot.kind, slot.argument, slot.owner = SlotState.DEAD, kind, argument, owner
        slot.result = None
        self._finish(slot)

    def finish(self, index: int, kind: str, result: Any, owner: str | None) -> None:
        """-> DONE without a worker: a result the parent makes itself (a restarted env's
        truncated step)."""
        slot = self._slots[index]
        slot.state, slot.kind, slot.owner, slot.result = SlotState.DONE, kind, owner, result
        self._finish(slot)

    def settle(self, index: int, reply: tuple[bool, Any] | None) -> None:
        """BUSY -> DONE, FAILED or DEAD (``reply`` is ``None``); an abandoned slot's reply
        is dropped (-> IDLE, or DEAD)."""
        slot = self._slots[index]
        if reply is None:
            slot.state = SlotState.DEAD
        elif slot.owner is None:
            slot.state = SlotState.IDLE
            return
        else:
            slot.state = SlotState.DONE if reply[0] else SlotState.FAILED
            slot.result = reply[1]
        self._clock += 1
        slot.finished_at = self._clock

    def _finish(self, slot: Slot) -> None:
        self._clock += 1
        slot.finished_at = self._clock

    def release(self, indices: list[int]) -> None:
        """Finished slots -> IDLE (their results taken)."""
        idle = SlotState.IDLE
        for index in indices:
            slot = self._slots[index]
            slot.state, slot.owner, slot.result = idle, None, None

    def abandon(self, owner: str) -> None:
        """Give up on ``owner``'s slots: busy ones are drained later, finished ones dropped
        (a dead one stays DEAD for the next command's restart policy)."""
        for slot in self._slots:
            if slot.owner != owner:
                continue
            if slot.state in (SlotState.DONE, SlotState.FAILED):
                slot.state, slot.result = SlotState.IDLE, None
            slot.owner = None

    def owned(self, owner: str) -> list[int]:
        """Indices of the slots ``owner`` holds (busy or finished)."""
        return [slot.index for slot in self._slots if slot.owner == owner and (
            slot.state is not SlotState.IDLE)]

    def busy(self, owner: str | None = None, *, any_owner: bool = False) -> list[int]:
        """Indices of busy slots of ``owner`` (or of every owner)."""
        return [
            slot.index for slot in self._slots
            if slot.state is SlotState.BUSY and (any_owner or slot.owner == owner)
        ]

    def finished(self, owner: str) -> list[int]:
        """Indices of ``owner``'s finished slots, in the order they finished."""
        done = [slot for slot in self._slots if slot.owner == owner and slot.state in _FINISHED]
        return [slot.index for slot in sorted(done, key=lambda slot: slot.finished_at)]
