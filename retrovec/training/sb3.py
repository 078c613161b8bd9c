"""Stable-Baselines3 interop: an :class:`AsyncRetroVectorEnv` seen as an SB3 ``VecEnv``.

SB3 has its own vector API (``stable_baselines3.common.vec_env.VecEnv``): ``reset()``
returns observations only, ``step`` returns ``(obs, rewards, dones, infos)`` with one info
dict per env, and an env whose episode ends is reset **in the same step**, its last
observation left in ``infos[i]["terminal_observation"]``. That is gymnasium's
``AutoresetMode.SAME_STEP``, so :class:`Sb3VecEnv` wraps a retrovec env built with
``autoreset_mode=SAME_STEP`` and translates, per step:

==========================================  ==============================================
gymnasium (retrovec, ``SAME_STEP``)          SB3 (:class:`Sb3VecEnv`)
==========================================  ==============================================
``terminated | truncated``                   ``dones``
``info["final_obs"][i]``                     ``infos[i]["terminal_observation"]``
``info["final_info"]`` (env ``i``'s part)     ``infos[i]`` at the step that ends an episode
the reset ``info`` of an ended env            ``reset_infos[i]`` (as SB3's ``DummyVecEnv``)
``truncated and not terminated``              ``infos[i]["TimeLimit.truncated"]``, in
                                             every step's info (``False`` mostly)
``rewards`` (float32)                        ``rewards`` as float64, as ``SubprocVecEnv``
==========================================  ==============================================

``env_method``, ``get_attr`` and ``set_attr`` with ``indices=`` reach only the chosen envs
(through retrovec's targeted calls, ``venv.at(indices)``), as in SB3's ``SubprocVecEnv``.

This module imports ``stable_baselines3`` (install ``retrovec[train]``); ``import
retrovec`` does not import it.

Example:
    >>> from stable_baselines3 import PPO  # doctest: +SKIP
    >>> from stable_baselines3.common.vec_env import VecFrameStack, VecMonitor  # doctest: +SKIP
    >>> import retrovec  # doctest: +SKIP
    >>> from retrovec.training.sb3 import make_sb3  # doctest: +SKIP
    >>> pre = retrovec.Preprocessing.atari(frame_stack=1, channels_first=True)  # doctest: +SKIP
    >>> venv = make_sb3("Airstriker-Genesis-v0", num_envs=4, preprocessing=pre)  # doctest: +SKIP
    >>> venv = VecFrameStack(VecMonitor(venv), 4)  # doctest: +SKIP
    >>> PPO("CnnPolicy", venv).learn(10_000)  # doctest: +SKIP
    >>> venv.close()  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv
except ModuleNotFoundError as error:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        "retrovec.training.sb3 needs stable-baselines3: pip install 'retrovec[train]' "
        "(from a clone of the repository: pip install -e '.[train]')"
    ) from error

__all__ = ["Sb3VecEnv", "make_sb3", "unbatch_infos"]


def unbatch_infos(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Split a gymnasium batched info dict into one dict per env.

    A key ``k`` goes into env ``i``'s dict when ``infos["_k"][i]`` is true (or when there
    is no ``_k`` mask); nested batched dicts (such as ``final_info``) are split the same
    way. The ``_k`` masks themselves are dropped.

    Example:
        >>> unbatch_infos({"t": np.array([3, 0]), "_t": np.array([True, False])}, 2)
        [{'t': 3}, {}]
    """
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in infos.items():
        if key.startswith("_") and key[1:] in infos:
            continue
        mask = infos.get(f"_{key}")
        for i in range(num_envs):
            if mask is not None and not mask[i]:
                continue
            if isinstance(value, dict):
                out[i][key] = unbatch_infos(value, num_envs)[i]
            else:
                item = value[i]
                out[i][key] = item.item() if isinstance(item, np.generic) else item
    return out


def _indices(indices: None | int | Iterable[int], num_envs: int) -> list[int]:
    """SB3's ``VecEnvIndices`` (``None``: every env, an int, or an iterable of ints) as a
    list."""
    if indices is None:
        return list(range(num_envs))
    if isinstance(indices, (int, np.integer)):
        return [int(indices)]
    return [int(i) for i in indices]


