"""``retrovec bench``: measure env steps/s of retrovec against other vector envs.

Parses the command's arguments into a ``retrovec.benchmark.BenchmarkConfig`` and
dispatches to ``retrovec.benchmark`` (``run_benchmark``, ``write_outputs``,
``render_markdown``); the method is described in ``benchmarks/README.md``.

Example:
    >>> from retrovec.cli import build_parser
    >>> args = build_parser().parse_args(["bench", "--num-envs", "2", "8", "--rounds", "1"])
    >>> args.num_envs, args.rounds, args.out
    ([2, 8], 1, None)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from retrovec.cli.arguments import (
    DEFAULT_GAME,
    nonnegative_int,
    one_line,
    positive_float,
    positive_int,
    print_error,
)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to ``subparsers``."""
    _add_bench_parser(subparsers)


def _add_bench_parser(subparsers: Any) -> None:
    from retrovec import benchmark

    p = subparsers.add_parser(
        "bench",
        help="measure env steps/s of retrovec against other vector envs",
        description=(
            "Measure total env steps/s of every contender for each workload and num_envs, "
            "interleaved round by round, and report medians (min-max) and ratios to LIMIT "
            "(cores x one env in-process), start-up time, memory per env and the parent's "
            "CPU time per step. Prints a Markdown report; --out also writes "
            "throughput.json, throughput.md and throughput.png. Method: benchmarks/README.md."
        ),
    )
    p.add_argument(
        "--game", default=DEFAULT_GAME, help="stable-retro game id (default: %(default)s)"
    )
    p.add_argument(
        "--num-envs",
        type=positive_int,
        nargs="+",
        default=list(benchmark.DEFAULT_NUM_ENVS),
        metavar="N",
        help="vector sizes to measure (default: %(default)s)",
    )
    p.add_argument(
        "--workloads",
        nargs="+",
        choices=list(benchmark.WORKLOADS),
        default=list(benchmark.WORKLOADS),
        metavar="W",
        help="rgb: raw frames; atari: Preprocessing.atari() in each env (default: both)",
    )
    p.add_argument(
        "--contenders",
        nargs="+",
        choices=list(benchmark.CONTENDERS),
        default=None,
        metavar="C",
        help=f"some of {', '.join(benchmark.CONTENDERS)} (default: every one that can run here)",
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=benchmark.DEFAULT_ROUNDS,
        help="interleaved rounds; medians are over these (default: %(default)s)",
    )
    p.add_argument(
        "--seconds",
        type=positive_float,
        default=benchmark.DEFAULT_SECONDS,
        metavar="S",
        help="timed seconds per measurement (default: %(default)s)",
    )
    p.add_argument(
        "--growth-steps",
        type=nonnegative_int,
        default=0,
        metavar="STEPS",
        help="also run each contender STEPS env steps at the largest N and report memory "
        "growth per 1k steps; 0 skips it (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="reset and action seed (default: 0)"
    )
    p.add_argument("--out", metavar="DIR", help="write throughput.{json,md,png} into DIR")
    p.add_argument("--json", metavar="FILE", help="also write the JSON result to FILE")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.set_defaults(handler=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from retrovec.benchmark import BenchmarkConfig, render_markdown, run_benchmark, write_outputs
    from retrovec.errors import RetrovecError

    config = BenchmarkConfig(
        game=args.game,
        num_envs=tuple(dict.fromkeys(args.num_envs)),
        workloads=tuple(dict.fromkeys(args.workloads)),
        contenders=None if args.contenders is None else tuple(dict.fromkeys(args.contenders)),
        rounds=args.rounds,
        seconds=args.seconds,
        growth_steps=args.growth_steps,
        seed=args.seed,
    )
    try:
        result = run_benchmark(config, progress=not args.no_progress)
    except RetrovecError as exc:
        print_error("bench", f"cannot make {args.game!r}: {one_line(exc)}")
        return 2
    written = write_outputs(result, args.out, args.json)
    print(render_markdown(result))
    for kind, path in written.items():
        print(f"retrovec bench: {kind}: {path}", file=sys.stderr)
    for error in result["errors"]:
        what = error["contender"] or error["kind"]
        print_error("bench", f"{what} n={error['num_envs']}: {error['error'].splitlines()[0]}")
    return 1 if result["errors"] else 0
