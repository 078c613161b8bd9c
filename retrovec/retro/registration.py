"""Register retrovec's env id with gymnasium.

After :func:`register_envs`, ``gymnasium.make_vec("retrovec/Retro-v0", num_envs=8,
game=...)`` returns :func:`retrovec.make`'s vector env (its ``vector_entry_point``), and
``gymnasium.make("retrovec/Retro-v0", game=...)`` one env in the calling process
(:func:`retrovec.retro.factory.make_env`). Keyword arguments are those of :func:`retrovec.make`
and :func:`retrovec.retro.factory.make_env`.

Leave ``vectorization_mode`` unset. ``"sync"`` cannot work: it would build every emulator
in one process, and stable-retro allows only one per process. ``"async"`` uses gymnasium's
``AsyncVectorEnv``, which builds a throwaway env in the calling process first.

Example:
    >>> import gymnasium
    >>> register_envs()
    >>> register_envs()  # again: no error, no warning
    >>> ENV_ID in gymnasium.registry
    True
    >>> envs = gymnasium.make_vec(ENV_ID, num_envs=2,
    ...                           game="Airstriker-Genesis-v0")  # doctest: +SKIP
    >>> envs.close()  # doctest: +SKIP
"""

from __future__ import annotations

import gymnasium

__all__ = ["ENV_ID", "register_envs"]

ENV_ID = "retrovec/Retro-v0"
"""The gymnasium id of retrovec's stable-retro env."""


def register_envs() -> None:
    """Register ``retrovec/Retro-v0`` with gymnasium, once; later calls do nothing.

    Registering imports nothing: gymnasium loads ``retrovec.retro.factory`` when the id is made.
    """
    if ENV_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=ENV_ID,
        entry_point="retrovec.retro.factory:make_env",
        vector_entry_point="retrovec.retro.factory:make",
    )
