"""retrovec.core.selection: ``envs.at(indices)`` runs ``call``/``get_attr``/``set_attr`` on the
chosen envs only.

The machinery (argument checks, ordering, errors, restarts, EnvPool) is pinned on the
in-process transport of test_base.py, where every command sent is recorded; the real
emulator (Airstriker) is then run under each start method of the process backend, and once
on the Ray backend.
"""

from __future__ import annotations

import functools
import re
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

import retrovec
from retrovec.core.selection import EnvSelection, select_indices
from retrovec.errors import WorkerCrashedError, WorkerTimeoutError
from tests.core.test_base import InProcessVectorEnv
from tests.envs import ToyEnv, ToyError, make_airstriker_killed_once
from tests.failures import close

GAME = "Airstriker-Genesis-v0"


class KeywordEnv(ToyEnv):
    """A toy env whose methods take ``indices`` and ``name`` keywords of their own."""

    def pick(self, indices=None, name=None):
        return ("picked", indices, name)

    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    def fail_if(self, bad: bool):
        if bad:
            raise ToyError("asked to fail")
        return "fine"


def _in_process(n: int = 4, **kwargs) -> InProcessVectorEnv:
    envs = InProcessVectorEnv([KeywordEnv] * n, **kwargs)
    envs.reset(seed=0)
    return envs


def _sent(envs, kind: str) -> list[int]:
    """The envs that got a command of this ``kind``, in order."""
    return [index for index, sent in envs.posted if sent == kind]


# --------------------------------------------------------------------------- indices


@pytest.mark.parametrize(
    ("indices", "expected"),
    [
        (3, ((3,), True)),
        (np.int64(2), ((2,), True)),
        (-1, ((3,), True)),
        ([3, 0], ((3, 0), False)),
        ((1,), ((1,), False)),
        (range(1, 3), ((1, 2), False)),
        (np.array([2, 1]), ((2, 1), False)),
        ([True, False, True, False], ((0, 2), False)),
        (np.array([False, False, False, True]), ((3,), False)),
    ],
)
def test_select_indices_accepts_ints_sequences_and_masks(indices, expected):
    assert select_indices(indices, 4) == expected


@pytest.mark.parametrize(
    ("indices", "error", "match"),
    [
        (4, IndexError, "env index 4 is out of range for 4 envs"),
        (-5, IndexError, "out of range"),
        ([0, 7], IndexError, "env index 7"),
        ([1, 1], ValueError, "env 1 twice"),
        ([3, -1], ValueError, "env 3 twice"),
        ([], ValueError, "choose no env"),
        (np.zeros(4, dtype=bool), ValueError, "choose no env"),
        ([True, False], ValueError, "bool mask of indices must have length num_envs=4"),
        (np.array([[0, 1]]), ValueError, "must be 1-D"),
        (True, TypeError, "got the bool"),
        (1.0, TypeError, "got float"),
        ("0", TypeError, "got str"),
        (None, TypeError, "got NoneType"),
        ({0, 1}, TypeError, "got set"),
        ([0.5, 1], TypeError, "dtype float64"),
        ([1, True], TypeError, "mix bools and ints"),
    ],
)
def test_bad_indices_raise_before_anything_is_sent(indices, error, match):
    envs = _in_process()
    try:
        sent = len(envs.posted)
        with pytest.raises(error, match=match):
            envs.at(indices)
        assert len(envs.posted) == sent
        assert envs.get_attr("max_steps") == (12,) * 4  # still usable
    finally:
        envs.close()


# --------------------------------------------------------------------------- calls


def test_call_reaches_only_the_chosen_envs_in_the_order_given():
    envs = _in_process()
    try:
        envs.step(_toy_actions(4))
        envs.posted.clear()
        selection = envs.at([3, 1])
        assert isinstance(selection, EnvSelection) and selection.indices == (3, 1)
        assert len(selection) == 2 and "[3, 1]" in repr(selection)
        assert selection.call("add", 10, b=5) == (16, 16)  # t=1 in both
        assert _sent(envs, "call") == [3, 1]
        assert envs.at(2).call("add", 1) == 2  # a single int: one value, not a tuple
        assert envs.at(np.array([True, False, False, True])).get_attr("t") == (1, 1)
    finally:
        envs.close()


