"""The checks of what a user passes to a vector env, with gymnasium's own messages where
gymnasium has one. Each raises before any worker starts or any command is sent.

Example:
    >>> spread_seeds(7, 3)
    [7, 8, 9]
    >>> check_reset_mask(np.array([True, False]), 2)
    array([ True, False])
    >>> check_failure_handling(None, "explode", 3)
    Traceback (most recent call last):
    ...
    ValueError: on_worker_failure must be 'raise' or 'restart', got 'explode'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import Env, Space
from gymnasium.vector import AutoresetMode

__all__ = [
    "BASE_ARGUMENTS",
    "base_arguments",
    "check_autoreset_mode",
    "check_env_fns",
    "check_failure_handling",
    "check_observation_mode",
    "check_reset_mask",
    "spread_seeds",
]


def check_env_fns(env_fns: Sequence[Callable[[], Env]]) -> list[Callable[[], Env]]:
    """At least one callable; returns them as a list."""
    env_fns = list(env_fns)
    if not env_fns:
        raise ValueError("env_fns must hold at least one function that builds an env.")
    for index, env_fn in enumerate(env_fns):
        if not callable(env_fn):
            raise ValueError(
                f"env_fns[{index}] must be a callable that returns an env, got {env_fn!r}."
            )
    return env_fns


def check_observation_mode(observation_mode: Any) -> None:
    """``"same"``, ``"different"`` or ``(batch_space, single_space)``, as gymnasium says."""
    if not (
        observation_mode in ("same", "different")
        or (isinstance(observation_mode, tuple) and len(observation_mode) == 2)
    ):
        raise ValueError(
            "Invalid `observation_mode`, expected: 'same' or 'different' or tuple of single "
            f"and batch observation space, actual got {observation_mode}"
        )
    if isinstance(observation_mode, tuple) and not all(
        isinstance(space, Space) for space in observation_mode
    ):
        raise TypeError(
            "Expected both elements of observation_mode to be Spaces, got "
            f"{type(observation_mode[0])} and {type(observation_mode[1])}"
        )


def check_failure_handling(
    timeout: float | None, on_worker_failure: str, max_restarts: int
) -> None:
    """``timeout`` >= 0 or ``None``, ``on_worker_failure`` and ``max_restarts``."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or >= 0 seconds, got {timeout}.")
    if on_worker_failure not in ("raise", "restart"):
        raise ValueError(
            f"on_worker_failure must be 'raise' or 'restart', got {on_worker_failure!r}."
        )
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}.")


def check_autoreset_mode(autoreset_mode: Any) -> AutoresetMode:
    """The :class:`~gymnasium.vector.AutoresetMode` for a mode or its value."""
    try:
        return AutoresetMode(autoreset_mode)
    except ValueError:
        raise ValueError(
            "autoreset_mode must be an AutoresetMode (NEXT_STEP, SAME_STEP or DISABLED) or "
            f"its value {[mode.value for mode in AutoresetMode]}, got {autoreset_mode!r}."
        ) from None


def check_reset_mask(mask: Any, num_envs: int) -> np.ndarray:
    """Check ``options["reset_mask"]`` as gymnasium does."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(
            f"`options['reset_mask']` must have shape `({num_envs},)`, got {mask.shape}"
        )
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not np.any(mask):
        raise ValueError(
            "`options['reset_mask']` must contain a boolean array with at least one "
            f"True value, got reset_mask={mask}"
        )
    return mask


def spread_seeds(seed: Any, num_envs: int) -> list[int | None]:
    """One seed per env, as gymnasium spreads them (env ``i`` gets ``seed + i``); checks
    what the user gave."""
    if seed is None:
        seeds: list[Any] = [None] * num_envs
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seeds = [int(seed) + i for i in range(num_envs)]
    elif isinstance(seed, (list, tuple, np.ndarray)):
        seeds = list(seed)
    else:
        raise TypeError(
            f"seed must be None, an int (env i gets seed + i) or a list with one int or "
            f"None per env, got {seed!r}."
        )
    for value in seeds:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0
        ):
            raise ValueError(f"Every seed must be None or an int >= 0, got {value!r}.")
    if len(seeds) != num_envs:
        raise ValueError(
            "If seeds are passed as a list the length must match "
            f"num_envs={num_envs} but got length={len(seeds)}."
        )
    return [None if value is None else int(value) for value in seeds]


#: The constructor arguments every backend shares, handled by ``_init_base``.
BASE_ARGUMENTS = (
    "env_fns", "copy", "observation_mode", "autoreset_mode", "timeout",
    "on_worker_failure", "max_restarts", "batch_size", "validate_actions",
)


def base_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The shared arguments out of a backend constructor's ``locals()``, for
    :meth:`~retrovec.core.base.RetroVectorEnvBase._init_base`.

    Example:
        >>> shared = base_arguments({"env_fns": [], "copy": True, "timeout": None,
        ...     "observation_mode": "same", "autoreset_mode": "NextStep",
        ...     "on_worker_failure": "raise", "max_restarts": 3, "batch_size": None,
        ...     "validate_actions": False, "spin_seconds": 0.0})
        >>> len(shared), "spin_seconds" in shared
        (9, False)
    """
    return {name: arguments[name] for name in BASE_ARGUMENTS}
