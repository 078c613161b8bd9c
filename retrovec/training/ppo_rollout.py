"""Experience for PPO: the training envs, the ``NEXT_STEP`` rollout and its advantages.

:func:`make_envs` (from :mod:`retrovec.training.ppo_envs`, which needs no torch) builds
the envs the trainer and the evaluation play on;
:func:`collect_rollout` steps them and marks gymnasium 1.x's reset steps invalid;
:func:`compute_gae` computes advantages that never cross an episode end. The update that
uses them is :func:`retrovec.training.ppo.train`, which re-exports all three.

Example:
    >>> import torch
    >>> from retrovec.training.ppo_rollout import compute_gae
    >>> rewards = torch.ones(3, 1)
    >>> zeros = torch.zeros(3, 1)
    >>> dones = torch.tensor([[0.0], [0.0], [1.0]])  # the episode ends at the third step
    >>> advantages, returns = compute_gae(rewards, zeros, zeros, dones, dones, 1.0, 1.0)
    >>> advantages[:, 0].tolist()
    [3.0, 2.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from retrovec.training.ppo_envs import make_envs

__all__ = ["collect_rollout", "compute_gae", "make_envs"]


def collect_rollout(
    envs: gym.vector.VectorEnv,
    agent: Any,
    next_obs: torch.Tensor,
    next_done: torch.Tensor,
    num_steps: int,
    device: torch.device,
    clip_rewards: bool = False,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, list[tuple[float, int]]]:
    """Step ``envs`` (``NEXT_STEP`` autoreset) ``num_steps`` times with ``agent``'s actions.

    Args:
        envs: The vector env, already reset.
        agent: Anything with ``get_action_and_value(obs) -> (action, logprob, _, value)``.
        next_obs: The current observations, ``(num_envs, *obs_shape)``.
        next_done: 1.0 where the previous step ended an episode (so this step resets).
        num_steps: Steps per env.
        device: Where the tensors live.
        clip_rewards: Store ``sign(reward)`` in ``rollout["rewards"]`` (the episodes' returns
            stay raw).

    Returns:
        ``(rollout, next_obs, next_done, episodes)``: ``rollout`` holds ``(num_steps,
        num_envs)``-shaped ``obs``, ``actions``, ``logprobs``, ``rewards``, ``values``,
        ``terminations``, ``dones`` (terminated or truncated) and ``valid`` (0 on reset
        steps); ``episodes`` lists ``(return, length)`` of the episodes that ended.
    """
    num_envs = envs.num_envs
    shape = (num_steps, num_envs)
    obs = torch.zeros(shape + envs.single_observation_space.shape, device=device)
    out = {key: torch.zeros(shape, device=device) for key in (
        "logprobs", "rewards", "values", "terminations", "dones", "valid")}
    actions = torch.zeros(shape, dtype=torch.long, device=device)
    episodes: list[tuple[float, int]] = []
    for step in range(num_steps):
        obs[step] = next_obs
        out["valid"][step] = 1.0 - next_done  # the step after an episode end is a reset step
        with torch.no_grad():
            action, logprob, _, value = agent.get_action_and_value(next_obs)
        actions[step] = action
        out["logprobs"][step] = logprob
        out["values"][step] = value
        observation, reward, terminated, truncated, infos = envs.step(action.cpu().numpy())
        next_obs = torch.as_tensor(np.asarray(observation), dtype=torch.float32, device=device)
        reward = np.sign(reward) if clip_rewards else reward
        out["rewards"][step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
        out["terminations"][step] = torch.as_tensor(terminated, dtype=torch.float32, device=device)
        next_done = torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)
        out["dones"][step] = next_done
        if "episode" in infos:  # RecordEpisodeStatistics marks the step that ends one
            for i in np.flatnonzero(infos["_episode"]):
                episodes.append((float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))
    out["obs"] = obs
    out["actions"] = actions
    return out, next_obs, next_done, episodes


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminations: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation for a ``NEXT_STEP`` rollout.

    ``next_values[t]`` is the value of the observation that followed step ``t``. With
    ``NEXT_STEP`` autoreset, after a step that ended an episode that observation is still
    the episode's last one, so a truncated step bootstraps from it while a terminated step
    does not; and the recursion stops at every episode end (``dones``), so the reset step
    that follows (masked out of the loss) never leaks into the episode before it.

    Args:
        rewards: ``(T, N)`` rewards.
        values: ``(T, N)`` values of the observations the steps were taken from.
        next_values: ``(T, N)`` values of the observations that followed them.
        terminations: ``(T, N)``, 1.0 where the step terminated its episode.
        dones: ``(T, N)``, 1.0 where the step terminated or truncated its episode.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.

    Returns:
        ``(advantages, returns)``, both ``(T, N)``; ``returns = advantages + values``.
    """
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminations[t]) - values[t]
        last = delta + gamma * gae_lambda * (1.0 - dones[t]) * last
        advantages[t] = last
    return advantages, advantages + values
