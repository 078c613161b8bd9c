"""Where each episode starts: a fixed state, a weighted draw per episode, or a snapshot.

``retrovec.make(game, state={"Level1": 3, "/path/Boss.state": 1})`` starts each episode
of each env from one of the states, drawn with probability proportional to its weight
(the weights are checked in the parent by :func:`check_state_weights`; unknown states
raise :class:`~retrovec.errors.UnknownStateError` there, as a plain ``state=`` does).
:class:`StartStates`, which :func:`retrovec.make` puts in every env, makes the draw:

* from its own generator, seeded by ``reset(seed=s)`` (env ``i`` of a vector env gets
  ``s + i``), so a seed fixes every env's sequence of start states; it is a stream of its
  own, so no-op starts and sticky actions draw exactly what they draw without it;
* at every reset, automatic ones included; the state drawn is ``info["state"]`` of that
  reset (the name or path as given), and ``RetroEnv.statename`` during the episode (as
  stable-retro's ``load_state`` sets it: ``"Level1.state"``);
* from weights that can change at runtime, for all envs or chosen ones::

      envs.call("set_state_weights", {"Level1": 1, "Boss": 1})           # every env
      envs.at([0, 1]).call("set_state_weights", {"Boss": 1})             # envs 0 and 1
      envs.at(0).get_attr("state_weights")                               # {'Boss': 1.0}

  taking effect at each env's next reset.

It also starts the next episode from a :class:`~retrovec.retro.snapshots.Snapshot` when
``load_snapshot(snapshot, when="next_reset")`` asks for it (that episode's
``info["state"]`` is the snapshot's label). Without a curriculum every episode starts
from the env's own state, as in stable-retro, and ``info["state"]`` names it (``None``
for power-on).

Example:
    >>> check_state_weights({"Level1": 3, "Level2": 1})
    {'Level1': 3.0, 'Level2': 1.0}
    >>> check_state_weights({"Level1": -1})
    Traceback (most recent call last):
    ...
    ValueError: state weights must be finite numbers >= 0, got -1 for 'Level1'
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["STATE_KEY", "StartStates", "WrapStartStates", "check_state_weights", "locate_states"]

STATE_KEY = "state"
"""The reset info key that names the state the episode started from."""

# The start-state draws are a stream of their own (a SeedSequence spawn key), so that
# reset(seed=s) gives them a generator independent of the env's np_random.
_STREAM = 0x5_7A7E


def check_state_weights(weights: Any) -> dict[str, float]:
    """Check a curriculum: a non-empty mapping of states to weights.

    Args:
        weights: ``{state: weight}``: each state a name (``"Level1"``) or the path of a
            ``.state`` file (``str`` or ``os.PathLike``), each weight a finite real
            number >= 0, not all zero.

    Returns:
        ``{state as str: weight as float}``, in the given order.

    Raises:
        TypeError: Not a mapping, or a state or weight of the wrong type.
        ValueError: Empty, a negative or non-finite weight, or weights that sum to zero.

    Example:
        >>> check_state_weights({"Level1": 0})
        Traceback (most recent call last):
        ...
        ValueError: state weights must not all be zero: {'Level1': 0.0}
    """
    if not isinstance(weights, Mapping):
        raise TypeError(f"state weights must be a mapping {{state: weight}}, got {weights!r}")
    if not weights:
        raise ValueError("state weights must name at least one state, got an empty mapping")
    checked: dict[str, float] = {}
    for state, weight in weights.items():
        if not isinstance(state, (str, os.PathLike)):
            raise TypeError(
                f"state weights' keys must be state names or .state paths, got {state!r}"
            )
        if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, (int, float, np.number)):
            raise TypeError(
                f"state weights must be numbers, got {weight!r} for {os.fspath(state)!r}"
            )
        value = float(weight)
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"state weights must be finite numbers >= 0, got {weight!r} for "
                f"{os.fspath(state)!r}"
            )
        checked[os.fspath(state)] = value
    if sum(checked.values()) <= 0:
        raise ValueError(f"state weights must not all be zero: {checked}")
    return checked


def locate_states(
    games: Any, weights: Mapping[str, float], inttype: Any, validate: bool = True
) -> dict[str, dict[str, str]]:
    """Where each state of a curriculum is, for each game: checked in the parent.

    Args:
        games: The game ids of the envs (repeats are checked once).
        weights: A curriculum from :func:`check_state_weights`.
        inttype: The integrations to search.
        validate: Check each state against the game's integration
            (:func:`~retrovec.retro.games.validate_state`); ``False`` only makes the paths
            of existing files absolute (a worker may run in another directory).

    Returns:
        ``{game: {state: a state name of the game, or an absolute .state path}}``.

    Raises:
        UnknownStateError: A game has no such state (``validate`` only).

    Example:
        >>> locate_states(["Airstriker-Genesis-v0"], {"Level1": 1.0}, None)
        {'Airstriker-Genesis-v0': {'Level1': 'Level1'}}
    """
    import stable_retro

    from retrovec.retro.games import validate_state

    if inttype is None:
        inttype = stable_retro.data.Integrations.DEFAULT
    located: dict[str, dict[str, str]] = {}
    for game in dict.fromkeys(games):
        located[game] = {}
        for state in weights:
            if validate:
                where = validate_state(game, state, inttype)
            else:
                where = os.path.abspath(state) if os.path.isfile(state) else state
            located[game][state] = os.fspath(where)
    return located


def _statename(label: str) -> str:
    """The ``RetroEnv.statename`` stable-retro's ``load_state(label)`` would set."""
    return label if label.endswith(".state") else label + ".state"


