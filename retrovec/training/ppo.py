"""Batched PPO on retro games: one readable file, in the style of CleanRL's ``ppo_atari.py``.

Run it with ``retrovec train`` (see ``docs/ppo.md``) or from Python::

    from retrovec.training.ppo import Args, train, evaluate
    result = train(Args(num_envs=8, total_timesteps=1_000_000))
    print(evaluate(result["checkpoint"], episodes=10, video="eval.mp4"))

What differs from CleanRL (which pins gymnasium 0.29):

* **gymnasium 1.x ``NEXT_STEP`` autoreset.** After a step that ends an episode, the next
  step of that env is a *reset step*: its action is ignored, its reward is 0 and it starts
  the next episode. It is no transition to learn from, so the rollout records a ``valid``
  mask (0 on reset steps) and every loss term is a mean over valid steps only. GAE never
  crosses an episode end, and a truncated episode bootstraps from the value of its last
  observation (which, with ``NEXT_STEP``, is the observation that follows the end).
* Observations come from retrovec's worker-side ``Preprocessing.atari()``
  (``(4, 84, 84)`` uint8), actions from stable-retro's ``Actions.DISCRETE``.
* Checkpoints (``<run_dir>/checkpoint.pt``) that a later run resumes from
  (``Args.resume``), and :func:`evaluate` (mean ± std of returns, and an mp4).

Needs the ``train`` extra (torch, tensorboard): ``pip install 'retrovec[train]'``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical
from tqdm.auto import tqdm

__all__ = [
    "Agent",
    "Args",
    "collect_rollout",
    "evaluate_random",
    "compute_gae",
    "evaluate",
    "load_checkpoint",
    "make_envs",
    "save_checkpoint",
    "train",
]


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


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else as ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_envs(args: Args, num_envs: int | None = None, **kwargs: Any) -> gym.vector.VectorEnv:
    """The training envs: ``retrovec.make`` with Atari preprocessing, discrete actions and
    ``NEXT_STEP`` autoreset, wrapped in ``RecordEpisodeStatistics``."""
    import stable_retro

    import retrovec

    state = {} if args.state is None else {"state": args.state}
    envs = retrovec.make(
        args.game,
        num_envs or args.num_envs,
        preprocessing=retrovec.Preprocessing.atari(),
        use_restricted_actions=stable_retro.Actions.DISCRETE,
        max_episode_steps=args.max_episode_steps,
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        on_worker_failure="restart" if args.worker_restarts > 0 else "raise",
        max_restarts=max(args.worker_restarts, 0),
        **state,
        **kwargs,
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


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


# --------------------------------------------------------------------------- rollout


def collect_rollout(
    envs: gym.vector.VectorEnv,
    agent: Any,
    next_obs: torch.Tensor,
    next_done: torch.Tensor,
    num_steps: int,
    device: torch.device,
    clip_rewards: bool = False,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, list[tuple[float, int]]]:
    """Step ``envs`` (``NEXT_STEP`` autoreset) ``num_steps`` times with ``agent``'s actions.

    Args:
        envs: The vector env, already reset.
        agent: Anything with ``get_action_and_value(obs) -> (action, logprob, _, value)``.
        next_obs: The current observations, ``(num_envs, *obs_shape)``.
        next_done: 1.0 where the previous step ended an episode (so this step resets).
        num_steps: Steps per env.
        device: Where the tensors live.
        clip_rewards: Store ``sign(reward)`` in ``rollout["rewards"]`` (the episodes' returns
            stay raw).

    Returns:
        ``(rollout, next_obs, next_done, episodes)``: ``rollout`` holds ``(num_steps,
        num_envs)``-shaped ``obs``, ``actions``, ``logprobs``, ``rewards``, ``values``,
        ``terminations``, ``dones`` (terminated or truncated) and ``valid`` (0 on reset
        steps); ``episodes`` lists ``(return, length)`` of the episodes that ended.
    """
    num_envs = envs.num_envs
    shape = (num_steps, num_envs)
    obs = torch.zeros(shape + envs.single_observation_space.shape, device=device)
    out = {key: torch.zeros(shape, device=device) for key in (
        "logprobs", "rewards", "values", "terminations", "dones", "valid")}
    actions = torch.zeros(shape, dtype=torch.long, device=device)
    episodes: list[tuple[float, int]] = []
    for step in range(num_steps):
        obs[step] = next_obs
        out["valid"][step] = 1.0 - next_done  # the step after an episode end is a reset step
        with torch.no_grad():
            action, logprob, _, value = agent.get_action_and_value(next_obs)
        actions[step] = action
        out["logprobs"][step] = logprob
        out["values"][step] = value
        observation, reward, terminated, truncated, infos = envs.step(action.cpu().numpy())
        next_obs = torch.as_tensor(np.asarray(observation), dtype=torch.float32, device=device)
        reward = np.sign(reward) if clip_rewards else reward
        out["rewards"][step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
        out["terminations"][step] = torch.as_tensor(terminated, dtype=torch.float32, device=device)
        next_done = torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)
        out["dones"][step] = next_done
        if "episode" in infos:  # RecordEpisodeStatistics marks the step that ends one
            for i in np.flatnonzero(infos["_episode"]):
                episodes.append((float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))
    out["obs"] = obs
    out["actions"] = actions
    return out, next_obs, next_done, episodes


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminations: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation for a ``NEXT_STEP`` rollout.

    ``next_values[t]`` is the value of the observation that followed step ``t``. With
    ``NEXT_STEP`` autoreset, after a step that ended an episode that observation is still
    the episode's last one, so a truncated step bootstraps from it while a terminated step
    does not; and the recursion stops at every episode end (``dones``), so the reset step
    that follows (masked out of the loss) never leaks into the episode before it.

    Args:
        rewards: ``(T, N)`` rewards.
        values: ``(T, N)`` values of the observations the steps were taken from.
        next_values: ``(T, N)`` values of the observations that followed them.
        terminations: ``(T, N)``, 1.0 where the step terminated its episode.
        dones: ``(T, N)``, 1.0 where the step terminated or truncated its episode.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.

    Returns:
        ``(advantages, returns)``, both ``(T, N)``; ``returns = advantages + values``.
    """
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminations[t]) - values[t]
        last = delta + gamma * gae_lambda * (1.0 - dones[t]) * last
        advantages[t] = last
    return advantages, advantages + values


