"""retrovec: many retro-game emulators in parallel, as a gymnasium vector env.

Importing retrovec registers the gymnasium id ``retrovec/Retro-v0`` (as ale_py registers
its ids), so ``gymnasium.make_vec("retrovec/Retro-v0", num_envs=8, game=...)`` works.

Example:
    >>> import retrovec
    >>> envs = retrovec.make("Airstriker-Genesis-v0", num_envs=2)  # doctest: +SKIP
    >>> observations, infos = envs.reset(seed=0)  # doctest: +SKIP
    >>> observations.shape  # doctest: +SKIP
    (2, 224, 320, 3)
"""

from gymnasium.vector import AutoresetMode

from retrovec import _aliases

_aliases.install()  # the old flat module paths (retrovec.sb3, ...) keep working

from retrovec.core.process_backend import AsyncRetroVectorEnv
from retrovec.core.selection import EnvSelection
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
from retrovec.retro.factory import make, make_env
from retrovec.retro.games import list_games, list_states
from retrovec.retro.registration import ENV_ID, register_envs
from retrovec.retro.snapshots import Snapshot
from retrovec.retro.wrappers.preprocessing import Preprocessing

__version__ = "0.1.0"

__all__ = [
    "ENV_ID",
    "AsyncRetroVectorEnv",
    "AutoresetMode",
    "BrokenVectorEnvError",
    "EnvSelection",
    "InvalidGameError",
    "Preprocessing",
    "RemoteTraceback",
    "RetrovecError",
    "RomNotImportedError",
    "Snapshot",
    "SpacesMismatchError",
    "UnknownGameError",
    "UnknownStateError",
    "WorkerCrashedError",
    "WorkerTimeoutError",
    "__version__",
    "list_games",
    "list_states",
    "make",
    "make_env",
    "register_envs",
]

register_envs()
