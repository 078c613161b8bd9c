"""Per-env ``game``, ``scenario`` and ``info`` in ``retrovec.make``: several games in one vector
env (the Retro Contest setup), with the real emulator (Airstriker, imported Atari ROMs).

The test process builds no emulator: every env is in a worker (or a Ray actor).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import stable_retro.data as retro_data
from stable_retro import Actions

from retrovec.errors import (
    InvalidGameError,
    SpacesMismatchError,
    UnknownGameError,
    UnknownStateError,
)
from retrovec.retro.factory import make
from retrovec.retro.wrappers import Discretizer, Preprocessing

AIRSTRIKER = "Airstriker-Genesis-v0"
PONG = "Pong-Atari2600-v0"
BREAKOUT = "Breakout-Atari2600-v0"
MOVES = {  # one Discrete(4) for every console: no-op, left, right, fire
    "Genesis": [[], ["LEFT"], ["RIGHT"], ["B"]],
    "Atari2600": [[], ["LEFT"], ["RIGHT"], ["BUTTON"]],
}


def _play(envs, actions: np.ndarray, seed: list[int]) -> tuple[np.ndarray, np.ndarray, list]:
    obs, _ = envs.reset(seed=seed)
    frames, rewards, infos = [obs], [], []
    for action in actions:
        obs, reward, _, _, info = envs.step(action)
        frames.append(obs)
        rewards.append(reward)
        infos.append(info)
    return np.array(frames), np.array(rewards), infos


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_atari_games_in_one_vector_env_play_as_each_alone(context: str) -> None:
    """Same console, same buttons: Preprocessing.atari() makes the frames match. Each env
    plays exactly as a vector env of its game alone, with the same seed and actions."""
    steps = 60
    actions = np.random.default_rng(0).integers(0, 2, (steps, 2, 8), dtype=np.int8)
    atari = Preprocessing.atari()
    envs = make([PONG, BREAKOUT], preprocessing=atari, context=context)
    try:
        assert envs.num_envs == 2  # from the length of game
        assert envs.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        assert envs.single_action_space == gym.spaces.MultiBinary(8)
        assert envs.get_attr("gamename") == (PONG, BREAKOUT)
        assert envs.get_attr("statename") == ("Start.state", "Start.state")
        assert envs.call("get_action_meaning", [1, 0, 0, 0, 0, 0, 0, 1]) == (
            ["BUTTON", "RIGHT"], ["BUTTON", "RIGHT"]
        )
        frames, rewards, infos = _play(envs, actions, seed=[3, 4])
    finally:
        envs.close()
    # each game's own info: Pong's scores in env 0 only, Breakout's lives in env 1 only
    assert infos[-1]["_score1"].tolist() == [True, False]
    assert infos[-1]["_lives"].tolist() == [False, True]
    assert 1 <= infos[-1]["lives"][1] <= 5
    for index, game, seed in ((0, PONG, 3), (1, BREAKOUT, 4)):
        alone = make(game, 1, preprocessing=atari)
        try:
            alone_frames, alone_rewards, _ = _play(alone, actions[:, index : index + 1], [seed])
        finally:
            alone.close()
        np.testing.assert_array_equal(frames[:, index], alone_frames[:, 0])
        np.testing.assert_array_equal(rewards[:, index], alone_rewards[:, 0])
    assert not np.array_equal(frames[-1, 0], frames[-1, 1])


def test_games_of_two_consoles_raise_a_clear_error_naming_the_envs() -> None:
    with pytest.raises(SpacesMismatchError) as caught:
        make([AIRSTRIKER, AIRSTRIKER, PONG], preprocessing=Preprocessing.atari())
    message = str(caught.value)
    assert "env 2 (MultiBinary(8)) differs from env 0's (MultiBinary(12))" in message
    frames = "observations Box(0, 255, (4, 84, 84), uint8)"
    assert f"envs 0, 1: {AIRSTRIKER}: {frames}, actions MultiBinary(12)" in message
    assert f"env 2: {PONG}: {frames}, actions MultiBinary(8)" in message
    assert "Discretizer" in message and "'Atari2600':" in message
    assert "resize" not in message  # the frames match: only the actions need a mapping
    with pytest.raises(SpacesMismatchError) as caught:
        make([AIRSTRIKER, PONG], wrappers=[functools.partial(Discretizer, combos=MOVES)])
    message = str(caught.value)
    assert "The observation space of env 1" in message
    assert f"env 0: {AIRSTRIKER}: observations Box(0, 255, (224, 320, 3), uint8)" in message
    assert f"env 1: {PONG}: observations Box(0, 255, (210, 160, 3), uint8)" in message
    assert "Preprocessing(resize=(84, 84))" in message
    assert "Discretizer" not in message  # both are Discrete(4) already


def test_games_of_two_consoles_share_a_discretizer_with_combos_per_console() -> None:
    steps = 40
    envs = make(
        [AIRSTRIKER, PONG],
        preprocessing=Preprocessing(resize=(84, 84), grayscale=True),
        wrappers=[functools.partial(Discretizer, combos=MOVES)],
    )
    try:
        assert envs.single_action_space == gym.spaces.Discrete(4)
        assert envs.single_observation_space.shape == (84, 84)
        assert envs.get_attr("combos") == (
            tuple(map(tuple, MOVES["Genesis"])), tuple(map(tuple, MOVES["Atari2600"]))
        )
        envs.reset(seed=0)
        left = np.array([1, 1])
        for _ in range(steps):
            envs.step(left)
        assert envs.call("get_action_meaning", 3) == (["B"], ["BUTTON"])
    finally:
        envs.close()


def test_discretizer_combos_by_game_win_over_the_console() -> None:
    by_game = {PONG: [[], ["UP"]], "Atari2600": [[], ["DOWN"]]}
    envs = make([PONG, BREAKOUT], wrappers=[functools.partial(Discretizer, combos=by_game)])
    try:
        assert envs.call("get_action_meaning", 1) == (["UP"], ["DOWN"])
    finally:
        envs.close()
    with pytest.raises(ValueError, match=r"same number of combinations.*\{'Genesis': 1"):
        make([PONG], wrappers=[
            functools.partial(Discretizer, combos={"Genesis": [[]], "Atari2600": [[], ["UP"]]})
        ])
    with pytest.raises(ValueError, match="no entry for the game 'Pong-Atari2600-v0' nor its "
                                         "console 'Atari2600'"):
        make([PONG], wrappers=[functools.partial(Discretizer, combos={"Genesis": [[]]})])


def test_per_env_errors_name_the_env() -> None:
    with pytest.raises(UnknownGameError, match=r"^env 2: Unknown game 'Pongg-Atari2600-v0'"):
        make([PONG, BREAKOUT, "Pongg-Atari2600-v0"])
    with pytest.raises(UnknownGameError, match=r"^envs 1, 3: Unknown game 'Nope'"):
        make([PONG, "Nope", BREAKOUT, "Nope"])
    with pytest.raises(UnknownStateError, match=r"^env 0: Game 'Pong-Atari2600-v0' has no "
                                                r"state 'Level1'"):
        make([PONG, AIRSTRIKER], state="Level1")
    with pytest.raises(InvalidGameError, match=r"^env 1: Game 'Breakout-Atari2600-v0' has no "
                                               "scenario 'hard'"):
        make([PONG, BREAKOUT], scenario=[None, "hard"])
    with pytest.raises(InvalidGameError, match=r"^env 0: .*no info 'ram'"):
        make(PONG, 2, info=["ram", None])
    with pytest.raises(InvalidGameError, match="game lists 2 values but state lists 3"):
        make([PONG, BREAKOUT], state=["Start"] * 3)
    with pytest.raises(InvalidGameError, match="game lists 2 games but num_envs is 3"):
        make([PONG, BREAKOUT], 3)
    with pytest.raises(TypeError, match=r"game\[1\] must be a game id"):
        make([PONG, 7])
    with pytest.raises(TypeError, match=r"scenario\[0\] must be None, a file name"):
        make(PONG, 2, scenario=[3, None])
    # one game for every env: the message stays as it was, without env numbers
    with pytest.raises(UnknownGameError, match=r"^Unknown game 'Pongg-Atari2600-v0'"):
        make("Pongg-Atari2600-v0", 2)


def test_per_env_scenario_and_info(tmp_path: Path) -> None:
    """env 1 gets a scenario that pays 10 per point and a data file with a second name for
    the score: same actions, 10 times the reward, the extra variable in env 1's info only."""
    data = json.loads(Path(retro_data.get_file_path(AIRSTRIKER, "data.json")).read_text())
    data["info"]["score_again"] = dict(data["info"]["score"])
    info_path = tmp_path / "data_again.json"
    info_path.write_text(json.dumps(data))
    scenario = json.loads(Path(retro_data.get_file_path(AIRSTRIKER, "scenario.json")).read_text())
    scenario["reward"]["variables"]["score"]["reward"] = 10.0
    scenario_path = tmp_path / "tenfold.json"
    scenario_path.write_text(json.dumps(scenario))

    envs = make(AIRSTRIKER, scenario=[None, scenario_path], info=[None, str(info_path)])
    try:
        assert envs.num_envs == 2
        envs.reset(seed=0)
        rewards, infos = [], None
        for action in np.random.default_rng(0).integers(0, 2, (600, 12), dtype=np.int8):
            _, reward, _, _, infos = envs.step(np.stack([action, action]))
            rewards.append(reward)
    finally:
        envs.close()
    rewards = np.array(rewards)
    assert rewards[:, 0].sum() > 0
    np.testing.assert_array_equal(rewards[:, 1], 10 * rewards[:, 0])
    assert infos["_score_again"].tolist() == [False, True]
    assert infos["score_again"][1] == infos["score"][1] == infos["score"][0]


def test_per_env_games_on_the_ray_backend(ray_local) -> None:
    envs = make([PONG, BREAKOUT], backend="ray", use_restricted_actions=Actions.DISCRETE)
    try:
        assert envs.single_action_space == gym.spaces.Discrete(18)
        assert envs.get_attr("gamename") == (PONG, BREAKOUT)
        envs.reset(seed=0)
        envs.step(np.array([1, 1]))
    finally:
        envs.close()
    with pytest.raises(SpacesMismatchError) as caught:
        make([AIRSTRIKER, PONG], backend="ray")
    message = str(caught.value)
    assert f"The envs play:\n  env 0: {AIRSTRIKER}\n  env 1: {PONG}\n" in message
    assert "Preprocessing(resize=(84, 84))" in message and "Discretizer" in message
