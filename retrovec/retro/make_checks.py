"""The argument checks of :func:`retrovec.make`, run in the parent before any worker starts.

Kept apart from :mod:`retrovec.retro.factory` so that ``make`` reads as what it builds.
Everything here is cheap and builds no emulator (stable-retro allows one per process).

The arguments that may differ per env (``game``, ``state``, ``scenario``, ``info``) are
either one value for every env or a sequence with exactly one value per env; a string is
always one value:

Example:
    >>> per_env("game", ["Pong-Atari2600-v0", "Breakout-Atari2600-v0"], 2, is_game, "a game id")
    ['Pong-Atari2600-v0', 'Breakout-Atari2600-v0']
    >>> per_env("game", "Pong-Atari2600-v0", 2, is_game, "a game id")
    ['Pong-Atari2600-v0', 'Pong-Atari2600-v0']
    >>> infer_num_envs(None, {"game": ["A", "B", "C"], "scenario": None}, default=8)
    3
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import gymnasium as gym

from retrovec.errors import InvalidGameError, SpacesMismatchError
from retrovec.retro.games import validate_data_file, validate_game, validate_state

__all__ = [
    "absolute_file",
    "check_num_envs",
    "check_wrappers",
    "env_label",
    "infer_num_envs",
    "is_data_file",
    "is_game",
    "is_int_at_least",
    "per_env",
    "probe_spaces",
    "raise_for_envs",
    "spaces_mismatch",
    "validate_envs",
]

T = TypeVar("T")
Wrapper = Callable[[gym.Env], gym.Env]


def is_int_at_least(value: object, low: int) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``low``.

    Example:
        >>> is_int_at_least(3, 1), is_int_at_least(True, 1), is_int_at_least(0, 1)
        (True, False, False)
    """
    try:
        index = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return not isinstance(value, bool) and index >= low


def check_num_envs(num_envs: object) -> int:
    """Return ``num_envs`` as an int, or raise if it is not an int >= 1.

    Example:
        >>> check_num_envs(4)
        4
        >>> check_num_envs(0)
        Traceback (most recent call last):
        ...
        retrovec.errors.InvalidGameError: num_envs must be an int >= 1, got 0
    """
    if isinstance(num_envs, bool) or not hasattr(num_envs, "__index__"):
        raise TypeError(f"num_envs must be an int >= 1, got {num_envs!r}")
    n = operator.index(num_envs)  # type: ignore[arg-type]
    if n < 1:
        raise InvalidGameError(f"num_envs must be an int >= 1, got {n}")
    return n


def check_wrappers(wrappers: Sequence[Wrapper]) -> tuple[Wrapper, ...]:
    """Return ``wrappers`` as a tuple, or raise if it is not a sequence of callables.

    Example:
        >>> check_wrappers([gym.wrappers.RecordEpisodeStatistics])  # doctest: +ELLIPSIS
        (<class '...RecordEpisodeStatistics'>,)
    """
    if callable(wrappers):
        raise TypeError(
            f"wrappers must be a sequence of callables env -> env, got {wrappers!r}: "
            "for a single wrapper pass a list, wrappers=[wrapper]"
        )
    if not isinstance(wrappers, Sequence) or isinstance(wrappers, str):
        raise TypeError(
            "wrappers must be a sequence of callables env -> env, applied in order, got "
            f"{wrappers!r}"
        )
    for i, wrapper in enumerate(wrappers):
        if not callable(wrapper):
            raise TypeError(f"wrappers[{i}] must be a callable env -> env, got {wrapper!r}")
    return tuple(wrappers)


def is_game(value: object) -> bool:
    """Whether ``value`` is one game id (a string)."""
    return isinstance(value, str)


def is_data_file(value: object) -> bool:
    """Whether ``value`` is one ``scenario`` / ``info``: ``None``, a name or a path."""
    return value is None or isinstance(value, (str, os.PathLike))


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, Mapping))


