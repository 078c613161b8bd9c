"""Register retrovec's env id with gymnasium.

After :func:`register_envs`, ``gymnasium.make_vec("retrovec/Retro-v0", num_envs=8,
game=...)`` returns :func:`retrovec.make`'s vector env (through
:func:`make_vec_entry_point`, the id's ``vector_entry_point``), and
``gymnasium.make("retrovec/Retro-v0", game=...)`` one env in the calling process
(:func:`make_env_entry_point`, which calls :func:`retrovec.retro.factory.make_env`).

Keyword arguments are those of :func:`retrovec.make` (and
:func:`retrovec.retro.factory.make_env`), given as plain keywords, with one exception:
**retrovec's** ``wrappers`` **are passed as** ``env_wrappers=``. ``gymnasium.make_vec``
takes ``wrappers`` and ``vector_kwargs`` for itself, and in its default mode (the
``vector_entry_point``) it refuses both before retrovec runs::

    gymnasium.error.Error: Cannot use `vector_entry_point` vectorization mode with the
    wrappers argument (...)
    gymnasium.error.Error: Custom vector environment can be passed arguments only through
    kwargs and `vector_kwargs` is not empty (...)

So write ``gymnasium.make_vec(ENV_ID, 8, game=..., env_wrappers=[...], context="spawn")``:
``env_wrappers`` become :func:`retrovec.make`'s ``wrappers`` (applied in each worker after
``preprocessing`` and ``max_episode_steps``), and vector options such as ``context``,
``timeout`` or ``batch_size`` are plain keywords too.

Leave ``vectorization_mode`` unset. ``"sync"`` cannot work: it would build every emulator
in one process, and stable-retro allows only one per process. ``"async"`` uses gymnasium's
``AsyncVectorEnv`` (which builds a throwaway env in the calling process first); there
gymnasium applies its own ``wrappers=`` to each env, and ``env_wrappers=`` is refused.

Example:
    >>> import gymnasium
    >>> register_envs()
    >>> register_envs()  # again: no error, no warning
    >>> ENV_ID in gymnasium.registry
    True
    >>> from gymnasium.wrappers import RecordEpisodeStatistics
    >>> envs = gymnasium.make_vec(ENV_ID, num_envs=2, game="Airstriker-Genesis-v0",
    ...                           env_wrappers=[RecordEpisodeStatistics])  # doctest: +SKIP
    >>> envs.close()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import gymnasium

if TYPE_CHECKING:  # registering imports nothing: the entry points import the factory
    from retrovec.core.process_backend import AsyncRetroVectorEnv

__all__ = ["ENV_ID", "make_env_entry_point", "make_vec_entry_point", "register_envs"]

ENV_ID = "retrovec/Retro-v0"
"""The gymnasium id of retrovec's stable-retro env."""

#: The start of stable-retro's error when a process builds a second emulator.
_SECOND_EMULATOR = "Cannot create multiple emulator instances per process"


def register_envs() -> None:
    """Register ``retrovec/Retro-v0`` with gymnasium, once; later calls do nothing.

    Registering imports nothing: gymnasium loads the entry points when the id is made.
    """
    if ENV_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=ENV_ID,
        entry_point="retrovec.retro.registration:make_env_entry_point",
        vector_entry_point="retrovec.retro.registration:make_vec_entry_point",
    )


def make_vec_entry_point(
    num_envs: int | None = None,
    *,
    env_wrappers: Sequence[Callable[[gymnasium.Env], gymnasium.Env]] = (),
    **kwargs: Any,
) -> AsyncRetroVectorEnv:
    """``gymnasium.make_vec(ENV_ID, ...)``'s vector env: :func:`retrovec.make`.

    Args:
        num_envs: As for :func:`retrovec.make`.
        env_wrappers: :func:`retrovec.make`'s ``wrappers`` (callables ``env -> env``
            applied in order inside each worker); ``gymnasium.make_vec`` keeps the name
            ``wrappers`` for itself.
        **kwargs: Every other argument of :func:`retrovec.make`, vector options included.

    Raises:
        TypeError: ``env_wrappers`` is not a sequence of callables; and whatever
            :func:`retrovec.make` raises for its arguments.
    """
    from retrovec.retro.factory import make

    if callable(env_wrappers) or isinstance(env_wrappers, (str, bytes)) or not isinstance(
        env_wrappers, Sequence
    ):
        raise TypeError(
            "env_wrappers must be a sequence of callables env -> env (retrovec.make's "
            f"wrappers), e.g. env_wrappers=[RecordEpisodeStatistics], got {env_wrappers!r}."
        )
    return make(num_envs=num_envs, wrappers=env_wrappers, **kwargs)


def make_env_entry_point(**kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make(ENV_ID, ...)``'s env: :func:`retrovec.retro.factory.make_env`.

    Also what ``gymnasium.make_vec`` builds each env with in its ``"async"`` and ``"sync"``
    modes.

    Raises:
        TypeError: ``env_wrappers`` was given: it is for ``make_vec``'s default mode
            (retrovec's vector env); here gymnasium builds the envs itself.
        RuntimeError: stable-retro's one-emulator-per-process error, with a note on
            ``make_vec``'s ``"sync"`` mode.
    """
    from retrovec.retro.factory import make_env

    if "env_wrappers" in kwargs:
        raise TypeError(
            "env_wrappers= is for gymnasium.make_vec's default mode (retrovec's own vector "
            "env: leave vectorization_mode unset). gymnasium.make and make_vec with "
            "vectorization_mode='async' build each env through gymnasium: give make_vec "
            "wrappers=[...] there, or wrap the env yourself."
        )
    try:
        return make_env(**kwargs)
    except RuntimeError as error:
        if _SECOND_EMULATOR in str(error):
            error.add_note(
                "gymnasium.make_vec(..., vectorization_mode='sync') builds every env in this "
                "process, which stable-retro does not allow: leave vectorization_mode unset "
                "(retrovec's vector env; pass its wrappers as env_wrappers=[...])."
            )
        raise
