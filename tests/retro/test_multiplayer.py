"""Two players per env on the real Pong (and Fishing Derby): actions and per-player rewards."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from retrovec.retro.factory import make
from retrovec.retro.multiplayer import PlayerRewards
from tests.movies import replay_movies

PONG = "Pong-Atari2600-v0"
BUTTONS = 8  # the Atari 2600 core: BUTTON, None, SELECT, RESET, UP, DOWN, LEFT, RIGHT
UP, DOWN, LEFT, RIGHT = 4, 5, 6, 7


def _play(envs, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Reset, step through ``actions``; return the rewards and ``infos["rewards"]``."""
    envs.reset(seed=0)
    rewards, player_rewards = [], []
    for action in actions:
        _, reward, _, _, infos = envs.step(action)
        rewards.append(reward)
        if "rewards" in infos:
            assert infos["_rewards"].all()
            player_rewards.append(infos["rewards"])
    return np.array(rewards), (np.array(player_rewards) if player_rewards else None)


def test_two_players_default_to_the_two_player_state() -> None:
    envs = make(PONG, 2, players=2)
    try:
        assert envs.get_attr("statename") == ("Start.2P.state", "Start.2P.state")
        assert envs.single_action_space == gym.spaces.MultiBinary(2 * BUTTONS)
        assert envs.action_space.shape == (2, 2 * BUTTONS)
        obs, infos = envs.reset(seed=0)
        assert obs.shape == (2, 210, 160, 3)
        assert "rewards" not in infos
    finally:
        envs.close()
    one = make(PONG, 1)
    try:
        assert one.get_attr("statename") == ("Start.state",)
        assert one.single_action_space == gym.spaces.MultiBinary(BUTTONS)
    finally:
        one.close()


def test_per_player_rewards_in_info_and_player_one_reward_unchanged() -> None:
    steps = 400  # random play: a point about every 140 steps
    actions = np.random.default_rng(0).integers(0, 2, (steps, 2, 2 * BUTTONS), dtype=np.int8)
    envs = make(PONG, 2, players=2, multi_rewards=True)
    try:
        rewards, player_rewards = _play(envs, actions)
    finally:
        envs.close()
    plain = make(PONG, 2, players=2)
    try:
        plain_rewards, none = _play(plain, actions)
    finally:
        plain.close()
    assert none is None  # no info["rewards"] without multi_rewards=True
    assert player_rewards.shape == (steps, 2, 2)  # (steps, num_envs, players)
    assert player_rewards.dtype == np.float64
    np.testing.assert_array_equal(player_rewards[:, :, 0], rewards)  # reward = player 1's
    np.testing.assert_array_equal(player_rewards[:, :, 1], -rewards)  # Pong is zero-sum
    np.testing.assert_array_equal(plain_rewards, rewards)  # multi_rewards changes no reward
    assert np.count_nonzero(rewards) >= 2


def test_frame_skip_sums_every_players_rewards() -> None:
    """multi_rewards sits outside preprocessing: a 4-frame step reports the 4 frames' sum."""
    from retrovec.retro.wrappers import Preprocessing

    steps, skip = 120, 4
    actions = np.random.default_rng(1).integers(0, 2, (steps, 1, 2 * BUTTONS), dtype=np.int8)
    skipping = make(
        PONG, 1, players=2, multi_rewards=True, preprocessing=Preprocessing(frame_skip=skip)
    )
    try:
        rewards, player_rewards = _play(skipping, actions)
    finally:
        skipping.close()
    frames = make(PONG, 1, players=2, multi_rewards=True)
    try:
        frame_rewards, frame_player_rewards = _play(frames, np.repeat(actions, skip, axis=0))
    finally:
        frames.close()
    assert np.count_nonzero(rewards) >= 1
    np.testing.assert_array_equal(rewards, frame_rewards.reshape(steps, skip).sum(axis=1)[:, None])
    np.testing.assert_array_equal(
        player_rewards, frame_player_rewards.reshape(steps, skip, 1, 2).sum(axis=1)
    )