def _toy_actions(n: int):
    return (np.zeros(n, dtype=np.int64), np.zeros((n, 2), np.float32))


def test_the_methods_own_keywords_pass_through():
    envs = _in_process()
    try:
        assert envs.at(0).call("pick", indices=[9], name="x") == ("picked", [9], "x")
        assert envs.at([2]).call("pick", [5]) == (("picked", [5], None),)
    finally:
        envs.close()


def test_set_attr_creates_a_new_attribute_on_the_chosen_envs_only():
    envs = _in_process()
    try:
        envs.at([1, 3]).set_attr("foo", 7)
        assert envs.at([1, 3]).get_attr("foo") == (7, 7)
        for index in (0, 2):
            with pytest.raises(AttributeError, match="foo"):
                envs.at(index).get_attr("foo")
        envs.at([3, 0]).set_attr("foo", [30, 0])  # one value per env, in the order given
        assert envs.at([0, 1, 3]).get_attr("foo") == (0, 7, 30)
        envs.at(2).set_attr("foo", [1, 2])  # a single int: the list is the value
        assert envs.at(2).get_attr("foo") == [1, 2]
        envs.at([0, 1]).set_attr("foo", (5, 6))
        assert envs.get_attr("foo") == (5, 6, [1, 2], 30)
        with pytest.raises(ValueError, match="got 3 values for 2 envs"):
            envs.at([0, 1]).set_attr("foo", [1, 2, 3])
        assert envs.get_attr("foo") == (5, 6, [1, 2], 30)
    finally:
        envs.close()


def test_set_attr_of_an_existing_attribute_sets_it_where_it_lives():
    """As gymnasium's ``set_attr`` (``Env.set_wrapper_attr``): the wrapped env's attribute
    changes, not a copy on the outer wrapper."""

    def wrapped():
        return gym.wrappers.TimeLimit(KeywordEnv(), max_episode_steps=50)

    envs = InProcessVectorEnv([wrapped] * 2)
    try:
        envs.reset(seed=0)
        envs.at(1).set_attr("scale", 3.0)
        assert envs.get_attr("scale") == (1.0, 3.0)
        outer = envs.at(1).call("__getattribute__", "__dict__")  # the TimeLimit's own
        assert "scale" not in outer and outer["_max_episode_steps"] == 50
    finally:
        envs.close()


def _wrapped_keyword_env():
    return gym.wrappers.TimeLimit(KeywordEnv(), max_episode_steps=50)


def test_set_attr_puts_attributes_where_gymnasiums_async_vector_env_does():
    """A new attribute on the outermost wrapper, an existing one where it lives, for every
    env as gymnasium's AsyncVectorEnv does it, and for chosen envs the same way."""
    theirs = gym.vector.AsyncVectorEnv([_wrapped_keyword_env] * 2, context="fork")
    ours = retrovec.AsyncRetroVectorEnv([_wrapped_keyword_env] * 2, context="fork")
    try:
        seen = []
        for venv in (theirs, ours):
            venv.set_attr("foo", 7)
            venv.set_attr("scale", 2.0)
            outer = venv.call("__dir__")  # the outermost wrapper's names
            seen.append(([("foo" in n, "scale" in n) for n in outer], venv.get_attr("scale")))
        assert seen[0] == seen[1] == ([(True, False), (True, False)], (2.0, 2.0))
        ours.at(1).set_attr("bar", 1)
        ours.at(0).set_attr("scale", 3.0)
        outer = ours.call("__dir__")
        assert [("bar" in n, "scale" in n) for n in outer] == [(False, False), (True, False)]
        assert ours.get_attr("scale") == (3.0, 2.0)
    finally:
        theirs.close()
        ours.close()


