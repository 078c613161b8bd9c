"""Look up and validate stable-retro games, save states and data files on disk.

Everything here reads files through :mod:`stable_retro.data`; nothing builds an emulator,
so these checks are safe in the parent process (stable-retro allows one emulator per
process). :func:`retrovec.make` runs them before it starts any worker.

A game is *integrated* when some integration directory holds ``<game>/rom.sha``, and
*imported* when that directory also holds its ROM (``rom.md``, ``rom.nes``, ...). Only
``Airstriker-Genesis-v0`` ships with its ROM; the others must be imported with
``python -m stable_retro.import /path/to/your/roms``.

Example:
    >>> "Airstriker-Genesis-v0" in list_games(imported_only=True)
    True
    >>> list_states("Airstriker-Genesis-v0")
    ['Level1']
"""

from __future__ import annotations

import difflib
import os

import stable_retro
import stable_retro.data as retro_data
from stable_retro.data import Integrations

from retrovec.errors import (
    InvalidGameError,
    RomNotImportedError,
    UnknownGameError,
    UnknownStateError,
)

__all__ = [
    "list_games",
    "list_states",
    "resolve_inttype",
    "validate_data_file",
    "validate_game",
    "validate_state",
]

_IMPORT_HINT = "python -m stable_retro.import /path/to/your/roms"
_ATARI_IMPORT_HINT = (
    "pip install 'retrovec[atari]' && retrovec roms import\n(ale-py brings the ROMs; from a "
    "clone of the repository: pip install -e '.[atari]' && retrovec roms import)."
)


def resolve_inttype(inttype: Integrations = Integrations.DEFAULT) -> Integrations:
    """Turn ``Integrations.DEFAULT`` into the concrete integrations it stands for now.

    ``Integrations.DEFAULT`` means "stable, plus whatever
    :func:`stable_retro.data.add_integrations` or
    :func:`stable_retro.data.add_custom_integration` added in this process". It cannot be
    pickled, and a spawned worker would not see those additions, so :func:`retrovec.make`
    resolves it in the parent and sends the concrete value to its workers.

    Args:
        inttype: Any :class:`stable_retro.data.Integrations` value.

    Returns:
        ``inttype`` itself, or the process-wide default when it is ``Integrations.DEFAULT``.

    Example:
        >>> resolve_inttype(Integrations.DEFAULT)  # nothing added in this process
        <Integrations.STABLE: 1>
        >>> resolve_inttype(Integrations.ALL)
        <Integrations.ALL: 15>
    """
    if inttype is Integrations.DEFAULT or isinstance(inttype, retro_data.DefaultIntegrations):
        retro_data.DefaultIntegrations._init()
        return retro_data.DefaultIntegrations.DEFAULT
    if not isinstance(inttype, Integrations):
        raise TypeError(
            f"inttype must be a stable_retro.data.Integrations value, got {inttype!r}"
        )
    return inttype


def _game_dirs(inttype: Integrations) -> list[str]:
    base = retro_data.path()
    return [os.path.join(base, p) for p in resolve_inttype(inttype).paths]


def _is_imported(game: str, inttype: Integrations) -> bool:
    try:
        retro_data.get_romfile_path(game, inttype)
    except FileNotFoundError:
        return False
    return True


def list_games(
    inttype: Integrations = Integrations.DEFAULT,
    *,
    imported_only: bool = False,
    contains: str | None = None,
) -> list[str]:
    """List the games integrated in ``inttype``, sorted.

    Args:
        inttype: Which integrations to search: ``Integrations.STABLE``,
            ``Integrations.ALL`` and so on. ``Integrations.DEFAULT`` (the default) is what
            :func:`stable_retro.make` searches.
        imported_only: Only list games whose ROM has been imported, so that
            :func:`retrovec.make` can run them now.
        contains: Only list games whose id contains this text, ignoring case.

    Returns:
        Game ids such as ``"Airstriker-Genesis-v0"``.

    Example:
        >>> games = list_games()
        >>> len(games) > 1000
        True
        >>> "Airstriker-Genesis-v0" in list_games(imported_only=True)
        True
        >>> list_games(contains="airstriker")
        ['Airstriker-Genesis-v0']
    """
    inttype = resolve_inttype(inttype)
    games = set()
    for directory in _game_dirs(inttype):
        if not os.path.isdir(directory):  # a custom path that was removed
            continue
        for name in os.listdir(directory):
            if os.path.isfile(os.path.join(directory, name, "rom.sha")):
                games.add(name)
    if contains is not None:
        games = {g for g in games if contains.lower() in g.lower()}
    if imported_only:
        games = {g for g in games if _is_imported(g, inttype)}
    return sorted(games)