def test_batched_actions_reach_each_env() -> None:
    """Every env gets its own row of buttons. In stable-retro's Pong both paddles are read
    from the first port (Atari paddles come in pairs): UP/DOWN move one, LEFT/RIGHT the
    other, and player 2's buttons do nothing; Fishing Derby reads player 2's joystick."""
    envs = make(PONG, 4, players=2)
    try:
        envs.reset(seed=0)
        actions = np.zeros(envs.action_space.shape, envs.action_space.dtype)
        actions[0, UP] = 1
        actions[1, RIGHT] = 1
        actions[2, BUTTONS + DOWN] = 1  # player 2
        for _ in range(60):
            _, _, _, _, infos = envs.step(actions)
    finally:
        envs.close()
    p1, p2 = infos["p1_pos"], infos["p2_pos"]
    assert p1[0] != p1[3] and p2[0] == p2[3]
    assert p2[1] != p2[3] and p1[1] == p1[3]
    assert p1[2] == p1[3] and p2[2] == p2[3]

    derby = make("FishingDerby-Atari2600-v0", 2, players=2)
    try:
        derby.reset(seed=0)
        actions = np.zeros(derby.action_space.shape, derby.action_space.dtype)
        actions[0, BUTTONS + DOWN] = 1  # player 2 reels down in env 0 only
        for _ in range(100):
            obs, *_ = derby.step(actions)
    finally:
        derby.close()
    assert not np.array_equal(obs[0], obs[1])


def test_a_two_player_recording_replays_with_both_players(tmp_path: Path) -> None:
    envs = make(PONG, 1, players=2, multi_rewards=True, record=tmp_path, seed=1)
    try:
        envs.reset(seed=0)
        actions, player_rewards = [], []
        for _ in range(150):
            action = envs.action_space.sample()
            actions.append(envs.call("action_to_array", action[0])[0])
            _, _, _, _, infos = envs.step(action)
            player_rewards.append(infos["rewards"][0])
    finally:
        envs.close()
    (replayed,) = replay_movies(tmp_path / "env-000" / "Pong-Atari2600-v0-Start.2P-000000.bk2")
    np.testing.assert_array_equal(
        replayed["actions"], np.array(actions).reshape(150, 2 * BUTTONS)
    )
    np.testing.assert_array_equal(replayed["player_rewards"], np.array(player_rewards))
    np.testing.assert_array_equal(replayed["rewards"], np.array(player_rewards)[:, 0])


def test_player_rewards_needs_a_retro_env() -> None:
    with pytest.raises(TypeError, match="multi_rewards=True needs stable-retro envs"):
        PlayerRewards(gym.make("CartPole-v1"))


def test_multi_rewards_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="multi_rewards must be True or False"):
        make(PONG, 2, players=2, multi_rewards="yes")


# --- use_restricted_actions=Actions.MULTI_DISCRETE with two players ----------------------
# stable-retro's own RetroEnv.action_to_array slices each player's MULTI_DISCRETE choices by
# the number of buttons (8) instead of the number of button groups (3) and raises
# IndexError on the first step; retrovec gives those envs fix_multi_discrete's decoding.


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_player_multi_discrete_steps_and_decodes_each_players_groups(context: str) -> None:
    from stable_retro import Actions

    envs = make(
        PONG, 4, players=2, use_restricted_actions=Actions.MULTI_DISCRETE, context=context
    )
    try:
        # Atari groups: BUTTON [none, BUTTON], [none, UP, DOWN], [none, LEFT, RIGHT]
        assert envs.single_action_space == gym.spaces.MultiDiscrete([2, 3, 3, 2, 3, 3])
        envs.reset(seed=0)
        actions = np.zeros((4, 6), np.int64)
        actions[0, 1] = 1  # player 1 UP: the right paddle (p1_pos)
        actions[1, 2] = 2  # player 1 RIGHT: the left paddle (p2_pos)
        actions[2, 3:] = [1, 2, 2]  # player 2 BUTTON + DOWN + RIGHT: nothing in Pong
        pressed = [envs.call("action_to_array", a)[i] for i, a in enumerate(actions)]
        meanings = [envs.call("get_action_meaning", a)[i] for i, a in enumerate(actions)]
        for _ in range(60):
            _, _, _, _, infos = envs.step(actions)
    finally:
        envs.close()
    assert [m.tolist() for m in pressed[0]] == [[0, 0, 0, 0, 1, 0, 0, 0], [0] * 8]
    assert [m.tolist() for m in pressed[2]] == [[0] * 8, [1, 0, 0, 0, 0, 1, 0, 1]]
    assert meanings[1] == [["RIGHT"], []]
    assert meanings[2] == [[], ["BUTTON", "DOWN", "RIGHT"]]
    p1, p2 = infos["p1_pos"], infos["p2_pos"]
    assert p1[0] != p1[3] and p2[0] == p2[3]
    assert p2[1] != p2[3] and p1[1] == p1[3]
    assert p1[2] == p1[3] and p2[2] == p2[3]


