"""Info columns: fixed-key scalar infos travel in the shared arena, not through pickle.

Retro envs return the same few scalar game variables (``{"score": 0, "lives": 3}``) on
every step. Pickling that dict in the worker and unpickling it in the parent costs parent
CPU on every step of every env. Instead each worker writes the values into its own row of
``arena.info_columns`` (``INFO_SLOTS`` int64 slots; floats are stored through a float64
view of the same 8 bytes) and describes them with an :class:`InfoSchema`: the keys in
order and the exact Python or numpy type of each value. The schema only has to cross the
pipe when it changes; :meth:`InfoColumnWriter.write` returns the very same schema object
while it does not, so the worker can reply with a constant token instead.

The parent rebuilds the batched infos with :func:`batch_info_columns` exactly as
gymnasium's ``VectorEnv._add_info`` would have built them from the original dicts (the
same keys in the same order, the same dtypes, ``_key`` masks), or, for a batch whose envs
sent different schemas, one info dict per env with :func:`decode_info`.

Hand-written (``struct`` packing, exact type checks, a cached schema) rather than
generic because it runs once per env per step on the hot path: the unchanged-schema check
and the write are a handful of C-level calls, with no per-key Python loop.

Example:
    >>> import numpy as np
    >>> columns = np.zeros((2, INFO_SLOTS), np.int64)  # arena.info_columns in real use
    >>> writers = [InfoColumnWriter(columns[0]), InfoColumnWriter(columns[1])]
    >>> schemas = [writers[0].write({"score": 10, "x": 0.5}),
    ...            writers[1].write({"score": 20, "x": 1.5})]
    >>> batch_info_columns(columns, None, schemas)  # doctest: +NORMALIZE_WHITESPACE
    {'score': array([10, 20]), '_score': array([ True,  True]),
     'x': array([0.5, 1.5]), '_x': array([ True,  True])}
    >>> decode_info(columns[1], schemas[1])
    {'score': 20, 'x': 1.5}
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "INFO_SLOTS",
    "InfoColumnWriter",
    "InfoSchema",
    "batch_info_columns",
    "decode_info",
]

INFO_SLOTS = 16
"""How many scalar values one env's info may hold and still travel in the arena.

