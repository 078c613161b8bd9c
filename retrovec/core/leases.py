"""Observation leases: ``copy=True`` results of the lockstep path without the copy.

With ``copy=True`` (gymnasium's default) every ``step()`` must return observations that no
later step changes. Copying the batch out of the shared arena does that, and it was the
largest part of the parent's CPU per step left on the lockstep path (1.7 MB per step for 8
Airstriker envs of raw frames). Instead the arena holds a few extra *banks* of the
observation batch; each lockstep step has the workers write into a free bank, and the
parent hands that bank to the caller as new arrays (views of the bank) and *lends* it:
the bank is not written again until every array viewing it is gone (a ``weakref`` on the
one array all views are based on). When every bank is lent (the caller keeps many
observations), the step falls back to bank 0 and the copy, so results are always right.

The arena is ``MADV_DONTFORK``, so that a vector env's workers never keep another's
memory; but a process the caller forks must be able to read the arrays the caller holds,
as it could read copies (a child reading pages that were not inherited faults). So before
such a fork (``os.register_at_fork``):

* every lent bank is marked to be inherited (``MADV_DOFORK``) and retired for good: the
  child shares it with the workers, and must never see it change;
* bank 0, whose views ``copy=False`` hands out, is marked to be inherited, while the env
  is open and after, as long as some view of it lives (:func:`share_on_fork`).

retrovec's own worker processes never read the caller's arrays: forking them changes
nothing (:func:`forking_workers`).

Example:
    >>> import numpy as np
    >>> from gymnasium import spaces
    >>> from retrovec.core.arena import ArenaLayout, SharedArena
    >>> space = spaces.Box(0, 255, (2, 2), np.uint8)
    >>> arena = SharedArena.create(
    ...     ArenaLayout.plan(3, space, spaces.Discrete(2), True, observation_banks=3))
    >>> leases = ObservationLeases(arena)
    >>> bank = leases.acquire()  # the workers write this step into bank 1
    >>> arena.observations(bank)[...] = 7
    >>> observations = leases.lend(bank)
    >>> int(observations.sum()), leases.available
    (84, 1)
    >>> del observations  # the last view is gone: the bank is free again
    >>> leases.available
    2
    >>> arena.close()
"""

from __future__ import annotations

import contextlib
import mmap
import os
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from retrovec.core.arena import SharedArena, _assemble

__all__ = ["LEASE_BANKS", "ObservationLeases", "forking_workers", "share_on_fork"]

#: Observation banks lent out with ``copy=True``, besides bank 0: one held by the caller's
#: latest result, one by the result before it (still referenced while the next step
#: runs, as in ``obs = envs.step(a)[0]``), one spare.
LEASE_BANKS = 3

_open: weakref.WeakSet[ObservationLeases] = weakref.WeakSet()
# Leases of closed vector envs whose banks are still lent: kept until they come back, so
# that a fork meanwhile still retires them (the caller's arrays outlive the env).
_orphaned: set[ObservationLeases] = set()
_forking_workers = 0
# Bank 0 of every arena (while its mapping lives): (mapping, offset, length).
_bank_zero: list[tuple[weakref.ref, int, int]] = []


@contextlib.contextmanager
def forking_workers() -> Iterator[None]:
    """Forks inside this context start retrovec workers: lent banks stay lent (a worker
    never reads the caller's arrays, and the arena is not mapped in it)."""
    global _forking_workers
    _forking_workers += 1
    try:
        yield
    finally:
        _forking_workers -= 1


def share_on_fork(arena: SharedArena) -> None:
    """Let processes the caller forks read ``arena``'s bank 0 (the ``copy=False`` views)
    from the next fork on, as long as the mapping lives."""
    offset, length = arena.layout.bank_range(0)
    _bank_zero[:] = [entry for entry in _bank_zero if entry[0]() is not None]
    _bank_zero.append((weakref.ref(arena._mmap), offset, length))


def _before_fork() -> None:
    if _forking_workers:
        return
    for leases in list(_open):
        leases.retire_lent()
    pending = list(_bank_zero)
    _bank_zero.clear()
    for mapping, offset, length in pending:
        mapped = mapping()
        if mapped is None or not hasattr(mmap, "MADV_DOFORK"):
            continue
        try:
            mapped.madvise(mmap.MADV_DOFORK, offset, length)
        except ValueError:  # closed: no view of it is left
            continue


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork)


