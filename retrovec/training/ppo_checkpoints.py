"""PPO checkpoints: write a run's state to ``checkpoint.pt`` and read it back.

A checkpoint is a plain dict saved with ``torch.save``: the agent's and the optimizer's
``state_dict``, ``Args`` as a dict (``dataclasses.asdict``), the step counters and the
network's shape. It pickles no retrovec class, so moving a module never breaks an old
checkpoint. Re-exported by :mod:`retrovec.training.ppo`.

Example:
    >>> import tempfile, torch
    >>> from retrovec.training.ppo_agent import Agent
    >>> from retrovec.training.ppo_args import Args
    >>> from retrovec.training.ppo_checkpoints import load_checkpoint, save_checkpoint
    >>> agent = Agent(4, 7)
    >>> optimizer = torch.optim.Adam(agent.parameters())
    >>> path = tempfile.mkdtemp() + "/checkpoint.pt"
    >>> save_checkpoint(path, agent, optimizer, Args(num_envs=2), global_step=16, iteration=1)
    >>> state = load_checkpoint(path)
    >>> state["global_step"], state["args"]["num_envs"], type(state["model"]).__name__
    (16, 2, 'Agent')
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from retrovec.training.ppo_agent import Agent
from retrovec.training.ppo_args import Args

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(
    path: str | os.PathLike[str],
    agent: Agent,
    optimizer: torch.optim.Optimizer,
    args: Args,
    global_step: int,
    iteration: int,
) -> None:
    """Write weights, optimizer state, step counters and args to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "agent": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "args": dataclasses.asdict(args),
        "global_step": global_step,
        "iteration": iteration,
        "obs_channels": agent.network[0].in_channels,
        "num_actions": agent.actor.out_features,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; ``"model"`` holds the Agent."""
    state = torch.load(path, map_location=device, weights_only=False)
    model = Agent(state["obs_channels"], state["num_actions"]).to(device)
    model.load_state_dict(state["agent"])
    state["model"] = model
    return state
