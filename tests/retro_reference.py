"""Reference rollouts of bare stable-retro envs, computed in a fresh interpreter.

stable-retro allows one emulator per process, and a forked worker inherits its parent's
count, so the pytest process never builds an emulator. The wrapper tests instead run the
wrapped env in retrovec's workers and compare it with frames that :func:`rollouts` gets from
a subprocess stepping a plain ``RetroEnv`` frame by frame; the expected wrapper output is
then computed by hand, in numpy, from those raw frames. :func:`sticky` recomputes the sticky
actions from a seeded generator, and :func:`image_env` is a fake image env for input checks.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box

AIRSTRIKER = "Airstriker-Genesis-v0"
PONG = "Pong-Atari2600-v0"

# One emulator at a time: each rollout closes its env before the next builds one.
_SCRIPT = r"""
import json, sys
import numpy as np
import stable_retro

spec = json.loads(sys.argv[1])
with np.load(sys.argv[2]) as data:
    sequences = [data[f"actions_{i}"] for i in range(spec["count"])]
results = {}
for i, actions in enumerate(sequences):
    env = stable_retro.make(
        spec["game"],
        state=spec["state"] if spec["state"] is not None else stable_retro.State.DEFAULT,
        render_mode=None,
        obs_type=stable_retro.Observations[spec["obs_type"]],
        use_restricted_actions=stable_retro.Actions[spec["actions"]],
    )
    obs, info = env.reset(seed=0)
    observations, rams = [obs], [env.unwrapped.get_ram()]
    rewards, terminated, truncated = [], [], []
    for action in actions:
        obs, reward, term, trunc, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        rams.append(env.unwrapped.get_ram())
    env.close()
    del env
    results[f"observations_{i}"] = np.stack(observations)
    results[f"rewards_{i}"] = np.array(rewards, dtype=np.float64)
    results[f"terminated_{i}"] = np.array(terminated, dtype=bool)
    results[f"truncated_{i}"] = np.array(truncated, dtype=bool)
    if spec["ram"]:
        results[f"ram_{i}"] = np.stack(rams)
np.savez(sys.argv[3], **results)
"""


@dataclasses.dataclass
class Rollout:
    """A bare env's reset and frames. Index 0 is the reset; index ``j`` follows action
    ``j - 1`` (so ``rewards[j - 1]`` is frame ``j``'s reward)."""

    observations: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    ram: np.ndarray | None


def rollouts(
    tmp_path: Path,
    action_sequences: Sequence[np.ndarray],
    *,
    game: str = AIRSTRIKER,
    state: str | None = None,
    obs_type: str = "IMAGE",
    actions: str = "FILTERED",
    ram: bool = False,
) -> list[Rollout]:
    """Step a fresh bare env through each action sequence, one emulator at a time.

    Args:
        tmp_path: A folder for the exchange files.
        action_sequences: One array of frame-by-frame actions per rollout.
        game: The game id.
        state: A state name, or ``None`` for the game's default state.
        obs_type: A ``stable_retro.Observations`` member name.
        actions: A ``stable_retro.Actions`` member name.
        ram: Also record ``get_ram()`` after the reset and every frame.

    Returns:
        One :class:`Rollout` per sequence.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    stem = f"reference-{len(list(tmp_path.glob('reference-*-in.npz')))}"
    inputs, outputs = tmp_path / f"{stem}-in.npz", tmp_path / f"{stem}-out.npz"
    np.savez(inputs, **{f"actions_{i}": np.asarray(a) for i, a in enumerate(action_sequences)})
    spec = dict(
        game=game,
        state=state,
        obs_type=obs_type,
        actions=actions,
        ram=ram,
        count=len(action_sequences),
    )
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(spec), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with np.load(outputs) as data:
        return [
            Rollout(
                observations=data[f"observations_{i}"],
                rewards=data[f"rewards_{i}"],
                terminated=data[f"terminated_{i}"],
                truncated=data[f"truncated_{i}"],
                ram=data[f"ram_{i}"] if ram else None,
            )
            for i in range(len(action_sequences))
        ]


def random_buttons(rng: np.random.Generator, count: int, buttons: int) -> np.ndarray:
    """``count`` random ``MultiBinary`` actions of ``buttons`` buttons (int8, as sampled)."""
    return rng.integers(0, 2, (count, buttons)).astype(np.int8)


def sticky(
    rng: np.random.Generator, actions: list[np.ndarray], p: float, last: Any = None
) -> tuple[list[np.ndarray], Any]:
    """The actions gymnasium's StickyAction executes, frame by frame: with probability
    ``p`` the previous frame's action (never on the first frame after a reset). It draws
    one ``uniform()`` per frame that has a previous action, and when the action sticks
    ``integers(1, 2)`` (the repeat duration), which consumes no randomness in numpy."""
    executed = []
    for action in actions:
        if last is not None and rng.uniform() < p:
            rng.integers(1, 2)
            action = last
        executed.append(action)
        last = action
    return executed, last


def image_env(shape: tuple[int, ...], dtype=np.uint8) -> gym.Env:
    """CartPole whose observations are random images of ``shape`` (no emulator)."""
    space = Box(0, 255, shape, dtype)
    return gym.wrappers.TransformObservation(
        gym.make("CartPole-v1"), lambda obs: space.sample(), space
    )
