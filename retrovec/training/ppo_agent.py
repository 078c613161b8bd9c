"""The PPO agent network and the torch device it runs on.

:class:`Agent` is the Nature CNN (Mnih et al. 2015) with a policy head and a value head,
initialised as CleanRL does (:func:`layer_init`); :func:`pick_device` turns ``Args.device``
into a ``torch.device``. Re-exported by :mod:`retrovec.training.ppo`.

Example:
    >>> import torch
    >>> from retrovec.training.ppo_agent import Agent, pick_device
    >>> agent = Agent(in_channels=4, num_actions=7).to(pick_device("cpu"))
    >>> obs = torch.zeros(2, 4, 84, 84)
    >>> action, logprob, entropy, value = agent.get_action_and_value(obs)
    >>> action.shape, value.shape, agent.get_value(obs).shape
    (torch.Size([2]), torch.Size([2]), torch.Size([2]))
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

__all__ = ["Agent", "layer_init", "pick_device"]


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else as ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias (CleanRL's initialisation)."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """The Nature CNN (Mnih et al. 2015) with a policy head and a value head.

    Args:
        in_channels: Stacked frames of the ``(C, 84, 84)`` uint8 observations.
        num_actions: Size of the ``Discrete`` action space.
    """

    def __init__(self, in_channels: int, num_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        """State values, shape ``(B,)``."""
        return self.critic(self.network(x / 255.0)).squeeze(-1)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None, greedy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(action, log_prob(action), entropy, value)``; samples an action if none given."""
        hidden = self.network(x / 255.0)
        logits = self.actor(hidden)
        probs = Categorical(logits=logits)
        if action is None:
            action = logits.argmax(-1) if greedy else probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden).squeeze(-1)
