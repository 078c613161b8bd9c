"""``state=None`` (power-on), and state and data file paths (relative, ``pathlib``) with and
without ``make_fn``, under fork and spawn, with the real emulator.

The test process builds no emulator: save states come from a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import stable_retro
import stable_retro.data as retro_data
from stable_retro import State

from retrovec.retro.factory import make

GAME = "Airstriker-Genesis-v0"

_SAVE_STATE = """
import gzip, sys, numpy as np, stable_retro
env = stable_retro.make("Airstriker-Genesis-v0", state="Level1", render_mode=None)
env.reset()
action = np.zeros(env.action_space.shape, env.action_space.dtype)
for _ in range(300):
    env.step(action)
with gzip.open(sys.argv[1], "wb") as f:
    f.write(env.unwrapped.em.get_state())
env.close()
"""


@pytest.fixture(scope="module")
def saves(tmp_path_factory) -> Path:
    """A folder holding ``later.state`` (300 frames into Level1) and ``tenfold.json`` (a
    scenario that pays 10 per point)."""
    folder = tmp_path_factory.mktemp("saves")
    done = subprocess.run(
        [sys.executable, "-c", _SAVE_STATE, str(folder / "later.state")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    scenario = json.loads(Path(retro_data.get_file_path(GAME, "scenario.json")).read_text())
    scenario["reward"]["variables"]["score"]["reward"] = 10.0
    (folder / "tenfold.json").write_text(json.dumps(scenario))
    return folder


def chdir_then_make(**kwargs: Any) -> Any:
    """A ``make_fn`` whose worker runs in another directory (as a Ray actor may): only
    absolute paths still work. It keeps what it was given, for the test to check."""
    os.chdir(os.path.dirname(os.path.dirname(stable_retro.__file__)))
    env = stable_retro.make(**kwargs)
    env.given_state, env.given_scenario = kwargs["state"], kwargs["scenario"]
    return env


def _reset_frames(envs) -> np.ndarray:
    try:
        obs, _ = envs.reset(seed=0)
        return obs
    finally:
        envs.close()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_state_none_is_power_on(context: str) -> None:
    envs = make(GAME, state=[None, State.NONE, "Level1"], context=context)
    try:
        assert envs.get_attr("statename") == (None, None, "Level1.state")
        obs, _ = envs.reset(seed=0)
    finally:
        envs.close()
    np.testing.assert_array_equal(obs[0], obs[1])
    assert not np.array_equal(obs[0], obs[2])  # power-on is not the game's default state
    assert _reset_frames(make(GAME, 1, state=None))[0].tolist() == obs[0].tolist()


def test_state_none_reaches_make_fn_as_state_none() -> None:
    envs = make(GAME, 1, state=None, make_fn=chdir_then_make)
    try:
        assert envs.get_attr("given_state") == (State.NONE,)
        assert envs.get_attr("statename") == (None,)
    finally:
        envs.close()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_relative_and_pathlib_paths_work_with_make_fn(
    saves: Path, context: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(saves.parent)
    relative = os.path.join(saves.name, "later.state")
    envs = make(
        GAME,
        state=[relative, Path(relative), str(saves / "later.state"), "Level1"],
        scenario=Path(saves.name) / "tenfold.json",
        make_fn=chdir_then_make,
        context=context,
    )
    try:
        absolute = str(saves / "later.state")
        assert envs.get_attr("given_state") == (absolute, absolute, absolute, "Level1")
        assert envs.get_attr("given_scenario") == (str(saves / "tenfold.json"),) * 4
        obs, _ = envs.reset(seed=0)
        rewards = np.zeros(4)
        for action in np.random.default_rng(0).integers(0, 2, (600, 12), dtype=np.int8):
            rewards += envs.step(np.stack([action] * 4))[1]
    finally:
        envs.close()
    np.testing.assert_array_equal(obs[0], obs[1])
    np.testing.assert_array_equal(obs[0], obs[2])
    assert not np.array_equal(obs[0], obs[3])
    assert rewards.sum() > 0
    assert (rewards % 200 == 0).all()  # tenfold.json: 10 x Airstriker's 20 points a hit


def test_pathlib_paths_without_make_fn(saves: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(saves)
    envs = make(GAME, 2, state=Path("later.state"), scenario=Path("tenfold.json"),
                context="spawn")
    try:
        assert envs.get_attr("statename") == (str(saves / "later.state"),) * 2
    finally:
        envs.close()


def test_a_state_name_is_left_to_make_fn() -> None:
    """Without the checks (make_fn, validate=None), a string that names no file is passed
    on as it is: it may be a state the make_fn knows."""
    envs = make(GAME, 1, state="Level1", make_fn=chdir_then_make)
    try:
        assert envs.get_attr("given_state") == ("Level1",)
    finally:
        envs.close()


def test_relative_paths_with_make_fn_on_the_ray_backend(
    saves: Path, ray_local, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(saves.parent)
    relative = Path(saves.name) / "later.state"
    envs = make(GAME, 2, state=relative, make_fn=chdir_then_make, backend="ray")
    try:
        assert envs.get_attr("given_state") == (str(saves / "later.state"),) * 2
        envs.reset(seed=0)
    finally:
        envs.close()


_MAKE_ENV = """
import numpy as np, stable_retro
from stable_retro import Actions
from retrovec.retro.factory import make_env

env = make_env("Airstriker-Genesis-v0", state=None)
print("statename", env.unwrapped.statename)
env.close()
env = make_env("Pong-Atari2600-v0", players=2, use_restricted_actions=Actions.MULTI_DISCRETE)
env.reset()
env.step(np.array([0, 1, 0, 1, 0, 2]))
print("meaning", env.unwrapped.get_action_meaning([0, 1, 0, 1, 0, 2]))
env.close()
"""


def test_make_env_takes_state_none_and_two_player_multi_discrete() -> None:
    """make_env builds in the calling process: run it in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _MAKE_ENV], capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "statename None", "meaning [['UP'], ['BUTTON', 'RIGHT']]"
    ]
