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

``use_restricted_actions=Actions.MULTI_DISCRETE`` with two or more players crashes on the
first step in stable-retro itself (``RetroEnv.action_to_array`` slices each player's part
of the action by the number of buttons instead of the number of button groups, and raises
``IndexError``). :func:`fix_multi_discrete`, which :func:`retrovec.make` and
:func:`retrovec.make_env` apply, gives such an env retrovec's own decoding: the action is
``MultiDiscrete([len(g) for g in button_combos] * players)``, player 1's choices (one per
button group) then player 2's, each player's buttons those of its chosen combinations.
"""

from __future__ import annotations

import types
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import stable_retro
from stable_retro import Actions

__all__ = ["REWARDS_KEY", "PlayerRewards", "fix_multi_discrete", "multi_discrete_to_buttons"]

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


def multi_discrete_to_buttons(
    button_combos: Any, num_buttons: int, players: int, action: Any
) -> list[np.ndarray]:
    """Decode a ``MULTI_DISCRETE`` action of ``players`` players into button masks.

    Args:
        button_combos: ``RetroEnv.button_combos``: one list per button group of the
            combinations (bit masks over the buttons) that group can press.
        num_buttons: The number of buttons of one player.
        players: The number of players.
        action: ``len(button_combos) * players`` indices: player 1's choice in each group,
            then player 2's, and so on.

    Returns:
        One ``uint8`` array of ``num_buttons`` 0/1 values per player, as
        ``RetroEnv.action_to_array`` returns them.

    Raises:
        ValueError: ``action`` has the wrong length or an index outside its group.

    Example:
        >>> combos = [[0, 1], [0, 16, 32], [0, 64, 128]]  # Atari: BUTTON, UP/DOWN, LEFT/RIGHT
        >>> [m.tolist() for m in multi_discrete_to_buttons(combos, 8, 2, [0, 1, 0, 1, 0, 2])]
        [[0, 0, 0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 1]]
    """
    groups = len(button_combos)
    values = np.asarray(action).reshape(-1)
    if values.shape != (groups * players,):
        raise ValueError(
            f"a MULTI_DISCRETE action of {players} player(s) holds {groups} choices per "
            f"player, {groups * players} in all, got {np.asarray(action).tolist()!r}"
        )
    masks = []
    for p in range(players):
        bits = 0
        for g, combos in enumerate(button_combos):
            choice = int(values[p * groups + g])
            if not 0 <= choice < len(combos):
                raise ValueError(
                    f"player {p + 1}'s choice {choice} in button group {g} is out of range: "
                    f"the group has {len(combos)} combinations"
                )
            bits |= int(combos[choice])
        masks.append(((bits >> np.arange(num_buttons)) & 1).astype(np.uint8))
    return masks


def _action_to_array(self: Any, action: Any) -> list[np.ndarray]:
    return multi_discrete_to_buttons(self.button_combos, self.num_buttons, self.players, action)


def fix_multi_discrete(env: gym.Env) -> bool:
    """Make a multiplayer ``MULTI_DISCRETE`` stable-retro env decode its actions right.

    Replaces ``action_to_array`` of ``env.unwrapped`` (on that instance only) by
    :func:`multi_discrete_to_buttons`, when the env is a ``stable_retro.RetroEnv`` with
    ``use_restricted_actions=Actions.MULTI_DISCRETE``, two or more players, and
    stable-retro's own ``action_to_array`` (a subclass's own is left alone). ``step``,
    ``get_action_meaning``, movies and retrovec's fast path all go through it. The action
    space is stable-retro's, unchanged.

    Args:
        env: Any env, possibly wrapped.

    Returns:
        Whether the env was changed.

    Example:
        >>> env = stable_retro.make("Pong-Atari2600-v0", players=2, render_mode=None,
        ...     use_restricted_actions=Actions.MULTI_DISCRETE)  # doctest: +SKIP
        >>> fix_multi_discrete(env)  # doctest: +SKIP
        True
        >>> env.action_space  # doctest: +SKIP
        MultiDiscrete([2 3 3 2 3 3])
    """
    retro = env.unwrapped
    if not isinstance(retro, stable_retro.RetroEnv):
        return False
    own = type(retro).action_to_array is stable_retro.RetroEnv.action_to_array
    if retro.use_restricted_actions != Actions.MULTI_DISCRETE or retro.players < 2 or not own:
        return False
    retro.action_to_array = types.MethodType(_action_to_array, retro)
    return True
