"""A game integration in the user's own folder works in every worker, under every start method.

The integration is Airstriker's files (ROM included) with a Lua reward script that pays
10 times the score: the rewards must be exactly 10 times the stock game's, step for step.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import stable_retro.data as retro_data
from stable_retro.data import Integrations

from retrovec.retro.factory import make
from retrovec.retro.games import list_games, list_states

GAME = "Airstriker-Genesis-v0"
CUSTOM = "TenfoldStriker-Genesis-v0"
STEPS = 300  # random Airstriker scores (20 points) within about 200 steps

_SCENARIO = {
    "done": {
        "condition": "all",
        "variables": {"gameover": {"op": "equal", "reference": 1}, "lives": {"op": "zero"}},
    },
    "reward": {"script": "lua:tenfold_score"},
    "scripts": ["script.lua"],
}

_LUA = """\
previous_score = 0

function tenfold_score()
  if data.score < previous_score then  -- the game was reset
    previous_score = data.score
  end
  local delta = data.score - previous_score
  previous_score = data.score
  return 10 * delta
end
"""


def write_integration(root: Path) -> Path:
    """Write ``CUSTOM`` into ``root``: Airstriker's files, a Lua reward, an extra state."""
    stock = Path(retro_data.get_file_path(GAME, "rom.sha", Integrations.STABLE)).parent
    game_dir = root / CUSTOM
    game_dir.mkdir(parents=True)
    for name in ("rom.md", "rom.sha", "data.json", "metadata.json", "Level1.state"):
        shutil.copy(stock / name, game_dir / name)
    (game_dir / "scenario.json").write_text(json.dumps(_SCENARIO, indent=2))
    (game_dir / "script.lua").write_text(_LUA)
    (game_dir / "Level1Copy.state").write_bytes((stock / "Level1.state").read_bytes())
    return game_dir


@pytest.fixture
def custom_integration(tmp_path: Path):
    write_integration(tmp_path / "integrations")
    retro_data.add_custom_integration(str(tmp_path / "integrations"))
    try:
        yield CUSTOM
    finally:
        Integrations.clear_custom_paths()
        retro_data.DefaultIntegrations.reset()


@pytest.fixture(scope="module")
def actions() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2, (STEPS, 1, 12), dtype=np.int8)


@pytest.fixture(scope="module")
def stock_rewards(actions: np.ndarray) -> np.ndarray:
    envs = make(GAME, 1)
    try:
        return _rewards(envs, actions)
    finally:
        envs.close()


def _rewards(envs, actions: np.ndarray) -> np.ndarray:
    envs.reset(seed=0)
    return np.array([envs.step(action)[1][0] for action in actions])


def test_the_custom_integration_is_listed(custom_integration: str) -> None:
    assert custom_integration in list_games(imported_only=True)
    assert list_states(custom_integration) == ["Level1", "Level1Copy"]


@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_custom_reward_in_every_worker(
    custom_integration: str, context: str, actions: np.ndarray, stock_rewards: np.ndarray
) -> None:
    assert stock_rewards.sum() > 0
    envs = make(custom_integration, 1, state="Level1Copy", context=context)
    try:
        rewards = _rewards(envs, actions)
    finally:
        envs.close()
    np.testing.assert_array_equal(rewards, 10 * stock_rewards)


def test_state_files_by_path_per_env(custom_integration: str, tmp_path: Path) -> None:
    """A .state path works for any game, next to a named state, one per env."""
    state = Path(retro_data.get_file_path(custom_integration, "Level1.state"))
    copy = tmp_path / "Elsewhere.state"
    copy.write_bytes(gzip.compress(gzip.decompress(state.read_bytes())))
    envs = make(custom_integration, state=[str(copy), "Level1", copy], context="spawn")
    try:
        assert envs.num_envs == 3
        obs, _ = envs.reset(seed=0)
        np.testing.assert_array_equal(obs[0], obs[1])
        np.testing.assert_array_equal(obs[2], obs[1])
        assert envs.get_attr("statename") == (str(copy), "Level1.state", str(copy))
    finally:
        envs.close()

