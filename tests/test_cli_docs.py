"""docs/cli.md documents the parser as it is, and every ``retrovec`` command line in the
docs parses.

The subcommands are read from the parser itself (``retrovec.cli.build_parser``), so a new
subcommand, or a new option of one, fails here until docs/cli.md has a section for it
(a ``## `` heading naming ```retrovec COMMAND```) that names every option.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrovec.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI_DOC = REPO_ROOT / "docs" / "cli.md"


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``("roms import", its parser)`` for every leaf subcommand, nested ones included."""
    action = _subparsers(parser)
    if action is None:
        yield " ".join(prefix), parser
        return
    for name, sub in action.choices.items():
        yield from _commands(sub, (*prefix, name))


COMMANDS = dict(_commands(build_parser()))


def _sections() -> dict[str, str]:
    """``{command: text of the section whose heading names it}``."""
    sections: dict[str, str] = {}
    for block in re.split(r"^## ", CLI_DOC.read_text(), flags=re.MULTILINE)[1:]:
        heading = block.splitlines()[0]
        for command in re.findall(r"`retrovec ([a-z][a-z -]*?)`", heading):
            sections[command] = block
    return sections


def _names(parser: argparse.ArgumentParser) -> list[str]:
    """What the doc must name: each long option, and each positional's metavar."""
    names = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            names.append(max(action.option_strings, key=len))
        else:
            names.append(action.metavar or action.dest.upper())
    return names


def test_the_parser_has_the_documented_commands() -> None:
    assert {"run", "games", "states", "bench", "train", "evaluate", "roms import"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_and_option_is_documented(command: str) -> None:
    sections = _sections()
    assert command in sections, f"docs/cli.md has no '## ... `retrovec {command}`' section"
    top = command.split()[0]
    assert f"| `{top}` |" in CLI_DOC.read_text(), f"the command table lacks `{top}`"
    missing = [
        name
        for name in _names(COMMANDS[command])
        if not re.search(re.escape(name) + r"(?![\w-])", sections[command])
    ]
    assert not missing, f"docs/cli.md's section on `retrovec {command}` lacks {missing}"


def _doc_command_lines() -> list[tuple[str, str]]:
    """``(file:line, command)`` for every ``retrovec ...`` command in a fenced block of the
    README, docs/ and benchmarks/: in a block with ``$ `` prompts the prompted lines (the
    others are output), else every line; synopses with ``[...]`` left out."""
    found = []
    paths = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    paths += sorted((REPO_ROOT / "benchmarks").glob("*.md"))
    for path in paths:
        text = path.read_text().replace("\\\n", " ")  # join continued lines
        lines = list(enumerate(text.splitlines(), 1))
        blocks, block, fenced = [], [], False
        for number, line in lines:
            if line.lstrip().startswith("```"):
                if fenced:
                    blocks.append(block)
                block, fenced = [], not fenced
            elif fenced:
                block.append((number, line.strip()))
        for block in blocks:
            prompted = any(line.startswith("$ ") for _, line in block)
            for number, line in block:
                if prompted and not line.startswith("$ "):
                    continue
                if "[" in line or "..." in line:
                    continue
                line = re.sub(r"\s+#.*$", "", line).removeprefix("$ ")
                for segment in re.split(r"&&|\|", line):
                    if segment.strip().startswith("retrovec "):
                        where = f"{path.relative_to(REPO_ROOT)}:{number}"
                        found.append((where, segment.strip()))
    return found


DOC_LINES = _doc_command_lines()


def test_the_docs_have_command_lines() -> None:
    assert any("retrovec run --num-envs 4 --seconds 20" == c for _, c in DOC_LINES)
    assert any(c.startswith("retrovec evaluate --random") for _, c in DOC_LINES)


@pytest.mark.parametrize(("where", "command"), DOC_LINES, ids=[w for w, _ in DOC_LINES])
def test_every_documented_command_line_parses(where: str, command: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code}): {err.getvalue()}")