def test_an_error_in_a_chosen_env_is_reraised_as_call_does():
    envs = _in_process()
    try:
        with pytest.raises(ToyError, match="asked to fail") as caught:
            envs.at([3, 2]).call("fail_if", True)
        assert caught.value.env_index == 2  # the lowest failed index, as for call
        assert "Other envs failed too: env 3" in " ".join(caught.value.__notes__)
        assert envs.at([1]).call("fail_if", False) == ("fine",)  # the call ended
    finally:
        envs.close()


def test_call_async_and_call_wait_pair_with_the_same_envs():
    envs = _in_process()
    try:
        envs.at([2, 0]).call_async("add", 1)
        with pytest.raises(AlreadyPendingCallError):
            envs.at(1).call_async("add", 1)
        with pytest.raises(NoAsyncCallError, match=r"went to envs \[2, 0\] only"):
            envs.call_wait()
        with pytest.raises(NoAsyncCallError, match=r"pending call went to envs \[2, 0\]"):
            envs.at([0, 2]).call_wait()
        assert envs.at([2, 0]).call_wait() == (1, 1)
        envs.call_async("add", 2)
        with pytest.raises(NoAsyncCallError, match="pending call went to every env"):
            envs.at(0).call_wait()
        assert envs.call_wait() == (2, 2, 2, 2)
        with pytest.raises(NoAsyncCallError, match="without any prior call"):
            envs.at(0).call_wait()
    finally:
        envs.close()


def test_a_dead_chosen_env_follows_the_restart_policy_of_call():
    envs = _in_process(on_worker_failure="restart")
    try:
        envs.kill(1)
        assert envs.at([0, 2]).call("add", 1) == (1, 1)  # env 1 is not touched
        assert envs.restart_counts.tolist() == [0, 0, 0, 0]
        with pytest.warns(UserWarning, match="restarting"), pytest.raises(WorkerCrashedError) as caught:
            envs.at([2, 1]).set_attr("foo", 1)
        assert caught.value.restarted and caught.value.env_index == 1
        assert envs.restart_counts.tolist() == [0, 1, 0, 0]
        assert envs.at(2).get_attr("foo") == 1  # the other chosen env did run
        _, _, _, truncations, infos = envs.step(_toy_actions(4))
        assert truncations.tolist() == [False, True, False, False]
        assert infos["_worker_restarted"].tolist() == [False, True, False, False]
    finally:
        envs.close()


def test_a_dead_chosen_env_raises_without_restart():
    envs = _in_process()
    try:
        envs.kill(3)
        with pytest.raises(WorkerCrashedError) as caught:
            envs.at([0, 3]).call("add", 1)
        assert caught.value.env_index == 3 and not caught.value.restarted
    finally:
        close(envs)


def test_envpool_mode_targets_envs_not_in_flight():
    envs = InProcessVectorEnv([KeywordEnv] * 4, batch_size=2)
    try:
        envs.async_reset(seed=0)
        _, _, _, _, infos = envs.recv()
        received = infos["env_id"].tolist()
        waiting = sorted(set(range(4)) - set(received))
        assert envs.at(received).call("add", 1) == (1, 1)
        with pytest.raises(AlreadyPendingCallError, match=re.escape(f"envs {waiting} are in flight")):
            envs.at([received[0], *waiting]).call("add", 1)
        with pytest.raises(AlreadyPendingCallError):
            envs.call("add", 1)  # every env: not while a batch is out
        envs.send(_toy_actions(2), np.array(received))
        envs.recv()
        envs.recv()  # every env received: any may be chosen
        t = envs.get_attr("t")
        assert sorted(t) == [0, 0, 1, 1]
        assert envs.at([3, 2, 1, 0]).call("add", 0) == t[::-1]
    finally:
        envs.close()


# --------------------------------------------------------------------------- real emulator


