"""Ctrl-C that never splits a message: SIGINT is raised only where the vector env's state is
whole.

A ``KeyboardInterrupt`` that lands between reading bytes from a worker's socket and storing
them loses those bytes, and the next read takes the rest of that reply for a new message
(garbage, or a hang). :class:`InterruptGuard` installs, for the length of one call into the
vector env, a SIGINT handler that raises at once while the parent is blocked waiting (nothing
has been read yet) and otherwise only notes the signal; :meth:`InterruptGuard.checkpoint`
raises it once the bytes are stored. The user's own SIGINT handler, if any, is what runs
then. Written by hand: the standard library has no deferred-signal helper, and
``pthread_sigmask`` around every read would cost two syscalls per reply.

Example:
    >>> guard = InterruptGuard()
    >>> with guard:
    ...     with guard.released():
    ...         pass  # a blocking wait: Ctrl-C raises here at once
    ...     guard.checkpoint()  # state is whole: a Ctrl-C noted meanwhile raises here
"""

from __future__ import annotations

import _signal  # signal.signal without its enum conversions: this runs on every step
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["InterruptGuard"]

_SIGINT = int(signal.SIGINT)
_MAIN_THREAD = threading.main_thread()


class InterruptGuard:
    """Defers SIGINT to checkpoints while it is entered (main thread only; elsewhere Python
    delivers no signals, so there is nothing to defer)."""

    def __init__(self) -> None:
        self._depth = 0
        self._previous: Any = None
        self._held = True
        self._noted: tuple[int, FrameType | None] | None = None
        self._released = _Released(self)

    def __enter__(self) -> InterruptGuard:
        self._depth += 1
        if self._depth == 1:
            self._previous = None
            if threading.get_ident() == _MAIN_THREAD.ident:
                handler = _signal.getsignal(_SIGINT)
                if callable(handler):  # SIG_IGN / SIG_DFL: nothing to defer
                    self._previous = handler
                    self._held = True
                    self._noted = None
                    _signal.signal(_SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._previous is not None:
            previous, self._previous = self._previous, None
            _signal.signal(_SIGINT, previous)
            if exc_info[0] is None:
                self._deliver(previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._held:
            self._noted = (signum, frame)
        else:
            self._previous(signum, frame)

    def _deliver(self, handler: Any) -> None:
        noted, self._noted = self._noted, None
        if noted is not None:
            handler(*noted)

    def released(self) -> _Released:
        """A blocking wait (``with guard.released():``): a SIGINT noted before, or
        arriving now, is raised."""
        return self._released

    def checkpoint(self) -> None:
        """Raise (run the user's handler for) a SIGINT noted since the last checkpoint."""
        if self._noted is not None and self._previous is not None:
            self._deliver(self._previous)


class _Released:
    """The context of :meth:`InterruptGuard.released` (a plain class: it runs on every wait,
    and ``contextlib`` costs four calls per use)."""

    __slots__ = ("guard",)

    def __init__(self, guard: InterruptGuard) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        guard = self.guard
        if guard._previous is not None:
            guard._deliver(guard._previous)
            guard._held = False

    def __exit__(self, *exc_info: object) -> None:
        self.guard._held = True
