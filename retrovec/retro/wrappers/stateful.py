"""Wrappers that keep state between calls: frame skip with max-pooling, no-op starts.

Sticky actions and frame stacking use gymnasium's own wrappers,
:class:`gymnasium.wrappers.StickyAction` and
:class:`gymnasium.wrappers.FrameStackObservation`, whose semantics are the conventional ones
(see ``docs/preprocessing.md``). The two here differ from their gymnasium counterparts:

* :class:`FrameSkip` vs ``gymnasium.wrappers.MaxAndSkipObservation``: when the episode ends
  before the last frame of a skip, gymnasium returns a max over stale frames of the
  *previous* step (its buffer is written only at the last two frames); it also refuses
  ``skip=1``. :class:`FrameSkip` always pools the last two frames actually emulated.
* :class:`NoopReset`: gymnasium has no such wrapper (``AtariPreprocessing`` builds it in,
  for ALE envs only).
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box

from retrovec.retro.wrappers.actions import noop_action as default_noop_action
from retrovec.retro.wrappers.transform import _as_int

__all__ = ["FrameSkip", "NoopReset"]


class FrameSkip(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Repeats each action for ``skip`` frames, sums the rewards, max-pools the last two frames.

    One ``step(action)`` runs the wrapped env's ``step(action)`` up to ``skip`` times,
    stopping early after the first frame whose ``terminated`` or ``truncated`` is true.
    With ``n`` the number of frames run (``1 <= n <= skip``):

    * ``reward`` is ``float(r_0) + ... + float(r_{n-1})``, summed in that order;
    * ``terminated``, ``truncated`` and ``info`` are those of frame ``n - 1``;
    * ``observation`` is ``np.maximum(frame_{n-2}, frame_{n-1})`` when ``max_pool`` and
      ``n >= 2``, else ``frame_{n-1}``. Pooling never reaches back into an earlier step:
      an episode that ends on the first frame of a skip returns that frame alone.

    ``reset`` is passed through unchanged (the reset frame is not pooled). Max-pooling
    removes the flicker of sprites that Atari and other consoles draw every other frame.

    Args:
        env: The env to wrap; one of its steps is one emulator frame for stable-retro.
        skip: Frames per step, an int >= 1.
        max_pool: Pool the last two frames (needs a ``Box`` observation space). If false,
            the observation is the last frame.

    Raises:
        ValueError: ``skip`` is not an int >= 1, or ``max_pool`` with observations that
            are not a ``Box``.

    Example:
        >>> import gymnasium as gym
        >>> env = FrameSkip(gym.make("CartPole-v1"), skip=4)
        >>> _ = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(1)
        >>> reward  # four frames, one point each
        4.0
        >>> reference = gym.make("CartPole-v1")
        >>> _ = reference.reset(seed=0)
        >>> frames = [reference.step(1)[0] for _ in range(4)]
        >>> bool((obs == np.maximum(frames[2], frames[3])).all())
        True
    """

    def __init__(self, env: gym.Env, skip: int = 4, max_pool: bool = True) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, skip=skip, max_pool=max_pool)
        gym.Wrapper.__init__(self, env)
        self.skip = _as_int(skip, "FrameSkip: skip", 1)
        self.max_pool = bool(max_pool)
        self._previous: np.ndarray | None = None
        if self.max_pool and self.skip > 1:
            space = env.observation_space
            if not isinstance(space, Box):
                raise ValueError(
                    f"FrameSkip: max_pool needs a Box observation space, got {space}; "
                    "pass max_pool=False"
                )
            self._previous = np.zeros(space.shape, space.dtype)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Run ``action`` for up to ``skip`` frames; see the class docstring."""
        env = self.env
        previous = self._previous
        total: Any = 0.0
        for i in range(self.skip):
            observation, reward, terminated, truncated, info = env.step(action)
            if np.ndim(reward):  # per-player rewards (RetroEnv with multi_rewards)
                total = total + np.asarray(reward, dtype=np.float64)
            else:
                total += float(reward)
            if terminated or truncated or i == self.skip - 1:
                break
            if previous is not None:
                # A copy, not a reference: an env may reuse its observation array.
                np.copyto(previous, observation)
        if previous is not None and i > 0:
            observation = np.maximum(previous, observation)
        return observation, total, terminated, truncated, info


class NoopReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Starts each episode with a random number of no-op frames, so that envs diverge.

    stable-retro's emulator is deterministic and ``RetroEnv.reset(seed=...)`` only seeds
    ``np_random``: every env that starts from the same save state would see the same
    frames. After the wrapped env's ``reset``, this wrapper draws
    ``n = env.unwrapped.np_random.integers(1, noop_max + 1)`` (so ``1 <= n <= noop_max``,
    the convention of SB3, CleanRL and gymnasium's ``AtariPreprocessing``) and steps
    ``noop_action`` ``n`` times. Their rewards are dropped; the returned ``info`` is the
    reset's updated with each no-op step's info. If the episode ends during the no-ops,
    the env is reset again (without the seed, which seeds only once) and the remaining
    no-ops continue.

    The draw comes from the env's own ``np_random``, so ``reset(seed=s)`` fixes it, and
    a vector env's ``reset(seed=s)`` (env ``i`` gets ``s + i``) starts each env after a
    different, reproducible number of no-ops.

    Args:
        env: The env to wrap.
        noop_max: The largest number of no-ops, an int >= 1.
        noop_action: The action that presses nothing. ``None``: :func:`noop_action`
            finds it (all zeros for a ``MultiBinary`` retro action space).

    Raises:
        ValueError: ``noop_max`` is not an int >= 1, or no no-op action can be found.

    Example:
        >>> import gymnasium as gym
        >>> env = NoopReset(gym.make("CartPole-v1"), noop_max=5, noop_action=0)
        >>> obs, info = env.reset(seed=3)
        >>> reference = gym.make("CartPole-v1")
        >>> _ = reference.reset(seed=3)
        >>> n = reference.unwrapped.np_random.integers(1, 6)  # the draw NoopReset made
        >>> for _ in range(n):
        ...     expected = reference.step(0)[0]
        >>> bool((obs == expected).all())
        True
    """

    def __init__(self, env: gym.Env, noop_max: int = 30, noop_action: Any = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, noop_max=noop_max, noop_action=noop_action)
        gym.Wrapper.__init__(self, env)
        self.noop_max = _as_int(noop_max, "NoopReset: noop_max", 1)
        self.noop_action = default_noop_action(env) if noop_action is None else noop_action

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset, then step ``noop_action`` a random number of times; see the class docstring."""
        observation, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        noops = int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            observation, _, terminated, truncated, step_info = self.env.step(self.noop_action)
            info.update(step_info)
            if terminated or truncated:
                observation, info = self.env.reset(options=options)
                info = dict(info)
        return observation, info
