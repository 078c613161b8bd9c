"""Per-player rewards for multiplayer stable-retro games, as a vector env can carry them.

With ``players=2`` a stable-retro env takes both players' buttons in one action (player
1's buttons, then player 2's) and, by default, returns player 1's reward only. Its
``multi_rewards`` switch makes ``step`` return a list with one reward per player, which no
vector env can hold: the batched reward is an array of shape ``(num_envs,)``.

:class:`PlayerRewards` (``retrovec.make(..., multi_rewards=True)``) keeps the scalar reward
exactly what it was, **player 1's reward**, so single-agent code and wrappers see the
usual env, and adds every player's reward to the step info as ``info["rewards"]``, a
``float64`` array of shape ``(players,)``. Batched by the vector env, that is
``infos["rewards"]``, shape ``(num_envs, players)``. For self-play, train on
``infos["rewards"][:, p]`` for player ``p``.

Example:
    >>> import retrovec
    >>> envs = retrovec.make("Pong-Atari2600-v0", 4, players=2,
    ...                      multi_rewards=True)  # doctest: +SKIP
    >>> envs.single_action_space  # doctest: +SKIP
    MultiBinary(16)
    >>> obs, infos = envs.reset(seed=0)  # doctest: +SKIP
    >>> obs, rewards, term, trunc, infos = envs.step(envs.action_space.sample())  # doctest: +SKIP
    >>> infos["rewards"].shape  # doctest: +SKIP
    (4, 2)
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

__all__ = ["PlayerRewards", "REWARDS_KEY"]

REWARDS_KEY = "rewards"
"""The step-info key that holds every player's reward."""


class PlayerRewards(gym.Wrapper):
    """Return player 1's reward and put every player's reward in ``info["rewards"]``.

    Sets ``env.unwrapped.multi_rewards = True`` and turns the per-player list that
    stable-retro then returns back into a scalar (player 1's reward, as without
    ``multi_rewards``). ``info["rewards"]`` is set by ``step`` only, never by ``reset``,
    so under ``AutoresetMode.SAME_STEP`` the rewards of an episode's last step are in
    ``info["final_info"]["rewards"]``, next to the rest of that step's info. With
    ``players=1`` it holds one reward. Put it outside wrappers that sum rewards over
    frames (:class:`retrovec.retro.wrappers.FrameSkip` sums the per-player arrays), as
    :func:`retrovec.make` does, so that ``info["rewards"]`` covers the same frames as the
    reward.

    Args:
        env: A :class:`stable_retro.RetroEnv` (possibly wrapped) with any number of
            players.

    Raises:
        TypeError: ``env.unwrapped`` has no ``multi_rewards`` switch and ``players``
            count, so it is not a stable-retro env.

    Example:
        >>> env = PlayerRewards(stable_retro.make("Pong-Atari2600-v0", players=2,
        ...                                       render_mode=None))  # doctest: +SKIP
        >>> env.reset()  # doctest: +SKIP
        >>> obs, reward, terminated, truncated, info = env.step(
        ...     env.action_space.sample())  # doctest: +SKIP
        >>> info["rewards"]  # doctest: +SKIP
        array([0., 0.])
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        retro = env.unwrapped
        if not hasattr(retro, "multi_rewards") or not hasattr(retro, "players"):
            raise TypeError(
                "multi_rewards=True needs stable-retro envs: the env (from make_fn) is "
                f"{type(retro).__name__}, which has no multi_rewards switch."
            )
        retro.multi_rewards = True
        self.players = int(retro.players)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step; the reward is player 1's, ``info["rewards"]`` every player's."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        rewards = np.asarray(reward, dtype=np.float64).reshape(self.players)
        info = dict(info)
        info[REWARDS_KEY] = rewards
        return observation, float(rewards[0]), terminated, truncated, info
