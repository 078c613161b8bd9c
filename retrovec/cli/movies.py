"""``retrovec movies``: look at, convert and pick the best of recorded ``.bk2`` movies.

Three commands, dispatching to :mod:`retrovec.retro.replay`,
:mod:`retrovec.retro.recording` and :mod:`retrovec.retro.video` (imported only when a
command runs):

* ``retrovec movies info X.bk2 [...]``: game, players, steps (and the return, with the
  ``.json`` record retrovec writes next to its movies), one line per movie;
* ``retrovec movies convert X.bk2 [-o X.mp4] [--no-audio] [--fps F]``: render a movie to
  an mp4 with the game's sound;
* ``retrovec movies best DIR [-n N] [--render OUT] [--no-audio]``: list the N movies
  with the highest returns under DIR, best first, and render them with ``--render``.
  Nothing is ever deleted.

Bad input (a missing or unreadable movie, a game whose ROM is not imported, a folder
that does not exist, an output that is not ``.mp4``, no imageio for video) is one line on
stderr and exit code 2, with nothing written.

Example:
    >>> from retrovec.cli import build_parser
    >>> args = build_parser().parse_args(["movies", "convert", "a.bk2", "-o", "a.mp4"])
    >>> args.command, args.action, args.movie, args.out, args.audio
    ('movies', 'convert', 'a.bk2', 'a.mp4', True)
    >>> build_parser().parse_args(["movies", "best", "movies", "-n", "3"]).n
    3
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from retrovec.cli.arguments import one_line, positive_float, positive_int

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``movies`` subcommand (``info``, ``convert``, ``best``) to ``subparsers``."""
    p = subparsers.add_parser(
        "movies",
        help="inspect .bk2 movies, convert them to mp4 with sound, pick the best",
        description=(
            "Work with the stable-retro .bk2 movies retrovec records "
            "(retrovec.make(record=...), envs.call('start_recording', ...))."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add_info_parser(actions)
    _add_convert_parser(actions)
    _add_best_parser(actions)


def _add_info_parser(actions: Any) -> None:
    p = actions.add_parser(
        "info",
        help="print each movie's game, players, steps and return",
        description=(
            "Print one line per movie: its path, game, players and recorded steps, and "
            "its return when retrovec's .json record is next to it. Runs no emulator."
        ),
    )
    p.add_argument("movies", nargs="+", metavar="MOVIE", help=".bk2 files")
    p.set_defaults(handler=_cmd_info)


def _add_convert_parser(actions: Any) -> None:
    p = actions.add_parser(
        "convert",
        help="render a .bk2 movie to an mp4 with the game's sound",
        description=(
            "Replay MOVIE in the game's emulator and write an H.264 mp4 with the game's "
            "sound (AAC). Needs the video extra: pip install 'retrovec[video]'."
        ),
    )
    p.add_argument("movie", metavar="MOVIE", help="a .bk2 file")
    p.add_argument(
        "-o", "--out", metavar="OUT", help="the .mp4 to write (default: MOVIE with .mp4)"
    )
    _add_video_options(p)
    p.set_defaults(handler=_cmd_convert)


def _add_best_parser(actions: Any) -> None:
    p = actions.add_parser(
        "best",
        help="list (and render) the movies with the highest returns under a folder",
        description=(
            "Rank the movies under DIR (searched recursively) by the return in their "
            ".json record and print the best N, best first: return, steps, path. "
            "Nothing is deleted."
        ),
    )
    p.add_argument("folder", metavar="DIR", help="a recording folder")
    p.add_argument(
        "-n", "--top", dest="n", type=positive_int, default=5,
        help="how many (default: %(default)s)",
    )
    p.add_argument(
        "--render", metavar="OUT", help="also render them to OUT/{rank}-{name}.mp4"
    )
    _add_video_options(p)
    p.set_defaults(handler=_cmd_best)


def _add_video_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-audio", dest="audio", action="store_false", help="pictures only, no sound"
    )
    p.add_argument(
        "--fps", type=positive_float, help="frames per second (default: the console's)"
    )


def _bad(message: str) -> Exception:
    from retrovec.cli.checks import BadInput

    return BadInput(message)


def _check_movie(path: str) -> Any:
    """The movie's info, or BadInput: missing, unreadable, or its game cannot run here."""
    from retrovec.errors import InvalidGameError
    from retrovec.retro.games import validate_game
    from retrovec.retro.replay import movie_info

    try:
        info = movie_info(path)
    except (FileNotFoundError, ValueError) as error:
        raise _bad(one_line(error)) from None
    try:
        validate_game(info.game)
    except (InvalidGameError, LookupError, ValueError) as error:
        raise _bad(f"{path}: {one_line(error)}") from None
    return info


def _check_video(out: str) -> None:
    from retrovec.retro.video import require_imageio

    if not out.endswith(".mp4"):
        raise _bad(f"the video must be an .mp4 file, got {out!r}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise _bad(f"no such folder for the video: {folder!r}")
    try:
        require_imageio()
    except ModuleNotFoundError as error:
        raise _bad(one_line(error)) from None


def _cmd_info(args: argparse.Namespace) -> int:
    from retrovec.retro.recording import read_movie_record
    from retrovec.retro.replay import movie_info

    infos = []
    for path in args.movies:  # check them all before printing anything
        try:
            infos.append(movie_info(path))
        except (FileNotFoundError, ValueError) as error:
            raise _bad(one_line(error)) from None
    for path, info in zip(args.movies, infos):
        record = read_movie_record(path)
        line = f"{path}: {info.game}, {info.players} player(s), {info.steps} steps"
        if record is not None:
            line += f", return {record.episode_return:g}"
            if not record.complete:
                line += " (episode cut short)"
        print(line)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from retrovec.retro.video import movie_to_video

    _check_movie(args.movie)
    out = args.out
    if out is None:
        stem = args.movie.removesuffix(".bk2")
        out = stem + ".mp4"
    _check_video(out)
    print(movie_to_video(args.movie, out, fps=args.fps, audio=args.audio))
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    from retrovec.retro.recording import best_movies
    from retrovec.retro.video import movie_to_video

    if not os.path.isdir(args.folder):
        raise _bad(f"no such folder: {args.folder!r}")
    records = best_movies(args.folder, args.n)
    if not records:
        raise _bad(f"no movie with a .json record under {args.folder!r}")
    outs: list[str | None] = [None] * len(records)
    if args.render is not None:
        if os.path.exists(args.render) and not os.path.isdir(args.render):
            raise _bad(f"--render must be a folder, but {args.render!r} is a file")
        for record in records:
            _check_movie(record.path)
        parent = os.path.dirname(os.path.abspath(args.render))
        if not os.path.isdir(parent):
            raise _bad(f"no such folder: {parent!r}")
        _check_video(os.path.join(parent, "check.mp4"))
        os.makedirs(args.render, exist_ok=True)
        outs = []
        for rank, record in enumerate(records, start=1):
            stem = os.path.basename(record.path)[: -len(".bk2")]
            outs.append(os.path.join(args.render, f"{rank:02d}-{stem}.mp4"))
    for record, out in zip(records, outs):
        line = f"{record.episode_return:g}\t{record.steps}\t{record.path}"
        if out is not None:
            movie_to_video(record.path, out, fps=args.fps, audio=args.audio)
            line += f"\t{out}"
        print(line, flush=True)
    return 0
