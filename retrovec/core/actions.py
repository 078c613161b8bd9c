"""Route a batch of actions to the envs: through the shared arena, or as gymnasium would.

``gymnasium.vector.AsyncVectorEnv.step_async`` splits the batch with
``iterate(action_space, actions)`` and pickles each env's piece down its pipe, so an env
receives exactly what the user passed, sliced: a float64 array stays float64, a list of ints
gives Python ints, an action outside the space goes through for the env to judge.
:class:`ActionRouter` keeps that contract while taking a shared-memory shortcut whenever it
changes nothing: when every leaf of the batch is a numpy array of exactly the space's dtype
and batched shape, the batch is copied into the arena in one go, and each worker reads its
row back (``SharedArena.action_reader``) as the very array or numpy scalar ``iterate`` would
have given. Anything else travels through the pipes, split by gymnasium's own ``iterate``.

Envs built by :func:`retrovec.make` (retro button spaces) use ``validate=True`` instead:
every batch is checked (range, and floats or bools only where exactly whole numbers, as a
Bernoulli sample from a policy is) and converted to the space's dtype, then always goes
through the arena.

Example:
    >>> import numpy as np
    >>> from gymnasium import spaces
    >>> from retrovec.core.arena import ArenaLayout, SharedArena
    >>> space = spaces.Box(-1, 1, (2,), np.float32)
    >>> arena = SharedArena.create(ArenaLayout.plan(2, space, space, observations=False))
    >>> router = ActionRouter(space, 2, arena, validate=False)
    >>> router.route(np.zeros((2, 2), np.float32))  # the space's dtype: through the arena
    [IN_ARENA, IN_ARENA]
    >>> arena.action_reader(1)()
    array([0., 0.], dtype=float32)
    >>> router.route(np.ones((2, 2)))  # float64: delivered as float64, as gymnasium does
    [array([1., 1.]), array([1., 1.])]
    >>> arena.close()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space, iterate

from retrovec.core.arena import Path, SharedArena, _get, _leaves

__all__ = ["IN_ARENA", "ActionRouter"]


class _InArena:
    """The ``"step"`` argument of an env whose action is in the arena (a real ``None``
    action stays ``None``)."""

    _instance: _InArena | None = None

    def __new__(cls) -> _InArena:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> str:
        return "IN_ARENA"

    def __repr__(self) -> str:
        return "IN_ARENA"


#: The ``"step"`` argument that says "read this env's action from the arena".
IN_ARENA = _InArena()


class ActionRouter:
    """Split a batch of actions into each env's ``"step"`` argument (parent side).

    Hand-written rather than gymnasium's ``iterate`` alone because ``iterate`` knows no
    shared memory: the router writes whole batches into the arena when that delivers the
    same values and types, and, with ``validate``, checks and converts button actions,
    which gymnasium leaves to the env.

    Args:
        single_action_space: One env's action space.
        num_envs: Number of envs.
        arena: The arena whose action fields receive fast-path batches, or ``None``. A
            space that cannot live in shared memory (``arena.layout.action_space`` is
            ``None``) is always split with ``iterate``.
        validate: ``False``: deliver exactly what ``gymnasium.vector.AsyncVectorEnv`` would
            (no checks, no conversion; the arena only for leaves already of the space's
            dtype and batched shape). ``True``: check every batch and convert it to the
            space's dtype in the arena (see ``SharedArena.action_writer``); without a
            shareable arena it behaves as ``False``.

    Raises:
        ValueError: The arena was planned for another action space or number of envs.

    Example:
        >>> from retrovec.core.arena import ArenaLayout, SharedArena
        >>> buttons = spaces.MultiBinary(3)
        >>> arena = SharedArena.create(ArenaLayout.plan(2, buttons, buttons, False))
        >>> router = ActionRouter(buttons, 2, arena, validate=True)
        >>> router.route(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], np.float32))
        [IN_ARENA, IN_ARENA]
        >>> arena.action_reader(0)()  # converted to the space's dtype
        array([1, 0, 1], dtype=int8)
        >>> router.route([[1, 0, 0]], rows=np.array([1]))  # env 1 only
        [IN_ARENA]
        >>> arena.action_reader(1)()
        array([1, 0, 0], dtype=int8)
        >>> router.route(np.full((2, 3), 0.5))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: The action of env 0 is not in ... is 0.5, expected 0 or 1 (ints, ...
        >>> ActionRouter(spaces.Discrete(3), 2, None, validate=False).route([2, 7])
        [2, 7]
        >>> arena.close()
    """

    def __init__(
        self,
        single_action_space: spaces.Space,
        num_envs: int,
        arena: SharedArena | None,
        validate: bool,
    ) -> None:
        self.single_action_space = single_action_space
        self.num_envs = num_envs
        self.validate = validate
        self._write: Callable[..., bool] | None = None
        if arena is not None and arena.layout.action_space is not None:
            layout = arena.layout
            if layout.action_space != single_action_space or layout.num_envs != num_envs:
                raise ValueError(
                    f"The arena holds actions of {layout.action_space} for {layout.num_envs} "
                    f"envs, not of {single_action_space} for {num_envs}."
                )
            self._write = arena.action_writer(exact=not validate)
        self._batched: dict[int, spaces.Space] = {
            num_envs: batch_space(single_action_space, num_envs)
        }

    @property
    def shared(self) -> bool:
        """Whether batches can go through the arena (the space lives in shared memory)."""
        return self._write is not None

    def route(self, actions: Any, rows: np.ndarray | None = None) -> list[Any]:
        """Deliver ``actions`` and return each env's ``"step"`` argument.

        Args:
            actions: A batch of actions for the envs ``rows``, an element of the batched
                action space (``batch_space(single_action_space, len(rows))``).
            rows: Env indices the batch is for, in order; ``None``: all envs.

        Returns:
            One entry per env in ``rows``: :data:`IN_ARENA` where the action was written
            to the arena (the worker reads it with ``arena.action_reader(index)``), otherwise the
            object ``iterate`` yields for that env, to send through the pipe. Those may be
            views of the caller's arrays: send (pickle) them before returning to the user,
            as gymnasium does.

        Raises:
            TypeError: ``actions`` (or one of its leaves) is a single value, not a batch,
                as from gymnasium's ``iterate``.
            ValueError: Not one action per env (the message says how many were expected
                and given); with ``validate``, also a wrong shape or dtype or an action
                outside the space. Nothing is written when anything is wrong.
        """
        count = self.num_envs if rows is None else len(rows)
        if self._write is not None and self._write(actions, rows):
            return [IN_ARENA] * count
        return self._split(actions, count)

    def _split(self, actions: Any, count: int) -> list[Any]:
        """Split as ``AsyncVectorEnv.step_async`` does, with clearer errors."""
        space = self._batched.get(count)
        if space is None:
            space = self._batched[count] = batch_space(self.single_action_space, count)
        try:
            split = list(iterate(space, actions))
        except TypeError as error:
            raise TypeError(
                f"Expected a batch of {count} actions (one per env) for the action space "
                f"{self.single_action_space}; iterating over the given "
                f"{type(actions).__name__} failed: {error}"
            ) from error
        except ValueError as error:  # zip(strict=True): Dict/Tuple leaves of unequal length
            raise ValueError(
                f"Expected {count} actions (one per env) in every part of the batch, got "
                f"{_lengths(self.single_action_space, actions)}."
            ) from error
        if len(split) != count:
            raise ValueError(f"Expected {count} actions (one per env), got {len(split)}.")
        return split


def _lengths(space: spaces.Space, actions: Any, path: tuple[Any, ...] = ()) -> str:
    """``"['a']: 2, ['b']: 3"``: how many actions each leaf of a batch holds (for errors)."""
    if isinstance(space, spaces.Dict | spaces.Tuple):
        keys = space.spaces if isinstance(space, spaces.Dict) else range(len(space.spaces))
        parts = []
        for key in keys:
            try:
                parts.append(_lengths(space[key], actions[key], (*path, key)))
            except Exception:  # noqa: BLE001 - a description, best effort
                parts.append(f"{list((*path, key))}: missing")
        return ", ".join(parts)
    try:
        return f"{list(path)}: {len(actions)}"
    except TypeError:
        return f"{list(path)}: not a batch"


def _integer_bounds(space: spaces.Space) -> Iterator[tuple[Path, tuple[np.ndarray, np.ndarray]]]:
    """``(path, (low, high))`` for every leaf whose values are discrete choices.

    Box leaves of a float dtype are left out on purpose: gymnasium envs commonly accept
    continuous actions outside their bounds and clip them, and code written for gymnasium's
    vector envs relies on it.
    """
    for path, leaf in _leaves(space):
        if isinstance(leaf, spaces.Discrete):
            yield path, (np.asarray(leaf.start), np.asarray(leaf.start + leaf.n - 1))
        elif isinstance(leaf, spaces.MultiDiscrete):
            yield path, (np.asarray(leaf.start), np.asarray(leaf.start + leaf.nvec - 1))
        elif isinstance(leaf, spaces.MultiBinary):
            yield path, (np.asarray(0), np.asarray(1))
        elif isinstance(leaf, spaces.Box) and leaf.dtype.kind in "biu":  # bool Box too
            yield path, (leaf.low, leaf.high)


_UNSIGNED = {size: np.dtype(f"u{size}") for size in (1, 2, 4, 8)}


def make_action_writer(arena: SharedArena, exact: bool) -> Callable[..., bool]:
    """:meth:`SharedArena.action_writer <retrovec.core.arena.SharedArena.action_writer>`:
    checks and stores batches of actions in ``arena`` (see there). Written by hand: it is
    the hot path of every step (one ``np.copyto`` per leaf when the batch is exact)."""
    space = arena.layout.action_space
    assert space is not None
    bounds = dict(_integer_bounds(space))
    fields = [(path, buffer, bounds.get(path)) for path, buffer in arena._group("action").items()]

    def store(values: list[np.ndarray], rows: Any) -> None:
        for (_, buffer, _), value in zip(fields, values):
            if rows is None:
                np.copyto(buffer, value, casting="unsafe")  # checked: values fit
            else:
                buffer[rows] = value

    if exact:

        def write_exact(actions: Any, rows: Any = None) -> bool:
            values = []
            for path, buffer, _ in fields:
                try:
                    value = _get(actions, path)
                except Exception:  # noqa: BLE001 - gymnasium's iterate reports it
                    return False
                envs = buffer.shape[0] if rows is None else len(rows)
                if (
                    type(value) is not np.ndarray  # a subclass iterates differently
                    or value.dtype != buffer.dtype
                    or value.shape != (envs, *buffer.shape[1:])
                ):
                    return False
                values.append(value)
            store(values, rows)
            return True

        return write_exact

    # Leaves whose range starts at 0 with one upper bound (MultiBinary, Discrete(n),
    # buttons): an integer batch of the right shape is checked with one reduction over an
    # unsigned view (a negative value reads as huge), the common case of every step.
    # Anything else, or a batch that fails, takes the full check below, which words the error.
    quick = {
        path: int(high)
        for path, (low, high) in bounds.items()
        if np.ndim(low) == 0 and np.ndim(high) == 0 and int(low) == 0
    }

    def check(path: Path, buffer: np.ndarray, limits: Any, actions: Any, rows: Any) -> np.ndarray:
        envs = buffer.shape[0] if rows is None else len(rows)
        expected = (envs, *buffer.shape[1:])
        high = quick.get(path)
        if high is not None and rows is None:
            value = actions if not path else _get(actions, path)
            if (
                type(value) is np.ndarray
                and value.shape == expected
                and value.dtype.kind in "iu"
                and (not value.size or value.view(_UNSIGNED[value.itemsize]).max() <= high)
            ):
                return value
        leaf = space if not path else list(path)
        try:
            value = np.asarray(_get(actions, path))
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(
                f"Expected a batch of actions shaped like the action space {space} "
                f"batched {envs} times; missing {list(path)}."
            ) from error
        except ValueError as error:  # a ragged nested list
            raise ValueError(
                f"Expected actions of shape {expected} ({envs} envs x {leaf}), got a "
                f"ragged sequence: {error}"
            ) from error
        if value.ndim == 0:
            raise TypeError(
                f"Expected a batch of {envs} actions (one per env) for {leaf}, got the "
                f"single value {value.item()!r}: a vector env takes one action per env."
            )
        if value.shape != expected:
            raise ValueError(
                f"Expected actions of shape {expected} ({envs} envs x {leaf}), got "
                f"shape {value.shape}."
            )
        kind = value.dtype.kind
        if kind not in "biuf":  # bool, int, uint, float: real numbers only
            raise ValueError(
                f"Expected actions of dtype {buffer.dtype} (or numbers that convert to "
                f"it exactly), got {value.dtype}."
            )
        if limits is None:  # a float Box leaf: unclipped, as gymnasium passes it on
            return value
        low, high = limits

        def fail(mask: np.ndarray, fractional: bool) -> None:
            where = tuple(int(i) for i in np.argwhere(mask)[0])
            env = where[0] if rows is None else int(rows[where[0]])
            lo = np.broadcast_to(low, value.shape)[where].item()
            hi = np.broadcast_to(high, value.shape)[where].item()
            if not fractional:
                problem, wanted = "outside", f"{lo} to {hi}"
            elif (lo, hi) == (0, 1):
                problem = "not in"
                wanted = "0 or 1 (ints, bools, or floats that are exactly 0.0 or 1.0)"
            else:
                problem = "not in"
                wanted = f"a whole number from {lo} to {hi} (floats must have no fraction)"
            element = f"element {where[1:]}" if where[1:] else "it"
            raise ValueError(
                f"The action of env {env} is {problem} the action space {leaf}: {element} "
                f"is {value[where].item()!r}, expected {wanted}."
            )

        if kind == "f":  # floats for buttons: exact whole numbers only (NaN is not one)
            fractional = value != np.trunc(value)
            if fractional.any():
                fail(fractional, True)
        outside = (value < low) | (value > high)
        if outside.any():
            fail(outside, False)
        return value

    def write(actions: Any, rows: Any = None) -> bool:
        store([check(path, buf, limits, actions, rows) for path, buf, limits in fields], rows)
        return True

    if len(fields) != 1:
        return write
    ((only_path, only_buffer, only_limits),) = fields

    def write_one(actions: Any, rows: Any = None) -> bool:  # one leaf: every retro env
        value = check(only_path, only_buffer, only_limits, actions, rows)
        if rows is None:
            np.copyto(only_buffer, value, casting="unsafe")  # checked: values fit
        else:
            only_buffer[rows] = value
        return True

    return write_one