def list_states(
    game: str, inttype: Integrations = Integrations.DEFAULT, *, strict: bool = False
) -> list[str]:
    """List the save states shipped with ``game``, without their ``.state`` suffix.

    Args:
        game: A game id such as ``"Airstriker-Genesis-v0"``.
        inttype: Which integrations to search.
        strict: Raise :class:`~retrovec.errors.UnknownGameError` for a game that no
            integration in ``inttype`` has, instead of returning ``[]``. The ROM need not
            be imported.

    Returns:
        State names, sorted; empty for an unknown game. Names starting with ``_`` are
        hidden, as in :func:`stable_retro.data.list_states`.

    Example:
        >>> list_states("Airstriker-Genesis-v0")
        ['Level1']
        >>> list_states("No-Such-Game-v0")
        []
        >>> list_states("Airstrikr-Genesis-v0", strict=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        retrovec.errors.UnknownGameError: Unknown game 'Airstrikr-Genesis-v0'. Did you mean: 'Airstriker-Genesis-v0', ...
    """
    inttype = resolve_inttype(inttype)
    if strict and not (
        bool(game)
        and os.path.basename(game) == game
        and (retro_data.get_file_path(game, "rom.sha", inttype) or _is_imported(game, inttype))
    ):
        validate_game(game, inttype)  # raises UnknownGameError, with close names
    return retro_data.list_states(game, inttype)


def validate_game(game: str, inttype: Integrations = Integrations.DEFAULT) -> str:
    """Check that ``game`` is integrated and its ROM imported.

    A game whose ROM is present counts as valid even without a ``rom.sha``, as in
    :func:`stable_retro.make`.

    Args:
        game: A game id such as ``"Airstriker-Genesis-v0"``.
        inttype: Which integrations to search.

    Returns:
        The path of the game's ROM file.

    Raises:
        TypeError: ``game`` is not a string.
        UnknownGameError: No integration in ``inttype`` has this game; the message lists
            close names, and says so when another integration has it.
        RomNotImportedError: The game is integrated but its ROM is not imported; the
            message says how to import it.

    Example:
        >>> os.path.basename(validate_game("Airstriker-Genesis-v0"))
        'rom.md'
        >>> validate_game("Airstrikr-Genesis-v0")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        retrovec.errors.UnknownGameError: Unknown game 'Airstrikr-Genesis-v0'. Did you mean: 'Airstriker-Genesis-v0', ...? `retrovec games` (in Python: `retrovec.retro.games.list_games()`) lists all.
        >>> validate_game("SonicTheHedgehog-Genesis-v0")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        retrovec.errors.RomNotImportedError: The ROM of 'SonicTheHedgehog-Genesis-v0' has not been imported...
    """
    if not isinstance(game, str):
        raise TypeError(
            f"game must be a game id string such as 'Airstriker-Genesis-v0', got {game!r}"
        )
    inttype = resolve_inttype(inttype)
    plain = bool(game) and os.path.basename(game) == game  # not a path into another dir
    if plain and _is_imported(game, inttype):
        return retro_data.get_romfile_path(game, inttype)
    if plain and retro_data.get_file_path(game, "rom.sha", inttype):
        how = _IMPORT_HINT
        if "-Atari2600" in game:
            how += f";\nor, for the Atari 2600 ROMs that ship with ale-py:\n    {_ATARI_IMPORT_HINT}"
        else:
            how += "."
        raise RomNotImportedError(
            f"The ROM of {game!r} has not been imported into stable-retro. Import your ROMs "
            f"with:\n    {how}\n`retrovec games --imported` (in Python: "
            "`retrovec.retro.games.list_games(imported_only=True)`) lists the games that can "
            "run now."
        )
    message = f"Unknown game {game!r}."
    if game in list_games(Integrations.ALL) and inttype != Integrations.ALL:
        message += (
            f" It is not in the Integrations.{inttype.name} integrations but is in others: pass "
            "inttype=stable_retro.data.Integrations.ALL."
        )
    else:
        close = difflib.get_close_matches(game, list_games(Integrations.ALL), n=3)
        if close:
            message += " Did you mean: " + ", ".join(repr(c) for c in close) + "?"
    raise UnknownGameError(
        message + " `retrovec games` (in Python: `retrovec.retro.games.list_games()`) lists all."
    )


