"""The module paths retrovec had before its modules were grouped into ``core``, ``retro`` and
``training``, kept importable.

``import retrovec.sb3``, ``from retrovec.wrappers import Discretizer`` and pickles that name
``retrovec.ppo.Args`` (saved checkpoints) keep working: each old name is the new module
itself (the same object in ``sys.modules``), not a copy. Written by hand because the
standard library has no module-alias facility; it is a few lines of ``importlib``.

Example:
    >>> import retrovec.sb3, retrovec.training.sb3
    >>> retrovec.sb3 is retrovec.training.sb3
    True
    >>> from retrovec.wrappers.fused import FusedFrameSkip
    >>> FusedFrameSkip.__module__
    'retrovec.retro.wrappers.fused'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

__all__ = ["MOVED", "install"]

#: Old module path (below ``retrovec.``) -> where it lives now.
MOVED = {
    "vector_base": "core.base",
    "vector_env": "core.process_backend",
    "async_batches": "core.batches",
    "shared_memory": "core.arena",
    "infos": "core.infos",
    "autoreset": "core.autoreset",
    "worker": "core.worker",
    "processes": "core.processes",
    "ray_backend": "core.ray_backend",
    "games": "retro.games",
    "scenario": "retro.scenario",
    "recording": "retro.recording",
    "replay": "retro.replay",
    "video": "retro.video",
    "multiplayer": "retro.multiplayer",
    "roms": "retro.roms",
    "factory": "retro.factory",
    "registration": "retro.registration",
    "wrappers": "retro.wrappers",
    "ppo": "training.ppo",
    "sb3": "training.sb3",
    "random_rollout": "training.random_rollout",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target module ran when it was imported; keep its own spec on it (the
        import system set the alias's)."""
        module.__spec__ = self._spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object, target: object = None):
        if not fullname.startswith("retrovec."):
            return None
        head, _, rest = fullname[len("retrovec."):].partition(".")
        new = MOVED.get(head)
        if new is None:
            return None
        real = f"retrovec.{new}" + (f".{rest}" if rest else "")
        spec = importlib.machinery.ModuleSpec(fullname, _AliasLoader(real))
        real_module = importlib.import_module(real)
        spec.submodule_search_locations = getattr(real_module, "__path__", None)
        return spec


def install() -> None:
    """Put the alias finder first on ``sys.meta_path``, once."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())  # before PathFinder: no second copies
