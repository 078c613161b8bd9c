"""ActionRouter delivers to each env exactly what gymnasium's AsyncVectorEnv would.

The reference is gymnasium's own split, ``iterate(batch_space(space, n), actions)``, each
piece pickled as it would be down a pipe. What the router delivers is its pipe entries
(pickled the same way) or, where it wrote to the arena, what ``action_reader`` reads back.
Both are compared leaf by leaf, value and type (and dtype) alike. No processes are needed.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector.utils import batch_space, iterate

from retrovec.core.actions import IN_ARENA, ActionRouter
from retrovec.core.arena import ArenaLayout, SharedArena

BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
SCALAR_BOX = spaces.Box(-1.0, 1.0, (), np.float32)
DISCRETE = spaces.Discrete(4)
SHIFTED = spaces.Discrete(3, start=-1)
BUTTONS = spaces.MultiBinary(3)
GRID = spaces.MultiBinary((2, 2))
MULTI = spaces.MultiDiscrete([3, 5])
DICT = spaces.Dict({"move": DISCRETE, "aim": BOX})
TUPLE = spaces.Tuple((DISCRETE, BOX))
NESTED = spaces.Dict({"pad": spaces.Tuple((BUTTONS, MULTI)), "aim": BOX})


def pipe(value: Any) -> Any:
    """What an env receives of an object sent through a pipe."""
    return pickle.loads(pickle.dumps(value))


def reference(space: spaces.Space, actions: Any, count: int) -> list[Any]:
    """What gymnasium's AsyncVectorEnv.step_async hands each env."""
    return [pipe(action) for action in iterate(batch_space(space, count), actions)]


def delivered(arena: SharedArena, routed: list[Any], rows: Any = None) -> list[Any]:
    """What each env of ``rows`` receives from the router's entries."""
    indices = range(len(routed)) if rows is None else rows
    return [
        arena.action_reader(int(index))() if entry is IN_ARENA else pipe(entry)
        for index, entry in zip(indices, routed)
    ]


def assert_same(got: Any, want: Any, where: str = "action") -> None:
    """Equal values and equal types all the way down (dtypes for numpy values)."""
    assert type(got) is type(want), f"{where}: {type(got)} != {type(want)}"
    if isinstance(want, np.ndarray | np.generic):
        assert got.dtype == want.dtype, f"{where}: {got.dtype} != {want.dtype}"
        assert np.shape(got) == np.shape(want), f"{where}: {np.shape(got)} != {np.shape(want)}"
        nan = got.dtype.kind == "f"
        assert np.array_equal(got, want, equal_nan=nan), f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, tuple | list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def make(space: spaces.Space, n: int, validate: bool) -> tuple[ActionRouter, SharedArena]:
    arena = SharedArena.create(ArenaLayout.plan(n, DISCRETE, space, observations=False))
    return ActionRouter(space, n, arena, validate=validate), arena


@pytest.fixture
def arenas():
    opened: list[SharedArena] = []

    def build(space: spaces.Space, n: int, validate: bool) -> tuple[ActionRouter, SharedArena]:
        router, arena = make(space, n, validate)
        opened.append(arena)
        return router, arena

    yield build
    for arena in opened:
        arena.close()


