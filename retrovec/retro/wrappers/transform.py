"""Stateless observation transforms: each output depends on the current frame only.

:class:`Crop`, :class:`Grayscale` and :class:`ChannelsFirst` are written here because
gymnasium has no wrapper with these semantics (see each class). Resizing uses gymnasium's
own :class:`gymnasium.wrappers.ResizeObservation` (OpenCV ``INTER_AREA``, the Atari
convention), so it has no class here.

Frames are images ``(height, width, channels)`` (RGB: 3 channels) or ``(height, width)``
(grayscale); every transform returns a C-contiguous ``uint8`` array.

Example:
    >>> import gymnasium as gym
    >>> import numpy as np
    >>> from gymnasium.spaces import Box
    >>> screen = Box(0, 255, (224, 320, 3), np.uint8)  # a Genesis frame
    >>> env = gym.wrappers.TransformObservation(
    ...     gym.make("CartPole-v1"), lambda obs: screen.sample(), screen)
    >>> env = ChannelsFirst(Grayscale(Crop(env, top=16, bottom=8)))
    >>> env.observation_space
    Box(0, 255, (1, 200, 320), uint8)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((1, 200, 320), dtype('uint8'))
"""

from __future__ import annotations

import operator
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import DependencyNotInstalled
from gymnasium.spaces import Box

__all__ = ["ChannelsFirst", "Crop", "Grayscale"]


def _image_space(env: gym.Env, wrapper: str, *, ndims: tuple[int, ...] = (2, 3)) -> Box:
    space = env.observation_space
    if not isinstance(space, Box) or len(space.shape) not in ndims:
        wanted = " or ".join(
            {2: "(height, width)", 3: "(height, width, channels)"}[n] for n in ndims
        )
        raise ValueError(
            f"{wrapper} needs image observations, a Box of shape {wanted}; got "
            f"{space}. RAM observations (obs_type=Observations.RAM) are not images."
        )
    return space


def _as_int(value: object, name: str, low: int) -> int:
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return number


