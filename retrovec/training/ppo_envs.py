"""The envs PPO trains and is evaluated on, and the episode loop, without torch.

:func:`make_envs` builds the envs the trainer and the evaluation play on;
:func:`play_episodes` steps them with a policy until enough episodes ended; and
:func:`evaluate_random` is the random-play baseline, so ``retrovec evaluate --random``
runs without the ``train`` extra. :mod:`retrovec.training.ppo_rollout` and
:mod:`retrovec.training.ppo_evaluation` (re-exported by :mod:`retrovec.training.ppo`)
build on them.

Example:
    >>> from retrovec.training.ppo_envs import evaluate_random
    >>> report = evaluate_random(episodes=1, num_envs=1, max_episode_steps=5, seed=0)
    >>> sorted(report), report["lengths"]
    (['lengths', 'mean', 'returns', 'std', 'video'], [5])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from retrovec.training.ppo_args import Args

__all__ = ["evaluate_random", "make_envs", "play_episodes"]


def make_envs(args: Args, num_envs: int | None = None, **kwargs: Any) -> gym.vector.VectorEnv:
    """The training envs: ``retrovec.make`` with Atari preprocessing, discrete actions and
    ``NEXT_STEP`` autoreset, wrapped in ``RecordEpisodeStatistics``."""
    import stable_retro

    import retrovec

    state = {} if args.state is None else {"state": args.state}
    envs = retrovec.make(
        args.game,
        num_envs or args.num_envs,
        preprocessing=retrovec.Preprocessing.atari(),
        use_restricted_actions=stable_retro.Actions.DISCRETE,
        max_episode_steps=args.max_episode_steps,
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        on_worker_failure="restart" if args.worker_restarts > 0 else "raise",
        max_restarts=max(args.worker_restarts, 0),
        **state,
        **kwargs,
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def play_episodes(
    envs: gym.vector.VectorEnv,
    policy: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    seed: int,
    video: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Step ``envs`` with ``policy(observations)`` until ``episodes`` episodes ended.

    The first ``episodes`` episodes to end count; ``envs`` is closed on the way out.

    Args:
        envs: Envs from :func:`make_envs` (``RecordEpisodeStatistics`` on top).
        policy: Batched observations in, batched actions out.
        episodes: How many episodes to finish.
        seed: Reset seed.
        video: An ``.mp4`` path: every env's latest frame, tiled, at each step.

    Returns:
        ``{"mean": ..., "std": ..., "returns": [...], "lengths": [...], "video": path}``.
    """
    writer = None
    returns: list[float] = []
    lengths: list[int] = []
    try:
        if video is not None:
            from retrovec.retro.video import VideoWriter, tile_frames

            writer = VideoWriter(video, fps=15)
        obs, _ = envs.reset(seed=seed)
        while len(returns) < episodes:
            if writer is not None:
                writer.write(tile_frames(np.asarray(obs)[:, -1]))
            obs, _, _, _, infos = envs.step(policy(obs))
            if "episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    returns.append(float(infos["episode"]["r"][i]))
                    lengths.append(int(infos["episode"]["l"][i]))
    finally:
        if writer is not None:
            writer.close()
        envs.close()
    returns, lengths = returns[:episodes], lengths[:episodes]
    return {
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "returns": returns,
        "lengths": lengths,
        "video": None if video is None else os.fspath(video),
    }


def evaluate_random(
    episodes: int = 10,
    *,
    num_envs: int = 2,
    seed: int = 100,
    max_episode_steps: int | None = None,
    game: str = "Airstriker-Genesis-v0",
) -> dict[str, Any]:
    """Play ``episodes`` episodes with uniformly random actions, measured exactly as
    :func:`retrovec.training.ppo.evaluate` measures a trained policy (same envs, same
    episode bookkeeping).

    The baseline a trained agent should clearly beat. Needs no torch.
    """
    args = Args(game=game, seed=seed)
    if max_episode_steps is not None:
        args.max_episode_steps = max_episode_steps
    envs = make_envs(args, num_envs=num_envs)
    envs.action_space.seed(seed)
    return play_episodes(envs, lambda obs: envs.action_space.sample(), episodes, seed)
