"""Lent observation banks (retrovec/core/leases.py): ``copy=True`` results of lockstep steps
are views of a bank the workers wrote, and must behave exactly like copies: never changed
by later steps while anything holds them, right after a fallback to bank 0, after a round
handed over to the general path, after a masked reset, and in a process forked meanwhile.
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from gymnasium import spaces

from retrovec import AsyncRetroVectorEnv
from retrovec.core.leases import LEASE_BANKS
from tests.envs import ProbeEnv, probe_fns
from tests.failures import actions, close

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _expected(seeds, t) -> np.ndarray:
    return np.array([[seed, 0, t] for seed in seeds], dtype=np.float64)


class _Lends:
    """Counts the banks lent (not bank 0) by an env's leases."""

    def __init__(self, envs, monkeypatch):
        self.banks = []
        leases = envs._leases
        original = leases.lend

        def lend(bank):
            self.banks.append(bank)
            return original(bank)

        monkeypatch.setattr(leases, "lend", lend)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_held_results_never_change_and_fall_back_to_copies(context, monkeypatch):
    envs = AsyncRetroVectorEnv(probe_fns(3), context=context)
    try:
        lends = _Lends(envs, monkeypatch)
        envs.reset(seed=5)
        held = [(t, envs.step(actions(3))[0]) for t in range(1, 13)]
        # The first LEASE_BANKS results (after the schema's first step) are lent banks;
        # with all of them held, the rest are copies of bank 0.
        assert 0 < len(lends.banks) <= LEASE_BANKS
        assert envs._leases.available == 0
        for t, observations in held:
            np.testing.assert_array_equal(observations, _expected([5, 6, 7], t))
            observations[...] = -1  # the caller's own arrays: writable, and nobody else's
        for t in range(13, 16):
            np.testing.assert_array_equal(envs.step(actions(3))[0], _expected([5, 6, 7], t))
        del held, observations
        assert envs._leases.available == LEASE_BANKS
    finally:
        close(envs)


