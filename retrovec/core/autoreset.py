"""Gymnasium's three autoreset conventions for one env, shared by every backend's worker.

Example:
    >>> import gymnasium as gym
    >>> env = gym.make("CartPole-v1")
    >>> _ = env.reset(seed=0)
    >>> *step, needs_reset = autoreset_step(env, 0, AutoresetMode.NEXT_STEP, needs_reset=True)
    >>> step[1:4], needs_reset  # a reset step: reward 0, no flags
    ([0.0, False, False], False)
"""

from __future__ import annotations

from typing import Any

from gymnasium import Env
from gymnasium.vector import AutoresetMode

__all__ = ["autoreset_step"]


def autoreset_step(
    env: Env, action: Any, mode: AutoresetMode, needs_reset: bool
) -> tuple[Any, Any, bool, bool, dict, bool]:
    """Step ``env`` the way gymnasium's vector envs do in ``mode``.

    Args:
        env: The env.
        action: Its action.
        mode: ``NEXT_STEP``: the step after an episode end resets (reward 0, no flags).
            ``SAME_STEP``: an episode end resets at once, the last observation and info
            go in ``info["final_obs"]`` and ``info["final_info"]``. ``DISABLED``: just step.
        needs_reset: Whether the previous step ended an episode (``NEXT_STEP`` only).

    Returns:
        ``(observation, reward, terminated, truncated, info, needs_reset)``, the last
        being what to pass to the next call.
    """
    if mode is AutoresetMode.NEXT_STEP:
        if needs_reset:
            observation, info = env.reset()
            return observation, 0.0, False, False, info, False
        observation, reward, terminated, truncated, info = env.step(action)
        return observation, reward, terminated, truncated, info, bool(terminated or truncated)
    if mode is AutoresetMode.SAME_STEP:
        observation, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            final_observation, final_info = observation, info
            observation, reset_info = env.reset()
            info = {"final_info": final_info, "final_obs": final_observation, **reset_info}
        return observation, reward, terminated, truncated, info, False
    if mode is AutoresetMode.DISABLED:
        observation, reward, terminated, truncated, info = env.step(action)
        return observation, reward, terminated, truncated, info, False
    raise ValueError(f"Unexpected autoreset_mode: {mode}")
