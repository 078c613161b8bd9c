"""Where recorded movies go, what they are called, and what is known of each one.

The file side of :mod:`retrovec.retro.recording`: the folder of each env
(:func:`env_movie_dir`, :func:`movie_folders`), the movie names and their episode numbers
(:func:`movie_name`, :func:`next_episode_number`, claimed atomically so nothing is ever
overwritten), and the ``.json`` record next to each movie (:class:`MovieRecord`,
:func:`read_movie_record`, :func:`best_movies`). Nothing here runs an emulator.

Example:
    >>> movie_name("Airstriker-Genesis-v0", "Level1", 3)
    'Airstriker-Genesis-v0-Level1-000003.bk2'
"""

from __future__ import annotations

import json
import operator
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_FOLDER",
    "MovieRecord",
    "best_movies",
    "check_keep_best",
    "claim_movie_name",
    "env_movie_dir",
    "movie_folders",
    "movie_name",
    "next_episode_number",
    "read_movie_record",
    "record_path",
]

DEFAULT_FOLDER = "retrovec-movies"
"""Where ``record=True`` records: ``./retrovec-movies/<game>/env-{i:03d}/``, relative to
the working directory of the process that calls :func:`retrovec.make`."""

_EPISODE = re.compile(r"-(\d{6,})\.bk2$")


def env_movie_dir(root: str | os.PathLike[str], index: int) -> str:
    """The folder where env ``index`` of a vector env records its movies.

    Args:
        root: The ``record=`` folder given to :func:`retrovec.make`.
        index: The env's index in the vector env.

    Returns:
        ``root/env-{index:03d}``.

    Example:
        >>> env_movie_dir("movies", 3)
        'movies/env-003'
    """
    return os.path.join(os.fspath(root), f"env-{index:03d}")


def movie_name(game: str, state: str | None, episode: int) -> str:
    """The file name of one episode's movie: stable-retro's own pattern.

    Args:
        game: The game id.
        state: The state the episode started from: a name, a ``.state`` path, or
            ``None`` for power-on.
        episode: The episode number within the env's folder.

    Returns:
        ``{game}-{state}-{episode:06d}.bk2``, with ``state`` reduced to its base name
        without ``.state`` (``"none"`` for power-on).

    Example:
        >>> movie_name("Airstriker-Genesis-v0", "Level1.state", 7)
        'Airstriker-Genesis-v0-Level1-000007.bk2'
        >>> movie_name("Pong-Atari2600-v0", "/saves/Start.2P.state", 0)
        'Pong-Atari2600-v0-Start.2P-000000.bk2'
        >>> movie_name("Airstriker-Genesis-v0", None, 0)
        'Airstriker-Genesis-v0-none-000000.bk2'
    """
    label = "none"
    if state:
        label = os.path.basename(state)
        label = label.removesuffix(".state")
    return f"{game}-{label}-{episode:06d}.bk2"


