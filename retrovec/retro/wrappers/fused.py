"""Sticky actions, no-op starts and frame skip fused into one loop over a bare RetroEnv.

:class:`FusedFrameSkip` gives exactly what ``StickyAction -> NoopReset -> FrameSkip``
gives on a :class:`stable_retro.RetroEnv` (the same observations, rewards, flags, infos
and random draws; ``tests/retro/test_wrappers_fused.py`` checks it frame for frame across
episode ends), but drives the emulator directly instead of calling ``RetroEnv.step``
once per frame. Per agent step it decodes the action into button masks once instead of
once per frame, reads the game variables for ``info`` once instead of every frame, and
skips three layers of wrapper calls per frame. Written by hand because this is the hot
path of the Atari-style workload; :class:`~retrovec.retro.wrappers.Preprocessing` uses it
whenever it can (a bare RetroEnv that records no movie).

When the env's scenario file compiles (:class:`retrovec.retro.scenario.FastScenario`: any
scenario that runs no Lua and sums no fractional multipliers of several variables),
rewards and episode ends are computed from the few RAM variables the scenario names
instead of calling ``data.update_ram()``, which copies the whole RAM after every frame
(16% of a ``RetroEnv.step`` on the Genesis). With ``skip=1`` the wrapper is then a faster
``RetroEnv.step``, and :func:`retrovec.make` puts it under every env it builds.

Every frame's screen is still read when max-pooling: an episode can end on any frame of a
skip, and the pooled observation then needs the frame before it, which cannot be known in
advance.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from retrovec.retro.game_data import TrackedScenario
from retrovec.retro.wrappers.actions import noop_action as default_noop_action

__all__ = ["FusedFrameSkip", "can_fuse", "fast_step"]


def can_fuse(env: gym.Env) -> bool:
    """Whether ``env`` is a bare RetroEnv that :class:`FusedFrameSkip` can drive.

    Example:
        >>> can_fuse(gym.make("CartPole-v1"))
        False
    """
    try:
        import stable_retro
    except ModuleNotFoundError:  # pragma: no cover - stable-retro is a dependency
        return False
    return (
        type(env) is stable_retro.RetroEnv
        and env.movie is None
        and env.movie_path is None
        and env.render_mode != "human"
    )


class FusedFrameSkip(gym.Wrapper):
    """``StickyAction`` (if ``sticky_action_prob``), ``NoopReset`` (if ``noop_max``) and
    ``FrameSkip`` for a bare RetroEnv, in one loop; see the module docstring.

    Args:
        env: A bare :class:`stable_retro.RetroEnv` (see :func:`can_fuse`).
        skip: Frames per step, >= 1.
        max_pool: Max-pool the last two frames of each step.
        sticky_action_prob: Probability of repeating the previous frame's action.
        noop_max: Largest number of no-op frames after a reset (0: none).
    """

    def __init__(
        self,
        env: gym.Env,
        skip: int,
        max_pool: bool,
        sticky_action_prob: float = 0.0,
        noop_max: int = 0,
    ) -> None:
        if not can_fuse(env):
            raise ValueError(f"FusedFrameSkip needs a bare RetroEnv recording no movie, got {env}")
        super().__init__(env)
        self.skip = skip
        self.max_pool = max_pool and skip > 1
        self.sticky_action_prob = sticky_action_prob
        self.noop_max = noop_max
        if noop_max > 0:
            self.noop_action = default_noop_action(env)
            self._noop_masks = env.action_to_array(self.noop_action)
        # StickyAction's state: the previous frame's button masks (None after a reset).
        self._last_masks: list[np.ndarray] | None = None
        # Reward and done from the scenario's own variables, or None: update_ram per frame.
        # TrackedScenario also keeps env.data's current_reward/total_reward/is_done true and
        # follows anyone else's update_ram (see retrovec/retro/game_data.py).
        self._scenario = TrackedScenario.for_env(env)

    @property
    def fast_scenario(self) -> bool:
        """Whether rewards and episode ends come from :class:`~retrovec.retro.scenario.FastScenario`
        (``False``: from ``data.update_ram()`` after every frame)."""
        return self._scenario is not None

    def episode_state(self) -> dict[str, Any]:
        """What a snapshot (:mod:`retrovec.retro.snapshots`) needs to go on with this
        episode: sticky actions' previous button masks, the fast scenario's last values."""
        masks = self._last_masks
        return {
            "last_masks": None if masks is None else [mask.copy() for mask in masks],
            "scenario": None if self._scenario is None else dict(self._scenario._previous),
        }

    def restore_episode_state(self, state: dict[str, Any]) -> None:
        """Go on with the episode :meth:`episode_state` saved (its emulator just loaded)."""
        masks = state["last_masks"]
        self._last_masks = None if masks is None else [mask.copy() for mask in masks]
        if self._scenario is not None:
            if state["scenario"] is None:  # saved without the fast path: rebase on the RAM
                self._scenario.restart()
            else:
                self._scenario._previous = dict(state["scenario"])

    def _reset_retro(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        if self._scenario is not None and not self._scenario.follows(self.env):
            self._scenario = None  # env.data was replaced or reloaded: update_ram per frame
        if self._scenario is not None:
            self._scenario.restart()
        return observation, info

    def _frame(self, masks: list[np.ndarray]) -> tuple[Any, bool]:
        """One emulator frame, as ``StickyAction`` then ``RetroEnv.step`` would run it,
        minus the screen and info reads. ``masks`` is the action, decoded once per step
        by ``RetroEnv.action_to_array``. Returns ``(reward, done)``."""
        retro = self.env
        if self.sticky_action_prob > 0:
            rng = retro.np_random
            if self._last_masks is not None and rng.uniform() < self.sticky_action_prob:
                rng.integers(1, 2)  # StickyAction draws the repeat's duration (always 1)
                masks = self._last_masks
            self._last_masks = masks
        emulator = retro.em
        movie = retro.movie
        if movie is not None:  # a movie gets every frame, written as RetroEnv.step writes it
            for player, mask in enumerate(masks):
                for button in range(retro.num_buttons):
                    movie.set_key(button, mask[button], player)
            movie.step()
        for player, mask in enumerate(masks):
            emulator.set_button_mask(mask, player)
        emulator.step()
        if self._scenario is not None:
            rewards, done = self._scenario.update()
            if retro.players > 1 and retro.multi_rewards:
                padded = rewards + (0.0,) * retro.players
                return [padded[p] for p in range(retro.players)], done
            return rewards[0], done
        data = retro.data
        data.update_ram()
        if retro.players > 1 and retro.multi_rewards:
            reward: Any = [data.current_reward(p) for p in range(retro.players)]
        else:
            reward = data.current_reward()
        return reward, bool(data.is_done())

    def _observe(self) -> np.ndarray:
        # RetroEnv's own observation read: the screen, or the RAM with obs_type=RAM.
        return self.env._update_obs()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset, then run the no-op frames, as ``NoopReset`` over ``StickyAction``."""
        self._last_masks = None
        observation, info = self._reset_retro(seed=seed, options=options)
        if not self.noop_max:
            return observation, info
        info = dict(info)
        noops = int(self.env.np_random.integers(1, self.noop_max + 1))
        for index in range(noops):
            _, done = self._frame(self._noop_masks)
            if done:
                self._last_masks = None
                observation, info = self._reset_retro(options=options)
                info = dict(info)
            elif index == noops - 1:  # only the last no-op's screen and info are kept
                observation = self._observe()
                info.update(self.env.data.lookup_all())
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Run ``action`` for up to ``skip`` frames, exactly as ``FrameSkip`` does."""
        if self.env.img is None and self.env.ram is None:
            raise RuntimeError("Please call env.reset() before env.step()")
        if self._scenario is not None and not self._scenario.follows(self.env):
            self._scenario = None  # env.data was replaced or reloaded: update_ram per frame
        masks = self.env.action_to_array(action)
        total: Any = 0.0
        previous = None
        for index in range(self.skip):
            reward, done = self._frame(masks)
            if np.ndim(reward):
                total = total + np.asarray(reward, dtype=np.float64)
            else:
                total += float(reward)
            final = done or index == self.skip - 1
            if final or self.max_pool:
                observation = self._observe()
            if final:
                break
            if self.max_pool:
                previous = observation
        if previous is not None:
            observation = np.maximum(previous, observation)
        return observation, total, done, False, dict(self.env.data.lookup_all())


def fast_step(env: gym.Env) -> gym.Env:
    """``env`` under a one-frame :class:`FusedFrameSkip` if that makes it faster, else ``env``.

    The wrapper steps exactly as ``RetroEnv.step`` does, without ``update_ram``; it is
    used when ``env`` is a bare RetroEnv (:func:`can_fuse`) whose scenario compiles
    (:meth:`retrovec.retro.scenario.FastScenario.for_env`).

    Example:
        >>> fast_step(gym.make("CartPole-v1")).spec.id
        'CartPole-v1'
    """
    if not can_fuse(env):
        return env
    fused = FusedFrameSkip(env, skip=1, max_pool=False)
    return fused if fused.fast_scenario else env
