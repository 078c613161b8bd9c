"""Batching per-env info dicts exactly as gymnasium's ``VectorEnv._add_info`` does, faster.

Retro envs return the same few integer game variables (score, lives, ...) from every env
on every step. For that common case (every env has the same keys, and each key holds
values of one scalar type) the arrays are built in one go; anything else goes through
gymnasium's own ``_add_info``, so the result is always identical to gymnasium's. Written
by hand because ``_add_info`` is a per-env, per-key Python loop on the hot path.

Example:
    >>> from gymnasium.vector import VectorEnv
    >>> class Two:
    ...     num_envs = 2
    ...     _add_info = VectorEnv._add_info
    >>> batch_infos([{"score": 3}, {"score": 5}], Two())
    {'score': array([3, 5]), '_score': array([ True,  True])}
    >>> batch_infos([{"score": 3}, {}], Two())
    {'score': array([3, 0]), '_score': array([ True, False])}
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["batch_infos"]


def _fast(infos: list[dict]) -> dict[str, Any] | None:
    first = infos[0]
    if not first:
        return None
    keys = first.keys()
    for info in infos:
        if not info or info.keys() != keys:
            return None
    size = len(infos)
    batched: dict[str, Any] = {}
    for key, value in first.items():
        kind = type(value)
        if not (kind in (int, float, bool) or issubclass(kind, np.number)):
            return None
        values = [info[key] for info in infos]
        if any(type(v) is not kind for v in values):
            return None
        batched[key] = np.array(values, dtype=kind)
        batched[f"_{key}"] = np.ones(size, dtype=np.bool_)
    return batched


def batch_infos(infos: list[dict | None], owner: Any) -> dict[str, Any]:
    """Batch one info dict per env (``None`` or ``{}`` for none) into gymnasium's layout.

    Args:
        infos: One dict per row of the batch.
        owner: An object with ``num_envs == len(infos)`` and gymnasium's ``_add_info``.

    Returns:
        A dict of arrays with ``_key`` masks, exactly as gymnasium builds it.
    """
    if infos and all(info for info in infos):
        batched = _fast(infos)  # type: ignore[arg-type]
        if batched is not None:
            return batched
    batched = {}
    for index, info in enumerate(infos):
        if info:
            batched = owner._add_info(batched, info, index)
    return batched
