"""Evaluating PPO: play full episodes with a checkpoint's policy or with random actions.

:func:`evaluate` and :func:`evaluate_random` measure the same way (the same envs, the
first ``episodes`` episodes that end, the game's raw score) and return the mean ± std of
the returns, so a trained agent and the random baseline compare directly; ``evaluate``
can also save the episodes as an mp4. Re-exported by :mod:`retrovec.training.ppo`.
``evaluate_random`` and the episode loop live in :mod:`retrovec.training.ppo_envs`, which
needs no torch (``retrovec evaluate --random`` runs without the ``train`` extra).

Example:
    >>> from retrovec.training.ppo_evaluation import evaluate_random
    >>> report = evaluate_random(episodes=1, num_envs=1, max_episode_steps=5, seed=0)
    >>> sorted(report), report["lengths"]
    (['lengths', 'mean', 'returns', 'std', 'video'], [5])
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch

from retrovec.training.ppo_agent import pick_device
from retrovec.training.ppo_args import Args
from retrovec.training.ppo_checkpoints import load_checkpoint
from retrovec.training.ppo_envs import evaluate_random, make_envs, play_episodes

__all__ = ["evaluate", "evaluate_random"]


def evaluate(
    checkpoint: str | os.PathLike[str],
    episodes: int = 10,
    *,
    num_envs: int = 2,
    video: str | os.PathLike[str] | None = None,
    greedy: bool = False,
    seed: int = 100,
    device: str = "auto",
    max_episode_steps: int | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` full episodes with a checkpoint's policy.

    Args:
        checkpoint: A ``checkpoint.pt`` from :func:`train`.
        episodes: How many episodes to finish (the first ``episodes`` that end count).
        num_envs: Envs that play in parallel.
        video: An ``.mp4`` path: every env's latest frame, tiled, at each step.
        greedy: Take the most likely action instead of sampling.
        seed: Reset seed of the envs.
        device: As :attr:`Args.device`.
        max_episode_steps: Override the checkpoint's episode length limit.

    Returns:
        ``{"mean": ..., "std": ..., "returns": [...], "lengths": [...], "video": path}``.
    """
    torch_device = pick_device(device)
    state = load_checkpoint(checkpoint, torch_device)
    agent = state["model"].eval()
    fields = {f.name for f in dataclasses.fields(Args)}
    args = Args(**{k: v for k, v in state["args"].items() if k in fields})
    if max_episode_steps is not None:
        args.max_episode_steps = max_episode_steps
    envs = make_envs(args, num_envs=num_envs)

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=torch_device)
            action, _, _, _ = agent.get_action_and_value(x, greedy=greedy)
        return action.cpu().numpy()

    return play_episodes(envs, policy, episodes, seed, video)
