"""Batched PPO on retro games, in the style of CleanRL's ``ppo_atari.py``: the training loop.

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

This module holds :func:`train` (rollout, advantages, the clipped PPO update, metrics,
checkpoints on schedule, on Ctrl-C and on any error) and re-exports the pieces it is
built from, so ``from retrovec.training.ppo import ...`` reaches every public name:

* :mod:`retrovec.training.ppo_args`: :class:`Args`, the settings of a run;
* :mod:`retrovec.training.ppo_agent`: :class:`Agent` (the Nature CNN), ``pick_device``;
* :mod:`retrovec.training.ppo_rollout`: :func:`collect_rollout`, :func:`compute_gae`;
* :mod:`retrovec.training.ppo_checkpoints`: :func:`save_checkpoint`, :func:`load_checkpoint`;
* :mod:`retrovec.training.ppo_evaluation`: :func:`evaluate`;
* :mod:`retrovec.training.ppo_envs` (no torch): :func:`make_envs`, :func:`evaluate_random`.

Needs the ``train`` extra (torch, tensorboard): ``pip install 'retrovec[train]'``.

Example:
    >>> from retrovec.training.ppo import Args, train
    >>> result = train(Args(num_envs=2, num_steps=8, total_timesteps=16))  # doctest: +SKIP
    >>> result["global_step"]  # doctest: +SKIP
    16
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

# train() looks these up here, in this module, at call time (tests replace collect_rollout).
from retrovec.training.ppo_agent import Agent, layer_init, pick_device  # noqa: F401
from retrovec.training.ppo_args import Args
from retrovec.training.ppo_checkpoints import load_checkpoint, save_checkpoint
from retrovec.training.ppo_evaluation import evaluate, evaluate_random
from retrovec.training.ppo_rollout import collect_rollout, compute_gae, make_envs

__all__ = [
    "Agent",
    "Args",
    "collect_rollout",
    "compute_gae",
    "evaluate",
    "evaluate_random",
    "load_checkpoint",
    "make_envs",
    "save_checkpoint",
    "train",
]


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
    envs = make_envs(args)
    writer = None  # created once the run has started: a run that cannot start writes nothing
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

        writer = SummaryWriter(str(run_dir))
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n"
            + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
        )
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
        completed = (global_step, start_iteration - 1)
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
        except BaseException as exc:
            # Ctrl-C, any error: keep what was learned (the weights as they are, with the
            # counters of the last finished iteration), unless the weights are no longer
            # finite; and say so.
            bar.close()
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
            if all(torch.isfinite(p).all() for p in agent.parameters()):
                save_checkpoint(checkpoint_path, agent, optimizer, args, *completed)
                print(
                    f"retrovec.training.ppo: stopped at step {completed[0]} ({why}); "
                    f"checkpoint saved to {checkpoint_path} (resume with --resume).",
                    file=sys.stderr,
                )
            else:
                print(
                    f"retrovec.training.ppo: stopped at step {completed[0]} ({why}); the "
                    "weights are no longer finite, so no checkpoint was saved.",
                    file=sys.stderr,
                )
            raise
        bar.close()
    finally:
        envs.close()
        if writer is not None:
            writer.close()
    return {
        "global_step": global_step,
        "iteration": iteration,
        "checkpoint": str(checkpoint_path),
        "episodic_returns": returns_seen,
        "device": str(device),
    }