@pytest.mark.timeout(60)
def test_a_bank_comes_back_as_soon_as_its_result_is_dropped(monkeypatch):
    envs = AsyncRetroVectorEnv(probe_fns(2), context="fork")
    try:
        lends = _Lends(envs, monkeypatch)
        envs.reset(seed=0)
        envs.step(actions(2))
        for t in range(2, 40):
            view = envs.step(actions(2))[0][1:]  # a view of a view keeps the bank lent
            assert envs._leases.available == LEASE_BANKS - 1
            np.testing.assert_array_equal(view, _expected([1], t))
            del view
            assert envs._leases.available == LEASE_BANKS
        assert set(lends.banks) == {1}  # dropped at once: the same bank every step
    finally:
        close(envs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_masked_reset_after_lent_steps_keeps_the_latest_observations(context):
    envs = AsyncRetroVectorEnv(probe_fns(3), context=context)
    try:
        envs.reset(seed=5)
        held = [envs.step(actions(3))[0] for _ in range(4)]
        observations, _ = envs.reset(seed=20, options={"reset_mask": np.array([True, False, True])})
        np.testing.assert_array_equal(observations, [[20, 0, 0], [6, 0, 4], [22, 0, 0]])
        np.testing.assert_array_equal(held[-1], _expected([5, 6, 7], 4))
        observations = envs.step(actions(3))[0]
        np.testing.assert_array_equal(observations, [[20, 0, 1], [6, 0, 5], [22, 0, 1]])
    finally:
        close(envs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_round_handed_over_brings_its_bank_home(context):
    envs = AsyncRetroVectorEnv(probe_fns(3), context=context)
    try:
        envs.reset(seed=5)
        held = [envs.step(actions(3))[0] for _ in range(3)]
        # Env 1's info now carries bytes: its replies come on the socket, every round is
        # handed over, and the general path must read the lockstep envs' bank.
        envs.set_attr("info_bytes", [0, 64, 0])
        for t in range(4, 8):
            observations, _, _, _, infos = envs.step(actions(3))
            np.testing.assert_array_equal(observations, _expected([5, 6, 7], t))
            assert infos["_blob"].tolist() == [False, True, False]
        envs.set_attr("info_bytes", [0, 0, 0])
        for t in range(8, 12):
            np.testing.assert_array_equal(envs.step(actions(3))[0], _expected([5, 6, 7], t))
        for t, observations in enumerate(held, start=1):
            np.testing.assert_array_equal(observations, _expected([5, 6, 7], t))
    finally:
        close(envs)


_HELD = None


def _read_held_later(go, answer) -> None:
    go.wait(30)
    answer.put(_HELD.tolist())


class _ForkedReader:
    """A process forked now (by the caller, not by retrovec) that reads ``_HELD`` when
    told to."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._go, self._answer = ctx.Event(), ctx.SimpleQueue()
        self.process = ctx.Process(target=_read_held_later, args=(self._go, self._answer))
        self.process.start()

    def read(self) -> list:
        """What the child reads now; it must exit cleanly (a read of pages it did not
        inherit ends it with SIGSEGV, exit code -11)."""
        self._go.set()
        self.process.join(10)
        assert self.process.exitcode == 0
        return self._answer.get()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()


@pytest.fixture
def held_step():
    """``(hold, readers)``: ``hold(envs)`` resets ``envs`` (2 envs) with seed 3, steps
    twice and keeps the second step's observations in ``_HELD`` (``_expected([3, 4],
    2)``); the :class:`_ForkedReader` put in ``readers`` are stopped at the end."""
    global _HELD
    readers = []

    def hold(envs) -> None:
        global _HELD
        envs.reset(seed=3)
        envs.step(actions(2))
        _HELD = envs.step(actions(2))[0]

    yield hold, readers
    _HELD = None
    for reader in readers:
        reader.stop()


@pytest.mark.timeout(60)
def test_a_process_forked_while_a_result_is_held_sees_it_unchanged(held_step):
    global _HELD
    hold, readers = held_step
    envs = AsyncRetroVectorEnv(probe_fns(2), context="fork")
    try:
        hold(envs)  # lent
        available = envs._leases.available
        readers.append(reader := _ForkedReader())
        # The parent lets go of it and steps on: the bank must not be reused, or the
        # child would read later frames (or fault: the arena is not inherited otherwise).
        _HELD = None
        for _ in range(10):
            envs.step(actions(2))
        assert envs._leases.available == available  # retired, not returned
        assert reader.read() == _expected([3, 4], 2).tolist()
    finally:
        close(envs)


@pytest.mark.timeout(60)
def test_a_result_held_past_close_is_readable_in_a_process_forked_after(held_step):
    hold, readers = held_step
    envs = AsyncRetroVectorEnv(probe_fns(2), context="fork")
    try:
        hold(envs)  # lent
        envs.close()
        readers.append(reader := _ForkedReader())
        assert reader.read() == _expected([3, 4], 2).tolist()
        np.testing.assert_array_equal(_HELD, _expected([3, 4], 2))
    finally:
        close(envs)


class DictProbeEnv(ProbeEnv):
    """ProbeEnv with a Dict observation: ``{"pos": [seed, level, t], "t": t}``."""

    def __init__(self, tag: int = 0):
        super().__init__(tag)
        self.observation_space = spaces.Dict(
            {"pos": spaces.Box(-1e9, 1e9, (3,), np.float64), "t": spaces.Discrete(1000)}
        )

    def _observation(self):
        return {"pos": super()._observation(), "t": self.t}


@pytest.mark.timeout(60)
def test_dict_observations_are_lent_whole(monkeypatch):
    envs = AsyncRetroVectorEnv([lambda i=i: DictProbeEnv(i) for i in range(2)], context="fork")
    try:
        lends = _Lends(envs, monkeypatch)
        envs.reset(seed=1)
        held = [envs.step(actions(2))[0] for _ in range(3)]
        assert lends.banks
        position = held[-1]["pos"]  # one leaf kept: its bank stays lent
        del held
        assert envs._leases.available == LEASE_BANKS - 1
        for t in range(4, 10):
            observations = envs.step(actions(2))[0]
            np.testing.assert_array_equal(observations["pos"], _expected([1, 2], t))
            np.testing.assert_array_equal(observations["t"], [t, t])
        np.testing.assert_array_equal(position, _expected([1, 2], 3))
    finally:
        close(envs)


@pytest.mark.timeout(60)
def test_copy_false_never_lends():
    envs = AsyncRetroVectorEnv(probe_fns(2), context="fork", copy=False)
    try:
        assert envs._leases is None and envs._arena.layout.observation_banks == 1
        envs.reset(seed=0)
        first = envs.step(actions(2))[0]
        second = envs.step(actions(2))[0]
        assert first is second  # gymnasium's copy=False: the same buffer every step
    finally:
        close(envs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_copy_false_views_are_readable_in_a_process_forked_after(closed, held_step):
    # The arena is MADV_DONTFORK (a sibling env's workers must not keep it), but a
    # process the caller forks must read the views it holds, as with gymnasium's.
    hold, readers = held_step
    envs = AsyncRetroVectorEnv(probe_fns(2), context="fork", copy=False)
    try:
        hold(envs)
        if closed:
            envs.close()
        readers.append(reader := _ForkedReader())
        assert reader.read() == _expected([3, 4], 2).tolist()
    finally:
        close(envs)