# --------------------------------------------------------------------------- checkpoints


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


# --------------------------------------------------------------------------- training


def train(args: Args) -> dict[str, Any]:
    """Train PPO as ``args`` says; TensorBoard events and the checkpoint go to ``run_dir``.

    Returns:
        ``{"global_step", "iteration", "checkpoint", "episodic_returns", "device"}``.
    """
    from torch.utils.tensorboard import SummaryWriter

    args.check()
    device = pick_device(args.device)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    run_dir = Path(args.run_dir)
    checkpoint_path = run_dir / "checkpoint.pt"
    writer = SummaryWriter(str(run_dir))
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n"
        + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
    )
    envs = make_envs(args)
    try:
        assert isinstance(envs.single_action_space, gym.spaces.Discrete), "discrete actions"
        agent = Agent(envs.single_observation_space.shape[0], int(envs.single_action_space.n))
        agent.to(device)
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
        global_step, start_iteration = 0, 1
        if args.resume:
            state = torch.load(args.resume, map_location=device, weights_only=False)
            agent.load_state_dict(state["agent"])
            optimizer.load_state_dict(state["optimizer"])
            global_step, start_iteration = state["global_step"], state["iteration"] + 1

        next_obs, _ = envs.reset(seed=args.seed + global_step)
        next_obs = torch.as_tensor(np.asarray(next_obs), dtype=torch.float32, device=device)
        next_done = torch.zeros(args.num_envs, device=device)
        returns_seen: list[float] = []
        iteration = start_iteration - 1
        total_steps = args.num_iterations * args.batch_size
        bar = tqdm(
            total=total_steps, initial=min(global_step, total_steps), unit="step",
            disable=not args.progress, dynamic_ncols=True,
        )
        start_time, start_step = time.time(), global_step
        saved = completed = (global_step, start_iteration - 1)
        try:
            for iteration in range(start_iteration, args.num_iterations + 1):
                # ---- learning-rate annealing
                if args.anneal_lr:
                    frac = 1.0 - (iteration - 1.0) / args.num_iterations
                    optimizer.param_groups[0]["lr"] = frac * args.learning_rate

                # ---- rollout
                b, next_obs, next_done, episodes = collect_rollout(
                    envs, agent, next_obs, next_done, args.num_steps, device, args.clip_rewards
                )
                global_step += args.batch_size
                bar.update(args.batch_size)
                for episode_return, length in episodes:
                    returns_seen.append(episode_return)
                    writer.add_scalar("charts/episodic_return", episode_return, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)
                if episodes:
                    bar.set_postfix(episodic_return=f"{np.mean([r for r, _ in episodes]):.1f}")

                # ---- advantages (GAE that stops at episode ends)
                with torch.no_grad():
                    last_value = agent.get_value(next_obs)
                next_values = torch.cat([b["values"][1:], last_value[None]])
                advantages, returns = compute_gae(
                    b["rewards"], b["values"], next_values, b["terminations"], b["dones"],
                    args.gamma, args.gae_lambda,
                )

                # ---- flatten the batch
                b_obs = b["obs"].reshape((-1,) + envs.single_observation_space.shape)
                b_actions = b["actions"].reshape(-1)
                b_logprobs = b["logprobs"].reshape(-1)
                b_advantages = advantages.reshape(-1)
                b_returns = returns.reshape(-1)
                b_values = b["values"].reshape(-1)
                b_valid = b["valid"].reshape(-1)

                # ---- PPO update: minibatch epochs over the valid steps
                clipfracs: list[float] = []
                pg_loss = v_loss = entropy_loss = approx_kl = old_approx_kl = torch.zeros(())
                b_inds = np.arange(args.batch_size)
                for _epoch in range(args.update_epochs):
                    np.random.shuffle(b_inds)
                    for start in range(0, args.batch_size, args.minibatch_size):
                        mb_inds = b_inds[start : start + args.minibatch_size]
                        mb_valid = b_valid[mb_inds]
                        count = mb_valid.sum()
                        if count < 1:  # only reset steps in this minibatch
                            continue

                        def masked_mean(x: torch.Tensor) -> torch.Tensor:
                            return (x * mb_valid).sum() / count  # noqa: B023

                        _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                            b_obs[mb_inds], b_actions[mb_inds]
                        )
                        logratio = newlogprob - b_logprobs[mb_inds]
                        ratio = logratio.exp()
                        with torch.no_grad():
                            old_approx_kl = masked_mean(-logratio)
                            approx_kl = masked_mean((ratio - 1) - logratio)
                            clipfracs.append(
                                masked_mean(((ratio - 1.0).abs() > args.clip_coef).float()).item()
                            )
                        mb_advantages = b_advantages[mb_inds]
                        if args.norm_adv and count > 1:
                            mean = masked_mean(mb_advantages)
                            std = masked_mean((mb_advantages - mean) ** 2).sqrt()
                            mb_advantages = (mb_advantages - mean) / (std + 1e-8)
                        pg_loss = masked_mean(torch.max(
                            -mb_advantages * ratio,
                            -mb_advantages
                            * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef),
                        ))
                        if args.clip_vloss:
                            v_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                            v_clipped = b_values[mb_inds] + torch.clamp(
                                newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef
                            )
                            v_loss = 0.5 * masked_mean(
                                torch.max(v_unclipped, (v_clipped - b_returns[mb_inds]) ** 2)
                            )
                        else:
                            v_loss = 0.5 * masked_mean((newvalue - b_returns[mb_inds]) ** 2)
                        entropy_loss = masked_mean(entropy)
                        loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                        optimizer.zero_grad()
                        loss.backward()
                        nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                        optimizer.step()
                    if args.target_kl is not None and approx_kl > args.target_kl:
                        break

                # ---- metrics
                valid = b_valid.bool()
                y_pred, y_true = b_values[valid].cpu().numpy(), b_returns[valid].cpu().numpy()
                var_y = np.var(y_true)
                explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
                sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
                learning_rate = optimizer.param_groups[0]["lr"]
                writer.add_scalar("charts/learning_rate", learning_rate, global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                reset_fraction = 1.0 - b_valid.mean().item()
                writer.add_scalar("charts/reset_step_fraction", reset_fraction, global_step)
                writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
                writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
                writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
                writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
                writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
                clipfrac = float(np.mean(clipfracs or [0.0]))
                writer.add_scalar("losses/clipfrac", clipfrac, global_step)
                writer.add_scalar("losses/explained_variance", explained_var, global_step)

                # ---- checkpoint
                completed = (global_step, iteration)
                if iteration % args.checkpoint_every == 0 or iteration == args.num_iterations:
                    save_checkpoint(checkpoint_path, agent, optimizer, args, global_step, iteration)
                    saved = completed
        except BaseException:
            # Ctrl-C, a crash: keep what was learned since the last checkpoint (the weights
            # as they are, with the counters of the last finished iteration), unless the
            # weights are no longer finite.
            if completed != saved and all(
                torch.isfinite(p).all() for p in agent.parameters()
            ):
                save_checkpoint(checkpoint_path, agent, optimizer, args, *completed)
                print(
                    f"retrovec.training.ppo: stopped at step {completed[0]}; checkpoint saved to "
                    f"{checkpoint_path} (resume with --resume).",
                    file=sys.stderr,
                )
            raise
        bar.close()
    finally:
        envs.close()
        writer.close()
    return {
        "global_step": global_step,
        "iteration": iteration,
        "checkpoint": str(checkpoint_path),
        "episodic_returns": returns_seen,
        "device": str(device),
    }


# --------------------------------------------------------------------------- evaluation


def evaluate(
    checkpoint: str | os.PathLike[str],
    episodes: int = 10,
    *,
    num_envs: int = 2,
    video: str | os.PathLike[str] | None = None,
    greedy: bool = False,
    seed: int = 100,
    device: str = "auto",
    max_episode_steps: int | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` full episodes with a checkpoint's policy.

    Args:
        checkpoint: A ``checkpoint.pt`` from :func:`train`.
        episodes: How many episodes to finish (the first ``episodes`` that end count).
        num_envs: Envs that play in parallel.
        video: An ``.mp4`` path: every env's latest frame, tiled, at each step.
        greedy: Take the most likely action instead of sampling.
        seed: Reset seed of the envs.
        device: As :attr:`Args.device`.
        max_episode_steps: Override the checkpoint's episode length limit.

    Returns:
        ``{"mean": ..., "std": ..., "returns": [...], "lengths": [...], "video": path}``.
    """
    torch_device = pick_device(device)
    state = load_checkpoint(checkpoint, torch_device)
    agent = state["model"].eval()
    fields = {f.name for f in dataclasses.fields(Args)}
    args = Args(**{k: v for k, v in state["args"].items() if k in fields})
    if max_episode_steps is not None:
        args.max_episode_steps = max_episode_steps
    envs = make_envs(args, num_envs=num_envs)

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=torch_device)
            action, _, _, _ = agent.get_action_and_value(x, greedy=greedy)
        return action.cpu().numpy()

    return _play(envs, policy, episodes, seed, video)


def evaluate_random(
    episodes: int = 10,
    *,
    num_envs: int = 2,
    seed: int = 100,
    max_episode_steps: int | None = None,
    game: str = "Airstriker-Genesis-v0",
) -> dict[str, Any]:
    """Play ``episodes`` episodes with uniformly random actions, measured exactly as
    :func:`evaluate` measures a trained policy (same envs, same episode bookkeeping).

    The baseline a trained agent should clearly beat.
    """
    args = Args(game=game, seed=seed)
    if max_episode_steps is not None:
        args.max_episode_steps = max_episode_steps
    envs = make_envs(args, num_envs=num_envs)
    envs.action_space.seed(seed)
    return _play(envs, lambda obs: envs.action_space.sample(), episodes, seed, None)


def _play(
    envs: Any,
    policy: Any,
    episodes: int,
    seed: int,
    video: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """Step ``envs`` with ``policy(observations)`` until ``episodes`` episodes ended."""
    writer = None
    returns: list[float] = []
    lengths: list[int] = []
    try:
        if video is not None:
            from retrovec.retro.video import VideoWriter, tile_frames

            writer = VideoWriter(video, fps=15)
        obs, _ = envs.reset(seed=seed)
        while len(returns) < episodes:
            if writer is not None:
                writer.write(tile_frames(np.asarray(obs)[:, -1]))
            obs, _, _, _, infos = envs.step(policy(obs))
            if "episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    returns.append(float(infos["episode"]["r"][i]))
                    lengths.append(int(infos["episode"]["l"][i]))
    finally:
        if writer is not None:
            writer.close()
        envs.close()
    returns, lengths = returns[:episodes], lengths[:episodes]
    return {
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "returns": returns,
        "lengths": lengths,
        "video": None if video is None else os.fspath(video),
    }
