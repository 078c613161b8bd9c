"""Worker-side preprocessing for stable-retro envs, split by the kind of state each keeps.

* :mod:`retrovec.retro.wrappers.transform`: stateless observation transforms
  (:class:`Crop`, :class:`Grayscale`, :class:`ChannelsFirst`).
* :mod:`retrovec.retro.wrappers.stateful`: wrappers with state across steps
  (:class:`FrameSkip`, :class:`NoopReset`).
* :mod:`retrovec.retro.wrappers.actions`: :class:`Discretizer` and :func:`noop_action`.
* :mod:`retrovec.retro.wrappers.preprocessing`: :class:`Preprocessing`, the whole chain as one
  value for ``retrovec.make(preprocessing=...)``.

Sticky actions, resizing and frame stacking are gymnasium's own wrappers
(``StickyAction``, ``ResizeObservation``, ``FrameStackObservation``): they already have the
conventional semantics. Every wrapper here works on its own, in or out of a vector env.

Example:
    >>> from retrovec.retro.wrappers import Preprocessing
    >>> Preprocessing.atari().observation_shape((210, 160, 3))
    (4, 84, 84)
"""

from retrovec.retro.wrappers.actions import Discretizer, noop_action
from retrovec.retro.wrappers.preprocessing import Preprocessing
from retrovec.retro.wrappers.stateful import FrameSkip, NoopReset
from retrovec.retro.wrappers.transform import ChannelsFirst, Crop, Grayscale

__all__ = [
    "ChannelsFirst",
    "Crop",
    "Discretizer",
    "FrameSkip",
    "Grayscale",
    "NoopReset",
    "Preprocessing",
    "noop_action",
]
