"""The batch's spaces, taken from the envs' own descriptions (no env is built in the parent),
and the check that every env, a restarted one included, fits them.

Part of :class:`~retrovec.core.base.RetroVectorEnvBase`, kept apart so that the base reads
as the gymnasium API it implements.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces.utils import is_space_dtype_shape_equiv
from gymnasium.vector.utils import batch_differing_spaces, batch_space, create_empty_array

from retrovec.core.actions import ActionRouter
from retrovec.core.arena import ArenaLayout, SharedArena
from retrovec.errors import SpacesMismatchError

__all__ = ["SpacesMixin"]


class SpacesMixin:
    """Spaces, metadata and the driver arena of a vector env (see the module docstring)."""

    def _adopt_spaces(self, descriptions: list[dict[str, Any]]) -> None:
        """Take the spaces, metadata and render mode from the envs' descriptions."""
        first = descriptions[0]
        self.metadata = dict(first["metadata"])
        self.metadata["autoreset_mode"] = self.autoreset_mode
        self.render_mode = first["render_mode"]
        self.single_action_space = first["action_space"]
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        mode = self.observation_mode
        if isinstance(mode, tuple):
            self.observation_space, self.single_observation_space = mode
        elif mode == "same":
            self.single_observation_space = first["observation_space"]
            self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        else:
            self.single_observation_space = first["observation_space"]
            self.observation_space = batch_differing_spaces(
                [d["observation_space"] for d in descriptions]
            )

        for index, description in enumerate(descriptions):
            self._check_description(index, description)

    def _check_description(self, index: int, description: dict[str, Any]) -> None:
        """Raise ``SpacesMismatchError`` if env ``index`` does not fit the batch."""
        mode = self.observation_mode
        space = description["observation_space"]
        same = (
            space == self.single_observation_space
            if mode == "same"
            else is_space_dtype_shape_equiv(space, self.single_observation_space)
        )
        if not same:
            if mode == "same":
                why = (
                    f"{type(self).__name__}(..., observation_mode='same') however some of the "
                    "sub-environments observation spaces are not equivalent. If this is "
                    "intentional, use `observation_mode='different'` instead."
                )
            else:
                why = f"observation_mode={mode!r} needs the same shape and dtype."
            raise SpacesMismatchError(
                f"The observation space of env {index} ({space}) differs from "
                f"{self.single_observation_space}: {why}"
            )
        if description["action_space"] != self.single_action_space:
            raise SpacesMismatchError(
                f"The action space of env {index} ({description['action_space']}) differs "
                f"from env 0's ({self.single_action_space}). In order to batch actions, "
                "the action spaces from all environments must be equal."
            )

    def _attach_driver_arena(self) -> None:
        """For transports whose envs do not share this machine's memory: a small arena in
        this process, without observations. It checks actions exactly as the process
        backend's does (:attr:`_read_actions` gives each env's back) and holds the batch's
        rewards and done flags, so every batching path here serves that transport too."""
        self.observations = create_empty_array(
            self.single_observation_space, n=self.num_envs, fn=np.zeros
        )
        layout = ArenaLayout.plan(
            self.num_envs, self.single_observation_space, self.single_action_space, False
        )
        self._arena = arena = SharedArena.create(layout)
        self._actions = ActionRouter(
            self.single_action_space, self.num_envs, arena, self.validate_actions
        )
        if layout.action_space is not None:
            self._read_actions = [arena.action_reader(i) for i in range(self.num_envs)]

