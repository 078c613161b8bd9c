"""Game variables (the RAM values a game's ``data.json`` names) on demand and at reset.

stable-retro puts every variable of the game's data file in the info of each ``step``
(``data.lookup_all()``), but its ``reset`` returns an empty info, and the
``GameData`` that knows the variables stays in the worker (it cannot be pickled).
:class:`GameVariables`, which :func:`retrovec.make` puts in every env right above the
preprocessing, fixes both:

* ``reset`` returns an info that starts with the same variables as the step info, with
  the values of the frame the episode starts on (on the fast path and off it, with or
  without no-op starts), so batched reset infos have the same keys as batched step infos;
* :meth:`GameVariables.lookup_value` and :meth:`GameVariables.game_variables` read the
  live values of chosen envs through the vector env::

      envs.at([0, 2]).call("lookup_value", "score")   # (score of env 0, score of env 2)
      envs.at(1).call("game_variables")               # {'gameover': 2, 'lives': 3, ...}
      envs.at(1).call("set_value", "lives", 1)        # stable-retro's own RetroEnv.set_value

Example:
    >>> import retrovec
    >>> with retrovec.make("Airstriker-Genesis-v0", num_envs=2) as envs:
    ...     observations, infos = envs.reset(seed=0)
    ...     sorted(key for key in infos if not key.startswith("_"))
    ...     envs.call("lookup_value", "lives")
    ['gameover', 'lives', 'score', 'state']
    (3, 3)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["GameVariables"]


def _is_retro(env: gym.Env) -> bool:
    import stable_retro

    return isinstance(env.unwrapped, stable_retro.RetroEnv)


class GameVariables(gym.Wrapper):
    """Puts the game variables in the reset info and answers variable look-ups.

    Args:
        env: An env whose ``unwrapped`` is a :class:`stable_retro.RetroEnv`.

    Raises:
        TypeError: ``env.unwrapped`` is not a stable-retro env.
    """

    def __init__(self, env: gym.Env) -> None:
        if not _is_retro(env):
            raise TypeError(
                "GameVariables needs a stable-retro env, got one whose unwrapped env is "
                f"{type(env.unwrapped).__name__}"
            )
        super().__init__(env)

    @classmethod
    def wrap(cls, env: gym.Env) -> gym.Env:
        """``GameVariables(env)`` for a stable-retro env; any other env (a ``make_fn``
        may build one) unchanged."""
        return cls(env) if _is_retro(env) else env

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset; the info holds every game variable first (as in ``step``), then the
        keys the inner reset set."""
        observation, info = self.env.reset(seed=seed, options=options)
        return observation, {**self.unwrapped.data.lookup_all(), **info}

    def lookup_value(self, name: str) -> Any:
        """The current value of the game variable ``name`` (``data.lookup_value``).

        Raises:
            KeyError: The game's data file has no such variable; the message lists them.
        """
        data = self.unwrapped.data
        try:
            return data.lookup_value(name)
        except KeyError:
            raise KeyError(
                f"{self.unwrapped.gamename} has no game variable {name!r}; its data file "
                f"defines {sorted(data.lookup_all())}"
            ) from None

    def game_variables(self) -> dict[str, Any]:
        """Every game variable's current value (``data.lookup_all()``), as in ``info``."""
        return dict(self.unwrapped.data.lookup_all())
