"""stable-retro allows one emulator per process: see whether this process holds one, and pick
a worker start method that does not inherit it.

A forked worker inherits its parent's memory, stable-retro's "an emulator exists" flag
included, so when the parent holds a live ``RetroEnv`` (created and not closed) every
forked worker fails with stable-retro's bare ``RuntimeError: Cannot create multiple
emulator instances per process``. ``forkserver`` and ``spawn`` workers start from a fresh
interpreter and do not inherit it.

:func:`retrovec.make` therefore, when ``context`` is not given and this platform's default
start method is ``fork``, looks for a live ``RetroEnv`` in this process
(:func:`parent_emulators`) and, if there is one, starts its workers with ``forkserver``
(:func:`choose_context`). Picking a working start method beats an error that says what to
do: the parent's env may be needed (an evaluation env, a notebook's), and ``forkserver`` is
what Python 3.14 uses by default anyway. The cost is ``forkserver``'s: the worker's env
function is pickled with cloudpickle, and a script's top level must be guarded by
``if __name__ == "__main__":`` (a worker runs the main module's top level again, so an env
created there would be built in every worker; the worker's error says so). Scripts
without that guard failed anyway under ``fork``. The scan is a walk over :func:`gc.get_objects` (tens of
milliseconds in a large process), done only in that case. An explicit ``context="fork"``
is honoured, and a worker that still meets the error (a raw ``RetroEmulator`` that the
scan cannot see, or a ``make_fn`` that builds two envs) raises
:func:`second_emulator_error`'s message instead of stable-retro's.

Example:
    >>> parent_emulators()  # this process holds no emulator
    0
    >>> choose_context(None)  # doctest: +SKIP
    None
"""

from __future__ import annotations

import gc
import multiprocessing

import stable_retro

__all__ = ["SECOND_EMULATOR", "choose_context", "parent_emulators", "second_emulator_error"]

SECOND_EMULATOR = "Cannot create multiple emulator instances per process"
"""The start of stable-retro's message when a process builds a second emulator."""


def parent_emulators() -> int:
    """How many ``stable_retro.RetroEnv`` objects in this process still hold an emulator.

    A ``RetroEnv`` deletes its ``em`` on ``close()``. Unreachable envs not yet collected do
    not count: a collection runs first when the scan finds one.

    Returns:
        The number of live ``RetroEnv`` objects (subclasses included) with an ``em``.

    Example:
        >>> parent_emulators()
        0
    """

    def count() -> int:
        kinds, todo = set(), [stable_retro.RetroEnv]
        while todo:  # RetroEnv and its subclasses (a make_fn's own, say)
            kind = todo.pop()
            kinds.add(kind)
            todo.extend(k for k in kind.__subclasses__() if k not in kinds)
        # type(o) in a set: fast, and never runs a lazy module's __class__ (isinstance may)
        return sum(
            1 for o in gc.get_objects() if type(o) in kinds and "em" in vars(o)
        )

    found = count()
    if found:
        gc.collect()  # stable-retro collects before it builds an emulator; so do we
        found = count()
    return found


def choose_context(context: str | None) -> str | None:
    """The start method :func:`retrovec.make` gives its workers.

    Args:
        context: What the caller passed (``None``: not given).

    Returns:
        ``context`` itself when given, or when the default start method is not ``fork``
        or this process holds no emulator; else ``"forkserver"`` (see the module
        docstring for why).

    Example:
        >>> choose_context("spawn")
        'spawn'
    """
    if context is not None:
        return context
    default = multiprocessing.get_context().get_start_method()  # as the workers' would be
    if default != "fork" or not parent_emulators():
        return None
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return None
    return "forkserver"


def second_emulator_error(error: BaseException, index: int | None = None) -> RuntimeError:
    """stable-retro's "one emulator per process" error, said so that it can be acted upon.

    Args:
        error: The ``RuntimeError`` stable-retro raised in a worker.
        index: The env whose worker it is, if known.

    Returns:
        A ``RuntimeError`` saying why a worker already holds an emulator and what to do.

    Example:
        >>> error = RuntimeError(SECOND_EMULATOR + ", make sure to call env.close()")
        >>> print(second_emulator_error(error, 2))  # doctest: +ELLIPSIS
        The worker of env 2 could not build its emulator: stable-retro allows one per process...
    """
    who = "This worker" if index is None else f"The worker of env {index}"
    method = multiprocessing.get_start_method(allow_none=True)
    if method in ("spawn", "forkserver"):  # the worker ran the main module's top level
        return RuntimeError(
            f"{who} could not build its emulator: stable-retro allows one per process, and "
            f"this one already holds an emulator. Under the {method!r} start method a "
            "worker first runs the top level of your main module again: a stable-retro env "
            "created there is built in every worker too. Put it, and the retrovec.make "
            "call, under `if __name__ == \"__main__\":`. A make_fn must build one emulator "
            f"only. (stable-retro said: {error})"
        )
    return RuntimeError(
        f"{who} could not build its emulator: stable-retro allows one per process, and "
        "this one already holds an emulator. Under the 'fork' start method a worker "
        "inherits its parent's, so a stable-retro env created in the parent process and "
        "not closed blocks every worker: close it (env.close()) before retrovec.make, or "
        "pass context='forkserver' or context='spawn' (retrovec.make picks 'forkserver' "
        "by itself when it finds a live RetroEnv in the parent and context is not given). "
        "A make_fn must build one emulator only. "
        f"(stable-retro said: {error})"
    )
