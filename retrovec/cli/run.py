"""``retrovec run``: step a game with random actions and report speed and episode stats.

Parses the command's arguments and dispatches: the env comes from
``retrovec.retro.factory.make`` and the loop is
``retrovec.training.random_rollout.run_random``, both imported only when the command runs.

Example:
    >>> from retrovec.cli import build_parser
    >>> args = build_parser().parse_args(["run", "--seconds", "5", "--json"])
    >>> args.seconds, args.steps, args.autoreset_mode, args.json
    (5.0, None, 'next_step', True)
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
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

__all__ = ["AUTORESET_CHOICES", "DEFAULT_NUM_ENVS", "DEFAULT_STEPS", "register"]

DEFAULT_NUM_ENVS = 4
DEFAULT_STEPS = 10_000

#: ``--autoreset-mode`` choices and the :class:`gymnasium.vector.AutoresetMode` member
#: names they map to. ``DISABLED`` is left out: a random-action loop wants autoreset.
AUTORESET_CHOICES = {"next_step": "NEXT_STEP", "same_step": "SAME_STEP"}


def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand to ``subparsers``."""
    _add_run_parser(subparsers)


def _add_run_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="step a game with random actions and report speed and episode stats",
        description=(
            "Build retrovec.make(GAME, num_envs=N), reset it with --seed, step it with "
            "random actions for the budget and print env steps/s and finished-episode "
            f"statistics. Without --steps or --seconds, runs {DEFAULT_STEPS} env steps."
        ),
    )
    p.add_argument(
        "--game", default=DEFAULT_GAME, help="stable-retro game id (default: %(default)s)"
    )
    p.add_argument(
        "--num-envs",
        type=positive_int,
        default=DEFAULT_NUM_ENVS,
        metavar="N",
        help="number of emulators, one worker process each (default: %(default)s)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps",
        type=positive_int,
        metavar="TOTAL",
        help="total env steps, summed over envs; rounded up to whole vector steps",
    )
    budget.add_argument(
        "--seconds", type=positive_float, metavar="S", help="run for S seconds of stepping"
    )
    p.add_argument(
        "--state", default=None, help="save state to start from (default: the game's default)"
    )
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="seed for reset and the action space (default: %(default)s)",
    )
    p.add_argument(
        "--autoreset-mode",
        choices=sorted(AUTORESET_CHOICES),
        default="next_step",
        help="gymnasium autoreset mode of the vector env (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.set_defaults(handler=_cmd_run)


def _format_stats_text(result: dict[str, Any]) -> str:
    """The human-readable report of ``retrovec run``.

    Example:
        >>> r = {"game": "G", "state": None, "num_envs": 2, "autoreset_mode": "NextStep",
        ...      "seed": 0, "steps_per_second": 1000.0, "total_steps": 200, "vector_steps": 100,
        ...      "wall_seconds": 0.2, "make_seconds": 1.0, "reset_seconds": 0.1,
        ...      "episodes": 0, "episodes_truncated": 0}
        >>> print(_format_stats_text(r))  # doctest: +NORMALIZE_WHITESPACE
        G x 2 envs, NextStep autoreset, seed 0
        env steps/s: 1,000.0
        total steps: 200 (100 vector steps)
        wall time:   0.20 s stepping (make 1.00 s, reset 0.10 s)
        episodes:    no episode finished
    """
    state = f", state {result['state']}" if result.get("state") else ""
    lines = [
        (
            f"{result['game']} x {result['num_envs']} envs{state}, "
            f"{result['autoreset_mode']} autoreset, seed {result['seed']}"
        ),
        f"env steps/s: {result['steps_per_second']:,.1f}",
        f"total steps: {result['total_steps']} ({plural(result['vector_steps'], 'vector step')})",
        (
            f"wall time:   {result['wall_seconds']:.2f} s stepping "
            f"(make {result['make_seconds']:.2f} s, reset {result['reset_seconds']:.2f} s)"
        ),
    ]
    if result["episodes"] == 0:
        lines.append("episodes:    no episode finished")
    else:
        lines += [
            (
                f"episodes:    {result['episodes']} finished "
                f"({result['episodes_truncated']} truncated)"
            ),
            f"return:      {result['return_mean']:.2f} ± {result['return_std']:.2f}",
            f"length:      {result['length_mean']:.1f} ± {result['length_std']:.1f}",
        ]
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    # Imported here: stable_retro (via retrovec.retro.factory) loads only when a command needs it.
    from gymnasium.vector import AutoresetMode

    from retrovec.errors import RetrovecError
    from retrovec.retro.factory import make
    from retrovec.training.random_rollout import run_random

    total_steps = args.steps
    if args.steps is None and args.seconds is None:
        total_steps = DEFAULT_STEPS

    make_kwargs: dict[str, Any] = {
        "game": args.game,
        "num_envs": args.num_envs,
        "autoreset_mode": AutoresetMode[AUTORESET_CHOICES[args.autoreset_mode]],
    }
    if args.state is not None:
        make_kwargs["state"] = args.state

    t0 = time.perf_counter()
    try:
        envs = make(**make_kwargs)
    except (RetrovecError, ValueError) as exc:
        what = repr(args.game) + (f" (state {args.state!r})" if args.state else "")
        print_error("run", f"cannot make {what}: {one_line(exc)}")
        return 2
    make_seconds = time.perf_counter() - t0

    try:
        stats = run_random(
            envs,
            total_steps=total_steps,
            seconds=args.seconds,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except RetrovecError as exc:
        print_error("run", one_line(exc))
        return 1
    except KeyboardInterrupt:  # reported by main(); close without the pending-call warning
        with warnings.catch_warnings():
            # Ctrl-C lands mid-step: closing with that step pending warns; expected here.
            warnings.simplefilter("ignore")
            envs.close()
        raise
    finally:
        envs.close()  # no-op when already closed

    result = {
        "game": args.game,
        "state": args.state,
        "seed": args.seed,
        "make_seconds": make_seconds,
        **stats.to_dict(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(_format_stats_text(result))
    return 0
