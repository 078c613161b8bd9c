"""Targeted calls: ``envs.at(indices)`` runs ``call``, ``get_attr`` and ``set_attr`` on
chosen envs only.

A gymnasium vector env's ``call`` reaches every env. ``envs.at(3)`` or ``envs.at([1, 3])``
is an :class:`EnvSelection`: the same calls, sent only to those envs, with the results in
the order the envs were given (one value for a single int index). The indices are given to
``at()``, never to the call, so the env method's own keyword arguments (``indices=``
included) pass through untouched::

    envs.at(3).call("set_value", "lives", 1)        # env 3 only
    envs.at([1, 3]).set_attr("foo", 7)               # a new attribute on envs 1 and 3
    envs.at(np.array([True, False, True, False])).get_attr("statename")

A targeted call goes through the same slot table as ``call`` (:mod:`retrovec.core.slots`):
the same errors (the env's own exception, re-raised), the same restart policy for a dead
worker (:data:`retrovec.core.restart.POLICY`), and a ``call_wait`` timeout leaves the call
pending. In EnvPool mode (``send``/``recv``) it may target any env that is not in flight;
choosing one whose batch was not received yet raises before anything is sent.

Example:
    >>> select_indices(3, 8)
    ((3,), True)
    >>> select_indices([5, -1], 8)
    ((5, 7), False)
    >>> select_indices(np.array([True, False, True]), 3)
    ((0, 2), False)
    >>> select_indices([1, 1], 8)
    Traceback (most recent call last):
    ...
    ValueError: indices hold env 1 twice: [1, 1]; each env may be chosen once.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.slots import BATCH, CALL

__all__ = ["EnvSelection", "SelectionMixin", "select_indices"]


def select_indices(indices: Any, num_envs: int) -> tuple[tuple[int, ...], bool]:
    """Check ``indices`` and return ``(the env indices in the order given, single)``.

    Args:
        indices: An int (``single`` is then true), a sequence or 1-D numpy array of ints,
            or a bool mask of length ``num_envs``. Negative ints count from the end, as
            in Python.
        num_envs: How many envs there are.

    Raises:
        TypeError: Not an int, a sequence of ints or a bool mask (e.g. a float, a string,
            a bool, ``None``, a mix of bools and ints).
        IndexError: An index outside ``[-num_envs, num_envs)``.
        ValueError: No env chosen, an env chosen twice, a mask of the wrong length, or an
            array that is not 1-D.
    """
    expected = (
        "an int, a sequence of ints, or a bool mask of length "
        f"num_envs={num_envs}"
    )
    if isinstance(indices, (bool, np.bool_)):
        raise TypeError(f"indices must be {expected}, got the bool {indices!r}.")
    if isinstance(indices, (int, np.integer)):
        return (_normalise(int(indices), num_envs),), True
    if isinstance(indices, (str, bytes, dict, set, frozenset)) or not isinstance(
        indices, (Sequence, np.ndarray)
    ):
        raise TypeError(f"indices must be {expected}, got {type(indices).__name__}: {indices!r}.")
    array = np.asarray(indices)
    if array.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {array.shape}: {indices!r}.")
    if array.dtype == np.bool_:
        if array.shape != (num_envs,):
            raise ValueError(
                f"A bool mask of indices must have length num_envs={num_envs}, "
                f"got length {len(array)}."
            )
        chosen = tuple(int(i) for i in np.flatnonzero(array))
    elif array.size == 0 or np.issubdtype(array.dtype, np.integer):
        items = list(indices)
        if any(isinstance(i, (bool, np.bool_)) for i in items):
            raise TypeError(f"indices mix bools and ints: {indices!r}; give {expected}.")
        chosen = tuple(_normalise(operator.index(i), num_envs) for i in items)
    else:
        raise TypeError(f"indices must be {expected}, got {indices!r} (dtype {array.dtype}).")
    if not chosen:
        raise ValueError(f"indices choose no env: {indices!r}.")
    if len(set(chosen)) != len(chosen):
        twice = next(i for i in chosen if chosen.count(i) > 1)
        raise ValueError(
            f"indices hold env {twice} twice: {list(chosen)}; each env may be chosen once."
        )
    return chosen, False


def _normalise(index: int, num_envs: int) -> int:
    if not -num_envs <= index < num_envs:
        raise IndexError(
            f"env index {index} is out of range for {num_envs} envs "
            f"(valid: 0 to {num_envs - 1}, or -{num_envs} to -1)."
        )
    return index % num_envs


class EnvSelection:
    """Some envs of a retrovec vector env, for targeted calls (made by ``envs.at(...)``).

    The calls mirror the vector env's own, restricted to :attr:`indices`: results are one
    per chosen env in the order given, or one value when ``at()`` got a single int.

    Attributes:
        envs: The vector env.
        indices: The chosen envs, in the order given (a tuple of non-negative ints; one
            element for a single int).
        single: Whether ``at()`` got a single int (results are then not tuples).
    """

    def __init__(self, envs: SelectionMixin, indices: tuple[int, ...], single: bool) -> None:
        self.envs = envs
        self.indices = indices
        self.single = single

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        chosen = self.indices[0] if self.single else list(self.indices)
        return f"<EnvSelection {chosen} of {type(self.envs).__name__}>"

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call a method (or read an attribute) of the chosen envs.

        Every keyword argument goes to the method (``indices=`` too).

        Returns:
            One result per chosen env in the order given (a tuple), or the one result.
        """
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def call_async(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Send a call to the chosen envs; :meth:`call_wait` collects the results.

        Raises:
            ClosedEnvironmentError: The vector env was closed.
            AlreadyPendingCallError: Another call is pending, or a chosen env is in flight
                in an EnvPool batch (the error names it).
            Exception: The arguments cannot be pickled (nothing was sent).
        """
        argument = (name, args, kwargs)
        self.envs._send_selected(
            "call_async", self.indices, [("call", argument)] * len(self.indices)
        )

    def call_wait(self, timeout: float | None = None) -> Any:
        """Wait for :meth:`call_async`'s results.

        Args:
            timeout: Seconds to wait (``None``: the vector env's ``timeout``).

        Raises:
            NoAsyncCallError: No targeted call to these envs is pending.
            WorkerTimeoutError: Some chosen envs did not answer in time; the call stays
                pending.
        """
        return self._result(self.envs._wait_selected("call_wait", self.indices, timeout))

    def get_attr(self, name: str) -> Any:
        """An attribute of the chosen envs (a method is called, as gymnasium's
        ``get_attr`` does)."""
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        """Set an attribute on the chosen envs; the others keep theirs.

        The attribute may be new: it is set as gymnasium's ``set_attr`` sets it
        (``Env.set_wrapper_attr``: on the wrapper that has it, else on the outermost).

        Args:
            name: The attribute.
            values: For a single int index, the value. Otherwise one value per chosen env
                (a list or tuple of ``len(indices)``), or any other object for all of them.

        Raises:
            ValueError: A list or tuple whose length is not ``len(indices)``.
        """
        count = len(self.indices)
        if self.single:
            values = [values]
        elif not isinstance(values, (list, tuple)):
            values = [values] * count
        elif len(values) != count:
            raise ValueError(
                "values must be one object for every chosen env, or a list or tuple with "
                f"one value per chosen env: got {len(values)} values for {count} envs "
                f"{list(self.indices)}."
            )
        commands = [("setattr", (name, value)) for value in values]
        self.envs._send_selected("set_attr", self.indices, commands)
        self.envs._wait_selected("set_attr", self.indices, None)

    def _result(self, values: tuple[Any, ...]) -> Any:
        return values[0] if self.single else values


class SelectionMixin:
    """``at()`` and the targeted-call machinery for
    :class:`~retrovec.core.base.RetroVectorEnvBase` (on its slot table, through
    :meth:`~retrovec.core.commands.CommandsMixin._dispatch` and ``_finish_call``)."""

    #: The envs of the pending targeted call in the order given (``None``: none pending).
    _selection: tuple[int, ...] | None = None

    def at(self, indices: Any) -> EnvSelection:
        """Choose envs for targeted ``call``, ``get_attr`` and ``set_attr``.

        Args:
            indices: An int (results are then one value), a sequence or numpy array of
                ints (results in that order), or a bool mask of length ``num_envs``.

        Returns:
            An :class:`EnvSelection`.

        Raises:
            TypeError, IndexError, ValueError: See :func:`select_indices`; raised here,
                before anything is sent.
        """
        chosen, single = select_indices(indices, self.num_envs)
        return EnvSelection(self, chosen, single)

    def _send_selected(
        self, method: str, indices: tuple[int, ...], commands: list[tuple[str, Any]]
    ) -> None:
        """Send ``commands[k]`` (``(kind, argument)``) to env ``indices[k]`` as the pending
        call."""
        self._assert_usable()
        self._assert_no_call_pending(method)
        in_flight = [i for i in indices if self._slots[i].owner == BATCH]
        if in_flight:
            raise AlreadyPendingCallError(
                f"Calling `{method}` on envs {list(indices)} while envs {in_flight} are in "
                "flight after `send`/`async_reset`: `recv()` them first, or choose envs "
                "that are not in flight.",
                "recv",
            )
        with self._guard:  # a Ctrl-C while sending is raised once the call is pending
            self._dispatch(
                [(index, kind, argument) for index, (kind, argument) in zip(indices, commands)],
                CALL,
            )
            self._state = AsyncState.WAITING_CALL
            self._selection = indices

    def _wait_selected(
        self, method: str, indices: tuple[int, ...], timeout: float | None
    ) -> tuple[Any, ...]:
        """Collect the pending targeted call to ``indices``, in that order."""
        self._expect(method, AsyncState.WAITING_CALL, "call_async")
        if self._selection != indices:
            pending = "every env" if self._selection is None else f"envs {list(self._selection)}"
            raise NoAsyncCallError(
                f"Calling `{method}` for envs {list(indices)}, but the pending call went to "
                f"{pending}; collect it with the `call_wait` of the same envs.",
                AsyncState.WAITING_CALL.value,
            )
        order = sorted(indices)  # _finish_call hands the payloads over by env index

        def in_given_order(payloads: list[Any]) -> tuple[Any, ...]:
            by_index = dict(zip(order, payloads))
            return tuple(by_index[index] for index in indices)

        try:
            return self._finish_call(method, timeout, in_given_order)
        finally:
            if self._state is AsyncState.DEFAULT:
                self._selection = None

    def _assert_not_selected(self, method: str) -> None:
        """Refuse to collect a targeted call as if it went to every env."""
        if self._selection is not None and self._state is AsyncState.WAITING_CALL:
            raise NoAsyncCallError(
                f"Calling `{method}`, but the pending call went to envs "
                f"{list(self._selection)} only: collect it with "
                f"`envs.at({list(self._selection)}).call_wait()`.",
                AsyncState.WAITING_CALL.value,
            )