# (id, space, actions for 3 envs, whether the arena takes them when validate=False)
GYMNASIUM_CASES = [
    ("box-f32-from-f64", BOX, np.linspace(-2, 2, 6).reshape(3, 2), False),
    ("box-f32-from-f32", BOX, np.linspace(-2, 2, 6, dtype=np.float32).reshape(3, 2), True),
    ("box-f32-from-int", BOX, np.arange(6).reshape(3, 2), False),
    ("box-f32-from-list", BOX, [[0.5, 1.5], [0.0, 0.0], [-3.0, 2.0]], False),
    ("box-f32-non-contiguous", BOX, np.ones((3, 4), np.float32)[:, ::2], True),
    ("box-f32-big-endian", BOX, np.ones((3, 2), ">f4"), False),
    ("box-scalar-f32", SCALAR_BOX, np.array([0.5, -0.5, 2.0], np.float32), True),
    ("box-scalar-f64", SCALAR_BOX, np.array([0.5, -0.5, 2.0]), False),
    ("box-nan-inf", BOX, np.array([[np.nan, np.inf], [0, 0], [-np.inf, 1]], np.float32), True),
    ("discrete-list", DISCRETE, [0, 3, 1], False),
    ("discrete-int64", DISCRETE, np.array([0, 3, 1], np.int64), True),
    ("discrete-int32", DISCRETE, np.array([0, 3, 1], np.int32), False),
    ("discrete-float", DISCRETE, np.array([0.0, 3.0, 1.0]), False),
    ("discrete-tuple-of-ints", DISCRETE, (2, 1, 0), False),
    ("discrete-list-of-np-ints", DISCRETE, [np.int64(1), np.int64(2), np.int64(3)], False),
    ("discrete-2d", DISCRETE, np.array([[0], [1], [2]], np.int64), False),
    ("discrete-start", SHIFTED, np.array([-1, 0, 1], np.int64), True),
    ("discrete-out-of-range-int64", DISCRETE, np.array([7, -1, 0], np.int64), True),
    ("discrete-out-of-range-list", DISCRETE, [7, -1, 0], False),
    ("multibinary-int8", BUTTONS, np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]], np.int8), True),
    ("multibinary-float", BUTTONS, np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]], np.float32), False),
    ("multibinary-bool", BUTTONS, np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]], bool), False),
    ("multibinary-int64", BUTTONS, np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]]), False),
    ("multibinary-list", BUTTONS, [[1, 0, 1], [0, 0, 0], [1, 1, 1]], False),
    ("multibinary-out-of-range", BUTTONS, np.array([[2, 0, 1], [0, -1, 0], [1, 1, 9]], "i1"), True),
    ("multibinary-2d", GRID, np.zeros((3, 2, 2), np.int8), True),
    ("multidiscrete-int64", MULTI, np.array([[0, 4], [2, 0], [1, 1]]), True),
    ("multidiscrete-list", MULTI, [[0, 4], [2, 0], [1, 1]], False),
    ("multidiscrete-uint8", MULTI, np.array([[0, 4], [2, 0], [1, 1]], np.uint8), False),
    (
        "dict-exact",
        DICT,
        {"move": np.array([1, 2, 3]), "aim": np.zeros((3, 2), np.float32)},
        True,
    ),
    (
        "dict-one-leaf-f64",
        DICT,
        {"move": np.array([1, 2, 3]), "aim": np.zeros((3, 2))},
        False,
    ),
    (
        "dict-list-leaf",
        DICT,
        {"move": [1, 2, 3], "aim": np.zeros((3, 2), np.float32)},
        False,
    ),
    (
        "dict-reordered-and-extra-key",
        DICT,
        {"aim": np.ones((3, 2), np.float32), "extra": "ignored", "move": np.array([0, 0, 1])},
        True,
    ),
    ("tuple-exact", TUPLE, (np.array([1, 2, 3]), np.ones((3, 2), np.float32)), True),
    ("tuple-as-list", TUPLE, [np.array([1, 2, 3]), np.ones((3, 2), np.float32)], True),
    ("tuple-int32-leaf", TUPLE, (np.array([1, 2, 3], np.int32), np.ones((3, 2), "f4")), False),
    (
        "nested-exact",
        NESTED,
        {
            "pad": (np.eye(3, dtype=np.int8), np.array([[0, 1], [2, 3], [1, 4]])),
            "aim": np.zeros((3, 2), np.float32),
        },
        True,
    ),
    (
        "nested-float-buttons",
        NESTED,
        {
            "pad": (np.eye(3, dtype=np.float32), np.array([[0, 1], [2, 3], [1, 4]])),
            "aim": np.zeros((3, 2), np.float32),
        },
        False,
    ),
]

GYMNASIUM_PARAMS = [pytest.param(*case[1:], id=case[0]) for case in GYMNASIUM_CASES]


@pytest.mark.parametrize("space, actions, fast", GYMNASIUM_PARAMS)
def test_without_validation_each_env_gets_what_gymnasium_delivers(arenas, space, actions, fast):
    router, arena = arenas(space, 3, validate=False)
    routed = router.route(actions)
    assert len(routed) == 3
    assert [entry is IN_ARENA for entry in routed] == [fast] * 3
    assert_same(delivered(arena, routed), reference(space, actions, 3))


@pytest.mark.parametrize("space, actions, fast", GYMNASIUM_PARAMS)
def test_with_rows_each_env_gets_its_row_as_gymnasium_would(arenas, space, actions, fast):
    router, arena = arenas(space, 5, validate=False)
    batched = batch_space(space, 5)
    batched.seed(0)
    assert router.route(batched.sample()) == [IN_ARENA] * 5  # a sample has the exact dtypes
    rows = np.array([4, 0, 2])
    before = {i: arena.action_reader(i)() for i in (1, 3)}
    routed = router.route(actions, rows)
    assert [entry is IN_ARENA for entry in routed] == [fast] * 3
    assert_same(delivered(arena, routed, rows), reference(space, actions, 3))
    for i, value in before.items():  # envs outside rows: untouched
        assert_same(arena.action_reader(i)(), value)


