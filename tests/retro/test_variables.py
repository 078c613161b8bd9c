"""Game variables on the real emulator: in every reset info, and looked up per env."""

from __future__ import annotations

import numpy as np
import pytest

import retrovec
from retrovec import Preprocessing

AIRSTRIKER = "Airstriker-Genesis-v0"
PONG = "Pong-Atari2600-v0"

CONFIGS = {
    "fast-path": {},
    "fast-path-off": {"preprocessing": Preprocessing(fused=False)},
    "atari": {"preprocessing": Preprocessing.atari()},
    "atari-fast-path-off": {"preprocessing": Preprocessing.atari(fused=False)},
    "pong": {"game": PONG},
    "spawn": {"context": "spawn"},
}


def keys(infos):
    return {key for key in infos if not key.startswith("_")}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_reset_infos_carry_the_variables_that_step_infos_carry(config):
    kwargs = dict(CONFIGS[config])
    game = kwargs.pop("game", AIRSTRIKER)
    with retrovec.make(game, num_envs=2, max_episode_steps=3, **kwargs) as envs:
        _, reset_infos = envs.reset(seed=0)
        now = envs.call("game_variables")
        _, _, _, truncations, step_infos = envs.step(envs.action_space.sample())
        assert keys(step_infos)  # the game has variables
        assert keys(reset_infos) == keys(step_infos) | {"state"}
        for key in keys(step_infos):
            assert list(reset_infos[key]) == [values[key] for values in now]
            assert reset_infos[key].dtype == step_infos[key].dtype
        # The step that starts the next episode (NEXT_STEP autoreset) carries them too.
        for _ in range(2):
            truncations = envs.step(envs.action_space.sample())[3]
        assert truncations.all()
        autoreset_infos = envs.step(envs.action_space.sample())[4]
        assert keys(autoreset_infos) == keys(reset_infos)


def test_lookup_value_reads_chosen_envs():
    with retrovec.make(AIRSTRIKER, num_envs=3) as envs:
        envs.reset(seed=0)
        envs.at(2).call("set_value", "lives", 1)
        assert envs.at([0, 2]).call("lookup_value", "lives") == (3, 1)
        assert envs.at(2).call("lookup_value", "lives") == 1
        infos = envs.step(envs.action_space.sample())[4]
        variables = envs.call("game_variables")
        for key in keys(infos):
            assert list(infos[key]) == [values[key] for values in variables]
        assert variables[2]["lives"] == 1


def test_an_unknown_variable_names_the_ones_there_are():
    with retrovec.make(AIRSTRIKER, num_envs=1) as envs:
        envs.reset(seed=0)
        with pytest.raises(
            KeyError, match=r"no game variable 'hp'.*\['gameover', 'lives', 'score'\]"
        ):
            envs.at(0).call("lookup_value", "hp")


def test_values_follow_the_game_on_the_fast_path():
    """The fast path skips update_ram, but the look-ups read the live RAM."""
    rng = np.random.default_rng(0)
    with retrovec.make(AIRSTRIKER, num_envs=2) as envs:
        envs.reset(seed=0)
        scores = set()
        for _ in range(400):
            infos = envs.step(rng.integers(0, 2, (2, 12)))[4]
            assert list(infos["score"]) == list(envs.call("lookup_value", "score"))
            scores.update(infos["score"])
        assert len(scores) > 1  # the score moved, so the comparison saw changes