class Sb3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a gymnasium vector env in ``SAME_STEP`` autoreset mode.

    Built for :class:`retrovec.AsyncRetroVectorEnv` (see :func:`make_sb3`), it works over
    any gymnasium 1.x ``VectorEnv`` whose ``metadata["autoreset_mode"]`` is
    ``AutoresetMode.SAME_STEP`` (``indices=`` other than ``None`` then needs retrovec's
    targeted calls, ``venv.unwrapped.at``). Closing the adapter closes the vector env.

    Args:
        venv: The vector env to present to SB3.

    Raises:
        ValueError: ``venv`` does not autoreset in the same step; build it with
            ``retrovec.make(..., autoreset_mode=retrovec.AutoresetMode.SAME_STEP)`` or use
            :func:`make_sb3`.
        TypeError: ``venv`` is not a gymnasium ``VectorEnv``.
    """

    def __init__(self, venv: VectorEnv) -> None:
        if not isinstance(venv, VectorEnv):
            raise TypeError(f"Sb3VecEnv needs a gymnasium VectorEnv, got {type(venv).__name__}")
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if AutoresetMode(mode) is not AutoresetMode.SAME_STEP:
            raise ValueError(
                "SB3 resets an ended env in the same step, so Sb3VecEnv needs a vector env "
                f"with autoreset_mode=SAME_STEP, got {AutoresetMode(mode).name}. Build it with "
                "retrovec.make(..., autoreset_mode=retrovec.AutoresetMode.SAME_STEP), or use "
                "retrovec.training.sb3.make_sb3(...)."
            )
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # ------------------------------------------------------------------ stepping

    def reset(self) -> Any:
        """Reset every env with the seeds and options set by ``seed``/``set_options``.

        Returns:
            The batch of observations; the reset infos are in ``self.reset_infos``.

        Raises:
            ValueError: ``set_options`` gave different options to different envs (a
                gymnasium vector env takes one ``options`` dict).
        """
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        options = self._options
        if any(o != options[0] for o in options):
            raise ValueError("Sb3VecEnv.reset needs the same options for every env")
        observations, infos = self.venv.reset(seed=seeds, options=options[0] or None)
        self.reset_infos = unbatch_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions; :meth:`step_wait` sends them (SB3 steps in pairs)."""
        actions = np.asarray(actions)
        dtype = getattr(self.venv.action_space, "dtype", None)
        if dtype is not None and actions.dtype != dtype:
            actions = actions.astype(dtype)  # e.g. SB3's float 0./1. for MultiBinary
        self._actions = actions

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every env with the actions from :meth:`step_async`.

        Returns:
            ``(observations, rewards, dones, infos)``: ``dones = terminated | truncated``;
            for an env whose episode ended, ``observations[i]`` is its reset observation,
            ``infos[i]`` its last step's info plus ``"terminal_observation"`` and
            ``"TimeLimit.truncated"``, and ``reset_infos[i]`` its reset info.
        """
        if self._actions is None:
            raise RuntimeError("step_wait called without step_async")
        actions, self._actions = self._actions, None
        observations, rewards, terminations, truncations, infos = self.venv.step(actions)
        dones = np.logical_or(terminations, truncations)
        final_obs = infos.get("final_obs")
        final_mask = infos.get("_final_obs")
        final_infos = (
            unbatch_infos(infos["final_info"], self.num_envs) if "final_info" in infos else None
        )
        step_infos = {k: v for k, v in infos.items() if k not in _FINAL_KEYS}
        per_env = unbatch_infos(step_infos, self.num_envs)
        for i in range(self.num_envs):
            if dones[i]:
                self.reset_infos[i] = per_env[i]
                per_env[i] = dict(final_infos[i]) if final_infos is not None else {}
                if final_obs is not None and final_mask is not None and final_mask[i]:
                    per_env[i]["terminal_observation"] = final_obs[i]
        for i in range(self.num_envs):  # in every step's info, as SB3's own vector envs
            per_env[i]["TimeLimit.truncated"] = bool(truncations[i] and not terminations[i])
        return observations, np.asarray(rewards, dtype=np.float64), dones, per_env

    # ------------------------------------------------------------------ envs

    def _select(self, indices: Any) -> Any:
        """The ``EnvSelection`` of the envs ``indices`` (``None`` when there are none).

        Raises:
            NotImplementedError: The vector env has no targeted calls (it is not
                retrovec's), so a call cannot be limited to some envs.
        """
        selected = _indices(indices, self.num_envs)
        at = getattr(self.venv.unwrapped, "at", None)
        if at is None:
            raise NotImplementedError(
                f"indices={indices!r} needs a vector env with targeted calls (retrovec's "
                f"`at()`); {type(self.venv.unwrapped).__name__} can only call every env: "
                "pass indices=None."
            )
        return at(selected) if selected else None  # SB3 allows an empty selection

    def _call(self, indices: Any, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """``venv.call`` on the envs ``indices`` only, results in that order."""
        if indices is None:
            return list(self.venv.call(name, *args, **kwargs))
        selection = self._select(indices)
        return [] if selection is None else list(selection.call(name, *args, **kwargs))

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """An attribute of the selected envs (``indices``: ``None`` for all, an int, or
        an iterable of ints), read only from those envs.

        As gymnasium's ``get_attr``, a method is called and its result returned (SB3's
        own vector envs would return the bound method)."""
        return self._call(indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set an attribute to ``value`` on the selected envs only; the others keep theirs.

        The attribute may be new. It is set as gymnasium's ``set_attr`` sets it
        (``Env.set_wrapper_attr``): on the wrapper or env that has it, else on the
        outermost wrapper (where SB3's ``SubprocVecEnv`` always sets it).
        """
        if indices is None:
            self.venv.set_attr(attr_name, [value] * self.num_envs)  # a list is one value
            return
        selection = self._select(indices)
        if selection is not None:
            selection.set_attr(attr_name, [value] * len(selection))

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the selected envs only and return their results in order.

        ``method_kwargs`` go to the method untouched; ``indices`` is SB3's own.
        """
        return self._call(indices, method_name, *method_args, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        """Whether each selected env's wrapper chain holds a wrapper of this class.

        The chain lives in the workers, so it is read from each env's ``str()``
        (``<TimeLimit<FrameSkip<...>>>``) and matched by class name.
        """
        chains = self._call(indices, "__str__")
        name = wrapper_class.__name__
        return [name in re.findall(r"<(\w+)", chain) for chain in chains]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Every env's ``render()`` frame (build the env with ``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return list(self.venv.render())

    def close(self) -> None:
        """Close the vector env and its workers."""
        self.venv.close()


_FINAL_KEYS = ("final_obs", "_final_obs", "final_info", "_final_info")


def make_sb3(
    game: str = "Airstriker-Genesis-v0", num_envs: int | None = None, **kwargs: Any
) -> Sb3VecEnv:
    """``retrovec.make(game, num_envs, **kwargs)`` in ``SAME_STEP`` mode, as an SB3 ``VecEnv``.

    Args:
        game: A stable-retro game id.
        num_envs: How many envs (worker processes).
        **kwargs: Anything :func:`retrovec.make` takes, except another ``autoreset_mode``.

    Raises:
        ValueError: ``autoreset_mode`` other than ``SAME_STEP`` was given.
    """
    from retrovec.retro.factory import make

    mode = kwargs.pop("autoreset_mode", AutoresetMode.SAME_STEP)
    if AutoresetMode(mode) is not AutoresetMode.SAME_STEP:
        raise ValueError(
            "make_sb3 builds a SAME_STEP vector env (SB3's convention), got "
            f"autoreset_mode={mode!r}"
        )
    venv = make(game, num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    try:
        return Sb3VecEnv(venv)
    except BaseException:
        venv.close()
        raise