def test_without_an_arena_or_a_shareable_space_actions_always_use_the_pipes(arenas):
    actions = np.array([1, 2], np.int64)
    for validate in (False, True):
        router = ActionRouter(DISCRETE, 2, None, validate=validate)
        assert not router.shared
        assert_same(router.route(actions), reference(DISCRETE, actions, 2))
        assert router.route([5, -3]) == [5, -3]  # not checked: there is nothing to convert to
    text = spaces.Dict({"say": spaces.Text(5), "move": DISCRETE})
    arena = SharedArena.create(ArenaLayout.plan(2, DISCRETE, text, observations=False))
    try:
        assert arena.layout.action_space is None
        batch = {"say": ("hi", "yo"), "move": np.array([0, 3])}
        for validate in (False, True):
            router = ActionRouter(text, 2, arena, validate=validate)
            assert not router.shared
            assert_same(router.route(batch), reference(text, batch, 2))
    finally:
        arena.close()


def test_a_numpy_subclass_goes_through_the_pipes(arenas):
    router, arena = arenas(BOX, 2, validate=False)
    masked = np.ma.masked_array(np.zeros((2, 2), np.float32), mask=[[0, 1], [0, 0]])
    routed = router.route(masked)
    assert routed[0] is not None
    assert_same([pipe(entry) for entry in routed], reference(BOX, masked, 2))


def test_fast_path_reads_are_fresh_copies(arenas):
    router, arena = arenas(BUTTONS, 2, validate=False)
    router.route(np.ones((2, 3), np.int8))
    first = arena.action_reader(0)()
    router.route(np.zeros((2, 3), np.int8))
    assert first.tolist() == [1, 1, 1]
    assert arena.action_reader(0)().tolist() == [0, 0, 0]


# --------------------------------------------------------------- the wrong number of actions


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize(
    "actions",
    [3, np.int64(3), np.array(3), 2.5],
    ids=["int", "np-int64", "0-d-array", "float"],
)
def test_a_single_action_for_a_vector_env_is_a_type_error_as_gymnasium(arenas, validate, actions):
    with pytest.raises(TypeError):
        list(iterate(batch_space(DISCRETE, 2), actions))
    router, _ = arenas(DISCRETE, 2, validate=validate)
    with pytest.raises(TypeError, match="(one per env)"):
        router.route(actions)


@pytest.mark.parametrize("validate", [False, True])
def test_a_single_action_inside_a_dict_is_a_type_error(arenas, validate):
    router, _ = arenas(DICT, 2, validate=validate)
    with pytest.raises(TypeError):
        router.route({"move": 1, "aim": np.zeros((2, 2), np.float32)})


@pytest.mark.parametrize("given", [1, 3])
@pytest.mark.parametrize(
    "space, batch",
    [
        (DISCRETE, lambda n: np.zeros(n, np.int64)),
        (DISCRETE, lambda n: [0] * n),
        (BUTTONS, lambda n: np.zeros((n, 3), np.int8)),
        (BOX, lambda n: np.zeros((n, 2))),
    ],
    ids=["discrete-int64", "discrete-list", "buttons-int8", "box-f64"],
)
def test_the_wrong_number_of_actions_names_expected_and_given(arenas, space, batch, given):
    router, _ = arenas(space, 2, validate=False)
    with pytest.raises(ValueError, match=f"Expected 2 actions \\(one per env\\), got {given}"):
        router.route(batch(given))
    checked, _ = arenas(space, 2, validate=True)
    with pytest.raises(ValueError, match=rf"Expected actions of shape \(2,.*got shape \({given},"):
        checked.route(batch(given))


def test_the_wrong_number_of_actions_with_rows(arenas):
    router, _ = arenas(DISCRETE, 4, validate=False)
    with pytest.raises(ValueError, match=r"Expected 2 actions \(one per env\), got 4"):
        router.route(np.zeros(4, np.int64), rows=np.array([1, 3]))


def test_dict_leaves_of_unequal_length_name_each_length(arenas):
    batch = {"move": np.array([1, 2]), "aim": np.zeros((3, 2))}
    with pytest.raises(ValueError):  # gymnasium: zip(strict=True)
        list(iterate(batch_space(DICT, 2), batch))
    router, _ = arenas(DICT, 2, validate=False)
    with pytest.raises(ValueError, match=r"Expected 2 actions .*\['aim'\]: 3, \['move'\]: 2"):
        router.route(batch)


