"""Exact comparison of nested step results (dtype and shape included)."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_same(expected: Any, actual: Any, where: str = "result") -> None:
    """Assert two nested dict/tuple/array structures are identical, dtypes included."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a dict, got {type(actual)}"
        assert set(expected) == set(actual), f"{where}: keys {set(expected)} != {set(actual)}"
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, (tuple, list)):
        assert type(expected) is type(actual), f"{where}: {type(expected)} != {type(actual)}"
        assert len(expected) == len(actual), f"{where}: lengths differ"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"{where}: expected ndarray, got {type(actual)}"
        assert expected.dtype == actual.dtype, f"{where}: dtype {expected.dtype} != {actual.dtype}"
        assert expected.shape == actual.shape, f"{where}: shape {expected.shape} != {actual.shape}"
        if expected.dtype == object:
            for i, (e, a) in enumerate(zip(expected, actual)):
                assert_same(e, a, f"{where}[{i}]")
        else:
            assert np.array_equal(expected, actual), f"{where}: values differ"
    else:
        assert type(expected) is type(actual), f"{where}: {type(expected)} != {type(actual)}"
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"