def test_two_player_multi_discrete_plays_as_the_same_buttons_pressed_directly() -> None:
    """Random MULTI_DISCRETE play, and the buttons it decodes to played as MultiBinary
    (Actions.ALL: neither filters), give the same frames and every player's rewards."""
    from stable_retro import Actions

    steps = 300
    game = "FishingDerby-Atari2600-v0"  # reads player 2's joystick, unlike Pong
    discrete = make(game, 1, players=2, multi_rewards=True, seed=3,
                    use_restricted_actions=Actions.MULTI_DISCRETE)
    try:
        discrete.reset(seed=0)
        buttons, frames, player_rewards = [], [], []
        for _ in range(steps):
            action = discrete.action_space.sample()
            buttons.append(np.concatenate(discrete.call("action_to_array", action[0])[0]))
            obs, _, _, _, infos = discrete.step(action)
            frames.append(obs[0])
            player_rewards.append(infos["rewards"][0])
    finally:
        discrete.close()
    direct = make(game, 1, players=2, multi_rewards=True, use_restricted_actions=Actions.ALL)
    try:
        direct.reset(seed=0)
        for t, pressed in enumerate(buttons):
            obs, _, _, _, infos = direct.step(pressed[None])
            np.testing.assert_array_equal(obs[0], frames[t])
            np.testing.assert_array_equal(infos["rewards"][0], player_rewards[t])
    finally:
        direct.close()
    assert np.array(buttons)[:, BUTTONS:].any()  # player 2 pressed buttons too


def test_multi_discrete_decoding_matches_stable_retro_for_one_player() -> None:
    """For one player stable-retro's own decoding is right: fix_multi_discrete leaves such
    envs alone, and multi_discrete_to_buttons agrees with it on every action."""
    import itertools

    from stable_retro import Actions, RetroEnv

    from retrovec.retro.multiplayer import multi_discrete_to_buttons

    class Fake:  # what RetroEnv.action_to_array reads, without an emulator
        def __init__(self) -> None:
            self.players, self.num_buttons = 1, 8
            self.use_restricted_actions = Actions.MULTI_DISCRETE
            self.button_combos = [[0, 1], [0, 16, 32], [0, 64, 128]]

    fake = Fake()
    for action in itertools.product(range(2), range(3), range(3)):
        ours = multi_discrete_to_buttons(fake.button_combos, 8, 1, action)
        theirs = RetroEnv.action_to_array(fake, list(action))
        assert [m.tolist() for m in ours] == [m.tolist() for m in theirs]
    fake.players = 2
    with pytest.raises(IndexError):  # the stable-retro bug this works around
        RetroEnv.action_to_array(fake, [0, 1, 0, 1, 0, 2])
    with pytest.raises(ValueError, match="6 in all"):
        multi_discrete_to_buttons(fake.button_combos, 8, 2, [0, 1, 0])
    with pytest.raises(ValueError, match="player 2's choice 3 in button group 1"):
        multi_discrete_to_buttons(fake.button_combos, 8, 2, [0, 1, 0, 1, 3, 0])


def test_one_player_multi_discrete_keeps_stable_retros_decoding() -> None:
    from stable_retro import Actions

    envs = make(PONG, 1, use_restricted_actions=Actions.MULTI_DISCRETE)
    try:
        assert envs.single_action_space == gym.spaces.MultiDiscrete([2, 3, 3])
        envs.reset(seed=0)
        envs.step(np.array([[1, 2, 1]]))
        assert envs.call("get_action_meaning", [1, 2, 1]) == (["BUTTON", "DOWN", "LEFT"],)
    finally:
        envs.close()