def next_episode_number(directory: str | os.PathLike[str]) -> int:
    """One more than the highest episode number of the movies in ``directory``.

    Args:
        directory: A folder of ``.bk2`` movies named as :func:`movie_name` names them.

    Returns:
        0 for an empty or missing folder.

    Example:
        >>> next_episode_number("/no/such/folder")
        0
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    numbers = [int(m.group(1)) for m in map(_EPISODE.search, names) if m]
    return max(numbers, default=-1) + 1


def movie_folders(
    record: Any,
    record_envs: Sequence[int] | None,
    games: Sequence[str],
    keep_best: int | None = None,
) -> list[str | None]:
    """Check :func:`retrovec.make`'s ``record=``/``record_envs=`` and give each env its folder.

    Args:
        record: ``None`` or ``False`` (no recording), ``True`` (:data:`DEFAULT_FOLDER`
            ``/<game>``), or a folder.
        record_envs: ``None`` (every env) or the indices of the envs that record.
        games: Each env's game id (one per env).
        keep_best: ``make(record_keep_best=...)``, checked here: ``None`` or an int >= 1.

    Returns:
        Per env, the absolute folder ``root/env-{i:03d}`` it records into, or ``None``.
        Nothing is created.

    Raises:
        TypeError: ``record`` is not a bool or a path; ``record_envs`` is not a sequence
            of ints.
        ValueError: ``record`` is a file; an index out of range or given twice;
            ``record_envs`` or ``keep_best`` without ``record``; a bad ``keep_best``.

    Example:
        >>> folders = movie_folders("movies", [1], ["Airstriker-Genesis-v0"] * 3)
        >>> folders[0], os.path.relpath(folders[1]), folders[2]
        (None, 'movies/env-001', None)
        >>> movie_folders(None, None, ["Airstriker-Genesis-v0"]) == [None]
        True
    """
    num_envs = len(games)
    check_keep_best(keep_best)
    if record is None or record is False:
        for name, value in (("record_envs", record_envs), ("record_keep_best", keep_best)):
            if value is not None:
                raise ValueError(
                    f"{name} needs record=: a folder, or True for "
                    f"./{DEFAULT_FOLDER}/<game>/; got record={record!r}"
                )
        return [None] * num_envs
    if record is True:
        roots = [os.path.join(DEFAULT_FOLDER, game) for game in games]
    elif isinstance(record, (str, os.PathLike)):
        if os.path.exists(record) and not os.path.isdir(record):
            raise ValueError(f"record must be a folder, but {os.fspath(record)!r} is a file")
        roots = [os.fspath(record)] * num_envs
    else:
        raise TypeError(
            f"record must be None, True (./{DEFAULT_FOLDER}/<game>/) or a folder path, "
            f"got {record!r}"
        )
    chosen = range(num_envs) if record_envs is None else _env_indices(record_envs, num_envs)
    return [
        os.path.abspath(env_movie_dir(roots[i], i)) if i in chosen else None
        for i in range(num_envs)
    ]


def _env_indices(record_envs: Any, num_envs: int) -> set[int]:
    if isinstance(record_envs, (str, bytes)) or not isinstance(record_envs, Sequence):
        raise TypeError(f"record_envs must be a sequence of env indices, got {record_envs!r}")
    chosen: set[int] = set()
    for value in record_envs:
        if isinstance(value, bool):
            raise TypeError(f"record_envs must hold env indices (ints), got {value!r}")
        try:
            index = operator.index(value)
        except TypeError:
            raise TypeError(f"record_envs must hold env indices (ints), got {value!r}") from None
        if not 0 <= index < num_envs:
            raise ValueError(
                f"record_envs: env {index} does not exist, num_envs is {num_envs} "
                f"(indices 0 to {num_envs - 1})"
            )
        if index in chosen:
            raise ValueError(f"record_envs: env {index} is given twice")
        chosen.add(index)
    return chosen


def check_keep_best(keep_best: Any) -> int | None:
    """``keep_best`` itself, checked: ``None`` or an int >= 1.

    Example:
        >>> check_keep_best(3)
        3
    """
    if keep_best is None:
        return None
    if isinstance(keep_best, bool) or not isinstance(keep_best, int) or keep_best < 1:
        raise ValueError(f"keep_best must be None or an int >= 1, got {keep_best!r}")
    return keep_best


class MovieRecord(NamedTuple):
    """A finished movie and what :class:`RecordMovies` knew of it (its ``.json`` file).

    Attributes:
        path: The ``.bk2`` file.
        game: The game id.
        state: The state the episode started from, as ``RetroEnv.statename`` said
            (``None``: power-on).
        players: The number of players.
        steps: Recorded steps after the start frame (what
            :func:`retrovec.retro.replay.movie_info` counts).
        episode_return: Player 1's rewards summed over those steps, as a replay gives
            them.
        env: The index of the env that recorded it, if known.
        complete: ``False`` when recording stopped (or the env closed) before the
            episode ended.
    """

    path: str
    game: str
    state: str | None
    players: int
    steps: int
    episode_return: float
    env: int | None
    complete: bool


def record_path(movie: str) -> str:
    """The ``.json`` record that belongs to ``movie``.

    Example:
        >>> record_path("movies/Pong-Atari2600-v0-Start-000002.bk2")
        'movies/Pong-Atari2600-v0-Start-000002.json'
    """
    return (movie.removesuffix(".bk2")) + ".json"


def read_movie_record(path: str | os.PathLike[str]) -> MovieRecord | None:
    """The :class:`MovieRecord` written next to a movie, or ``None`` if there is none.

    Args:
        path: The ``.bk2`` file.

    Example:
        >>> read_movie_record("/no/such/movie.bk2") is None
        True
    """
    movie = os.fspath(path)
    try:
        with open(record_path(movie)) as file:
            fields = json.load(file)
        return MovieRecord(path=movie, **{k: fields[k] for k in MovieRecord._fields[1:]})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def best_movies(folder: str | os.PathLike[str], n: int | None = None) -> list[MovieRecord]:
    """The movies under ``folder`` (searched recursively) with the highest returns.

    Only movies with their ``.json`` record (every movie :class:`RecordMovies` writes)
    are ranked; ties go to the older file name. Nothing is deleted.

    Args:
        folder: A folder such as the ``record=`` folder of :func:`retrovec.make`.
        n: How many; ``None``: all, best first.

    Returns:
        The records, best first.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: ``n`` is not ``None`` or an int >= 1.

    Example:
        >>> best_movies("movies", 3)  # doctest: +SKIP
        [MovieRecord(path='movies/env-001/...-000004.bk2', ..., episode_return=2300.0, ...), ...]
    """
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"No such folder: {root!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be None or an int >= 1, got {n!r}")
    records = []
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            if name.endswith(".bk2") and not name.startswith("."):
                record = read_movie_record(os.path.join(directory, name))
                if record is not None:
                    records.append(record)
    records.sort(key=lambda r: (-r.episode_return, r.path))
    return records if n is None else records[:n]


def claim_movie_name(directory: str, game: str, state: str | None, episode: int) -> tuple[str, int]:
    """Create an empty file with the first free episode number >= ``episode``.

    Returns:
        The file's path and its episode number.
    """
    while True:
        path = os.path.join(directory, movie_name(game, state, episode))
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            episode += 1
            continue
        return path, episode
