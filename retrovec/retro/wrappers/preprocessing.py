"""``Preprocessing``: the whole observation/action preprocessing chain as one frozen value.

:func:`retrovec.make` takes it as ``preprocessing=`` and each worker calls
:meth:`Preprocessing.wrap` on its freshly built env, before ``max_episode_steps``'s
``TimeLimit`` and before the user's ``wrappers``. The wrapper chain it builds is the
*reference* semantics of retrovec's preprocessing: any faster implementation must give
identical observations, rewards, terminations, truncations and infos. The chain, innermost
first (each step only when enabled)::

    RetroEnv                                  one step = one emulator frame
    1. StickyAction(sticky_action_prob)       gymnasium's; per emulator frame
    2. NoopReset(noop_max)                    1..noop_max no-op frames after each reset
    3. FrameSkip(frame_skip, max_pool)        repeat, sum rewards, max-pool last 2 frames
    4. Crop(*crop)                            cut (top, bottom, left, right) pixels
    5. Grayscale()                            BT.601 luma, OpenCV:   (H, W, 3) -> (H, W)
    6. ResizeObservation(resize)              gymnasium's; cv2.INTER_AREA, (height, width)
    7. ChannelsFirst()                        (H, W, C) -> (C, H, W); (H, W) -> (1, H, W)
    8. FrameStackObservation(frame_stack)     gymnasium's; padded with the reset frame
       + ReshapeObservation                   channels_first only: (k, C, H, W) -> (k*C, H, W)

``docs/preprocessing.md`` explains each choice (why max-pooling happens on RGB frames before
the grayscale conversion, where the RNG draws happen, and where ``max_episode_steps`` counts).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import gymnasium as gym
from gymnasium.spaces import Box

__all__ = ["Preprocessing"]


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and hasattr(value, "__index__")


def _int_tuple(value: Any, length: int) -> tuple[int, ...] | None:
    """``value`` as a tuple of ``length`` ints, or ``None`` if it is not one."""
    try:
        items = tuple(value)
    except TypeError:
        return None
    if len(items) != length or not all(_is_int(item) for item in items):
        return None
    return tuple(operator.index(item) for item in items)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What each worker does to its env before the user's wrappers; see :meth:`wrap`.

    The defaults do nothing. :meth:`atari` gives the standard Atari chain. Every field is
    checked on construction (``ValueError`` naming the field), and the value is frozen,
    hashable and picklable, so it travels to workers under every start method.

    Attributes:
        frame_skip: Emulator frames per ``step``; the action is repeated and the rewards
            summed, stopping early when the episode ends (:class:`~retrovec.retro.wrappers.FrameSkip`).
        max_pool: With ``frame_skip > 1``, the observation is the elementwise max of the
            last two frames of the step (needs image observations; pass ``False`` for RAM).
        sticky_action_prob: Probability that an emulator frame repeats the previous
            frame's action instead of the agent's (Machado et al., 2018 use 0.25).
        noop_max: If > 0, each episode starts with 1 to ``noop_max`` no-op frames, drawn
            from the env's ``np_random`` (:class:`~retrovec.retro.wrappers.NoopReset`).
        grayscale: Convert RGB frames to ``(H, W)`` luma.
        crop: ``(top, bottom, left, right)``: pixels cut from each edge, or ``None``.
        resize: ``(height, width)`` (or one int for a square), or ``None``.
        frame_stack: Stack the last ``frame_stack`` observations on a new first axis.
        channels_first: Observations shaped ``(C, H, W)`` for convolutions: an RGB frame
            ``(3, H, W)``, a grayscale one ``(1, H, W)``, a stack of ``k`` frames
            ``(k*C, H, W)`` (oldest frame's channels first).
        fused: Run sticky actions, no-op starts and frame skip as one loop over the
            emulator (:class:`~retrovec.retro.wrappers.fused.FusedFrameSkip`) when the env is a
            bare RetroEnv: identical results, less work per frame. It also computes
            rewards and episode ends without ``update_ram`` when the scenario compiles
            (:class:`~retrovec.retro.scenario.FastScenario`), even with no frame steps.
            ``False`` always uses the separate wrappers over ``RetroEnv.step``; with
            :func:`retrovec.make`, ``Preprocessing(fused=False)`` is also how to turn
            the fast step off for unpreprocessed envs.

    Example:
        >>> Preprocessing.atari()  # doctest: +NORMALIZE_WHITESPACE
        Preprocessing(frame_skip=4, max_pool=True, sticky_action_prob=0.0, noop_max=30,
                      grayscale=True, crop=None, resize=(84, 84), frame_stack=4,
                      channels_first=False, fused=True)
        >>> Preprocessing.atari(sticky_action_prob=0.25).sticky_action_prob
        0.25
        >>> Preprocessing(frame_skip=0)
        Traceback (most recent call last):
        ...
        ValueError: frame_skip must be an int >= 1, got 0
        >>> Preprocessing(resize=84).resize
        (84, 84)
        >>> Preprocessing(grayscale=True, resize=(84, 84)).observation_shape((224, 320, 3))
        (84, 84)
    """

    frame_skip: int = 1
    max_pool: bool = True
    sticky_action_prob: float = 0.0
    noop_max: int = 0
    grayscale: bool = False
    crop: tuple[int, int, int, int] | None = None
    resize: tuple[int, int] | None = None
    frame_stack: int = 1
    channels_first: bool = False
    fused: bool = True

    def __post_init__(self) -> None:
        for name, low in (("frame_skip", 1), ("noop_max", 0), ("frame_stack", 1)):
            value = getattr(self, name)
            if not _is_int(value) or operator.index(value) < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
            object.__setattr__(self, name, operator.index(value))
        for name in ("max_pool", "grayscale", "channels_first", "fused"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        prob = self.sticky_action_prob
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob < 1:
            raise ValueError(f"sticky_action_prob must be a number in [0, 1), got {prob!r}")
        object.__setattr__(self, "sticky_action_prob", float(prob))
        if self.crop is not None:
            crop = _int_tuple(self.crop, 4)
            if crop is None or min(crop) < 0:
                raise ValueError(
                    "crop must be None or (top, bottom, left, right), pixel counts cut from "
                    f"each edge as ints >= 0, got {self.crop!r}"
                )
            object.__setattr__(self, "crop", crop)
        if self.resize is not None:
            resize = (
                (operator.index(self.resize),) * 2
                if _is_int(self.resize)
                else _int_tuple(self.resize, 2)
            )
            if resize is None or min(resize) < 1:
                raise ValueError(
                    f"resize must be None or (height, width) as ints >= 1, got {self.resize!r}"
                )
            object.__setattr__(self, "resize", resize)

    @classmethod
    def atari(cls, **overrides: Any) -> Preprocessing:
        """The standard Atari chain (DQN, SB3's ``AtariWrapper``, CleanRL's ``ppo_atari``).

        Frame skip 4 with max-pooling, up to 30 no-op starts, 84x84 grayscale, 4 stacked
        frames: observations ``(4, 84, 84)`` ``uint8``. No sticky actions (pass
        ``sticky_action_prob=0.25`` for Machado et al.'s protocol). Episode lengths are
        :func:`retrovec.make`'s ``max_episode_steps``, in agent steps (27,000 steps is
        the usual 108,000 frames).

        Args:
            **overrides: Fields to change, e.g. ``frame_stack=1``.

        Returns:
            The preprocessing.
        """
        settings: dict[str, Any] = dict(
            frame_skip=4,
            max_pool=True,
            noop_max=30,
            grayscale=True,
            resize=(84, 84),
            frame_stack=4,
        )
        settings.update(overrides)
        return cls(**settings)

    @property
    def image_steps(self) -> tuple[str, ...]:
        """The enabled fields that need image observations (none work on RAM)."""
        needs = {
            "max_pool": self.max_pool and self.frame_skip > 1,
            "grayscale": self.grayscale,
            "crop": self.crop is not None,
            "resize": self.resize is not None,
            "channels_first": self.channels_first,
        }
        return tuple(name for name, needed in needs.items() if needed)

    def observation_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one env's observation after preprocessing a frame of ``shape``.

        Args:
            shape: The raw observation's shape, e.g. ``(224, 320, 3)``.

        Returns:
            The preprocessed observation's shape.
        """
        shape = tuple(shape)
        if self.crop is not None:
            top, bottom, left, right = self.crop
            shape = (shape[0] - top - bottom, shape[1] - left - right, *shape[2:])
        if self.grayscale:
            shape = shape[:2]
        if self.resize is not None:
            shape = (*self.resize, *shape[2:])
        if self.channels_first and len(shape) in (2, 3):
            shape = (1, *shape) if len(shape) == 2 else (shape[2], *shape[:2])
        if self.frame_stack > 1:
            if self.channels_first:
                shape = (self.frame_stack * shape[0], *shape[1:])
            else:
                shape = (self.frame_stack, *shape)
        return shape

    def wrap(self, env: gym.Env) -> gym.Env:
        """Apply the chain to ``env``, in the order of this module's docstring.

        Args:
            env: Usually a ``RetroEnv`` (one step per emulator frame).

        Returns:
            The wrapped env (``env`` itself if nothing is enabled).

        Raises:
            ValueError: An image step is enabled but the observations are not images
                (the message names the step), or a wrapper rejects its input.
        """
        # Imported here: cv2 and the wrappers load only in the processes that use them.
        from gymnasium.wrappers import (
            FrameStackObservation,
            ReshapeObservation,
            ResizeObservation,
            StickyAction,
        )

        from retrovec.retro.scenario import FastScenario
        from retrovec.retro.wrappers.fused import FusedFrameSkip, can_fuse
        from retrovec.retro.wrappers.stateful import FrameSkip, NoopReset
        from retrovec.retro.wrappers.transform import ChannelsFirst, Crop, Grayscale

        space = env.observation_space
        is_image = isinstance(space, Box) and len(space.shape) in (2, 3)
        if self.image_steps and not is_image:
            raise ValueError(
                f"Preprocessing {', '.join(self.image_steps)} need image observations, "
                f"got {space}; for RAM observations (obs_type=Observations.RAM) use only "
                "frame_skip with max_pool=False, sticky_action_prob, noop_max and "
                "frame_stack"
            )
        frame_steps = self.sticky_action_prob > 0 or self.noop_max > 0 or self.frame_skip > 1
        # Fused even with no frame steps when the scenario compiles: then it is a faster
        # RetroEnv.step (no update_ram); see retrovec.retro.wrappers.fused.
        if self.fused and can_fuse(env) and (frame_steps or FastScenario.for_env(env)):
            env = FusedFrameSkip(
                env,
                skip=self.frame_skip,
                max_pool=self.max_pool,
                sticky_action_prob=self.sticky_action_prob,
                noop_max=self.noop_max,
            )
        else:
            if self.sticky_action_prob > 0:
                env = StickyAction(env, repeat_action_probability=self.sticky_action_prob)
            if self.noop_max > 0:
                env = NoopReset(env, noop_max=self.noop_max)
            if self.frame_skip > 1:
                env = FrameSkip(env, skip=self.frame_skip, max_pool=self.max_pool)
        if self.crop is not None:
            top, bottom, left, right = self.crop
            env = Crop(env, top=top, bottom=bottom, left=left, right=right)
        if self.grayscale:
            env = Grayscale(env)
        if self.resize is not None:
            env = ResizeObservation(env, shape=self.resize)
        if self.channels_first:
            env = ChannelsFirst(env)
        if self.frame_stack > 1:
            env = FrameStackObservation(env, stack_size=self.frame_stack)
            if self.channels_first:
                stacked = env.observation_space.shape
                env = ReshapeObservation(env, shape=(stacked[0] * stacked[1], *stacked[2:]))
        return env
