"""retrovec: many retro-game emulators in parallel, as a gymnasium vector env.

Example:
    >>> import retrovec
    >>> envs = retrovec.make("Airstriker-Genesis-v0", num_envs=2)  # doctest: +SKIP
    >>> observations, infos = envs.reset(seed=0)  # doctest: +SKIP
    >>> observations.shape  # doctest: +SKIP
    (2, 224, 320, 3)
"""

from gymnasium.vector import AutoresetMode

from retrovec.errors import (
    BrokenVectorEnvError,
    InvalidGameError,
    RemoteTraceback,
    RetrovecError,
    RomNotImportedError,
    SpacesMismatchError,
    UnknownGameError,
    UnknownStateError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from retrovec.vector_env import AsyncRetroVectorEnv

__version__ = "0.1.0"

__all__ = [
    "AsyncRetroVectorEnv",
    "AutoresetMode",
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
    "__version__",
]