def test_a_missing_dict_key_raises_as_in_gymnasium_without_validation(arenas):
    router, _ = arenas(DICT, 2, validate=False)
    with pytest.raises(KeyError):
        router.route({"move": np.array([1, 2])})
    checked, _ = arenas(DICT, 2, validate=True)
    with pytest.raises(ValueError, match=r"missing \['aim'\]"):
        checked.route({"move": np.array([1, 2])})


# ------------------------------------------------------------------------- with validation


VALID_CASES = [
    ("buttons-float32", BUTTONS, np.array([[1, 0, 1], [0, 0, 0]], np.float32)),
    ("buttons-float64", BUTTONS, np.array([[1, 0, 1], [0, 0, 0]], np.float64)),
    ("buttons-bool", BUTTONS, np.array([[True, False, True], [False, False, False]])),
    ("buttons-int64", BUTTONS, np.array([[1, 0, 1], [0, 0, 0]])),
    ("buttons-list", BUTTONS, [[1, 0, 1], [0, 0, 0]]),
    ("buttons-list-of-floats", BUTTONS, [[1.0, 0.0, 1.0], [0.0, -0.0, 0.0]]),
    ("discrete-float", DISCRETE, np.array([3.0, 0.0], np.float32)),
    ("discrete-list", DISCRETE, [3, 0]),
    ("discrete-int32", DISCRETE, np.array([3, 0], np.int32)),
    ("discrete-bool", DISCRETE, np.array([True, False])),
    ("discrete-start-float", SHIFTED, np.array([-1.0, 1.0])),
    ("multidiscrete-float", MULTI, np.array([[2.0, 4.0], [0.0, 0.0]])),
    ("box-f64", BOX, np.array([[5.0, -5.0], [0.25, 0.5]])),  # float Box: unclipped
    ("box-int", BOX, np.array([[1, 0], [0, 1]])),
    (
        "nested-floats",
        NESTED,
        {
            "pad": (np.eye(2, 3, dtype=np.float32), np.array([[2.0, 4.0], [0.0, 1.0]])),
            "aim": np.zeros((2, 2)),
        },
    ),
]


