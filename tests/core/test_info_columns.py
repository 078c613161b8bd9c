"""Info columns rebuild exactly what gymnasium's _add_info builds from the original infos."""

import math
import pickle

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from retrovec.core.arena import ArenaLayout, SharedArena
from retrovec.core.info_columns import (
    INFO_SLOTS,
    InfoColumnWriter,
    InfoSchema,
    batch_info_columns,
    decode_info,
)
from retrovec.core.infos import batch_infos


class Owner:
    _add_info = VectorEnv._add_info

    def __init__(self, n):
        self.num_envs = n


def gymnasium_batch(infos):
    owner, batched = Owner(len(infos)), {}
    for index, info in enumerate(infos):
        batched = owner._add_info(batched, info, index)
    return batched


def assert_identical(expected, actual, where="result"):
    """Same keys in the same order, same types, dtypes, shapes and bits (NaN included)."""
    assert type(expected) is type(actual), f"{where}: {type(expected)} != {type(actual)}"
    if isinstance(expected, dict):
        assert list(expected) == list(actual), f"{where}: keys {list(expected)} != {list(actual)}"
        for key in expected:
            assert_identical(expected[key], actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, np.ndarray):
        assert expected.dtype == actual.dtype, f"{where}: {expected.dtype} != {actual.dtype}"
        assert expected.shape == actual.shape, f"{where}: {expected.shape} != {actual.shape}"
        if expected.dtype == object:
            for i, (e, a) in enumerate(zip(expected, actual)):
                assert_identical(e, a, f"{where}[{i}]")
        else:
            assert expected.tobytes() == actual.tobytes(), f"{where}: {expected} != {actual}"
    elif isinstance(expected, float | np.floating) and math.isnan(expected):
        assert math.isnan(actual), f"{where}: {actual!r} is not NaN"
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"
        if isinstance(expected, float | np.floating):
            assert math.copysign(1, expected) == math.copysign(1, actual), f"{where}: sign"


NUMPY_SCALARS = [
    np.int8(-128), np.int16(-3), np.int32(2**31 - 1), np.int64(-(2**63)), np.longlong(5),
    np.uint8(255), np.uint16(65535), np.uint32(2**32 - 1), np.uint64(2**63 - 1),
    np.ulonglong(7), np.intc(-1), np.uintc(1),
    np.float16(0.1), np.float32(-2.5), np.float64(1e300), np.float32(np.nan),
    np.float16(np.inf), np.float64(-0.0), np.bool_(True), np.bool_(False),
]  # fmt: skip

INFOS = [
    {},
    {"score": 0, "lives": 3, "level": 1},
    {"score": -17, "lives": 0, "level": 2**63 - 1},
    {"big": -(2**63), "small": 0},
    {"x": 1.5, "y": -0.0, "z": float("nan"), "w": float("inf"), "v": float("-inf")},
    {"x": 5e-324, "y": 1.7976931348623157e308},
    {"done": True, "alive": False},
    {"mixed": 1, "speed": 2.5, "flag": True, "n": np.int32(4), "f": np.float32(0.1)},
    *({"value": value, "other": 1} for value in NUMPY_SCALARS),
    {f"k{i}": i for i in range(INFO_SLOTS)},  # exactly full
]


def write_all(infos):
    columns = np.full((len(infos), INFO_SLOTS), -1, np.int64)  # garbage in unused slots
    schemas = [InfoColumnWriter(columns[i]).write(info) for i, info in enumerate(infos)]
    return columns, schemas


@pytest.mark.parametrize("info", INFOS, ids=repr)
def test_round_trip_single_info(info):
    columns, (schema,) = write_all([info])
    assert schema is not None
    assert schema.keys == tuple(info)
    assert_identical(info, decode_info(columns[0], schema))
    assert_identical(gymnasium_batch([info]), batch_info_columns(columns, None, [schema]))


