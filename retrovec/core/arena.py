"""The one place that defines the shared buffers' shapes, dtypes and offsets.

All per-step data that crosses between the parent and the workers lives in a single
anonymous shared-memory *arena*: one contiguous batch array ``(num_envs, *shape)`` per leaf
of the observation space, one per leaf of the action space, and the rewards, terminations
and truncations. The parent allocates the arena once it knows the spaces (which come from
the workers: no env is ever built in the parent) and hands its file descriptor to each
worker over the worker's pipe.

Why hand-written rather than gymnasium's ``create_shared_memory``: gymnasium's buffers are
``multiprocessing.Array`` objects that must exist before the workers start, which forces a
probe env in the parent, and that would take the parent's only emulator slot. Why ``memfd``
rather than ``multiprocessing.shared_memory``: an anonymous ``memfd`` has no name in
``/dev/shm``, so nothing can leak even when every process is killed with SIGKILL, and there
is no resource-tracker bookkeeping to get wrong across start methods.

Example:
    >>> import numpy as np
    >>> from gymnasium import spaces
    >>> obs_space = spaces.Dict({"rgb": spaces.Box(0, 255, (4, 4, 3), np.uint8),
    ...                          "ram": spaces.Box(0, 255, (8,), np.uint8)})
    >>> layout = ArenaLayout.plan(2, obs_space, spaces.Discrete(5), observations=True)
    >>> arena = SharedArena.create(layout)
    >>> batch = arena.observations()
    >>> sorted(batch), batch["rgb"].shape, arena.rewards.dtype
    (['ram', 'rgb'], (2, 4, 4, 3), dtype('float64'))
    >>> arena.info_columns.shape == (2, INFO_SLOTS), arena.info_columns.ctypes.data % 64
    (True, 0)
    >>> write = arena.observation_writer(index=1)
    >>> write({"rgb": np.ones((4, 4, 3), np.uint8), "ram": np.arange(8, dtype=np.uint8)})
    >>> int(batch["rgb"][1].sum()), int(batch["rgb"][0].sum())
    (48, 0)
    >>> arena.close()
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import CustomSpaceError
from gymnasium.vector.utils import batch_space

from retrovec.core.info_columns import INFO_SLOTS

__all__ = [
    "INFO_SLOTS",
    "ArenaLayout",
    "Field",
    "SharedArena",
    "copy_structure",
    "index_structure",
    "is_shareable",
]

_ALIGNMENT = 64  # a cache line: no two fields share one
# Row-aligned info columns: each env's row is whole cache lines, so it starts on its own
# line and no two workers write to one line (fields start on a line, mmap on a page).
assert INFO_SLOTS * 8 % _ALIGNMENT == 0
_SHAREABLE = (spaces.Box, spaces.Discrete, spaces.MultiBinary, spaces.MultiDiscrete)

Path = tuple[Any, ...]


@dataclass(frozen=True)
class Field:
    """One batch array in the arena.

    Attributes:
        group: ``"obs"``, ``"action"`` or ``"scalar"``.
        path: Keys from the space's root to this leaf (``()`` for a leaf space).
        dtype: The numpy dtype string.
        shape: The batched shape, ``(num_envs, *leaf_shape)``.
        offset: Byte offset into the arena.
    """

    group: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        """Size of the field in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _leaves(space: spaces.Space, path: Path = ()) -> Iterator[tuple[Path, spaces.Space]]:
    """Yield ``(path, leaf_space)`` in a fixed order (Dict keys in the space's order)."""
    if isinstance(space, spaces.Dict):
        for key, subspace in space.spaces.items():
            yield from _leaves(subspace, (*path, key))
    elif isinstance(space, spaces.Tuple):
        for key, subspace in enumerate(space.spaces):
            yield from _leaves(subspace, (*path, key))
    else:
        yield path, space