class ObservationLeases:
    """The lendable banks (``1..observation_banks - 1``) of one arena.

    Args:
        arena: The parent's arena, planned with ``observation_banks >= 2``.
    """

    def __init__(self, arena: SharedArena) -> None:
        layout = arena.layout
        self._arena = arena
        # The mapping itself: it outlives arena.close() while lent arrays view it.
        self._mapped = arena._mmap
        self._space = layout.observation_space
        self._free = list(range(layout.observation_banks - 1, 0, -1))  # a stack: 1 first
        self._lent: dict[int, weakref.ref] = {}
        # Per bank: where it lies, each leaf's (path, offset in the bank, dtype, count,
        # shape), and the callback that frees it (built once: lend runs every step).
        self._banks: dict[int, tuple[int, int, list[tuple[Any, int, str, int, tuple]]]] = {}
        self._callbacks: dict[int, Any] = {}
        owner = weakref.ref(self)
        for bank in range(1, layout.observation_banks):
            offset, length = layout.bank_range(bank)
            leaves = [
                (field.path, field.offset - offset, field.dtype,
                 int(np.prod(field.shape, dtype=np.int64)), field.shape)
                for field in layout.fields
                if field.group == f"obs:{bank}"
            ]
            self._banks[bank] = (offset, length, leaves)
            self._callbacks[bank] = _returner(owner, bank)
        self._home = arena._group("obs")
        self._rows = {
            bank: arena._group(f"obs:{bank}") for bank in range(1, layout.observation_banks)
        }
        _open.add(self)

    @property
    def available(self) -> int:
        """How many banks are free to take a step."""
        return len(self._free)

    def acquire(self) -> int:
        """A free bank for the next lockstep step, or 0 (bank 0, then copied) when none is."""
        try:
            return self._free.pop()
        except IndexError:
            return 0

    def release(self, bank: int) -> None:
        """Take back a bank acquired for a step that was not lent (handed over)."""
        if bank:
            self._free.append(bank)

    def lend(self, bank: int) -> Any:
        """The observations of ``bank`` as new arrays, shaped as gymnasium batches them; the
        bank is free again once all of them (and every view of them) are gone."""
        offset, length, leaves = self._banks[bank]
        mapped = self._mapped
        # The one array every returned view is based on (numpy stops collapsing a view's
        # base at an array whose own base is not an array): its death ends the lease.
        if len(leaves) == 1:  # the common case: one array, two numpy calls
            path, start, dtype, count, shape = leaves[0]
            anchor = np.frombuffer(mapped, dtype, count, offset + start)
            arrays = {path: anchor.reshape(shape)}
        else:
            anchor = np.frombuffer(mapped, np.uint8, length, offset)
            arrays = {}
            for path, start, dtype, count, shape in leaves:
                size = count * np.dtype(dtype).itemsize
                arrays[path] = anchor[start:start + size].view(dtype).reshape(shape)
        self._lent[bank] = weakref.ref(anchor, self._callbacks[bank])
        del anchor
        if len(arrays) == 1 and () in arrays:
            return arrays[()]
        return _assemble(self._space, arrays)

    def _returned(self, bank: int, lease: weakref.ref) -> None:
        if self._lent.get(bank) is lease:  # not retired meanwhile
            del self._lent[bank]
            self._free.append(bank)
            if not self._lent:
                _orphaned.discard(self)

    def close(self) -> None:
        """The vector env is closing: lend nothing more; banks still lent stay tracked
        (for forks) until their arrays are gone."""
        self._free.clear()
        if self._lent:
            _orphaned.add(self)

    def bring_home(self) -> None:
        """Copy each env's latest observation that lies in another bank into bank 0, which
        the general path reads (``arena.banks_used`` says where each one is). Every env
        must be at rest: none of them is writing an observation meanwhile.

        Example:
            >>> from gymnasium import spaces
            >>> from retrovec.core.arena import ArenaLayout, SharedArena
            >>> arena = SharedArena.create(ArenaLayout.plan(
            ...     2, spaces.Discrete(9), spaces.Discrete(2), True, observation_banks=2))
            >>> arena.observations(1)[1] = 5; arena.banks_used[1] = 1  # env 1 wrote bank 1
            >>> ObservationLeases(arena).bring_home()
            >>> arena.observations(0), arena.banks_used
            (array([0, 5]), array([0, 0]))
            >>> arena.close()
        """
        used = self._arena.banks_used
        rows = np.flatnonzero(used)
        if not rows.size:
            return
        banks = used[rows]
        for bank in set(banks.tolist()):
            chosen = rows[banks == bank]
            source = self._rows[bank]
            for path, home in self._home.items():
                home[chosen] = source[path][chosen]
        used[rows] = 0

    def retire_lent(self) -> None:
        """Before a fork: make every lent bank visible to the child and never reuse it."""
        for bank in list(self._lent):
            del self._lent[bank]
            offset, length, _ = self._banks[bank]
            if hasattr(mmap, "MADV_DOFORK"):
                self._mapped.madvise(mmap.MADV_DOFORK, offset, length)
        _orphaned.discard(self)


def _returner(leases: weakref.ref, bank: int) -> Any:
    def returned(lease: weakref.ref) -> None:
        owner = leases()
        if owner is not None:
            owner._returned(bank, lease)

    return returned
