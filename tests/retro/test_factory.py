"""Tests of retrovec.make and the gymnasium registration, with the real emulator.

stable-retro allows one emulator per process, so this test process never builds one:
reference frames and save states come from subprocesses, and every vector env here has
its emulators in workers.
"""

from __future__ import annotations

import functools
import importlib
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import psutil
import pytest
import stable_retro
import stable_retro.data as retro_data
from stable_retro.data import Integrations

from retrovec.core.process_backend import AsyncRetroVectorEnv
from retrovec.errors import (
    InvalidGameError,
    RomNotImportedError,
    UnknownGameError,
    UnknownStateError,
)
from retrovec.retro.factory import make
from retrovec.retro.games import list_games
from retrovec.retro.registration import ENV_ID, register_envs

# `retrovec.make` may be the function once retrovec/__init__.py imports it, so fetch the module.
make_module = importlib.import_module("retrovec.retro.factory")

GAME = "Airstriker-Genesis-v0"

_SAVE_LATER_STATE = """
import gzip, sys, numpy as np, stable_retro
env = stable_retro.make("Airstriker-Genesis-v0", state="Level1", render_mode=None)
obs, _ = env.reset()
action = np.zeros(env.action_space.shape, env.action_space.dtype)
for _ in range(300):
    env.step(action)
with gzip.open(sys.argv[1], "wb") as f:
    f.write(env.unwrapped.em.get_state())
env.close()
"""

_RESET_FRAME = """
import sys, numpy as np, stable_retro
env = stable_retro.make("Airstriker-Genesis-v0", state=sys.argv[1], render_mode=None)
obs, _ = env.reset()
np.save(sys.argv[2], obs)
env.close()
"""


def _python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (which may own an emulator); return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _reset_frame(state: str, out: Path) -> np.ndarray:
    _python(_RESET_FRAME, state, str(out))
    return np.load(out)


@pytest.fixture(scope="module")
def later_state(tmp_path_factory) -> Path:
    """A gzip-compressed save state 300 frames after Level1's start."""
    path = tmp_path_factory.mktemp("states") / "Later.state"
    _python(_SAVE_LATER_STATE, str(path))
    return path


@pytest.fixture
def no_workers_started(monkeypatch):
    """Fail if a vector env gets built; check no child process appeared."""
    children = {p.pid for p in psutil.Process().children(recursive=True)}

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a bad input reached AsyncRetroVectorEnv")

    monkeypatch.setattr(make_module, "AsyncRetroVectorEnv", refuse)
    yield
    assert multiprocessing.active_children() == []
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children


@pytest.fixture
def custom_integration(tmp_path: Path):
    """A copy of Airstriker as a custom integration ``RetrovecCopy-Genesis-v0``."""
    source = os.path.dirname(retro_data.get_file_path(GAME, "rom.sha", Integrations.STABLE))
    shutil.copytree(source, tmp_path / "RetrovecCopy-Genesis-v0")
    retro_data.add_custom_integration(str(tmp_path))
    try:
        yield "RetrovecCopy-Genesis-v0"
    finally:
        Integrations.clear_custom_paths()
        retro_data.DefaultIntegrations.reset()


class PidInfo(gym.Wrapper):
    """Adds ``wrapped_pid`` and appends ``tag`` to ``order`` in the reset info."""

    def __init__(self, env: gym.Env, tag: str = "A") -> None:
        super().__init__(env)
        self.tag = tag

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        info["wrapped_pid"] = os.getpid()
        info["order"] = info.get("order", "") + self.tag
        return obs, info


def recording_make(marker_dir: Path, **kwargs: Any) -> gym.Env:
    """A ``make_fn`` that records its pid and arguments, then builds Airstriker anyway."""
    record = {
        k: v if isinstance(v, (str, int, type(None))) else repr(v) for k, v in kwargs.items()
    }
    (marker_dir / f"{os.getpid()}.json").write_text(json.dumps(record))
    kwargs["game"] = GAME
    return stable_retro.make(**kwargs)


def _not_imported_game() -> str:
    imported = set(list_games(imported_only=True))
    for game in list_games():
        if game not in imported:
            return game
    pytest.skip("every ROM is imported here")


# ---------------------------------------------------------------------------- states


def test_per_env_states_give_their_frames(later_state: Path, tmp_path: Path) -> None:
    level1 = _reset_frame("Level1", tmp_path / "level1.npy")
    later = _reset_frame(str(later_state), tmp_path / "later.npy")
    assert not np.array_equal(level1, later)

    envs = make(GAME, state=["Level1", str(later_state)])  # num_envs from the state list
    try:
        assert envs.num_envs == 2
        obs, _ = envs.reset(seed=0)
        assert not np.array_equal(obs[0], obs[1])
        np.testing.assert_array_equal(obs[0], level1)
        np.testing.assert_array_equal(obs[1], later)
    finally:
        envs.close()


