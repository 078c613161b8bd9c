"""Discretizer and noop_action, on the real emulator and (for input checks) a fake one."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import stable_retro
from gymnasium.spaces import Box, Discrete, MultiBinary, MultiDiscrete

from retrovec.retro.factory import make
from retrovec.retro.wrappers import Discretizer, noop_action
from tests.retro_reference import AIRSTRIKER, PONG, rollouts

AIRSTRIKER_BUTTONS = ["B", "A", "MODE", "START", "UP", "DOWN", "LEFT", "RIGHT", "C", "Y", "X", "Z"]
COMBOS = [[], ["LEFT"], ["RIGHT", "B"], ["UP", "C"], ["DOWN"]]


def buttons_of(combo: list[str], buttons: list[Any] = AIRSTRIKER_BUTTONS) -> np.ndarray:
    """The MultiBinary array of a combination, by hand."""
    return np.array([name in combo for name in buttons], dtype=np.int8)


class FakeRetro(gym.Env):
    """Only what Discretizer reads: ``buttons`` and a MultiBinary action space."""

    observation_space = Box(0, 255, (2,), np.uint8)

    def __init__(self, buttons: list[Any], players: int = 1) -> None:
        self.buttons = buttons
        self.action_space = MultiBinary(len(buttons) * players)


class NoopProbe(gym.Wrapper):
    """Answers ``envs.call("noop_buttons")`` inside a worker."""

    def noop_buttons(self) -> list[np.ndarray]:
        return self.env.unwrapped.action_to_array(noop_action(self.env))


# ---------------------------------------------------------------- Discretizer


def test_discretizer_presses_the_named_buttons(tmp_path: Path) -> None:
    steps = 30
    choices = np.random.default_rng(8).integers(0, len(COMBOS), (steps, 2))
    references = rollouts(
        tmp_path, [np.stack([buttons_of(COMBOS[c]) for c in choices[:, i]]) for i in range(2)]
    )
    envs = make(AIRSTRIKER, 2, wrappers=[functools.partial(Discretizer, combos=COMBOS)])
    try:
        assert envs.single_action_space == Discrete(len(COMBOS))
        assert envs.action_space == MultiDiscrete([len(COMBOS)] * 2)
        assert envs.call("get_action_meaning", 2) == (["RIGHT", "B"], ["RIGHT", "B"])
        envs.reset(seed=0)
        for t in range(steps):
            obs, *_ = envs.step(choices[t])
            for i, ref in enumerate(references):
                np.testing.assert_array_equal(obs[i], ref.observations[t + 1], f"env {i} t {t}")
    finally:
        envs.close()


def test_discretizer_unknown_button_fails_make_with_the_valid_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        make(AIRSTRIKER, 1, wrappers=[functools.partial(Discretizer, combos=[["LEFT"], ["FIRE"]])])
    message = str(excinfo.value)
    assert "combos[1] names the unknown button 'FIRE'" in message
    assert str(AIRSTRIKER_BUTTONS) in message


def test_discretizer_action_arrays() -> None:
    env = Discretizer(FakeRetro(AIRSTRIKER_BUTTONS), COMBOS)
    for i, combo in enumerate(COMBOS):
        action = env.action(np.int64(i))
        np.testing.assert_array_equal(action, buttons_of(combo))
        assert action.dtype == np.int8
    env.action(2)[:] = 0  # a fresh array each time
    np.testing.assert_array_equal(env.action(2), buttons_of(["RIGHT", "B"]))
    assert env.combos == tuple(tuple(c) for c in COMBOS)


@pytest.mark.parametrize(
    ("buttons", "combos", "error", "message"),
    [
        (["BUTTON", None, "SELECT"], [[None]], ValueError, r"are \['BUTTON', 'SELECT'\]"),
        (AIRSTRIKER_BUTTONS, [["left"]], ValueError, "unknown button 'left'"),
        (AIRSTRIKER_BUTTONS, [], ValueError, "non-empty sequence"),
        (AIRSTRIKER_BUTTONS, "LEFT", ValueError, "non-empty sequence"),
        (AIRSTRIKER_BUTTONS, [["LEFT"], "RIGHT"], TypeError, r"combos\[1\] must be a sequence"),
    ],
)
def test_discretizer_rejects_bad_combos(buttons, combos, error, message) -> None:
    with pytest.raises(error, match=message):
        Discretizer(FakeRetro(buttons), combos)


def test_discretizer_needs_one_players_multibinary() -> None:
    with pytest.raises(ValueError, match="one player"):
        Discretizer(FakeRetro(AIRSTRIKER_BUTTONS, players=2), COMBOS)
    with pytest.raises(ValueError, match="needs a stable-retro env"):
        Discretizer(gym.make("CartPole-v1"), COMBOS)


# ---------------------------------------------------------------- noop_action


@pytest.mark.parametrize("mode", list(stable_retro.Actions), ids=lambda m: m.name)
@pytest.mark.parametrize("game", [AIRSTRIKER, PONG])
def test_noop_action_presses_nothing_in_every_action_mode(game: str, mode) -> None:
    envs = make(game, 1, use_restricted_actions=mode, wrappers=[NoopProbe])
    try:
        (pressed,) = envs.call("noop_buttons")
        assert len(pressed) == 1 and not np.any(pressed[0])
    finally:
        envs.close()


def test_noop_action_of_other_spaces() -> None:
    assert noop_action(gym.make("CartPole-v1")) == 0
    env = gym.make("Pendulum-v1")
    np.testing.assert_array_equal(noop_action(env), np.zeros(1, np.float32))

    class Positive(gym.Env):
        action_space = Box(1.0, 2.0, (2,), np.float32)
        observation_space = Box(0, 1, (1,))

    with pytest.raises(ValueError, match="pass noop_action explicitly"):
        noop_action(Positive())