@pytest.mark.parametrize("info", INFOS, ids=repr)
def test_batch_of_envs_matches_gymnasium(info):
    # Every env has the same keys and value types; the values differ per env.
    def variant(env):
        out = {}
        for key, value in info.items():
            kind = type(value)
            if kind is bool or kind is np.bool_:
                out[key] = kind(env % 2 == 0) if env else value
            elif kind is float or issubclass(kind, np.floating):
                out[key] = kind(value) if env == 0 else kind(env / 4 - 1)
            else:
                out[key] = value if env == 0 else kind(env * 3 % 100)
        return out

    infos = [variant(env) for env in range(5)]
    columns, schemas = write_all(infos)
    assert len({id(schema) for schema in schemas}) == 1  # interned: one object
    assert_identical(gymnasium_batch(infos), batch_info_columns(columns, None, schemas))
    rows = [4, 1, 2]
    subset = [infos[row] for row in rows]
    picked = [schemas[row] for row in rows]
    assert_identical(gymnasium_batch(subset), batch_info_columns(columns, rows, picked))
    assert_identical(gymnasium_batch(subset), batch_info_columns(columns, np.array(rows), picked))


def test_batched_arrays_are_copies():
    columns, schemas = write_all([{"a": 1, "b": 2.0}, {"a": 3, "b": 4.0}])
    batched = batch_info_columns(columns, None, schemas)
    columns[:] = 0
    assert batched["a"].tolist() == [1, 3] and batched["b"].tolist() == [2.0, 4.0]
    assert all(value.base is None or value.base is not columns for value in batched.values())


def test_mixed_schemas_fall_back_to_decode_and_batch_infos():
    infos = [{"score": 1}, {"score": 2.5}, {"lives": 3}, {}, {"score": 4}]
    columns, schemas = write_all(infos)
    assert batch_info_columns(columns, None, schemas) is None
    decoded = [decode_info(columns[i], schema) for i, schema in enumerate(schemas)]
    assert_identical(gymnasium_batch(infos), batch_infos(decoded, Owner(len(infos))))


def test_key_order_is_part_of_the_schema():
    infos = [{"a": 1, "b": 2}, {"b": 2, "a": 1}]
    columns, schemas = write_all(infos)
    assert schemas[0] != schemas[1]
    assert batch_info_columns(columns, None, schemas) is None


def test_pickled_info_in_the_batch_falls_back():
    columns, schemas = write_all([{"a": 1}, {"a": "text"}])
    assert schemas[1] is None
    assert batch_info_columns(columns, None, schemas) is None
    assert batch_info_columns(columns, None, schemas[::-1]) is None


def test_empty_batches():
    columns, schemas = write_all([{}, {}])
    assert batch_info_columns(columns, None, schemas) == {} == gymnasium_batch([{}, {}])
    assert batch_info_columns(columns, [], []) == {}
    with pytest.raises(ValueError, match="one schema per row"):
        batch_info_columns(columns, [0], schemas)


class IntLike(int):
    pass


REJECTED = [
    None,
    "info",
    [("a", 1)],
    {"name": "Sonic"},
    {"score": 1, "name": "Sonic"},
    {"arr": np.arange(3)},
    {"zero_d": np.array(5)},
    {"nested": {"score": 1}},
    {"none": None},
    {"c": 1 + 2j},
    {"c": np.complex64(1)},
    {"ld": np.longdouble(1)},
    {"td": np.timedelta64(1, "s")},
    {"dt": np.datetime64("2020-01-01")},
    {"sub": IntLike(3)},
    {"huge": 2**63},
    {"huge": -(2**63) - 1},
    {"huge": np.uint64(2**63)},
    {"huge": np.uint64(2**64 - 1)},
    {f"k{i}": i for i in range(INFO_SLOTS + 1)},
    {1: 2},
    {"final_obs": 1},
    {"a": 1, "_a": 2},
    {"_a": 1, "a": 2},
]


@pytest.mark.parametrize("info", REJECTED, ids=repr)
def test_rejects(info):
    writer = InfoColumnWriter(np.zeros(INFO_SLOTS, np.int64))
    assert writer.write(info) is None
    # A cached schema (same keys, int values) does not let a bad value through either.
    warm = InfoColumnWriter(np.zeros(INFO_SLOTS, np.int64))
    if type(info) is dict and warm.write(dict.fromkeys(info, 0)) is not None:
        assert warm.write(info) is None


