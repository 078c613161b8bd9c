"""The ``retrovec`` command line: argument parsing and dispatch only.

Subcommands live in a subparsers table (``run``, ``games``, ``states``, ``bench``,
``train``, ``evaluate``, ``roms``, ``movies``), one module per group of commands, each with a
``register(subparsers)`` that adds them; in it, every subcommand is a
``_add_<name>_parser`` function that registers its arguments and a
``_cmd_<name>(args) -> int`` handler. The work itself lives in library modules, imported
only when a command runs, so the other commands never import torch:

* :mod:`retrovec.cli.run`: ``run``, dispatching to ``retrovec.training.random_rollout``;
* :mod:`retrovec.cli.games`: ``games`` and ``states``, to ``retrovec.retro.games``;
* :mod:`retrovec.cli.bench`: ``bench``, to ``retrovec.benchmark``;
* :mod:`retrovec.cli.train`: ``train`` and ``evaluate``, to ``retrovec.training.ppo``;
* :mod:`retrovec.cli.roms`: ``roms import``, to ``retrovec.retro.roms``;
* :mod:`retrovec.cli.movies`: ``movies info``, ``convert`` and ``best``, to
  ``retrovec.retro.replay`` and ``retrovec.retro.video``;
* :mod:`retrovec.cli.checks`: every check of the commands' input, run by :func:`main`
  before the handler (:func:`~retrovec.cli.checks.check_arguments`);
* :mod:`retrovec.cli.arguments`: what they share (argparse value types, error lines).

This module builds the parser (:func:`build_parser`) and runs the chosen command
(:func:`main`).

Exit codes: 0 success, 1 failure while running (a worker crashed, ...), 2 bad usage or
bad input (an unknown game or state, a missing file, a missing extra: one line on
stderr, nothing started, nothing written), 130 interrupted with Ctrl-C. When the reader
of stdout goes away (``retrovec games | head -1``), the command stops quietly with exit
code 1, as Python's documentation recommends for ``BrokenPipeError``.

Example:
    Shell::

        $ retrovec run --game Airstriker-Genesis-v0 --num-envs 4 --steps 10000
        $ python -m retrovec run --num-envs 2 --seconds 5 --json

    Python::

        >>> from retrovec.cli import main
        >>> main(["run", "--num-envs", "0"])  # doctest: +SKIP
        2
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from retrovec.cli import bench, games, movies, roms, run, train

# The defaults stay importable from here (retrovec.cli.DEFAULT_GAME...), as tests expect.
from retrovec.cli.arguments import (  # noqa: F401
    DEFAULT_GAME,
    Handler,
    Parser,
    one_line,
    print_error,
)
from retrovec.cli.checks import BadInput, check_arguments
from retrovec.cli.run import AUTORESET_CHOICES, DEFAULT_NUM_ENVS, DEFAULT_STEPS  # noqa: F401

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per subcommand.

    Returns:
        The parser; each subcommand sets ``handler`` (a ``Namespace -> int`` function).

    Example:
        >>> args = build_parser().parse_args(["run", "--num-envs", "2", "--steps", "100"])
        >>> args.command, args.num_envs, args.steps, args.seconds
        ('run', 2, 100, None)
    """
    parser = Parser(
        prog="retrovec",
        description="Many stable-retro emulators in parallel as one gymnasium vector env.",
    )
    try:
        from retrovec import __version__ as version
    except ImportError:  # pragma: no cover - package metadata not written yet
        version = "unknown"
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The order `retrovec --help` lists them in.
    for commands in (run, games, bench, train, roms, movies):
        commands.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``retrovec`` command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The process exit code (argparse's usage errors give 2, ``--help`` gives 0).

    Example:
        >>> main(["--help"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:  # argparse would blame the top-level parser: name the subcommand
            _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        commands = ", ".join(_subcommands(parser))
        print(
            f"retrovec: error: give a COMMAND: one of {commands} (retrovec --help)", file=sys.stderr
        )
        return 2
    try:
        check_arguments(args)  # bad input: one line, exit 2, nothing started or written
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BadInput as exc:
        print_error(args.command, one_line(exc))
        return 2
    except KeyboardInterrupt:
        print_error(args.command, "interrupted")
        return 130
    except BrokenPipeError:
        # The reader left (`retrovec games | head -1`): no traceback, and nothing more to
        # flush at exit (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    """The names of ``parser``'s subcommands, in the order ``--help`` lists them."""
    action = _subparsers(parser)
    return [] if action is None else list(action.choices)


def _chosen_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)subcommand ``args`` chose, e.g. that of ``roms import``."""
    action = _subparsers(parser)
    while action is not None and getattr(args, action.dest, None) in action.choices:
        parser = action.choices[getattr(args, action.dest)]
        action = _subparsers(parser)
    return parser
