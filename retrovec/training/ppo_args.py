"""The settings of a PPO run: the :class:`Args` dataclass and the checks it makes.

One field per hyperparameter, each with its own docstring (CleanRL's style);
``retrovec train`` sets the common ones by flag and any other by ``--arg FIELD=VALUE``.
The trainer is :mod:`retrovec.training.ppo`, which re-exports :class:`Args`.

Example:
    >>> from retrovec.training.ppo_args import Args
    >>> args = Args(num_envs=2, num_steps=8, total_timesteps=64, num_minibatches=2)
    >>> args.batch_size, args.minibatch_size, args.num_iterations
    (16, 8, 4)
    >>> Args(num_envs=0).check()
    Traceback (most recent call last):
    ...
    ValueError: num_envs must be >= 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Args"]


@dataclass
class Args:
    """Everything a PPO run needs; ``retrovec train --help`` lists the same fields."""

    game: str = "Airstriker-Genesis-v0"
    """The stable-retro game id."""
    state: str | None = None
    """The save state to start each episode from; ``None``: the game's default."""
    num_envs: int = 8
    """Parallel envs (one emulator worker process each)."""
    total_timesteps: int = 10_000_000
    """Agent steps summed over all envs (each is 4 emulator frames)."""
    max_episode_steps: int | None = 27_000
    """Truncate episodes after this many agent steps (108,000 frames); ``None``: never."""
    learning_rate: float = 2.5e-4
    """Adam's learning rate."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over ``total_timesteps``."""
    num_steps: int = 128
    """Steps per env per rollout; a batch is ``num_envs * num_steps`` steps."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """The lambda of generalized advantage estimation."""
    num_minibatches: int = 4
    """Minibatches per epoch over the batch."""
    update_epochs: int = 4
    """Epochs over each batch."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    clip_rewards: bool = True
    """Learn from ``sign(reward)`` (CleanRL's ``ClipRewardEnv``): one scale across games, and
    a value loss that does not drown the policy gradient. ``charts/episodic_return`` and
    evaluations always report the game's raw score."""
    clip_coef: float = 0.1
    """The surrogate clipping coefficient."""
    clip_vloss: bool = True
    """Clip the value loss as in the PPO paper's implementation."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this."""
    target_kl: float | None = None
    """Stop an update's epochs early when the approximate KL exceeds this."""
    seed: int = 1
    """Seed of torch, numpy, random and the envs."""
    device: str = "auto"
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``..."""
    run_dir: str = "runs/ppo"
    """Where TensorBoard events and ``checkpoint.pt`` go."""
    checkpoint_every: int = 50
    """Save ``checkpoint.pt`` every this many iterations (and always at the end)."""
    resume: str | None = None
    """A ``checkpoint.pt`` to continue from: weights, optimizer and step counters."""
    worker_restarts: int = 3
    """How many times each env's emulator process may be replaced after it dies (its
    episode then ends as truncated) before training stops; 0: stop at the first death."""
    progress: bool = True
    """Show a tqdm progress bar."""

    @property
    def batch_size(self) -> int:
        """Steps per rollout: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Steps per minibatch: ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        """Rollout-and-update iterations: ``total_timesteps // batch_size``."""
        return self.total_timesteps // self.batch_size

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot train."""
        for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.worker_restarts < 0:
            raise ValueError(f"worker_restarts must be >= 0, got {self.worker_restarts}")
        if self.minibatch_size < 1:
            raise ValueError("num_minibatches must be <= num_envs * num_steps")
        if self.num_iterations < 1:
            raise ValueError(
                f"total_timesteps ({self.total_timesteps}) must be >= num_envs * num_steps "
                f"({self.batch_size})"
            )
