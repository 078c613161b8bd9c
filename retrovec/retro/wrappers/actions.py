"""Action-side helpers: a discrete action space from button combinations, and the no-op.

stable-retro's own action modes (``use_restricted_actions=``) are passed to
:func:`retrovec.make` unchanged:

==================================  ====================  ===============================
``stable_retro.Actions``            one env's space       Airstriker (12 buttons)
==================================  ====================  ===============================
``FILTERED`` (default)              ``MultiBinary(B)``    ``MultiBinary(12)``, invalid
                                                          combinations filtered out
``ALL``                             ``MultiBinary(B)``    ``MultiBinary(12)``, unfiltered
``DISCRETE``                        ``Discrete(n)``       ``Discrete(126)``: every valid
                                                          combination, mixed radix
``MULTI_DISCRETE``                  ``MultiDiscrete``     ``MultiDiscrete([3 3 14])``: one
                                                          choice per button group
==================================  ====================  ===============================

:class:`Discretizer` gives a smaller ``Discrete`` space of hand-picked combinations, as
stable-retro's ``examples/discretizer.py`` does. Given combinations per game or per console
(a mapping), it is also the common action space of envs that play games with different
buttons in one vector env (``retrovec.make(game=[...])``): action ``i`` means the same move
in every game, pressed with each game's own buttons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box, Discrete, MultiBinary, MultiDiscrete
from stable_retro import Actions

__all__ = ["Discretizer", "noop_action"]


def noop_action(env: gym.Env) -> Any:
    """The action of ``env.action_space`` that presses no button.

    * ``MultiBinary`` (stable-retro's ``FILTERED`` and ``ALL``): all zeros.
    * ``Discrete`` / ``MultiDiscrete`` of a stable-retro env (``DISCRETE`` /
      ``MULTI_DISCRETE``): the index of the empty combination in each button group
      (``env.unwrapped.button_combos``), encoded as ``RetroEnv.action_to_array`` decodes it.
    * Other ``Discrete`` / ``MultiDiscrete`` spaces: the first action (``start``); ALE's
      action 0 is ``NOOP``.
    * ``Box``: zeros, if the bounds allow them.

    Args:
        env: The env whose no-op is wanted.

    Returns:
        An element of ``env.action_space``.

    Raises:
        ValueError: The space has no obvious no-op; pass one explicitly.

    Example:
        >>> import gymnasium as gym
        >>> noop_action(gym.make("CartPole-v1"))
        np.int64(0)
    """
    space = env.action_space
    retro = env.unwrapped
    mode = getattr(retro, "use_restricted_actions", None)
    combos = getattr(retro, "button_combos", None)
    if isinstance(space, MultiBinary):
        return np.zeros(space.shape, space.dtype)
    restricted = mode in (Actions.DISCRETE, Actions.MULTI_DISCRETE)
    if isinstance(space, (Discrete, MultiDiscrete)) and combos is not None and restricted:
        groups = list(combos) * getattr(retro, "players", 1)
        for group in groups:
            if 0 not in group:
                raise ValueError(
                    f"no no-op action: the button group {list(group)} has no empty "
                    "combination (0); pass noop_action explicitly"
                )
        positions = [list(group).index(0) for group in groups]
        if isinstance(space, MultiDiscrete):
            return np.array(positions[: space.shape[0]], dtype=space.dtype).reshape(space.shape)
        index, radix = 0, 1  # mixed radix, first group least significant, as
        for position, group in zip(positions, groups, strict=True):  # action_to_array decodes
            index += position * radix
            radix *= len(group)
        return np.int64(index)
    if isinstance(space, Discrete):
        return np.int64(space.start)
    if isinstance(space, MultiDiscrete):
        return np.array(space.start, dtype=space.dtype)
    if isinstance(space, Box):
        zeros = np.zeros(space.shape, space.dtype)
        if space.contains(zeros):
            return zeros
    raise ValueError(f"no obvious no-op action in {space}; pass noop_action explicitly")


class Discretizer(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """A ``Discrete(len(combos))`` action space, each action pressing one button combination.

    As stable-retro's ``examples/discretizer.py``, with input checks: action ``i`` presses
    exactly the buttons named in ``combos[i]`` (``[]`` presses none) and passes the
    matching ``MultiBinary`` array to the wrapped env, which still applies its own
    filtering under ``Actions.FILTERED``.

    Args:
        env: A stable-retro env with the ``MultiBinary`` action space of one player
            (``use_restricted_actions`` ``FILTERED`` or ``ALL``, ``players=1``).
        combos: Button combinations, each a sequence of button names from
            ``env.unwrapped.buttons``, e.g. ``[[], ["LEFT"], ["RIGHT", "B"]]``. Or a
            mapping from game ids (``env.unwrapped.gamename``) or consoles
            (``env.unwrapped.system``: ``"Genesis"``, ``"Atari2600"``, ``"Nes"``, ...)
            to such sequences, all of one length: the env uses its game's entry, else its
            console's. One mapping then serves every env of a vector env that plays
            several games, and they share the space ``Discrete(n)``.

    Raises:
        ValueError: An unknown button name (the message lists the valid ones), no
            combos, a mapping whose entries differ in length or that has no entry for the
            env's game or console, or an action space that is not one player's
            ``MultiBinary``.
        TypeError: A combo that is a string rather than a sequence of names.

    Example:
        >>> import functools, retrovec
        >>> from retrovec.retro.wrappers import Discretizer
        >>> combos = [[], ["LEFT"], ["RIGHT"], ["B"], ["LEFT", "B"], ["RIGHT", "B"]]
        >>> envs = retrovec.make("Airstriker-Genesis-v0", num_envs=2, wrappers=[
        ...     functools.partial(Discretizer, combos=combos)])  # doctest: +SKIP
        >>> envs.single_action_space, envs.action_space  # doctest: +SKIP
        (Discrete(6), MultiDiscrete([6 6]))

        Two consoles in one vector env, the same four moves in each:

        >>> moves = {"Genesis": [[], ["LEFT"], ["RIGHT"], ["B"]],
        ...          "Atari2600": [[], ["LEFT"], ["RIGHT"], ["BUTTON"]]}
        >>> envs = retrovec.make(["Airstriker-Genesis-v0", "Breakout-Atari2600-v0"],
        ...                      preprocessing=retrovec.Preprocessing.atari(),
        ...                      wrappers=[functools.partial(Discretizer, combos=moves)]
        ...                      )  # doctest: +SKIP
        >>> envs.single_action_space  # doctest: +SKIP
        Discrete(4)
    """

    def __init__(self, env: gym.Env, combos: Sequence[Sequence[str]]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, combos=combos)
        gym.ActionWrapper.__init__(self, env)
        space = env.action_space
        buttons = getattr(env.unwrapped, "buttons", None)
        if buttons is None:
            raise ValueError("Discretizer needs a stable-retro env: env.unwrapped has no `buttons`")
        if not isinstance(space, MultiBinary) or space.shape != (len(buttons),):
            raise ValueError(
                "Discretizer needs the MultiBinary action space of one player "
                "(use_restricted_actions=Actions.FILTERED or Actions.ALL, players=1) with "
                f"{len(buttons)} buttons, got {space}"
            )
        if isinstance(combos, Mapping):
            combos = self._combos_of(env.unwrapped, combos)
        if isinstance(combos, str) or not isinstance(combos, Sequence) or not combos:
            raise ValueError(
                "combos must be a non-empty sequence of button combinations, e.g. "
                f"[[], ['LEFT'], ['RIGHT', 'B']], got {combos!r}"
            )
        valid = [name for name in buttons if name is not None]
        masks = np.zeros((len(combos), len(buttons)), dtype=space.dtype)
        for i, combo in enumerate(combos):
            if isinstance(combo, str) or not isinstance(combo, Sequence):
                raise TypeError(
                    f"combos[{i}] must be a sequence of button names such as ['LEFT'], "
                    f"got {combo!r}"
                )
            for name in combo:
                if name is None or name not in buttons:
                    raise ValueError(
                        f"combos[{i}] names the unknown button {name!r}; the buttons of "
                        f"{type(env.unwrapped).__name__} are {valid}"
                    )
                masks[i, buttons.index(name)] = 1
        self.combos: tuple[tuple[str, ...], ...] = tuple(tuple(combo) for combo in combos)
        self._masks = masks
        self.action_space = Discrete(len(masks))

    @staticmethod
    def _combos_of(
        retro: Any, table: Mapping[str, Sequence[Sequence[str]]]
    ) -> Sequence[Sequence[str]]:
        """The entry of ``table`` for ``retro``'s game, else for its console."""
        lengths = {}
        for key, entry in table.items():
            if isinstance(entry, str) or not isinstance(entry, Sequence) or not entry:
                raise ValueError(
                    f"combos[{key!r}] must be a non-empty sequence of button combinations, "
                    f"e.g. [[], ['LEFT'], ['RIGHT', 'B']], got {entry!r}"
                )
            lengths[key] = len(entry)
        if len(set(lengths.values())) > 1:
            raise ValueError(
                "every entry of a combos mapping must list the same number of combinations, "
                f"so that every game shares one Discrete space; they list {lengths}"
            )
        game, system = getattr(retro, "gamename", None), getattr(retro, "system", None)
        for key in (game, system):
            if key is not None and key in table:
                return table[key]
        raise ValueError(
            f"combos has no entry for the game {game!r} nor its console {system!r}; it has "
            f"{list(table)}"
        )

    def action(self, action: Any) -> np.ndarray:
        """Return the button array of combination ``action`` (a new array)."""
        return self._masks[int(action)].copy()

    def get_action_meaning(self, action: int) -> list[str]:
        """The button names that ``action`` presses."""
        return list(self.combos[int(action)])
