"""batch_infos gives exactly gymnasium's _add_info result, on the fast path and off it."""

import numpy as np
import pytest
from gymnasium.vector import VectorEnv

from retrovec.core.infos import batch_infos
from tests.compare import assert_same


class Owner:
    _add_info = VectorEnv._add_info

    def __init__(self, n):
        self.num_envs = n


def gymnasium_batch(infos):
    owner, batched = Owner(len(infos)), {}
    for index, info in enumerate(infos):
        batched = owner._add_info(batched, info or {}, index)
    return batched


CASES = [
    [{"score": 1, "lives": 3}, {"score": 2, "lives": 2}, {"score": 0, "lives": 1}],
    [{"x": 1.5}, {"x": 2.5}],
    [{"flag": True}, {"flag": False}],
    [{"n": np.int32(4)}, {"n": np.int32(5)}],
    [{"score": 1}, {"score": 2.5}],  # mixed types: gymnasium truncates to the first's
    [{"score": 1}, {}],  # partial
    [{"a": 1, "b": 2}, {"b": 2, "a": 1}],  # same keys, other order
    [{"a": 1}, {"b": 2}],
    [{"v": np.arange(3)}, {"v": np.arange(3)}],
    [{"nested": {"k": 1}}, {"nested": {"k": 2}}],
    [{"label": "x"}, {"label": "y"}],
    [{}, {}],
    [None, {"a": 1}],
]


@pytest.mark.parametrize("infos", CASES)
def test_same_as_gymnasium(infos):
    assert_same(gymnasium_batch(infos), batch_infos(infos, Owner(len(infos))))
    assert list(gymnasium_batch(infos)) == list(batch_infos(infos, Owner(len(infos))))
