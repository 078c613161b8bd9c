"""``retrovec games`` and ``retrovec states``: list the integrated games and a game's states.

Parses the commands' arguments and dispatches to ``retrovec.retro.games`` (``list_games``,
``list_states``), imported only when a command runs.

Example:
    >>> from retrovec.cli import build_parser
    >>> args = build_parser().parse_args(["games", "--imported", "--filter", "pong"])
    >>> args.command, args.imported, args.filter, args.all
    ('games', True, 'pong', False)
    >>> build_parser().parse_args(["states", "Airstriker-Genesis-v0"]).game
    'Airstriker-Genesis-v0'
"""

from __future__ import annotations

import argparse
from typing import Any

from retrovec.cli.arguments import one_line, print_error

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``games`` and ``states`` subcommands to ``subparsers``."""
    _add_games_parser(subparsers)
    _add_states_parser(subparsers)


def _add_games_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "games",
        help="list the stable-retro games, one per line",
        description=(
            "Print the ids of the games stable-retro has an integration for, sorted, one "
            "per line. Exits 1 when no game matches."
        ),
    )
    p.add_argument(
        "--imported",
        action="store_true",
        help="only games whose ROM is imported, i.e. that retrovec.make can run now",
    )
    p.add_argument(
        "--filter", metavar="TEXT", help="only games whose id contains TEXT (ignoring case)"
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="search every integration (stable, experimental, contrib), not only stable",
    )
    p.set_defaults(handler=_cmd_games)


def _cmd_games(args: argparse.Namespace) -> int:
    from stable_retro.data import Integrations

    from retrovec.retro.games import list_games

    inttype = Integrations.ALL if args.all else Integrations.DEFAULT
    games = list_games(inttype, imported_only=args.imported, contains=args.filter)
    if not games:
        what = "imported game" if args.imported else "game"
        match = f" matches {args.filter!r}" if args.filter is not None else " found"
        print_error("games", f"no {what}{match}")
        return 1
    print("\n".join(games))
    return 0


def _add_states_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "states",
        help="list a game's save states, one per line",
        description=(
            "Print the names of the save states shipped with GAME (what make(state=...) "
            "accepts besides a .state path), sorted, one per line."
        ),
    )
    p.add_argument("game", metavar="GAME", help="stable-retro game id")
    p.add_argument(
        "--all",
        action="store_true",
        help="search every integration (stable, experimental, contrib), not only stable",
    )
    p.set_defaults(handler=_cmd_states, needs_rom=False)  # checks: integrated is enough


def _cmd_states(args: argparse.Namespace) -> int:
    from stable_retro.data import Integrations

    from retrovec.errors import RetrovecError
    from retrovec.retro.games import list_states

    inttype = Integrations.ALL if args.all else Integrations.DEFAULT
    try:
        states = list_states(args.game, inttype, strict=True)
    except RetrovecError as exc:
        print_error("states", one_line(exc))
        return 2
    if states:
        print("\n".join(states))
    return 0