def test_one_state_for_every_env(later_state: Path, tmp_path: Path) -> None:
    later = _reset_frame(str(later_state), tmp_path / "later.npy")
    envs = make(GAME, 2, state=later_state)  # a Path, not a sequence
    try:
        obs, _ = envs.reset()
        for frame in obs:
            np.testing.assert_array_equal(frame, later)
    finally:
        envs.close()


# ------------------------------------------------------------- wrappers and make_fn


def test_wrappers_and_make_fn_run_in_the_workers(tmp_path: Path) -> None:
    envs = make(
        "MyOwnGame-v0",  # not checked: make_fn decides what it means
        2,
        make_fn=functools.partial(recording_make, tmp_path),
        wrappers=[PidInfo, functools.partial(PidInfo, tag="B")],
        render_mode="rgb_array",
    )
    try:
        _, infos = envs.reset()
        pids = [int(p) for p in infos["wrapped_pid"]]
        assert os.getpid() not in pids
        assert len(set(pids)) == 2
        assert list(infos["order"]) == ["AB", "AB"]  # applied in order: B(A(env))
        assert envs.render_mode == "rgb_array"
    finally:
        envs.close()

    markers = sorted(tmp_path.glob("*.json"))
    assert sorted(int(m.stem) for m in markers) == sorted(pids)
    for marker in markers:
        record = json.loads(marker.read_text())
        assert record["game"] == "MyOwnGame-v0"
        assert record["render_mode"] == "rgb_array"
        assert record["state"] == repr(stable_retro.State.DEFAULT)
        assert record["inttype"] == repr(Integrations.STABLE)  # DEFAULT resolved
        assert {"scenario", "info", "players", "obs_type", "use_restricted_actions"} <= set(
            record
        )


def test_validate_true_checks_the_game_even_with_make_fn(no_workers_started) -> None:
    with pytest.raises(UnknownGameError):
        make("MyOwnGame-v0", 2, make_fn=stable_retro.make, validate=True)


def _plain(value: Any) -> Any:
    """``value`` with each ``functools.partial`` (equal only to itself) as a tuple."""
    if isinstance(value, functools.partial):
        return ("partial", value.func, _plain(value.args), _plain(value.keywords))
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_env_fns_pickle_without_cloudpickle(monkeypatch) -> None:
    captured: list[Any] = []

    def capture(env_fns: Any, **kwargs: Any) -> None:
        captured.extend(env_fns)
        raise RuntimeError("captured")

    monkeypatch.setattr(make_module, "AsyncRetroVectorEnv", capture)
    with pytest.raises(RuntimeError, match="captured"):
        make(GAME, 2, state=["Level1", stable_retro.State.NONE], wrappers=[PidInfo])
    assert len(captured) == 2
    for env_fn in captured:
        assert isinstance(env_fn, functools.partial)
        restored = pickle.loads(pickle.dumps(env_fn))  # plain pickle, no cloudpickle
        assert restored.func is env_fn.func
        # the partials among the wrappers compare by identity: compare what they hold
        assert _plain(restored.args) == _plain(env_fn.args)
    assert [fn.args[1] for fn in captured] == ["Level1", stable_retro.State.NONE]


def test_custom_integration_reaches_spawned_workers(custom_integration: str) -> None:
    envs = make(custom_integration, 1, state="Level1", context="spawn")
    try:
        obs, _ = envs.reset()
        assert obs.shape == (1, 224, 320, 3)
    finally:
        envs.close()


# ------------------------------------------------------- other arguments of make()


def test_seed_seeds_the_spaces_not_the_env() -> None:
    first = make(GAME, 1, seed=123)
    try:
        samples = [first.action_space.sample() for _ in range(3)]
        single = first.single_action_space.sample()
    finally:
        first.close()
    second = make(GAME, 1, seed=123)
    try:
        for sample in samples:
            np.testing.assert_array_equal(second.action_space.sample(), sample)
        np.testing.assert_array_equal(second.single_action_space.sample(), single)
    finally:
        second.close()


def test_max_episode_steps_and_vector_kwargs() -> None:
    envs = make(GAME, 1, max_episode_steps=3, shared_memory=False)
    try:
        envs.reset()
        action = np.zeros(envs.action_space.shape, envs.action_space.dtype)
        truncations = [bool(envs.step(action)[3][0]) for _ in range(3)]
        assert truncations == [False, False, True]
    finally:
        envs.close()


# ----------------------------------------------------------------- bad input


