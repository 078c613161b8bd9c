"""Importing ROMs into stable-retro, notably the Atari 2600 ROMs that ship with ale-py.

ale-py's ROMs have the hashes that stable-retro's Atari integrations expect, so
``import_ale_roms()`` makes every such game (Pong with its two-player state included)
playable with one call. It runs stable-retro's own importer; importing is idempotent.
From the shell: ``retrovec roms import`` (``retrovec roms import PATH...`` for other ROMs).

Example:
    >>> count = import_ale_roms()  # doctest: +SKIP
    >>> "Pong-Atari2600-v0" in retrovec.list_games(imported_only=True)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

__all__ = ["ale_roms_dir", "import_ale_roms", "import_roms"]


def ale_roms_dir() -> str:
    """The folder of ROMs inside the installed ale-py package.

    Raises:
        ModuleNotFoundError: ale-py is not installed; the message says how to install it.
    """
    try:
        import ale_py
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "ale-py is not installed: `pip install 'retrovec[atari]'` (from a clone of the "
            "repository: `pip install -e '.[atari]'`) brings the Atari 2600 ROMs."
        ) from error
    return os.path.join(os.path.dirname(ale_py.__file__), "roms")


def import_roms(*paths: str) -> int:
    """Import every ROM under ``paths`` whose hash a stable-retro integration knows.

    Args:
        *paths: Files or folders (searched recursively, zip files included).

    Returns:
        The number of games imported (stable-retro counts a ROM imported before again).

    Raises:
        FileNotFoundError: A path does not exist.
        RuntimeError: stable-retro's importer failed (e.g. its data folder is read-only);
            the message holds the last line of its error output.
    """
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"No such file or folder to import ROMs from: {path!r}")
    result = subprocess.run(
        [sys.executable, "-m", "stable_retro.import", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise RuntimeError(
            f"stable-retro's importer (python -m stable_retro.import) failed with exit code "
            f"{result.returncode}: {lines[-1] if lines else 'no error output'}"
        )
    found = re.search(r"Imported (\d+) games", result.stdout)
    return int(found.group(1)) if found else 0


def import_ale_roms() -> int:
    """Import ale-py's Atari 2600 ROMs into stable-retro.

    Returns:
        The number of games imported.
    """
    return import_roms(ale_roms_dir())