def infer_num_envs(
    num_envs: int | None, per_env_args: Mapping[str, Any], default: int
) -> int:
    """The number of envs: ``num_envs`` if given, else the length of the per-env sequences.

    Args:
        num_envs: What the caller passed, or ``None``.
        per_env_args: The arguments that may be sequences with one value per env, by name.
        default: The count when ``num_envs`` is ``None`` and no argument is a sequence.

    Raises:
        InvalidGameError: Two sequences of different lengths (with ``num_envs=None``).

    Example:
        >>> infer_num_envs(None, {"game": ["A", "B"], "state": ["x", "y", "z"]}, default=8)
        Traceback (most recent call last):
        ...
        retrovec.errors.InvalidGameError: game lists 2 values but state lists 3: pass sequences of one length, one value per env (or pass num_envs).
    """
    if num_envs is not None:
        return check_num_envs(num_envs)
    lengths = {name: len(v) for name, v in per_env_args.items() if _is_sequence(v)}
    if not lengths:
        return check_num_envs(default)
    (first, n), *rest = lengths.items()
    for name, length in rest:
        if length != n:
            raise InvalidGameError(
                f"{first} lists {n} values but {name} lists {length}: pass sequences of one "
                "length, one value per env (or pass num_envs)."
            )
    return check_num_envs(n)


def per_env(
    name: str,
    value: Any,
    num_envs: int,
    is_one: Callable[[object], bool],
    expected: str,
) -> list[Any]:
    """One value per env: ``value`` repeated, or the sequence ``value`` checked.

    Args:
        name: The argument's name, for messages.
        value: One value for every env, or a sequence with one per env.
        num_envs: The number of envs.
        is_one: Whether a value is one env's value (a string always is).
        expected: What one value is, in words, for messages.

    Returns:
        A new list of ``num_envs`` values.

    Raises:
        TypeError: ``value`` is neither one value nor a sequence of them.
        InvalidGameError: A sequence whose length is not ``num_envs``.

    Example:
        >>> per_env("game", ["Pong-Atari2600-v0"], 2, is_game, "a game id")
        Traceback (most recent call last):
        ...
        retrovec.errors.InvalidGameError: game lists 1 games but num_envs is 2: pass one game for every env, or a sequence with exactly one game per env.
        >>> per_env("game", ["Pong-Atari2600-v0", 7], 2, is_game, "a game id")
        Traceback (most recent call last):
        ...
        TypeError: game[1] must be a game id, got 7
    """
    if is_one(value):
        return [value] * num_envs
    if not _is_sequence(value):
        raise TypeError(
            f"{name} must be {expected}, or a sequence with one of those per env, got {value!r}"
        )
    values = list(value)
    if len(values) != num_envs:
        raise InvalidGameError(
            f"{name} lists {len(values)} {name}s but num_envs is {num_envs}: pass one {name} "
            f"for every env, or a sequence with exactly one {name} per env."
        )
    for i, one in enumerate(values):
        if not is_one(one):
            raise TypeError(f"{name}[{i}] must be {expected}, got {one!r}")
    return values


def absolute_file(value: T) -> T | str:
    """An existing file's absolute path as a ``str``; anything else unchanged.

    stable-retro takes state and data file paths as strings only (it calls ``.endswith``
    on them), and a worker may run in another working directory (a ``make_fn`` may
    ``chdir``, a Ray actor runs elsewhere), so :func:`retrovec.make` resolves paths here,
    in the parent, even when it skips the integration checks. A ``str`` that names no
    file (a state name such as ``"Level1"``) is returned unchanged, a ``PathLike`` that
    names no file as its ``str``, and non-paths unchanged.

    Example:
        >>> import pathlib
        >>> absolute_file(pathlib.Path("setup.cfg")) == os.path.abspath("setup.cfg")
        True
        >>> absolute_file("Level1"), absolute_file(None)
        ('Level1', None)
    """
    if not isinstance(value, (str, os.PathLike)):
        return value
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"expected a str path, got the bytes path {value!r}")
    if os.path.isfile(path):
        return os.path.abspath(path)
    return path


