"""FastScenario gives exactly the rewards and dones of stable-retro's C++ scenario.

Each lockstep test runs a vector env whose env 0 steps through the fast path (a one-frame
FusedFrameSkip computing rewards and dones with FastScenario, no ``update_ram``) and env 1
is a bare RetroEnv; both get the same seeds and actions, episodes end and are reset, and
every frame must agree. The scenarios cover every op, both measurements, reward and
penalty multipliers, the time reward, several reward variables, nested done nodes and
both conditions, on Airstriker; per-player rewards on the two-player Pong. A scenario that
runs Lua keeps stable-retro's own evaluation.
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import stable_retro

from retrovec import AsyncRetroVectorEnv, Preprocessing, make
from retrovec.retro.scenario import (
    FastScenario,
    ScenarioRules,
    remember_scenario_path,
    scenario_path,
)
from retrovec.retro.wrappers.fused import FusedFrameSkip, fast_step

GAME = "Airstriker-Genesis-v0"

SCENARIOS = {
    "default": None,
    "time-penalty-life-lost": {
        "reward": {
            "variables": {"score": {"reward": 2, "penalty": 3}, "lives": {"penalty": 4}},
            "time": {"reward": -1},
        },
        "done": {"variables": {"lives": {"op": "less-than", "reference": 3}}},
    },
    "three-terms-nested-all": {
        "reward": {
            "variables": {
                "score": {"reward": 10},
                "lives": {
                    "measurement": "absolute",
                    "op": "greater-or-equal",
                    "reference": 3,
                    "reward": 1,
                },
                "gameover": {"op": "sign", "reward": 3, "penalty": 7},
            }
        },
        "done": {
            "condition": "all",
            "nodes": {
                "lost": {
                    "variables": {
                        "lives": {"measurement": "delta", "op": "negative"},
                        "gameover": {"op": "not-equal", "reference": 0},
                    }
                },
                "alive": {"variables": {"lives": {"op": "nonzero"}}},
            },
        },
    },
    "every-other-op": {
        "reward": {
            "variables": {"score": {"op": "positive", "reward": 0.1}},
            "time": {"op": "sign", "reward": 0.3},
        },
        "done": {
            "variables": {
                "lives": {"op": "less-or-equal", "reference": 2},
                "score": {"op": "greater-than", "reference": 10**9},
            },
            "nodes": {
                "never": {
                    "condition": "all",
                    "variables": {
                        "score": {"op": "negative-equal", "reference": 5},
                        "gameover": {"op": "equal", "reference": 7},
                        "lives": {"op": "zero", "measurement": "delta"},
                    },
                }
            },
        },
    },
}


def _fast_env(path: str):
    env = stable_retro.make(GAME, render_mode=None, scenario=path)
    remember_scenario_path(env, scenario_path(GAME, path))
    wrapped = fast_step(env)
    assert isinstance(wrapped, FusedFrameSkip) and wrapped.fast_scenario
    return wrapped


def _retro_env(path: str):
    return stable_retro.make(GAME, render_mode=None, scenario=path)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fast_scenario_steps_exactly_like_retro_env(tmp_path, name) -> None:
    manifest = SCENARIOS[name]
    if manifest is None:
        path = scenario_path(GAME)
    else:
        path = str(tmp_path / "scenario.json")
        (tmp_path / "scenario.json").write_text(json.dumps(manifest))
    assert ScenarioRules.load(path) is not None
    envs = AsyncRetroVectorEnv([partial(_fast_env, path), partial(_retro_env, path)])
    try:
        observations, infos = envs.reset(seed=[3, 3])
        np.testing.assert_array_equal(observations[0], observations[1])
        rng = np.random.default_rng(1)
        ends = nonzero = 0
        for t in range(3000):
            action = rng.integers(0, 2, 12, dtype=np.int8)
            observations, rewards, terminations, truncations, infos = envs.step(
                np.stack([action, action])
            )
            where = f"{name}, frame {t}"
            assert rewards[0] == rewards[1], where
            assert terminations[0] == terminations[1], where
            np.testing.assert_array_equal(observations[0], observations[1], where)
            for key in ("score", "lives", "gameover"):  # absent on reset steps
                if key in infos:
                    assert infos[f"_{key}"].all() and infos[key][0] == infos[key][1], where
            ends += int(terminations[0])
            nonzero += int(rewards[0] != 0)
        # The comparison means something only if rewards and episode ends happened.
        assert nonzero > 0 and (ends > 0 or name == "default"), (nonzero, ends)
    finally:
        envs.close()


def test_two_player_rewards_match_the_update_ram_path() -> None:
    pong = "Pong-Atari2600-v0"
    actions = np.random.default_rng(0).integers(0, 2, (600, 2, 16), dtype=np.int8)
    results = []
    for preprocessing in (None, Preprocessing(fused=False)):
        envs = make(pong, 2, players=2, multi_rewards=True, preprocessing=preprocessing)
        try:
            if preprocessing is None:
                assert envs.get_attr("fast_scenario") == (True, True)
            envs.reset(seed=0)
            per_player = []
            for action in actions:
                _, _, _, _, infos = envs.step(action)
                per_player.append(infos["rewards"])
            results.append(np.array(per_player))
        finally:
            envs.close()
    np.testing.assert_array_equal(results[0], results[1])
    assert np.abs(results[0]).sum() > 0, "no point was scored: the comparison proves nothing"


def test_make_uses_the_fast_step_unless_fused_is_off() -> None:
    envs = make(GAME, 1)
    try:
        assert envs.get_attr("fast_scenario") == (True,)
    finally:
        envs.close()
    envs = make(GAME, 1, preprocessing=Preprocessing(fused=False))
    try:
        with pytest.raises(AttributeError):
            envs.get_attr("fast_scenario")
    finally:
        envs.close()


@pytest.mark.parametrize(
    "manifest",
    [
        {"scripts": ["script.lua"]},
        {"reward": {"script": "lua:reward"}},
        {"done": {"script": "lua:done"}},
        {"reward": {}, "rewards": [{}]},
        {"reward": {"variables": {"score": {"reward": "one"}}}},
        {"reward": {"variables": {"score": {"reference": 1.5, "op": "equal"}}}},
        {"reward": {"variables": {"score": {"reward": 0.1}, "lives": {"reward": 1}}}},
        {"done": {"variables": ["lives"]}},
        "not a scenario",
    ],
    ids=[
        "scripts",
        "reward-script",
        "done-script",
        "reward-and-rewards",
        "string-multiplier",
        "float-reference",
        "fractional-multipliers-summed",
        "variables-not-a-mapping",
        "not-a-mapping",
    ],
)
def test_scenarios_it_cannot_evaluate_exactly_are_left_to_stable_retro(manifest) -> None:
    assert ScenarioRules.parse(manifest) is None


def test_rules_read_every_variable_once_in_first_use_order() -> None:
    rules = ScenarioRules.parse(SCENARIOS["three-terms-nested-all"])
    assert rules is not None
    assert rules.variables == ("score", "lives", "gameover")
    assert len(rules.players) == 1


def test_an_env_without_a_remembered_scenario_keeps_update_ram() -> None:
    class Unknown:
        data = None

    assert FastScenario.for_env(Unknown()) is None
    assert ScenarioRules.load("/nonexistent/scenario.json") is None


def test_a_scenario_with_a_lua_script_keeps_stable_retros_own_evaluation(tmp_path) -> None:
    (tmp_path / "script.lua").write_text(
        "previous_score = 0\n"
        "function reward()\n"
        "  local delta = data.score - previous_score\n"
        "  previous_score = data.score\n"
        "  return 2 * delta\n"
        "end\n"
    )
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {
                "reward": {"script": "lua:reward"},
                "done": {"variables": {"lives": {"op": "less-than", "reference": 3}}},
                "scripts": ["script.lua"],
            }
        )
    )
    assert ScenarioRules.load(scenario) is None
    envs = make(GAME, 1, scenario=str(scenario))
    try:
        with pytest.raises(AttributeError):  # a bare RetroEnv: no fast path
            envs.get_attr("fast_scenario")
        envs.reset(seed=0)
        rng = np.random.default_rng(2)
        score, total, ends, reset_step = 0, 0.0, 0, False
        for _ in range(1500):
            _, rewards, terminations, _, infos = envs.step(rng.integers(0, 2, (1, 12)))
            if reset_step:  # NEXT_STEP autoreset: a new game, and the script reloaded
                score = 0
            else:  # the script doubles each change of the score
                assert rewards[0] == 2 * (infos["score"][0] - score)
                score = infos["score"][0]
            reset_step = bool(terminations[0])
            total += rewards[0]
            ends += reset_step
        assert total > 0 and ends > 0
    finally:
        envs.close()
