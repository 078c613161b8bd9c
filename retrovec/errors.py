"""The exceptions retrovec raises, and how they relate.

Every exception retrovec defines derives from :class:`RetrovecError`, and also from the
built-in or gymnasium class an existing ``except`` clause would already catch::

    RetrovecError
    ├── WorkerCrashedError      (RuntimeError)        a worker process died under you
    ├── BrokenVectorEnvError    (RuntimeError)        a worker failed earlier; the env is unusable
    ├── WorkerTimeoutError      (multiprocessing.TimeoutError)  a *_wait call ran out of time
    ├── SpacesMismatchError     (RuntimeError)        sub-environments disagree on their spaces
    └── InvalidGameError        (ValueError)          bad input to retrovec.make()
        ├── UnknownGameError                          no integration has that game id
        ├── RomNotImportedError (FileNotFoundError)   the integration exists, the ROM does not
        └── UnknownStateError                         no such save state for that game

Exceptions raised *inside* a worker (while building the env, in ``reset``, ``step`` or
``call``) are not wrapped: the parent raises the original exception type, with a note that
names the env index and a :class:`RemoteTraceback` chained as ``__cause__`` that holds the
worker's full traceback. The out-of-order and closed-env errors are gymnasium's own
(``AlreadyPendingCallError``, ``NoAsyncCallError``, ``ClosedEnvironmentError``).

Example:
    >>> import multiprocessing
    >>> issubclass(WorkerTimeoutError, multiprocessing.TimeoutError)
    True
    >>> issubclass(RomNotImportedError, FileNotFoundError)
    True
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Sequence

__all__ = [
    "BrokenVectorEnvError",
    "InvalidGameError",
    "RemoteTraceback",
    "RetrovecError",
    "RomNotImportedError",
    "SpacesMismatchError",
    "UnknownGameError",
    "UnknownStateError",
    "WorkerCrashedError",
    "WorkerTimeoutError",
    "describe_exitcode",
]


class RetrovecError(Exception):
    """Base class of every exception retrovec defines."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as ``__cause__``.

    Its string is the worker's formatted traceback, so it prints under the parent's own
    traceback with "The above exception was the direct cause of ...".
    """

    def __init__(self, env_index: int, traceback_text: str) -> None:
        super().__init__(env_index, traceback_text)
        self.env_index = env_index
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return f"\n\nTraceback in worker of env {self.env_index}:\n\"\"\"\n{self.traceback_text}\"\"\""


def describe_exitcode(exitcode: int | None) -> str:
    """Say in words how a process ended, naming the signal when there is one.

    Args:
        exitcode: ``multiprocessing.Process.exitcode``: negative for a signal.

    Returns:
        A short description.

    Example:
        >>> describe_exitcode(-9)
        'killed by signal SIGKILL (exit code -9)'
        >>> describe_exitcode(3)
        'exited with code 3'
    """
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by signal {name} (exit code {exitcode})"
    return f"exited with code {exitcode}"


class WorkerCrashedError(RetrovecError, RuntimeError):
    """A worker process died (a native crash, SIGKILL, ``os._exit``) instead of answering.

    Attributes:
        env_index: Index of the env whose worker died.
        exitcode: The process's exit code (negative: the signal number).
        signal_name: ``"SIGSEGV"`` and so on, or ``None`` when it exited normally.
    """

    def __init__(
        self,
        env_index: int,
        exitcode: int | None,
        during: str,
        *,
        restarted: bool = False,
        gave_up_after: int | None = None,
    ) -> None:
        self.env_index = env_index
        self.exitcode = exitcode
        self.restarted = restarted
        self.signal_name: str | None = None
        if exitcode is not None and exitcode < 0:
            try:
                self.signal_name = signal.Signals(-exitcode).name
            except ValueError:
                pass
        how = describe_exitcode(exitcode) if exitcode is not None else "ended"
        if restarted:
            advice = (
                "It was restarted and reset: the vector env is usable, and that env's "
                "next step reports its episode as truncated."
            )
        elif gave_up_after is not None:
            advice = (
                f"It was already restarted {gave_up_after} times (max_restarts), so the "
                "vector env gives up. Close it and build a new one."
            )
        else:
            advice = "Close this vector env and build a new one."
        super().__init__(f"The worker of env {env_index} died during {during}: {how}. {advice}")


class BrokenVectorEnvError(RetrovecError, RuntimeError):
    """A worker failed earlier, so the vector env can only be closed now."""


class WorkerTimeoutError(RetrovecError, multiprocessing.TimeoutError):
    """A ``*_wait`` call timed out.

    The call stays pending: calling the same ``*_wait`` again keeps waiting, and a late
    reply is never mistaken for the answer to a later call.

    Attributes:
        env_indices: The envs that had not answered.
    """

    def __init__(self, method: str, timeout: float, env_indices: Sequence[int]) -> None:
        self.env_indices = tuple(env_indices)
        super().__init__(
            f"The call to `{method}` has timed out after {timeout} second(s); "
            f"envs {list(self.env_indices)} had not answered."
        )


class SpacesMismatchError(RetrovecError, RuntimeError):
    """The sub-environments do not agree on their observation or action space."""


class InvalidGameError(RetrovecError, ValueError):
    """Bad game, state or count given to :func:`retrovec.make`."""


class UnknownGameError(InvalidGameError):
    """No stable-retro integration has this game id."""


class RomNotImportedError(InvalidGameError, FileNotFoundError):
    """The game is integrated, but its ROM has not been imported."""


class UnknownStateError(InvalidGameError):
    """The game has no save state by this name."""