def env_label(indices: Sequence[int]) -> str:
    """``"env 2"`` or ``"envs 2, 5"``.

    Example:
        >>> env_label([2]), env_label([2, 5])
        ('env 2', 'envs 2, 5')
    """
    return ("env " if len(indices) == 1 else "envs ") + ", ".join(map(str, indices))


def raise_for_envs(error: Exception, indices: Sequence[int]) -> None:
    """Raise ``error`` again, as its own type, with the envs it concerns named first.

    Example:
        >>> raise_for_envs(InvalidGameError("Unknown game 'X'."), [2])
        Traceback (most recent call last):
        ...
        retrovec.errors.InvalidGameError: env 2: Unknown game 'X'.
    """
    try:
        named = type(error)(f"{env_label(indices)}: {error}")
    except TypeError:  # an exception type with another constructor: keep it, add a note
        error.add_note(f"Raised for {env_label(indices)}.")
        raise error from None
    raise named from None


def validate_envs(
    games: Sequence[str],
    states: list[Any],
    scenarios: list[Any],
    infos: list[Any],
    inttype: Any,
    name_envs: bool,
) -> None:
    """Check every env's game, state, scenario and info against stable-retro's files.

    Each distinct value is checked once. ``states``, ``scenarios`` and ``infos`` are
    replaced in place by what to pass to stable-retro (absolute ``str`` paths for files).

    Args:
        games: Each env's game id.
        states: Each env's state.
        scenarios: Each env's scenario (``None``: the game's).
        infos: Each env's info (``None``: the game's).
        inttype: The integrations to search, already resolved.
        name_envs: Put the envs concerned first in error messages (``"env 2: ..."``),
            for arguments given per env.

    Raises:
        UnknownGameError, RomNotImportedError, UnknownStateError, InvalidGameError: As
            :func:`retrovec.retro.games.validate_game` and friends, naming the envs.

    Example:
        >>> states, none = ["Level1", "Level2"], [None, None]
        >>> validate_envs(["Airstriker-Genesis-v0"] * 2, states, none, none, None, True)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        retrovec.errors.UnknownStateError: env 1: Game 'Airstriker-Genesis-v0' has no state 'Level2'...
    """
    from stable_retro.data import Integrations

    inttype = Integrations.DEFAULT if inttype is None else inttype

    def check(values: list[Any], key: Callable[[int], Any], one: Callable[[int], Any]) -> None:
        done: dict[Any, Any] = {}
        for i in range(len(values)):
            k = key(i)
            if k not in done:
                try:
                    done[k] = one(i)
                except InvalidGameError as error:
                    if not name_envs:
                        raise
                    raise_for_envs(error, [j for j in range(len(values)) if key(j) == k])
            values[i] = done[k]

    check(list(games), lambda i: games[i], lambda i: validate_game(games[i], inttype))
    check(states, lambda i: (games[i], states[i]),
          lambda i: validate_state(games[i], states[i], inttype))
    for kind, values in (("scenario", scenarios), ("info", infos)):
        check(values, lambda i, v=values: (games[i], v[i]),
              lambda i, v=values, kind=kind: validate_data_file(games[i], v[i], kind, inttype))


SpacesProbe = Callable[[int], tuple[gym.Space, gym.Space]]
"""Builds env ``i`` alone and returns its ``(observation_space, action_space)``."""

_OBSERVATION_HINT = (
    "Make the observations match with preprocessing that gives every game one shape, e.g. "
    "preprocessing=Preprocessing(resize=(84, 84)) or Preprocessing.atari()."
)
_ACTION_HINT = (
    "Make the actions match with a common action mapping: games of one console share "
    "their buttons (MultiBinary, or use_restricted_actions=Actions.DISCRETE when their "
    "valid combinations agree); across consoles, map named moves to each game's buttons "
    "with retrovec.retro.wrappers.Discretizer, e.g. wrappers=[functools.partial("
    "Discretizer, combos={'Genesis': [[], ['LEFT'], ['RIGHT'], ['B']], 'Atari2600': [[], "
    "['LEFT'], ['RIGHT'], ['BUTTON']]})]."
)