class Crop(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Cuts ``top``/``bottom`` rows and ``left``/``right`` columns off every frame.

    Written by hand: gymnasium has no crop wrapper. The margins are pixel counts removed
    from each edge, so ``Crop(env, top=34, bottom=16)`` keeps rows ``34 .. height - 17``
    of any frame size. Works on RGB ``(H, W, C)`` and grayscale ``(H, W)`` frames; the
    observation is ``frame[top:H - bottom, left:W - right]``, copied.

    Args:
        env: An env with image observations.
        top: Rows removed at the top.
        bottom: Rows removed at the bottom.
        left: Columns removed on the left.
        right: Columns removed on the right.

    Raises:
        ValueError: A margin is not an int >= 0, the margins leave no pixel, or the
            observations are not images.

    Example:
        >>> import gymnasium as gym
        >>> import numpy as np
        >>> from gymnasium.spaces import Box
        >>> frame = np.arange(12, dtype=np.uint8).reshape(3, 4)
        >>> env = gym.wrappers.TransformObservation(
        ...     gym.make("CartPole-v1"), lambda obs: frame, Box(0, 255, (3, 4), np.uint8))
        >>> Crop(env, top=1, right=1).reset(seed=0)[0]
        array([[ 4,  5,  6],
               [ 8,  9, 10]], dtype=uint8)
        >>> Crop(env, top=2, bottom=1)
        Traceback (most recent call last):
        ...
        ValueError: Crop: top=2 + bottom=1 leaves no rows of a frame 3 high
    """

    def __init__(
        self, env: gym.Env, top: int = 0, bottom: int = 0, left: int = 0, right: int = 0
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, top=top, bottom=bottom, left=left, right=right
        )
        gym.ObservationWrapper.__init__(self, env)
        space = _image_space(env, "Crop")
        top, bottom, left, right = (
            _as_int(value, f"Crop: {name}", 0)
            for name, value in (("top", top), ("bottom", bottom), ("left", left), ("right", right))
        )
        height, width = space.shape[:2]
        if top + bottom >= height:
            raise ValueError(
                f"Crop: top={top} + bottom={bottom} leaves no rows of a frame {height} high"
            )
        if left + right >= width:
            raise ValueError(
                f"Crop: left={left} + right={right} leaves no columns of a frame {width} wide"
            )
        self.rows = slice(top, height - bottom)
        self.columns = slice(left, width - right)
        self.observation_space = Box(
            low=space.low[self.rows, self.columns],
            high=space.high[self.rows, self.columns],
            dtype=space.dtype,  # type: ignore[arg-type]
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Return the cropped frame, as a new contiguous array."""
        return np.ascontiguousarray(observation[self.rows, self.columns])


class Grayscale(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Converts RGB frames ``(H, W, 3)`` to luma ``(H, W)`` with OpenCV's BT.601 weights.

    The value is ``cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)``: Y = 0.299 R + 0.587 G +
    0.114 B, rounded, in OpenCV's fixed point (4.x: ``(4899 R + 9617 G + 1868 B + 8192)
    >> 14``; 5.x: ``(9798 R + 19235 G + 3735 B + 16384) >> 15``; the two differ by 1 on a
    few pixels). This is the "Y channel" of the DQN paper and what SB3's ``WarpFrame`` and
    CleanRL (gym 0.26's ``GrayScaleObservation``) compute.

    Written by hand because gymnasium 1.x's ``GrayscaleObservation`` differs: it uses the
    BT.709 weights (0.2125, 0.7154, 0.0721) and truncates instead of rounding, in float64,
    which is also some 70 times slower on a 224x320 frame.

    Args:
        env: An env with RGB ``uint8`` observations of shape ``(H, W, 3)``.
        keep_dim: Return ``(H, W, 1)`` instead of ``(H, W)``.

    Raises:
        ValueError: The observations are not ``uint8`` RGB images.
        gymnasium.error.DependencyNotInstalled: OpenCV (``cv2``) is missing.

    Example:
        >>> import gymnasium as gym
        >>> import numpy as np
        >>> from gymnasium.spaces import Box
        >>> pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]],
        ...                   dtype=np.uint8)
        >>> env = gym.wrappers.TransformObservation(
        ...     gym.make("CartPole-v1"), lambda obs: pixels, Box(0, 255, (1, 4, 3), np.uint8))
        >>> Grayscale(env).reset(seed=0)[0]
        array([[ 76, 150,  29, 255]], dtype=uint8)
    """

    def __init__(self, env: gym.Env, keep_dim: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, keep_dim=keep_dim)
        gym.ObservationWrapper.__init__(self, env)
        space = _image_space(env, "Grayscale", ndims=(3,))
        if space.shape[-1] != 3 or space.dtype != np.uint8:
            raise ValueError(
                f"Grayscale needs uint8 RGB frames of shape (height, width, 3), got {space}"
            )
        try:
            import cv2
        except ImportError as error:  # pragma: no cover - cv2 is a dependency
            raise DependencyNotInstalled(
                "Grayscale needs OpenCV: pip install opencv-python-headless"
            ) from error
        self._cv2 = cv2
        self.keep_dim = bool(keep_dim)
        shape = space.shape[:2] + ((1,) if keep_dim else ())
        self.observation_space = Box(0, 255, shape, np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Return the luma of an RGB frame."""
        # cvtColor wants positive strides; a rotated arcade frame may be a flipped view.
        gray = self._cv2.cvtColor(np.ascontiguousarray(observation), self._cv2.COLOR_RGB2GRAY)
        return gray[..., None] if self.keep_dim else gray


class ChannelsFirst(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Puts the channel axis first, as PyTorch convolutions want: ``(C, H, W)``.

    An RGB frame ``(H, W, C)`` becomes ``(C, H, W)``; a grayscale frame ``(H, W)`` becomes
    ``(1, H, W)``. Written by hand: gymnasium has no such wrapper (its
    ``ReshapeObservation`` reshapes, it does not transpose).

    Args:
        env: An env with image observations.

    Raises:
        ValueError: The observations are not images.

    Example:
        >>> import gymnasium as gym
        >>> import numpy as np
        >>> from gymnasium.spaces import Box
        >>> space = Box(0, 255, (84, 84, 3), np.uint8)
        >>> env = gym.wrappers.TransformObservation(
        ...     gym.make("CartPole-v1"), lambda obs: space.sample(), space)
        >>> ChannelsFirst(env).observation_space
        Box(0, 255, (3, 84, 84), uint8)
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = _image_space(env, "ChannelsFirst")
        self.observation_space = Box(
            low=self._move(space.low),
            high=self._move(space.high),
            dtype=space.dtype,  # type: ignore[arg-type]
        )

    @staticmethod
    def _move(array: np.ndarray) -> np.ndarray:
        if array.ndim == 2:
            return array[None]
        return np.ascontiguousarray(np.moveaxis(array, -1, 0))

    def observation(self, observation: Any) -> np.ndarray:
        """Return the frame with its channel axis first."""
        return self._move(np.asarray(observation))