def _label(statename: Any) -> str | None:
    """``RetroEnv.statename`` as given to ``make``: ``"Level1.state"`` -> ``"Level1"``."""
    if not isinstance(statename, str):
        return None
    if os.path.basename(statename) == statename and statename.endswith(".state"):
        return statename[: -len(".state")]
    return statename


class StartStates(gym.Wrapper):
    """Chooses each episode's start state; see the module docstring.

    Args:
        env: An env whose ``unwrapped`` is a :class:`stable_retro.RetroEnv`.
        weights: A curriculum (checked by :func:`check_state_weights`), or ``None``: every
            episode starts from the env's own state.
        locations: ``{game: {state: where}}`` from :func:`locate_states`: where each
            state of ``weights`` is for this env's game, a state name or an absolute
            ``.state`` path. States missing here are resolved in this process.
        inttype: The integrations to search for state names.

    Attributes:
        state_weights: The current curriculum (``None``: none).
    """

    def __init__(
        self,
        env: gym.Env,
        weights: Mapping[str, float] | None = None,
        locations: Mapping[str, Mapping[str, str]] | None = None,
        inttype: Any = None,
    ) -> None:
        import stable_retro

        if not isinstance(env.unwrapped, stable_retro.RetroEnv):
            raise TypeError(
                "StartStates needs a stable-retro env, got one whose unwrapped env is "
                f"{type(env.unwrapped).__name__}"
            )
        super().__init__(env)
        self._inttype = stable_retro.data.Integrations.DEFAULT if inttype is None else inttype
        self._locations = dict((locations or {}).get(env.unwrapped.gamename, {}))
        self._states: dict[str, bytes] = {}  # each state's emulator bytes, read once
        self._rng = np.random.default_rng()
        self._next: tuple[bytes, str] | None = None  # a snapshot to start the next episode
        self._own: tuple[Any, Any] | None = None  # (initial_state, statename) to go back to
        self.state_weights: dict[str, float] | None = None
        if weights is not None:
            self.set_state_weights(weights)

    @classmethod
    def wrap(cls, env: gym.Env, **kwargs: Any) -> gym.Env:
        """``StartStates(env, **kwargs)`` for a stable-retro env; any other env (a
        ``make_fn`` may build one) unchanged, unless ``kwargs`` hold a curriculum."""
        import stable_retro

        if isinstance(env.unwrapped, stable_retro.RetroEnv):
            return cls(env, **kwargs)
        if kwargs.get("weights") is not None:
            raise TypeError(
                "state= weights need stable-retro envs: the env (from make_fn) is "
                f"{type(env.unwrapped).__name__}"
            )
        return env

    def set_state_weights(self, weights: Mapping[Any, Any] | None) -> None:
        """Draw the start state of every later episode from ``weights``.

        Args:
            weights: ``{state: weight}`` as in :func:`check_state_weights`, or ``None``
                to start from the env's own state again. New states are read now, so a
                typo fails here, not at the next reset.

        Raises:
            UnknownStateError: The game has no such state.
            TypeError, ValueError: As :func:`check_state_weights`.
        """
        if weights is None:
            self.state_weights = None
            return
        checked = check_state_weights(weights)
        for state in checked:
            self._read(state)
        self.state_weights = checked

    def start_next_episode_from(self, state: bytes, label: str) -> None:
        """Start the next episode (only that one) from the emulator state ``state``,
        labelled ``label`` in ``statename`` and ``info["state"]``."""
        if not isinstance(state, bytes):
            raise TypeError(f"state must be the emulator's bytes, got {type(state).__name__}")
        self._next = (state, str(label))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Choose the start state, set ``RetroEnv.initial_state``/``statename``, reset."""
        retro = self.unwrapped
        if seed is not None:
            self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM,)))
        if self._own is not None:  # the last episode started from a snapshot
            retro.initial_state, retro.statename = self._own
            self._own = None
        if self._next is not None:
            self._own = (retro.initial_state, retro.statename)
            (retro.initial_state, label), self._next = self._next, None
            retro.statename = _statename(label)
        elif self.state_weights is not None:
            names = list(self.state_weights)
            weights = np.array(list(self.state_weights.values()))
            label = names[int(self._rng.choice(len(names), p=weights / weights.sum()))]
            retro.initial_state, retro.statename = self._read(label), _statename(label)
        else:
            label = _label(retro.statename)
        observation, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info[STATE_KEY] = label
        return observation, info

    def _read(self, state: str) -> bytes:
        """The emulator bytes of ``state`` (a name of the game or a ``.state`` path)."""
        if state not in self._states:
            import stable_retro

            from retrovec.retro.games import validate_state

            game = self.unwrapped.gamename
            location = self._locations.get(state)
            if location is None:
                location = validate_state(game, state, self._inttype)
            path = os.fspath(location)
            if os.path.basename(path) == path:  # a state name of the game
                filename = path if path.endswith(".state") else path + ".state"
                path = stable_retro.data.get_file_path(game, filename, self._inttype)
                if path is None:
                    from retrovec.errors import UnknownStateError

                    raise UnknownStateError(f"Game {game!r} has no state {state!r}.")
            with gzip.open(path, "rb") as file:
                self._states[state] = file.read()
        return self._states[state]


@dataclasses.dataclass(frozen=True)
class WrapStartStates:
    """``env -> StartStates.wrap(env, ...)``, as :func:`retrovec.make` passes it to every
    worker: picklable without cloudpickle, and equal to its unpickled copy.

    Example:
        >>> import pickle
        >>> wrap = WrapStartStates({"Level1": 1.0})
        >>> pickle.loads(pickle.dumps(wrap)) == wrap
        True
    """

    weights: Mapping[str, float] | None = None
    locations: Mapping[str, Mapping[str, str]] | None = None
    inttype: Any = None

    def __call__(self, env: gym.Env) -> gym.Env:
        return StartStates.wrap(
            env, weights=self.weights, locations=self.locations, inttype=self.inttype
        )
