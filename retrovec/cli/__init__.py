"""The ``retrovec`` command line: argument parsing and dispatch only.

Subcommands live in a subparsers table (``run``, ``games``, ``states``, ``bench``,
``train``, ``evaluate``), one module per group of commands, each with a
``register(subparsers)`` that adds them; in it, every subcommand is a
``_add_<name>_parser`` function that registers its arguments and a
``_cmd_<name>(args) -> int`` handler. The work itself lives in library modules, imported
only when a command runs, so the other commands never import torch:

* :mod:`retrovec.cli.run`: ``run``, dispatching to ``retrovec.training.random_rollout``;
* :mod:`retrovec.cli.games`: ``games`` and ``states``, to ``retrovec.retro.games``;
* :mod:`retrovec.cli.bench`: ``bench``, to ``retrovec.benchmark``;
* :mod:`retrovec.cli.train`: ``train`` and ``evaluate``, to ``retrovec.training.ppo``;
* :mod:`retrovec.cli.arguments`: what they share (argparse value types, error lines).

This module builds the parser (:func:`build_parser`) and runs the chosen command
(:func:`main`).

Exit codes: 0 success, 1 failure while running (a worker crashed, ...), 2 bad usage or a
game/state that cannot be made, 130 interrupted with Ctrl-C.

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
import sys
from collections.abc import Sequence

from retrovec.cli import bench, games, run, train

# The defaults stay importable from here (retrovec.cli.DEFAULT_GAME...), as tests expect.
from retrovec.cli.arguments import DEFAULT_GAME, Handler, print_error  # noqa: F401
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
    parser = argparse.ArgumentParser(
        prog="retrovec",
        description="Many stable-retro emulators in parallel as one gymnasium vector env.",
    )
    try:
        from retrovec import __version__ as version
    except ImportError:  # pragma: no cover - package metadata not written yet
        version = "unknown"
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for commands in (run, games, bench, train):  # the order `retrovec --help` lists them in
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
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        print_error(args.command, "interrupted")
        return 130