16 int64 slots are 128 bytes: two whole cache lines, so every env's row starts on its
own cache line and no two workers ever write to the same line.
"""

# Every value takes one 8-byte slot. "q": ints (range-checked by struct: a value outside
# int64 raises struct.error and the info travels pickled); "d": floats (widening float16
# and float32 to float64 is exact, NaN and -0.0 included); "?7x": bools, one byte 0/1 and
# seven zero pad bytes, so the slot reads back as the int64 0 or 1.
_INT_TYPES = (int, *dict.fromkeys(np.dtype(code).type for code in np.typecodes["AllInteger"]))
_FLOAT_TYPES = (float, np.float16, np.float32, np.float64)
_BOOL_TYPES = (bool, np.bool_)
_FORMATS: dict[type, str] = {
    **{kind: "q" for kind in _INT_TYPES},
    **{kind: "d" for kind in _FLOAT_TYPES},
    **{kind: "?7x" for kind in _BOOL_TYPES},
}
_PLAIN = (int, float, bool)  # what struct.unpack already returns; no conversion needed


class InfoSchema:
    """The shape of one info dict: its keys in order and the exact type of each value.

    Small, hashable and picklable: the worker sends it to the parent whenever it changes.
    Equal schemas are interned (also when unpickled), so equal usually means identical
    and the parent's comparison is an ``is`` check. Build one with :meth:`of`.

    Attributes:
        keys: The info's keys, in the dict's order.
        types: The type of each value (``int``, ``float``, ``bool`` or a numpy scalar
            type such as ``np.float32``): this is what makes the rebuilt infos exact.

    Example:
        >>> import pickle
        >>> schema = InfoSchema.of(("score", "speed"), (int, np.float32))
        >>> schema
        InfoSchema(keys=('score', 'speed'), types=(<class 'int'>, <class 'numpy.float32'>))
        >>> pickle.loads(pickle.dumps(schema)) is schema
        True
    """

    __slots__ = ("_all_int64", "_columns", "_convert", "_hash", "_struct", "keys", "types")

    keys: tuple[str, ...]
    types: tuple[type, ...]

    def __init__(self, keys: tuple[str, ...], types: tuple[type, ...]) -> None:
        """Use :meth:`of`, which checks the arguments and interns the result."""
        self.keys = keys
        self.types = types
        self._struct = struct.Struct("=" + "".join(_FORMATS[kind] for kind in types))
        self._convert = (
            None if all(kind in _PLAIN for kind in types) else tuple(
                None if kind in _PLAIN else kind for kind in types
            )
        )
        # (key, mask key, slot, how to read the column, the dtype gymnasium would use)
        self._columns = tuple(
            (key, f"_{key}", slot, _column_kind(kind), np.dtype(kind))
            for slot, (key, kind) in enumerate(zip(keys, types))
        )
        # Every value an int64 column (the usual retro game variables): batched in one copy.
        self._all_int64 = all(
            kind == "i" and dtype == _INT64 for _, _, _, kind, dtype in self._columns
        )
        self._hash = hash((keys, types))

    @classmethod
    def of(cls, keys: Sequence[str], types: Sequence[type]) -> InfoSchema:
        """The (interned) schema for ``keys`` holding values of ``types``.

        Args:
            keys: The keys in order: strings, at most ``INFO_SLOTS``.
            types: One supported scalar type per key.

        Returns:
            The schema; equal arguments give the same object.

        Raises:
            ValueError: The keys or types cannot travel in info columns.

        Example:
            >>> InfoSchema.of(["a"], [int]) is InfoSchema.of(("a",), (int,))
            True
        """
        return _intern(tuple(keys), tuple(types))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, InfoSchema):
            return NotImplemented
        return self.keys == other.keys and self.types == other.types

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _intern, (self.keys, self.types)

    def __repr__(self) -> str:
        return f"InfoSchema(keys={self.keys!r}, types={self.types!r})"


def _column_kind(kind: type) -> str:
    if kind in _FLOAT_TYPES:
        return "f"
    if kind is bool:
        return "b"
    if kind is np.bool_:
        # Not an np.number, so gymnasium's _add_info puts np.bool_ values in an object
        # array (holding the np.bool_ scalars); batch_info_columns does the same.
        return "o"
    return "i"


@functools.lru_cache(maxsize=1024)
def _intern(keys: tuple[str, ...], types: tuple[type, ...]) -> InfoSchema:
    if len(keys) != len(types) or len(keys) > INFO_SLOTS:
        raise ValueError(f"An info schema holds at most {INFO_SLOTS} keys, one type each.")
    if len(set(keys)) != len(keys) or not all(type(key) is str for key in keys):
        raise ValueError(f"Info schema keys must be distinct strings, got {keys!r}.")
    if "final_obs" in keys or any(f"_{key}" in keys for key in keys):
        # gymnasium's _add_info treats "final_obs" specially, and a key "_k" next to "k"
        # collides with k's mask; such infos travel pickled and get gymnasium's own result.
        raise ValueError(f"The info keys {keys!r} need gymnasium's own batching.")
    unsupported = [kind for kind in types if kind not in _FORMATS]
    if unsupported:
        raise ValueError(f"Info values of type {unsupported[0]!r} cannot travel in columns.")
    return InfoSchema(keys, types)


class InfoColumnWriter:
    """Writes one env's scalar infos into its row of the info columns (worker side).

    Args:
        row: The env's row, ``arena.info_columns[index]``: a writable, contiguous int64
            array of ``INFO_SLOTS`` slots.

    Raises:
        ValueError: ``row`` is not such an array.

    Example:
        >>> row = np.zeros(INFO_SLOTS, np.int64)
        >>> writer = InfoColumnWriter(row)
        >>> schema = writer.write({"score": 7, "alive": True})
        >>> row[:2].tolist(), schema.keys
        ([7, 1], ('score', 'alive'))
        >>> writer.write({"score": 8, "alive": True}) is schema  # unchanged: same object
        True
        >>> writer.write({"name": "Sonic"}) is None  # must travel pickled
        True
    """

    __slots__ = ("_buffer", "_keys", "_pack", "_schema", "_types", "row")

    def __init__(self, row: np.ndarray) -> None:
        if (
            not isinstance(row, np.ndarray)
            or row.dtype != np.int64
            or row.shape != (INFO_SLOTS,)
            or not row.flags.c_contiguous
            or not row.flags.writeable
        ):
            raise ValueError(
                f"An info column row must be a writable contiguous int64 array of shape "
                f"({INFO_SLOTS},) (arena.info_columns[index]), got {row!r}."
            )
        self.row = row
        self._buffer = memoryview(row)  # packing into a memoryview beats a fresh ndarray export
        # The cached schema, unpacked into attributes so the common case reads them directly.
        self._schema: InfoSchema | None = None
        self._keys: list[str] | None = None  # lists: building and comparing one is fastest
        self._types: list[type] | None = None
        self._pack: Any = None

    def write(self, info: Any) -> InfoSchema | None:
        """Write ``info``'s values into the row, if it can travel in columns.

        Args:
            info: The info dict an env's ``step`` or ``reset`` returned.

        Returns:
            Its schema, the same object as the previous call's while the keys and value
            types stay the same; ``None`` when ``info`` must travel pickled (not a plain
            dict, more than ``INFO_SLOTS`` keys, a value that is not a supported scalar,
            an int outside int64, ...). After ``None`` the row holds nothing meaningful.
        """
        if (
            type(info) is not dict
            or [*info] != self._keys
            or [*map(type, info.values())] != self._types
        ):
            return self._write_new(info)
        try:
            self._pack(self._buffer, 0, *info.values())
        except (struct.error, OverflowError, TypeError, ValueError):
            return None  # e.g. an int outside int64: the values, not the schema, are the issue
        return self._schema

    def _write_new(self, info: Any) -> InfoSchema | None:
        """``write`` for an info whose keys or value types differ from the cached schema's."""
        if type(info) is not dict or len(info) > INFO_SLOTS:
            return None
        try:
            schema = _intern(tuple(info), tuple(map(type, info.values())))
        except (ValueError, TypeError):
            return None
        self._schema, self._keys, self._types = schema, [*schema.keys], [*schema.types]
        self._pack = schema._struct.pack_into
        return self.write(info)