def converted(space: spaces.Space, actions: Any) -> Any:
    """The batch as the space's dtype (what validation delivers)."""
    if isinstance(space, spaces.Dict):
        return {key: converted(sub, actions[key]) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(converted(sub, actions[i]) for i, sub in enumerate(space.spaces))
    return np.asarray(actions).astype(space.dtype)


@pytest.mark.parametrize("space, actions", [pytest.param(*c[1:], id=c[0]) for c in VALID_CASES])
def test_validation_converts_whole_numbers_to_the_space_dtype(arenas, space, actions):
    router, arena = arenas(space, 2, validate=True)
    assert router.route(actions) == [IN_ARENA, IN_ARENA]
    # Delivered as gymnasium would deliver the same batch given in the space's dtype.
    assert_same(delivered(arena, [IN_ARENA, IN_ARENA]), reference(space, converted(space, actions), 2))
    rows = np.array([1])
    second = last_row(actions)
    assert router.route(second, rows) == [IN_ARENA]
    assert_same(delivered(arena, [IN_ARENA], rows), reference(space, converted(space, second), 1))


def last_row(value: Any) -> Any:
    """The batch of one holding a batch's last action."""
    if isinstance(value, dict):
        return {key: last_row(sub) for key, sub in value.items()}
    if isinstance(value, tuple):
        return tuple(last_row(sub) for sub in value)
    return value[-1:]


INVALID_CASES = [
    (
        "half",
        BUTTONS,
        np.array([[1, 0, 1], [0, 0.5, 0]], np.float32),
        r"env 1 is not in .*element \(1,\) is 0\.5, expected 0 or 1 \(ints, bools, or floats",
    ),
    ("nan", BUTTONS, np.array([[1, 0, np.nan], [0, 0, 0]]), r"env 0 is not in .*is nan, exp"),
    (
        "two",
        BUTTONS,
        np.array([[1, 0, 1], [0, 2, 0]]),
        r"env 1 is outside the action space MultiBinary\(3\): element \(1,\) is 2, expected 0 to 1",
    ),
    ("two-float", BUTTONS, np.array([[1, 0, 1], [0, 2.0, 0]]), r"env 1 is outside .*is 2\.0, exp"),
    ("inf", BUTTONS, np.array([[1, 0, 1], [0, np.inf, 0]]), r"env 1 is outside .*is inf"),
    ("negative", BUTTONS, np.array([[1, 0, -1], [0, 0, 0]], np.int8), r"env 0 is outside .*is -1"),
    (
        "discrete-fraction",
        DISCRETE,
        np.array([2.5, 1.0]),
        r"env 0 is not in the action space Discrete\(4\): it is 2\.5, expected a whole number "
        r"from 0 to 3",
    ),
    (
        "discrete-high",
        DISCRETE,
        np.array([1, 4]),
        r"env 1 is outside the action space Discrete\(4\): it is 4, expected 0 to 3",
    ),
    ("discrete-start", SHIFTED, [-2, 0], r"env 0 is outside .*is -2, expected -1 to 1"),
    (
        "multidiscrete",
        MULTI,
        np.array([[2, 5], [0, 0]]),
        r"env 0 is outside .*element \(1,\) is 5, expected 0 to 4",
    ),
    ("strings", BUTTONS, np.full((2, 3), "1"), r"Expected actions of dtype int8 .*got <U1"),
    ("complex", BOX, np.zeros((2, 2), complex), r"Expected actions of dtype float32 .*complex128"),
    ("shape", BUTTONS, np.zeros((2, 4), np.int8), r"of shape \(2, 3\) .*got shape \(2, 4\)"),
    ("ragged", BUTTONS, [[1, 0, 1], [0, 0]], r"Expected actions of shape \(2, 3\) .*ragged"),
    (
        "nested-leaf",
        NESTED,
        {"pad": (np.eye(2, 3), np.array([[2, 4], [0, 0.5]])), "aim": np.zeros((2, 2))},
        r"env 1 is not in the action space \['pad', 1\]: element \(1,\) is 0\.5",
    ),
]


@pytest.mark.parametrize(
    "space, actions, message", [pytest.param(*c[1:], id=c[0]) for c in INVALID_CASES]
)
def test_validation_rejects_clearly_and_writes_nothing(arenas, space, actions, message):
    router, arena = arenas(space, 2, validate=True)
    before = [arena.action_reader(i)() for i in range(2)]
    with pytest.raises(ValueError, match=message):
        router.route(actions)
    assert_same([arena.action_reader(i)() for i in range(2)], before)


def test_validation_reports_the_env_index_from_rows(arenas):
    router, arena = arenas(BUTTONS, 4, validate=True)
    with pytest.raises(ValueError, match=r"env 3 is not in .*is 0\.5"):
        router.route(np.array([[1, 0, 0], [0, 0.5, 0]]), rows=np.array([1, 3]))
    routed = router.route(np.array([[1, 0, 0], [0, 1, 0]], np.float32), rows=np.array([1, 3]))
    assert routed == [IN_ARENA, IN_ARENA]
    assert [arena.action_reader(i)().tolist() for i in range(4)] == [
        [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]
    ]


def test_no_partial_writes_when_a_later_leaf_is_bad(arenas):
    router, arena = arenas(DICT, 2, validate=True)
    router.route({"move": np.array([1, 2]), "aim": np.ones((2, 2), np.float32)})
    for bad in (
        {"move": np.array([3, 3]), "aim": np.zeros((2, 3))},  # shape
        {"move": np.array([3, 3]), "aim": np.zeros((2, 2), "U1")},  # dtype
        {"move": np.array([3, 3])},  # missing
    ):
        with pytest.raises(ValueError):
            router.route(bad)
        assert arena.action_reader(0)()["move"] == 1
        assert arena.action_reader(1)()["aim"].tolist() == [1.0, 1.0]
    exact, arena = arenas(DICT, 2, validate=False)
    exact.route({"move": np.array([1, 2]), "aim": np.ones((2, 2), np.float32)})
    batch = {"move": np.array([3, 3]), "aim": np.zeros((2, 2))}  # a float64 leaf: pipes
    routed = exact.route(batch)
    assert_same([pipe(entry) for entry in routed], reference(DICT, batch, 2))
    assert arena.action_reader(0)()["move"] == 1  # the arena was not touched


def test_an_arena_for_another_space_is_refused(arenas):
    _, arena = arenas(BUTTONS, 2, validate=False)
    with pytest.raises(ValueError, match="holds actions of MultiBinary"):
        ActionRouter(spaces.MultiBinary(4), 2, arena, validate=False)
    with pytest.raises(ValueError, match="for 2 envs"):
        ActionRouter(BUTTONS, 3, arena, validate=False)