def _bad_inputs() -> list[Any]:
    """(kwargs, error type, text the message must hold)."""
    return [
        ({"game": "Airstrikr-Genesis-v0"}, UnknownGameError, "Did you mean: 'Airstriker-Gen"),
        ({"state": "Level2"}, UnknownStateError, "['Level1']"),
        ({"state": "/no/such/dir/Later.state"}, UnknownStateError, "has no state"),
        ({"state": ["Level1"] * 3}, InvalidGameError, "lists 3 states but num_envs is 2"),
        ({"state": ["Level1"]}, InvalidGameError, "exactly one state per env"),
        ({"state": 7}, TypeError, "stable_retro.State"),
        ({"state": ["Level1", ["Level1"]]}, TypeError, "state[1] must be"),
        ({"num_envs": 0}, InvalidGameError, "num_envs must be an int >= 1"),
        ({"num_envs": -3}, InvalidGameError, "num_envs must be an int >= 1"),
        ({"num_envs": 2.0}, TypeError, "num_envs must be an int"),
        ({"num_envs": "2"}, TypeError, "num_envs must be an int"),
        ({"num_envs": True}, TypeError, "num_envs must be an int"),
        ({"render_mode": "human"}, ValueError, "render_mode must be None or 'rgb_array'"),
        ({"render_mode": "rgb"}, ValueError, "render_mode must be None or 'rgb_array'"),
        ({"wrappers": [PidInfo, 3]}, TypeError, "wrappers[1] must be a callable"),
        ({"wrappers": PidInfo}, TypeError, "wrappers=[wrapper]"),
        ({"wrappers": "PidInfo"}, TypeError, "sequence of callables"),
        ({"make_fn": "stable_retro.make"}, TypeError, "make_fn must be callable"),
        ({"scenario": "nope"}, InvalidGameError, "has no scenario 'nope'"),
        ({"info": "/no/such/data.json"}, InvalidGameError, "does not exist"),
        ({"players": 0}, ValueError, "players must be an int >= 1"),
        ({"seed": -1}, ValueError, "seed must be None or an int >= 0"),
        ({"seed": "0"}, ValueError, "seed must be None or an int >= 0"),
        ({"max_episode_steps": 0}, ValueError, "max_episode_steps"),
        ({"obs_type": "image"}, TypeError, "stable_retro.Observations"),
        ({"use_restricted_actions": 1}, TypeError, "stable_retro.Actions"),
    ]


@pytest.mark.parametrize(("kwargs", "error", "text"), _bad_inputs())
def test_bad_input_fails_before_any_worker(no_workers_started, kwargs, error, text) -> None:
    kwargs = {"game": GAME, "num_envs": 2, **kwargs}
    with pytest.raises(error) as excinfo:
        make(**kwargs)
    assert text in str(excinfo.value)


def test_rom_not_imported_fails_before_any_worker(no_workers_started) -> None:
    game = _not_imported_game()
    with pytest.raises(RomNotImportedError, match="python -m stable_retro.import"):
        make(game, 2)


def test_state_file_that_is_not_gzip(no_workers_started, tmp_path: Path) -> None:
    (tmp_path / "Raw.state").write_bytes(b"\x00" * 16)
    with pytest.raises(UnknownStateError, match="gzip"):
        make(GAME, 2, state=[str(tmp_path / "Raw.state"), "Level1"])


def test_bad_input_leaves_no_processes_with_the_real_vector_env() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(UnknownStateError):
        make(GAME, 2, state=["Level1", "Nope"])
    assert multiprocessing.active_children() == []
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


# ------------------------------------------------------------------ registration


def test_register_envs_is_idempotent() -> None:
    register_envs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()
    spec = gym.spec(ENV_ID)
    assert spec.entry_point == "retrovec.retro.registration:make_env_entry_point"
    assert spec.vector_entry_point == "retrovec.retro.registration:make_vec_entry_point"


def test_make_vec_through_the_registry(later_state: Path) -> None:
    register_envs()
    envs = gym.make_vec(ENV_ID, num_envs=2, game=GAME, state=["Level1", str(later_state)])
    try:
        assert isinstance(envs, AsyncRetroVectorEnv)
        assert envs.num_envs == 2
        assert envs.spec is not None and envs.spec.id == ENV_ID
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, 224, 320, 3)
        assert not np.array_equal(obs[0], obs[1])
    finally:
        envs.close()


def test_make_vec_bad_game_fails_before_any_worker(no_workers_started) -> None:
    register_envs()
    with pytest.raises(UnknownGameError, match="Did you mean"):
        gym.make_vec(ENV_ID, num_envs=2, game="Airstrikr-Genesis-v0")


def test_gymnasium_make_builds_one_env_in_its_own_process() -> None:
    out = _python(
        "import gymnasium, retrovec.retro.registration as r\n"
        "r.register_envs()\n"
        "env = gymnasium.make(r.ENV_ID, game='Airstriker-Genesis-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(type(env.unwrapped).__name__, env.render_mode, obs.shape)\n"
        "env.close()\n"
        "try:\n"
        "    gymnasium.make(r.ENV_ID, game='Airstrikr-Genesis-v0')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
    )
    assert out.split("\n")[:2] == ["RetroEnv None (224, 320, 3)", "UnknownGameError"]