def validate_state(
    game: str,
    state: str | os.PathLike[str] | stable_retro.State,
    inttype: Integrations = Integrations.DEFAULT,
) -> str | stable_retro.State:
    """Check that ``state`` is a save state ``game`` can start from.

    Args:
        game: A game id such as ``"Airstriker-Genesis-v0"``.
        state: ``stable_retro.State.DEFAULT`` (the game's default state),
            ``stable_retro.State.NONE`` (power-on), the name of one of the game's states
            (``"Level1"`` or ``"Level1.state"``), or the path of a gzip-compressed
            ``.state`` file.
        inttype: Which integrations to search.

    Returns:
        What to pass to :func:`stable_retro.make`: the ``State`` member or state name
        unchanged, or the absolute path for a file (stable-retro resolves relative paths
        inside the game's directory, not the working directory).

    Raises:
        TypeError: ``state`` is not a string, path or ``State``.
        UnknownStateError: No such state; the message lists the game's states.

    Example:
        >>> validate_state("Airstriker-Genesis-v0", "Level1")
        'Level1'
        >>> validate_state("Airstriker-Genesis-v0", stable_retro.State.NONE)
        <State.NONE: 0>
        >>> validate_state("Airstriker-Genesis-v0", "Level2")
        Traceback (most recent call last):
        ...
        retrovec.errors.UnknownStateError: Game 'Airstriker-Genesis-v0' has no state 'Level2'. Expected stable_retro.State.DEFAULT, stable_retro.State.NONE, one of ['Level1'] (`retrovec states Airstriker-Genesis-v0`), or the path of a .state file.
    """
    if isinstance(state, stable_retro.State):
        return state
    if not isinstance(state, (str, os.PathLike)):
        raise TypeError(
            "state must be a state name, the path of a .state file or a "
            f"stable_retro.State, got {state!r}"
        )
    inttype = resolve_inttype(inttype)
    name = os.fspath(state)
    filename = name if name.endswith(".state") else name + ".state"
    is_name = isinstance(state, str) and name and os.path.basename(name) == name
    if is_name and retro_data.get_file_path(game, filename, inttype):
        return state
    if os.path.isfile(filename):
        with open(filename, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise UnknownStateError(
                    f"{filename!r} is not a save state: save states are gzip-compressed."
                )
        return os.path.abspath(filename)
    if os.path.isdir(name):
        raise UnknownStateError(
            f"Game {game!r} has no state {name!r}: it is a folder, not a .state file."
        )
    if not is_name:  # a path
        raise UnknownStateError(f"Game {game!r} has no state {name!r}: no such file.")
    raise UnknownStateError(
        f"Game {game!r} has no state {name!r}. Expected stable_retro.State.DEFAULT, "
        f"stable_retro.State.NONE, one of {list_states(game, inttype)} (`retrovec states "
        f"{game}`), or the path of a .state file."
    )


def validate_data_file(
    game: str,
    value: str | os.PathLike[str] | None,
    kind: str,
    inttype: Integrations = Integrations.DEFAULT,
) -> str | None:
    """Check a ``scenario`` or ``info`` argument of :func:`stable_retro.make`.

    Args:
        game: A game id such as ``"Airstriker-Genesis-v0"``.
        value: ``None`` (the game's ``scenario.json`` / ``data.json``), a name of a JSON
            file in the game's directory without ``.json``, or the path of a ``.json``
            file.
        kind: ``"scenario"`` or ``"info"``, for the error message.
        inttype: Which integrations to search.

    Returns:
        ``value`` unchanged, or the absolute path for a ``.json`` file.

    Raises:
        InvalidGameError: No such file.

    Example:
        >>> validate_data_file("Airstriker-Genesis-v0", "scenario", "scenario")
        'scenario'
        >>> validate_data_file("Airstriker-Genesis-v0", "hard", "scenario")
        Traceback (most recent call last):
        ...
        retrovec.errors.InvalidGameError: Game 'Airstriker-Genesis-v0' has no scenario 'hard' (no hard.json in its integration directory).
    """
    if value is None:
        return None
    name = os.fspath(value)
    if name.endswith(".json"):
        if not os.path.isfile(name):
            raise InvalidGameError(f"The {kind} file {name!r} does not exist.")
        return os.path.abspath(name)
    if not retro_data.get_file_path(game, name + ".json", resolve_inttype(inttype)):
        raise InvalidGameError(
            f"Game {game!r} has no {kind} {name!r} (no {name}.json in its integration "
            "directory)."
        )
    return name