@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_airstriker_under_each_start_method(context):
    envs = retrovec.make(GAME, num_envs=4, context=context)
    try:
        envs.reset(seed=0)
        actions = np.zeros((4, 12), dtype=np.int8)
        actions[2:, 0] = 1  # envs 2 and 3 fire: their RAM differs from envs 0 and 1
        for _ in range(30):
            envs.step(actions)
        rams = envs.call("get_ram")
        assert not np.array_equal(rams[3], rams[0])
        np.testing.assert_array_equal(envs.at(3).call("get_ram"), rams[3])
        for mine, theirs in zip(envs.at([3, 0]).call("get_ram"), (rams[3], rams[0])):
            np.testing.assert_array_equal(mine, theirs)

        envs.at([1, 3]).set_attr("foo", 7)
        assert envs.at([1, 3]).get_attr("foo") == (7, 7)
        with pytest.raises(AttributeError, match="foo"):
            envs.get_attr("foo")  # envs 0 and 2 have none
        envs.at([0, 2]).set_attr("foo", [0, 2])
        assert envs.get_attr("foo") == (0, 7, 2, 7)
        envs.set_attr("bar", 1)  # every env, a new attribute: as gymnasium's AsyncVectorEnv
        assert envs.get_attr("bar") == (1, 1, 1, 1)
    finally:
        envs.close()


def test_a_chosen_airstriker_whose_worker_dies_is_restarted_as_for_call(tmp_path):
    spared = tmp_path / "spared"
    spared.touch()  # envs 0 and 1 find their marker: they never die
    env_fns = [functools.partial(make_airstriker_killed_once, "poke", str(spared))] * 2
    env_fns.append(functools.partial(make_airstriker_killed_once, "poke", str(tmp_path / "dies")))
    envs = retrovec.AsyncRetroVectorEnv(env_fns, on_worker_failure="restart", context="fork")
    try:
        envs.reset(seed=0)
        pids = envs.at([0, 1]).call("poke")
        with pytest.warns(UserWarning, match="restarting"), pytest.raises(WorkerCrashedError) as caught:
            envs.at([2, 0]).call("poke")  # env 2's worker kills itself
        assert caught.value.restarted and caught.value.env_index == 2
        assert envs.restart_counts.tolist() == [0, 0, 1]
        assert envs.at([0, 1]).call("poke") == pids  # the others are the same workers
        _, _, _, truncations, infos = envs.step(np.zeros((3, 12), dtype=np.int8))
        assert truncations.tolist() == [False, False, True]
        assert infos["_worker_restarted"].tolist() == [False, False, True]
    finally:
        close(envs)


def test_a_timeout_leaves_the_targeted_call_pending():
    """Process machinery, on a toy env in worker processes: the call stays pending."""
    envs = retrovec.AsyncRetroVectorEnv([KeywordEnv] * 2, context="fork")
    try:
        envs.reset(seed=0)
        envs.at(1).call_async("nap", 1.0)
        with pytest.raises(WorkerTimeoutError) as caught:
            envs.at(1).call_wait(timeout=0.01)
        assert "1" in str(caught.value)
        with pytest.raises(AlreadyPendingCallError):
            envs.at(0).call("add", 1)
        assert envs.at(1).call_wait(timeout=60) == "slept"
        assert envs.at(0).call("add", 1) == 1
    finally:
        envs.close()


def test_ray_backend(ray_local):
    envs = retrovec.make(GAME, num_envs=2, backend="ray")
    try:
        assert type(envs).__module__.startswith("retrovec.core.ray")
        envs.reset(seed=0)
        rams = envs.call("get_ram")
        np.testing.assert_array_equal(envs.at(1).call("get_ram"), rams[1])
        envs.at([1]).set_attr("foo", 7)
        assert envs.at(1).get_attr("foo") == 7
        with pytest.raises(AttributeError, match="foo"):
            envs.at(0).get_attr("foo")
        with pytest.raises(IndexError, match="out of range"):
            envs.at(2)
    finally:
        envs.close()