def is_shareable(space: spaces.Space) -> bool:
    """Whether every leaf of ``space`` has a fixed shape and dtype.

    Example:
        >>> is_shareable(spaces.Tuple((spaces.Discrete(3), spaces.Box(0, 1, (2,)))))
        True
        >>> is_shareable(spaces.Text(5))
        False
    """
    return all(isinstance(leaf, _SHAREABLE) for _, leaf in _leaves(space))


def _get(value: Any, path: Path) -> Any:
    for key in path:
        value = value[key]
    return value


def _assemble(space: spaces.Space, arrays: dict[Path, np.ndarray], path: Path = ()) -> Any:
    """Build the nested dict/tuple structure gymnasium uses for a batch of ``space``."""
    if isinstance(space, spaces.Dict):
        return {key: _assemble(sub, arrays, (*path, key)) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_assemble(sub, arrays, (*path, i)) for i, sub in enumerate(space.spaces))
    return arrays[path]


def _fresh(row: np.ndarray) -> Any:
    return row.copy() if row.ndim else row[()]


def index_structure(value: Any, index: int) -> Any:
    """Copy row ``index`` out of a nested dict/tuple of batch arrays.

    Example:
        >>> index_structure({"x": np.arange(6).reshape(3, 2)}, 1)
        {'x': array([2, 3])}
    """
    if isinstance(value, np.ndarray):
        return _fresh(value[index, ...])
    if isinstance(value, dict):
        return {key: index_structure(sub, index) for key, sub in value.items()}
    return tuple(index_structure(sub, index) for sub in value)


def copy_structure(value: Any) -> Any:
    """Copy a nested dict/tuple of numpy arrays (what ``copy=True`` returns).

    Faster than ``copy.deepcopy`` on the hot path: one ``ndarray.copy`` per leaf.

    Example:
        >>> a = {"x": np.zeros(2)}
        >>> b = copy_structure(a)
        >>> b["x"] is a["x"], b == {"x": b["x"]}
        (False, True)
    """
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {key: copy_structure(sub) for key, sub in value.items()}
    if isinstance(value, tuple):
        return tuple(copy_structure(sub) for sub in value)
    return value


