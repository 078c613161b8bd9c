"""What every ``retrovec`` subcommand shares: argparse value types and error reports.

The value types (:func:`positive_int`, :func:`nonnegative_int`, :func:`positive_float`)
turn bad input into argparse usage errors (exit code 2) with one clear message;
:func:`print_error` writes the ``retrovec COMMAND: error: ...`` line a command prints
before it returns a non-zero exit code, and :func:`one_line` folds an exception's message
onto that line; :func:`install_command` is the ``pip install`` line of an extra, and
:func:`plural` counts things in words. The checks of the commands' input live in
:mod:`retrovec.cli.checks`.

Example:
    >>> import argparse
    >>> from retrovec.cli.arguments import positive_int
    >>> parser = argparse.ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--num-envs", type=positive_int)
    >>> parser.parse_args(["--num-envs", "4"]).num_envs
    4
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable

__all__ = [
    "DEFAULT_GAME",
    "Handler",
    "Parser",
    "install_command",
    "nonnegative_int",
    "one_line",
    "plural",
    "positive_float",
    "positive_int",
    "print_error",
]

#: The game every command defaults to: its ROM ships with stable-retro.
DEFAULT_GAME = "Airstriker-Genesis-v0"

#: What a subcommand sets as ``handler``: parsed arguments in, exit code out.
Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, as every other bad input.

    argparse prints the usage synopsis and then the error; this prints only
    ``PROG: error: MESSAGE (PROG --help shows the options)`` and exits with code 2, as
    argparse does. Subparsers added to it are of this class too.

    Example:
        >>> import contextlib, io
        >>> parser = Parser(prog="retrovec demo")
        >>> _ = parser.add_argument("--num-envs", type=positive_int)
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
        ...     parser.parse_args(["--num-envs", "0"])
        >>> err.getvalue()
        "retrovec demo: error: argument --num-envs: must be a positive integer, got '0' (retrovec demo --help shows the options)\\n"
    """

    def error(self, message: str) -> typing.NoReturn:
        line = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {line} ({self.prog} --help shows the options)\n")


def positive_int(text: str) -> int:
    """An argparse ``type`` for integers >= 1.

    Example:
        >>> positive_int("3")
        3
        >>> positive_int("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a positive integer, got '0'
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse ``type`` for integers >= 0.

    Example:
        >>> nonnegative_int("0")
        0
        >>> nonnegative_int("-1")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be an integer >= 0, got '-1'
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type`` for numbers > 0 (NaN is rejected too).

    Example:
        >>> positive_float("2.5")
        2.5
        >>> positive_float("nan")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a positive number, got 'nan'
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not value > 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (notes and tracebacks left out).

    Example:
        >>> one_line(ValueError("no integration\\n  has that game"))
        'no integration has that game'
        >>> one_line(KeyError())
        'KeyError'
    """
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def print_error(command: str, message: str) -> None:
    """Print ``retrovec COMMAND: error: MESSAGE`` to stderr.

    Example:
        >>> import contextlib, io
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     print_error("run", "cannot make 'Nope-v0'")
        >>> err.getvalue()
        "retrovec run: error: cannot make 'Nope-v0'\\n"
    """
    print(f"retrovec {command}: error: {message}", file=sys.stderr)


def install_command(extra: str) -> str:
    """The command that installs a retrovec extra, from PyPI and from a clone.

    Example:
        >>> install_command("atari")
        "pip install 'retrovec[atari]' (from a clone of the repository: pip install -e '.[atari]')"
    """
    return (
        f"pip install 'retrovec[{extra}]' "
        f"(from a clone of the repository: pip install -e '.[{extra}]')"
    )


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun``, with an ``s`` unless ``count`` is 1.

    Example:
        >>> plural(1, "episode"), plural(3, "vector step"), plural(0, "game")
        ('1 episode', '3 vector steps', '0 games')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
