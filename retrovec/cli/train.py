"""``retrovec train`` and ``retrovec evaluate``: batched PPO from the command line.

Parses the commands' arguments into a ``retrovec.training.ppo.Args`` (``--arg FIELD=VALUE``
sets any field without a flag of its own, checked against the field's type by
:func:`retrovec.cli.checks.train_config`) and dispatches to ``retrovec.training.ppo``
(``train``, ``evaluate``) or, for ``evaluate --random``, to the torch-free
``retrovec.training.ppo_envs.evaluate_random``. Those modules are imported only when a
command runs, so the other commands never import torch; :mod:`retrovec.cli.checks` answers
a missing torch with the install command and exit code 2.

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
from typing import Any

from retrovec.cli.arguments import (
    DEFAULT_GAME,
    nonnegative_int,
    one_line,
    plural,
    positive_float,
    positive_int,
    print_error,
)
from retrovec.cli.checks import train_config

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
    p.add_argument(
        "--num-envs",
        type=positive_int,
        default=8,
        metavar="N",
        help="parallel envs (default: %(default)s)",
    )
    p.add_argument(
        "--total-timesteps",
        type=positive_int,
        default=10_000_000,
        metavar="T",
        help="agent steps over all envs (default: %(default)s)",
    )
    p.add_argument(
        "--num-steps",
        type=positive_int,
        default=128,
        metavar="S",
        help="steps per env per rollout (default: %(default)s)",
    )
    p.add_argument(
        "--max-episode-steps",
        type=positive_int,
        default=27_000,
        metavar="S",
        help="truncate episodes after S agent steps (default: %(default)s)",
    )
    p.add_argument(
        "--learning-rate",
        type=positive_float,
        default=2.5e-4,
        metavar="LR",
        help="Adam learning rate (default: %(default)s)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=1, help="seed (default: %(default)s)")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else CPU), cpu, cuda... (default: %(default)s)",
    )
    p.add_argument(
        "--run-dir",
        default="runs/ppo",
        help="TensorBoard events and checkpoint.pt (default: %(default)s)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=50,
        metavar="K",
        help="save checkpoint.pt every K iterations (default: %(default)s)",
    )
    p.add_argument(
        "--resume", default=None, metavar="CHECKPOINT", help="continue from this checkpoint.pt"
    )
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set any other retrovec.training.ppo.Args field, e.g. --arg ent_coef=0.02",
    )
    p.add_argument(
        "--eval-episodes",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="after training, report mean +- std return over N episodes (default: 0)",
    )
    p.add_argument(
        "--video",
        default=None,
        metavar="MP4",
        help="with --eval-episodes: save the evaluation as this mp4",
    )
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.set_defaults(handler=_cmd_train, requires=[("torch", "train"), ("tensorboard", "train")])


def _cmd_train(args: argparse.Namespace) -> int:
    from retrovec.errors import RetrovecError
    from retrovec.training import ppo

    config = train_config(args)  # checked by main() already; this builds it
    try:
        result = ppo.train(config)
    except RetrovecError as exc:  # a worker died too often...: the checkpoint is saved
        print_error("train", one_line(exc))
        return 1
    print(
        f"retrovec train: {plural(result['global_step'], 'step')}, "
        f"checkpoint {result['checkpoint']}"
    )
    if args.eval_episodes:
        # evaluate()'s defaults (2 envs, seed 100): the same as `retrovec evaluate --random`.
        report = ppo.evaluate(
            result["checkpoint"], args.eval_episodes, video=args.video, device=config.device
        )
        _print_evaluation("train", report)
    return 0


def _print_evaluation(command: str, report: dict[str, Any]) -> None:
    returns = ", ".join(f"{value:g}" for value in report["returns"])
    shortest, longest = min(report["lengths"]), max(report["lengths"])
    lengths = (
        f"length {shortest}" if shortest == longest else f"lengths {shortest} to {longest}"
    )
    print(
        f"retrovec {command}: {plural(len(report['returns']), 'episode')}: return "
        f"{report['mean']:.2f} +- {report['std']:.2f} (returns {returns}; {lengths} "
        "agent steps)"
    )
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
    p.add_argument(
        "checkpoint",
        nargs="?",
        default=None,
        metavar="CHECKPOINT",
        help="checkpoint.pt written by `retrovec train`",
    )
    p.add_argument(
        "--random", action="store_true", help="random actions instead of a checkpoint (on --game)"
    )
    p.add_argument(
        "--game",
        default=DEFAULT_GAME,
        help="with --random: stable-retro game id (default: %(default)s)",
    )
    p.add_argument(
        "--episodes",
        type=positive_int,
        default=10,
        metavar="N",
        help="episodes to finish (default: %(default)s)",
    )
    p.add_argument(
        "--num-envs",
        type=positive_int,
        default=2,
        metavar="N",
        help="envs playing in parallel (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=100, help="reset seed (default: %(default)s)"
    )
    p.add_argument(
        "--greedy", action="store_true", help="take the most likely action instead of sampling"
    )
    p.add_argument(
        "--video",
        default=None,
        metavar="MP4",
        help="save the episodes as this mp4 (checkpoint only)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else CPU), cpu, cuda... (default: %(default)s)",
    )
    p.add_argument(
        "--max-episode-steps",
        type=positive_int,
        default=None,
        metavar="S",
        help="truncate episodes after S agent steps (default: the checkpoint's setting; "
        "with --random: 27000, as retrovec train)",
    )
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    # main() has checked the arguments: a CHECKPOINT that is one, or --random.
    if args.random:  # torch-free: runs without the train extra
        from retrovec.training.ppo_envs import evaluate_random

        report = evaluate_random(
            args.episodes,
            num_envs=args.num_envs,
            seed=args.seed,
            game=args.game,
            max_episode_steps=args.max_episode_steps,
        )
    else:
        from retrovec.training.ppo_evaluation import evaluate

        report = evaluate(
            args.checkpoint,
            args.episodes,
            num_envs=args.num_envs,
            seed=args.seed,
            greedy=args.greedy,
            video=args.video,
            device=args.device,
            max_episode_steps=args.max_episode_steps,
        )
    _print_evaluation("evaluate", report)
    return 0