def test_dict_subclass_is_rejected():
    from collections import OrderedDict

    writer = InfoColumnWriter(np.zeros(INFO_SLOTS, np.int64))
    assert writer.write(OrderedDict(a=1)) is None


def test_writer_caches_the_schema_and_recovers_after_a_reject():
    row = np.zeros(INFO_SLOTS, np.int64)
    writer = InfoColumnWriter(row)
    first = writer.write({"score": 1, "lives": 3})
    assert writer.write({"score": 2, "lives": 2}) is first
    assert writer.write({"score": 2**64, "lives": 2}) is None
    assert writer.write({"score": 5, "lives": 1}) is first
    assert decode_info(row, first) == {"score": 5, "lives": 1}
    second = writer.write({"score": 5.0, "lives": 1})
    assert second is not first and second.types == (float, int)
    assert writer.write({"lives": 1, "score": 5.0}).keys == ("lives", "score")


def test_schema_is_hashable_picklable_and_interned():
    schema = InfoSchema.of(("score", "x", "flag"), (np.uint16, float, np.bool_))
    clone = pickle.loads(pickle.dumps(schema))
    assert clone is schema and hash(clone) == hash(schema)
    assert {schema: 1}[InfoSchema(schema.keys, schema.types)] == 1
    assert InfoSchema(schema.keys, schema.types) == schema
    assert schema != InfoSchema.of(("score", "x", "flag"), (np.uint16, float, bool))
    assert len(pickle.dumps(InfoSchema.of(("score", "lives", "level"), (int,) * 3))) < 200
    with pytest.raises(ValueError):
        InfoSchema.of(("a",), (str,))
    with pytest.raises(ValueError):
        InfoSchema.of(("a", "a"), (int, int))


@pytest.mark.parametrize(
    "row",
    [
        np.zeros(INFO_SLOTS, np.int32),
        np.zeros(INFO_SLOTS - 1, np.int64),
        np.zeros((2, INFO_SLOTS), np.int64)[:, 0],
        np.zeros(INFO_SLOTS, np.int64)[None],
    ],
)
def test_writer_checks_its_row(row):
    with pytest.raises(ValueError, match="info column row"):
        InfoColumnWriter(row)


def test_arena_has_row_aligned_info_columns():
    for num_envs in (1, 3, 8):
        obs_space = spaces.Box(0, 255, (3,), np.uint8)
        layout = ArenaLayout.plan(num_envs, obs_space, spaces.Discrete(3), True)
        (field,) = [f for f in layout.fields if f.path == ("info_columns",)]
        assert field.group == "scalar" and field.offset % 64 == 0
        assert np.dtype(field.dtype) == np.int64 and field.shape == (num_envs, INFO_SLOTS)
        assert field.offset + field.nbytes <= layout.size
        parent, worker = SharedArena.create(layout), None
        try:
            worker = SharedArena.attach(layout, parent.fd)
            columns = parent.info_columns
            assert columns.shape == (num_envs, INFO_SLOTS) and columns.dtype == np.int64
            assert all(columns[i].ctypes.data % 64 == 0 for i in range(num_envs))
            infos = [{"score": 10 * i, "lives": np.uint8(3), "x": i / 3} for i in range(num_envs)]
            writers = [InfoColumnWriter(row) for row in worker.info_columns]
            schemas = [writer.write(info) for writer, info in zip(writers, infos)]
            # Pickled schemas, as they cross the pipe, compare equal (and are interned).
            schemas = [pickle.loads(pickle.dumps(schema)) for schema in schemas]
            assert_identical(gymnasium_batch(infos), batch_info_columns(columns, None, schemas))
        finally:
            if worker is not None:
                worker.fd = -1  # shares the parent's descriptor here
                worker.close()
            parent.close()
        assert parent.info_columns is None
