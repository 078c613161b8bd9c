"""``retrovec train`` and ``retrovec evaluate``: batched PPO from the command line.

Parses the commands' arguments into a ``retrovec.training.ppo.Args`` (``--arg FIELD=VALUE``
sets any field without a flag of its own) and dispatches to ``retrovec.training.ppo``
(``train``, ``evaluate``, ``evaluate_random``). That module is imported only when a
command runs, so the other commands never import torch; without it the commands print the
install hint and exit 2.

Example:
    >>> from retrovec.cli import build_parser
    >>> args = build_parser().parse_args(["train", "--num-envs", "2", "--arg", "ent_coef=0.02"])
    >>> args.num_envs, args.arg, args.run_dir
    (2, ['ent_coef=0.02'], 'runs/ppo')
    >>> build_parser().parse_args(["evaluate", "--random", "--episodes", "3"]).episodes
    3
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from retrovec.cli.arguments import (
    DEFAULT_GAME,
    nonnegative_int,
    positive_float,
    positive_int,
    print_error,
)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``train`` and ``evaluate`` subcommands to ``subparsers``."""
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)


def _add_train_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train batched PPO on a game (needs the train extra: torch, tensorboard)",
        description=(
            "Train PPO (retrovec.training.ppo) on GAME with Atari preprocessing and discrete "
            "actions; TensorBoard events and checkpoint.pt go to --run-dir. Options not listed "
            "here are set with --arg FIELD=VALUE (any field of retrovec.training.ppo.Args). "
            "See docs/ppo.md."
        ),
    )
    p.add_argument(
        "--game", default=DEFAULT_GAME, help="stable-retro game id (default: %(default)s)"
    )
    p.add_argument("--state", default=None, help="save state (default: the game's default)")
    p.add_argument("--num-envs", type=positive_int, default=8, metavar="N",
                   help="parallel envs (default: %(default)s)")
    p.add_argument("--total-timesteps", type=positive_int, default=10_000_000, metavar="T",
                   help="agent steps over all envs (default: %(default)s)")
    p.add_argument("--num-steps", type=positive_int, default=128, metavar="S",
                   help="steps per env per rollout (default: %(default)s)")
    p.add_argument("--max-episode-steps", type=positive_int, default=27_000, metavar="S",
                   help="truncate episodes after S agent steps (default: %(default)s)")
    p.add_argument("--learning-rate", type=positive_float, default=2.5e-4, metavar="LR",
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=1, help="seed (default: %(default)s)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else CPU), cpu, cuda... (default: %(default)s)")
    p.add_argument("--run-dir", default="runs/ppo",
                   help="TensorBoard events and checkpoint.pt (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=positive_int, default=50, metavar="K",
                   help="save checkpoint.pt every K iterations (default: %(default)s)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue from this checkpoint.pt")
    p.add_argument("--arg", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any other retrovec.training.ppo.Args field, e.g. --arg ent_coef=0.02")
    p.add_argument("--eval-episodes", type=nonnegative_int, default=0, metavar="N",
                   help="after training, report mean +- std return over N episodes (default: 0)")
    p.add_argument("--video", default=None, metavar="MP4",
                   help="with --eval-episodes: save the evaluation as this mp4")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.set_defaults(handler=_cmd_train)


def _parse_value(text: str) -> Any:
    """The VALUE of ``--arg FIELD=VALUE``: None, a bool, an int, a float, else the text.

    Example:
        >>> [_parse_value(t) for t in ("null", "True", "3", "2.5e-4", "cuda:1")]
        [None, True, 3, 0.00025, 'cuda:1']
    """
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        from retrovec.training import ppo
    except ModuleNotFoundError as exc:
        print_error("train", f"{exc.name} is missing: pip install 'retrovec[train]'")
        return 2
    import dataclasses

    fields = {field.name for field in dataclasses.fields(ppo.Args)}
    values: dict[str, Any] = {
        "game": args.game, "state": args.state, "num_envs": args.num_envs,
        "total_timesteps": args.total_timesteps, "num_steps": args.num_steps,
        "max_episode_steps": args.max_episode_steps, "learning_rate": args.learning_rate,
        "seed": args.seed, "device": args.device, "run_dir": args.run_dir,
        "checkpoint_every": args.checkpoint_every, "resume": args.resume,
        "progress": not args.no_progress,
    }
    for item in args.arg:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            print_error(
                "train", f"--arg wants FIELD=VALUE, FIELD one of {sorted(fields)}; got {item!r}"
            )
            return 2
        values[name] = _parse_value(text)
    config = ppo.Args(**values)
    try:
        config.check()
    except ValueError as exc:
        print_error("train", str(exc))
        return 2
    result = ppo.train(config)
    print(f"retrovec train: {result['global_step']} steps, checkpoint {result['checkpoint']}")
    if args.eval_episodes:
        # evaluate()'s defaults (2 envs, seed 100): the same as `retrovec evaluate --random`.
        report = ppo.evaluate(
            result["checkpoint"], args.eval_episodes, video=args.video, device=config.device
        )
        _print_evaluation("train", report)
    return 0


def _print_evaluation(command: str, report: dict[str, Any]) -> None:
    returns = ", ".join(f"{value:g}" for value in report["returns"])
    print(f"retrovec {command}: {len(report['returns'])} episodes: return "
          f"{report['mean']:.2f} +- {report['std']:.2f} (returns {returns}; lengths "
          f"{min(report['lengths'])} to {max(report['lengths'])} agent steps)")
    if report.get("video"):
        print(f"retrovec {command}: video {report['video']}")


def _add_evaluate_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="play episodes with a trained checkpoint, or with random actions",
        description=(
            "Play --episodes full episodes with the policy of a `retrovec train` checkpoint "
            "(or, with --random, uniformly random actions: the baseline, measured the same "
            "way) and print the mean +- std of their returns. See docs/ppo.md."
        ),
    )
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="checkpoint.pt written by `retrovec train`")
    p.add_argument("--random", action="store_true",
                   help="random actions instead of a checkpoint (on --game)")
    p.add_argument("--game", default=DEFAULT_GAME,
                   help="with --random: stable-retro game id (default: %(default)s)")
    p.add_argument("--episodes", type=positive_int, default=10, metavar="N",
                   help="episodes to finish (default: %(default)s)")
    p.add_argument("--num-envs", type=positive_int, default=2, metavar="N",
                   help="envs playing in parallel (default: %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=100,
                   help="reset seed (default: %(default)s)")
    p.add_argument("--greedy", action="store_true",
                   help="take the most likely action instead of sampling")
    p.add_argument("--video", default=None, metavar="MP4",
                   help="save the episodes as this mp4 (checkpoint only)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else CPU), cpu, cuda... (default: %(default)s)")
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (not args.random):
        print_error("evaluate", "give either a CHECKPOINT or --random, not both or neither")
        return 2
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        print_error("evaluate", f"no checkpoint file at {args.checkpoint!r}")
        return 2
    if args.random and (args.video or args.greedy):
        print_error("evaluate", "--video and --greedy need a CHECKPOINT")
        return 2
    try:
        from retrovec.training import ppo
    except ModuleNotFoundError as exc:
        print_error("evaluate", f"{exc.name} is missing: pip install 'retrovec[train]'")
        return 2
    if args.random:
        report = ppo.evaluate_random(
            args.episodes, num_envs=args.num_envs, seed=args.seed, game=args.game
        )
    else:
        report = ppo.evaluate(
            args.checkpoint, args.episodes, num_envs=args.num_envs, seed=args.seed,
            greedy=args.greedy, video=args.video, device=args.device,
        )
    _print_evaluation("evaluate", report)
    return 0