def spaces_mismatch(
    error: SpacesMismatchError,
    games: Sequence[str],
    scenarios: Sequence[Any],
    infos: Sequence[Any],
    probe: SpacesProbe | None = None,
) -> SpacesMismatchError:
    """The error of a vector env whose envs play different games (or scenarios, infos) and
    whose spaces differ: which envs play what, their spaces, and how to make them match.

    Args:
        error: What the vector env raised: it names the first env whose spaces differ
            from env 0's and shows both spaces.
        games: Each env's game.
        scenarios: Each env's scenario.
        infos: Each env's info.
        probe: If given, called with the first env of each group of envs that play the
            same game, scenario and info, to show every group's spaces (the vector env
            stops at the first difference). A probe that fails leaves them out.

    Example:
        >>> from gymnasium.spaces import Box, MultiBinary
        >>> error = SpacesMismatchError("The action space of env 2 (MultiBinary(8)) "
        ...                             "differs from env 0's (MultiBinary(12)).")
        >>> spaces = {0: (Box(0, 255, (84, 84)), MultiBinary(12)),
        ...           2: (Box(0, 255, (84, 84)), MultiBinary(8))}
        >>> print(spaces_mismatch(error, ["Airstriker-Genesis-v0"] * 2 + ["Pong-Atari2600-v0"],
        ...                       [None] * 3, [None] * 3, spaces.get))  # doctest: +ELLIPSIS
        The envs play different games, and their spaces differ: The action space of env 2 (MultiBinary(8)) differs from env 0's (MultiBinary(12)).
        The envs, by what they play, and their spaces:
          envs 0, 1: Airstriker-Genesis-v0: observations Box(0.0, 255.0, (84, 84), float32), actions MultiBinary(12)
          env 2: Pong-Atari2600-v0: observations Box(0.0, 255.0, (84, 84), float32), actions MultiBinary(8)
        One vector env needs one observation space and one action space. Make the actions match...
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(zip(games, scenarios, infos)):
        groups.setdefault(key, []).append(i)
    lines, observations, actions = [], [], []
    for (game, scenario, info), indices in groups.items():
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("scenario", scenario), ("info", info))
            if value is not None
        )
        line = f"  {env_label(indices)}: {game}{extra}"
        try:
            spaces = None if probe is None else probe(indices[0])
        except Exception:  # noqa: BLE001 - the spaces are a bonus; the error stands anyway
            spaces = None
        if spaces is not None:
            observations.append(spaces[0])
            actions.append(spaces[1])
            line += f": observations {spaces[0]}, actions {spaces[1]}"
        lines.append(line)
    hints = [_OBSERVATION_HINT, _ACTION_HINT]
    if len(observations) == len(groups):  # every group's spaces known: only the hints needed
        hints = [
            hint
            for hint, spaces in ((_OBSERVATION_HINT, observations), (_ACTION_HINT, actions))
            if any(space != spaces[0] for space in spaces)
        ] or hints
    title = "The envs, by what they play, and their spaces:" if observations else (
        "The envs play:"
    )
    return SpacesMismatchError(
        f"The envs play different games, and their spaces differ: {error}\n{title}\n"
        + "\n".join(lines)
        + "\nOne vector env needs one observation space and one action space. "
        + " ".join(hints)
        + " See docs/integrations.md, 'Several games in one vector env'."
    )


def probe_spaces(env_fn: Callable[[], gym.Env], context: str | None) -> tuple[Any, Any]:
    """Build one env in a worker process of its own and return its spaces.

    For :func:`spaces_mismatch`'s message only, after a vector env has failed: each env
    builds its emulator in its own process, as the vector env's workers did.

    Args:
        env_fn: What the vector env's worker ran.
        context: The start method the vector env used.

    Returns:
        ``(observation_space, action_space)``.
    """
    from retrovec.core.process_backend import AsyncRetroVectorEnv  # a cycle at import time

    with AsyncRetroVectorEnv([env_fn], context=context, timeout=120) as envs:
        return envs.single_observation_space, envs.single_action_space
