"""``retrovec roms import``: import ROMs into stable-retro (ale-py's Atari ROMs by default).

Parses the command's arguments and dispatches to ``retrovec.retro.roms``
(``import_ale_roms``'s folder, ``import_roms``), which runs stable-retro's own importer.
Without a PATH it imports the Atari 2600 ROMs that ship with ale-py (extra ``atari``);
:mod:`retrovec.cli.checks` says how to install ale-py when it is missing.

Example:
    >>> from retrovec.cli import build_parser
    >>> args = build_parser().parse_args(["roms", "import", "roms/", "more.zip"])
    >>> args.command, args.rom_paths
    ('roms', ['roms/', 'more.zip'])
    >>> build_parser().parse_args(["roms", "import"]).rom_paths
    []
"""

from __future__ import annotations

import argparse
from typing import Any

from retrovec.cli.arguments import one_line, plural, print_error

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``roms`` subcommand (with its ``import`` action) to ``subparsers``."""
    p = subparsers.add_parser(
        "roms",
        help="import ROMs into stable-retro (the Atari ROMs of ale-py by default)",
        description="Manage the ROMs stable-retro can run. See docs/cli.md.",
    )
    actions = p.add_subparsers(dest="roms_command", metavar="ACTION", required=True)
    _add_import_parser(actions)


def _add_import_parser(actions: Any) -> None:
    p = actions.add_parser(
        "import",
        help="import ale-py's Atari 2600 ROMs, or the ROMs under PATH",
        description=(
            "Run stable-retro's importer (python -m stable_retro.import) on PATH (files or "
            "folders, searched recursively, zip files included), or without PATH on the "
            "Atari 2600 ROMs that ship with ale-py (pip install 'retrovec[atari]'). ROMs "
            "are recognised by their SHA-1, so only ROMs a stable-retro integration knows "
            "are imported. Exits 1 when none is."
        ),
    )
    p.add_argument(
        "rom_paths", nargs="*", metavar="PATH", help="ROM files or folders (default: ale-py's)"
    )
    p.set_defaults(handler=_cmd_roms_import)


def _cmd_roms_import(args: argparse.Namespace) -> int:
    from retrovec.retro.roms import ale_roms_dir, import_roms

    paths = args.rom_paths or [ale_roms_dir()]
    try:
        count = import_roms(*paths)
    except (OSError, RuntimeError) as exc:
        print_error("roms", one_line(exc))
        return 1
    where = ", ".join(paths) if args.rom_paths else f"ale-py ({paths[0]})"
    if count == 0:
        print_error(
            "roms",
            f"no ROM in {where} matches a stable-retro integration (ROMs are recognised "
            "by their SHA-1)",
        )
        return 1
    print(
        f"retrovec roms: imported {plural(count, 'game')} from {where}; "
        "`retrovec games --imported` lists the games that can run now"
    )
    return 0