def decode_info(row: np.ndarray, schema: InfoSchema) -> dict[str, Any]:
    """Rebuild one env's info dict, with the original Python and numpy types.

    Args:
        row: The env's row of the info columns (or a copy of it).
        schema: The schema the env's writer returned for it.

    Returns:
        A new dict equal to the one written, key order and value types included.

    Example:
        >>> row = np.zeros(INFO_SLOTS, np.int64)
        >>> schema = InfoColumnWriter(row).write({"x": np.float32(0.25), "dead": False})
        >>> info = decode_info(row, schema)
        >>> info, type(info["x"])
        ({'x': np.float32(0.25), 'dead': False}, <class 'numpy.float32'>)
    """
    values = schema._struct.unpack_from(np.ascontiguousarray(row))
    convert = schema._convert
    if convert is None:
        return dict(zip(schema.keys, values))
    return {
        key: value if kind is None else kind(value)
        for key, kind, value in zip(schema.keys, convert, values)
    }


def batch_info_columns(
    columns: np.ndarray,
    rows: Sequence[int] | np.ndarray | None,
    schemas: Sequence[InfoSchema | None],
) -> dict[str, Any] | None:
    """Batch a step's infos from the columns, as gymnasium's ``_add_info`` would have.

    Args:
        columns: ``arena.info_columns``, shape ``(num_envs, INFO_SLOTS)``.
        rows: The env index of each row of the batch, or ``None`` for all envs in order.
        schemas: The schema each env of the batch sent, one per row of the batch (``None``
            for an env whose info travelled pickled).

    Returns:
        The batched infos (new arrays, never views of the shared columns): each key's
        values with the dtype gymnasium gives them and an all-True ``_key`` mask, in the
        keys' order; ``{}`` when the schema has no keys. ``None`` when the envs did not
        all send the same schema: then decode each env's info (:func:`decode_info`, or
        the pickled one) and batch them with ``retrovec.core.infos.batch_infos``.

    Raises:
        ValueError: ``schemas`` does not hold one schema per row of the batch.

    Example:
        >>> columns = np.zeros((3, INFO_SLOTS), np.int64)
        >>> schemas = [InfoColumnWriter(columns[i]).write({"lives": np.uint8(3 - i)})
        ...            for i in range(3)]
        >>> batch_info_columns(columns, [2, 0], [schemas[2], schemas[0]])
        {'lives': array([1, 3], dtype=uint8), '_lives': array([ True,  True])}
        >>> batch_info_columns(columns, None, [schemas[0], schemas[1], None]) is None
        True
    """
    size = len(columns) if rows is None else len(rows)
    if len(schemas) != size:
        raise ValueError(f"Expected one schema per row of the batch ({size}), got {len(schemas)}.")
    if not size:
        return {}
    first = schemas[0]
    if first is None or schemas.count(first) != size:  # count: a C loop, identity first
        return None
    if not first.keys:
        return {}
    count = len(first.keys)
    block = columns if rows is None else columns[rows]
    # Each key's values and mask are rows of one new (keys, envs) array: C-contiguous,
    # writable and independent like gymnasium's, made with one copy each instead of one per
    # key (the parent's CPU per step is mostly cold-cache numpy calls).
    masks = np.ones((count, size), np.bool_)
    batched: dict[str, Any] = {}
    if first._all_int64:
        values = block[:, :count].T.copy()
        for (key, mask_key, _, _, _), value, mask in zip(first._columns, values, masks):
            batched[key] = value
            batched[mask_key] = mask
        return batched
    floats = None
    # ``copy`` where the dtype stays the same: several times faster than ``astype``.
    for (key, mask_key, slot, kind, dtype), mask in zip(first._columns, masks):
        if kind == "i":
            column = block[:, slot]
            value = column.copy() if dtype == _INT64 else column.astype(dtype)
        elif kind == "f":
            if floats is None:
                floats = block.view(np.float64)
            column = floats[:, slot]
            value = column.copy() if dtype == _FLOAT64 else column.astype(dtype)
        elif kind == "b":
            value = block[:, slot] != 0
        else:
            value = np.empty(size, object)
            value[:] = list(block[:, slot] != 0)  # np.bool_ scalars, as gymnasium stores
        batched[key] = value
        batched[mask_key] = mask
    return batched


_INT64 = np.dtype(np.int64)
_FLOAT64 = np.dtype(np.float64)