@dataclass(frozen=True)
class ArenaLayout:
    """Where every field lives in the arena. Small and picklable: sent to each worker.

    Attributes:
        num_envs: Number of rows in every batch array.
        fields: All fields, in offset order.
        size: Total bytes.
        observation_space: The single observation space, or ``None`` when observations
            travel through the pipes (``shared_memory=False``).
        action_space: The single action space, or ``None`` when actions travel through
            the pipes (a space with a leaf of no fixed shape).
        observation_banks: How many copies of the observation batch the arena holds:
            bank 0 (the fields of group ``"obs"``) and banks ``1..`` (groups ``"obs:1"``,
            ``"obs:2"``, ... each starting on a page of its own) that
            :mod:`retrovec.core.leases` lends out as ``copy=True`` results.
    """

    num_envs: int
    fields: tuple[Field, ...]
    size: int
    observation_space: spaces.Space | None
    action_space: spaces.Space | None
    observation_banks: int = 1

    def bank_range(self, bank: int) -> tuple[int, int]:
        """``(offset, length)`` of observation bank ``bank``, in whole pages (bank 0's last
        page may hold the start of the next field).

        Example:
            >>> layout = ArenaLayout.plan(2, spaces.Box(0, 1, (3,)), spaces.Discrete(2),
            ...                           observations=True, observation_banks=2)
            >>> offset, length = layout.bank_range(1)
            >>> offset % mmap.PAGESIZE, length % mmap.PAGESIZE, length > 0
            (0, 0, True)
        """
        group = "obs" if bank == 0 else f"obs:{bank}"
        mine = [field for field in self.fields if field.group == group]
        if not mine:
            raise ValueError(f"This arena has no observation bank {bank}.")
        start = mine[0].offset
        end = mine[-1].offset + mine[-1].nbytes
        return start, -(-(end - start) // mmap.PAGESIZE) * mmap.PAGESIZE

    @classmethod
    def plan(
        cls,
        num_envs: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        observations: bool,
        observation_banks: int = 1,
    ) -> ArenaLayout:
        """Lay out the arena for ``num_envs`` envs.

        Args:
            num_envs: Number of sub-environments.
            observation_space: The single-env observation space.
            action_space: The single-env action space.
            observations: Whether observations go in shared memory.
            observation_banks: Copies of the observation batch (with ``observations``);
                the extra ones each start and end on a page boundary.

        Returns:
            The layout.

        Raises:
            ValueError: ``observations`` is true and the observation space has a leaf
                without a fixed shape and dtype.
        """
        if observations and not is_shareable(observation_space):
            raise ValueError(
                f"The observation space {observation_space} cannot live in shared memory "
                "(every leaf must be a Box, Discrete, MultiBinary or MultiDiscrete). "
                "Pass shared_memory=False to send observations through the pipes instead."
            )
        share_actions = is_shareable(action_space)
        fields: list[Field] = []
        offset = 0

        def add(group: str, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
            nonlocal offset
            field = Field(group, path, np.dtype(dtype).str, tuple(int(s) for s in shape), offset)
            fields.append(field)
            offset += -(-field.nbytes // _ALIGNMENT) * _ALIGNMENT

        def page() -> None:
            nonlocal offset
            offset = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE

        banks = observation_banks if observations else 1
        if banks < 1:
            raise ValueError(f"Expected observation_banks >= 1, got {observation_banks}.")
        groups = [("obs", observation_space, observations)]
        groups += [(f"obs:{bank}", observation_space, True) for bank in range(1, banks)]
        groups.append(("action", action_space, share_actions))
        for group, space, wanted in groups:
            if not wanted:
                continue
            try:
                batched = batch_space(space, num_envs)
            except CustomSpaceError as error:  # pragma: no cover - guarded by is_shareable
                raise ValueError(f"Cannot batch the space {space}") from error
            if group.startswith("obs:"):
                page()
            for path, leaf in _leaves(batched):
                add(group, path, leaf.dtype, leaf.shape)
            if group.startswith("obs:"):
                page()
        # One cache line per env for each per-step scalar (the value sits at the start of
        # its env's line): workers never write to a line another worker writes to.
        add("scalar", ("rewards",), np.float64, (num_envs, _ALIGNMENT // 8))
        add("scalar", ("terminations",), np.bool_, (num_envs, _ALIGNMENT))
        add("scalar", ("truncations",), np.bool_, (num_envs, _ALIGNMENT))
        add("scalar", ("info_columns",), np.int64, (num_envs, INFO_SLOTS))
        # The lockstep round and the bank its observations go to (:mod:`retrovec.core.
        # lockstep`): two words for all envs, on a line of their own, written by the parent.
        add("scalar", ("lockstep_round",), np.int64, (1, _ALIGNMENT // 8))
        # The bank each env wrote its latest observation to, one line per env.
        add("scalar", ("banks_used",), np.int64, (num_envs, _ALIGNMENT // 8))
        return cls(
            num_envs=num_envs,
            fields=tuple(fields),
            size=max(offset, 1),
            observation_space=observation_space if observations else None,
            action_space=action_space if share_actions else None,
            observation_banks=banks,
        )


def _bank_group(bank: int) -> str:
    return "obs" if bank == 0 else f"obs:{bank}"


def _anonymous_fd(size: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("retrovec-arena", os.MFD_CLOEXEC)
    else:  # pragma: no cover - non-Linux: an unlinked temporary file serves the same
        handle = tempfile.TemporaryFile()
        fd = os.dup(handle.fileno())
        handle.close()
    os.ftruncate(fd, size)
    return fd


class SharedArena:
    """A mapped arena: numpy views onto every field, for the parent or one worker.

    Use :meth:`create` in the parent and :meth:`attach` in a worker.

    Attributes:
        layout: The layout this arena follows.
        fd: The file descriptor (the parent keeps it to start replacement workers).
        rewards: ``(num_envs,)`` float64 view, one cache line per env.
        terminations: ``(num_envs,)`` bool view, one cache line per env.
        truncations: ``(num_envs,)`` bool view, one cache line per env.
        info_columns: ``(num_envs, INFO_SLOTS)`` int64 view, one row of scalar info
            values per env, each row on its own cache lines (see
            :mod:`retrovec.core.info_columns`).
        lockstep_round: ``(1,)`` int64 view: the number of the latest lockstep step the
            parent announced (see :mod:`retrovec.core.lockstep`).
        lockstep_bank: ``(1,)`` int64 view: the observation bank of that step.
        banks_used: ``(num_envs,)`` int64 view, one cache line per env: the bank each
            env's latest observation was written to (0 outside lockstep steps).
    """

    def __init__(self, layout: ArenaLayout, fd: int) -> None:
        self.layout = layout
        self.fd = fd
        self._mmap: mmap.mmap | None = mmap.mmap(fd, layout.size)
        self._arrays: dict[tuple[str, Path], np.ndarray] = {}
        for field in layout.fields:
            count = int(np.prod(field.shape, dtype=np.int64))
            array = np.frombuffer(self._mmap, field.dtype, count, field.offset)
            self._arrays[(field.group, field.path)] = array.reshape(field.shape)
        # (num_envs,) views with a cache line's stride (see ArenaLayout.plan).
        self.rewards = self._arrays[("scalar", ("rewards",))][:, 0]
        self.terminations = self._arrays[("scalar", ("terminations",))][:, 0]
        self.truncations = self._arrays[("scalar", ("truncations",))][:, 0]
        self.info_columns = self._arrays[("scalar", ("info_columns",))]
        self.lockstep_round = self._arrays[("scalar", ("lockstep_round",))][:, 0]
        self.lockstep_bank = self._arrays[("scalar", ("lockstep_round",))][:, 1]
        self.banks_used = self._arrays[("scalar", ("banks_used",))][:, 0]

    @classmethod
    def create(cls, layout: ArenaLayout) -> SharedArena:
        """Allocate a new zero-filled arena (parent side). Its mapping is not inherited by
        processes forked later (``MADV_DONTFORK``): a worker of another vector env must
        not keep this one's memory alive."""
        arena = cls(layout, _anonymous_fd(layout.size))
        if hasattr(mmap, "MADV_DONTFORK"):
            arena._mmap.madvise(mmap.MADV_DONTFORK)
        return arena

    def descriptors(self) -> list[int]:
        """Every descriptor of this process that refers to the arena: :attr:`fd` and the
        duplicate ``mmap`` keeps for itself (Linux; elsewhere just :attr:`fd`)."""
        if self.fd < 0:
            return []
        found = [self.fd]
        identity = os.fstat(self.fd)[1:3]  # (inode, device)
        try:
            names = os.listdir("/proc/self/fd")
        except OSError:  # pragma: no cover - no procfs
            return found
        for name in names:
            fd = int(name)
            if fd == self.fd:
                continue
            try:
                if os.fstat(fd)[1:3] == identity:
                    found.append(fd)
            except OSError:
                continue
        return found

    @classmethod
    def attach(cls, layout: ArenaLayout, fd: int) -> SharedArena:
        """Map an arena received from the parent (worker side)."""
        return cls(layout, fd)

    def _group(self, group: str) -> dict[Path, np.ndarray]:
        return {path: array for (g, path), array in self._arrays.items() if g == group}

    def observations(self, bank: int = 0) -> Any:
        """The batched observation structure of ``bank`` (views), as gymnasium shapes it."""
        assert self.layout.observation_space is not None
        return _assemble(self.layout.observation_space, self._group(_bank_group(bank)))

    def observation_writer(self, index: int, bank: int = 0) -> Callable[[Any], None]:
        """A function that writes one env's observation into row ``index`` of ``bank``.

        It checks the shape of every leaf, so a wrong observation is an error, never a
        silent broadcast.
        """
        assert self.layout.observation_space is not None
        rows = [
            (path, array[index, ...])
            for path, array in self._group(_bank_group(bank)).items()
        ]
        space = self.layout.observation_space

        def write(observation: Any) -> None:
            for path, row in rows:
                value = np.asarray(_get(observation, path))
                if value.shape != row.shape:
                    raise ValueError(
                        f"The env returned an observation of shape {value.shape} at "
                        f"{list(path) or 'the root'}; its observation space {space} "
                        f"expects {row.shape}."
                    )
                np.copyto(row, value, casting="unsafe")

        return write

    def action_writer(self, exact: bool = False) -> Callable[..., bool]:
        """A function ``write(actions, rows=None) -> bool`` that stores a batch of actions.

        Parent side. ``rows=None`` writes the whole batch; otherwise ``actions`` holds one
        action per env index in ``rows``. Every leaf is checked before anything is
        written, so a rejected batch leaves the arena as it was.

        Args:
            exact: ``False`` (checked, for retro button spaces): every leaf is converted to
                the space's dtype after these checks, and ``write`` returns ``True``.
                Discrete-valued leaves (Discrete, MultiDiscrete, MultiBinary, integer Box)
                take ints, bools, or floats that are exactly whole numbers (a Bernoulli
                sample as float32, say), within the space; float Box leaves take any real
                numbers, unclipped. A single value where a batch is due raises
                ``TypeError`` (as gymnasium's ``iterate`` does); a wrong shape, a dtype that
                is not a number, a fractional or out-of-space discrete value raise
                ``ValueError``. ``True``: nothing is checked or converted; the batch is
                written only when every leaf is a numpy array of exactly the leaf's dtype
                and batched shape, and ``write`` returns ``False`` (writing nothing)
                otherwise, for the caller to deliver the actions as gymnasium would (see
                :class:`retrovec.core.actions.ActionRouter`).

        Example:
            >>> layout = ArenaLayout.plan(2, spaces.Discrete(2), spaces.MultiBinary(3), False)
            >>> arena = SharedArena.create(layout)
            >>> write = arena.action_writer()
            >>> write(np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], np.float32))
            True
            >>> arena.action_reader(0)()
            array([1, 0, 1], dtype=int8)
            >>> write(np.array([[0.5, 0, 0], [0, 0, 0]]))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: The action of env 0 is not in ... is 0.5, expected 0 or 1 (ints, ...
            >>> arena.action_writer(exact=True)(np.ones((2, 3), np.int64))  # not int8: declined
            False
            >>> arena.close()
        """
        from retrovec.core.actions import make_action_writer  # actions imports this module

        return make_action_writer(self, exact)


    def action_reader(self, index: int) -> Callable[[], Any]:
        """A function that returns a fresh copy of env ``index``'s action (worker side)."""
        space = self.layout.action_space
        assert space is not None
        # ``array[index, ...]`` is a view even for 1-D fields; reading a 0-d view with
        # ``[()]`` gives the numpy scalar that gymnasium's ``iterate`` would have passed.
        rows = {path: array[index, ...] for path, array in self._group("action").items()}
        if list(rows) == [()]:
            row = rows[()]
            if row.ndim:
                return row.copy  # the common case: one leaf, one copy
            return lambda: row[()]

        def read() -> Any:
            return _assemble(space, {path: _fresh(row) for path, row in rows.items()})

        return read

    def close(self) -> None:
        """Unmap the arena and close its descriptor.

        Views handed out with ``copy=False`` keep the memory alive: it is freed when the
        last of them is gone, and since the arena is anonymous nothing else can leak.
        """
        self._arrays.clear()
        self.rewards = self.terminations = self.truncations = None  # type: ignore[assignment]
        self.info_columns = self.lockstep_round = None  # type: ignore[assignment]
        self.lockstep_bank = self.banks_used = None  # type: ignore[assignment]
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # the user still holds views; the mapping goes when they do
            self._mmap = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
