"""``retrovec bench``: measure env steps/s of retrovec against other vector envs.

Parses the command's arguments into a ``retrovec.benchmark.BenchmarkConfig`` and
dispatches to ``retrovec.benchmark`` (``run_benchmark``, ``write_outputs``,
``render_markdown``); the method is described in ``benchmarks/README.md``.

Without options it makes the quick comparison ``retrovec.benchmark.QUICK`` (retrovec,
gymnasium's ``AsyncVectorEnv``, SB3's ``SubprocVecEnv``; about half a minute); ``--full``
starts from the long sweep ``retrovec.benchmark.FULL`` instead, ``--ray`` adds Ray's
contender, and every option given replaces that part of the preset.

Example:
    >>> from retrovec.cli import build_parser
    >>> args = build_parser().parse_args(["bench", "--num-envs", "2", "8", "--rounds", "1"])
    >>> config = bench_config(args)
    >>> config.num_envs, config.rounds, config.workloads, config.contenders
    ((2, 8), 1, ('rgb',), ('retrovec', 'gymnasium', 'sb3'))
    >>> bench_config(build_parser().parse_args(["bench", "--full", "--ray"])).rounds
    3
"""

from __future__ import annotations

import argparse
import dataclasses
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

__all__ = ["bench_config", "register"]


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to ``subparsers``."""
    _add_bench_parser(subparsers)


def _add_bench_parser(subparsers: Any) -> None:
    from retrovec import benchmark

    quick, full = benchmark.QUICK, benchmark.FULL
    p = subparsers.add_parser(
        "bench",
        help="compare env steps/s of retrovec, gymnasium and SB3 (needs the bench extra)",
        description=(
            "Measure total env steps/s of retrovec against gymnasium's AsyncVectorEnv and "
            "SB3's SubprocVecEnv stepping the same game, interleaved round by round, and "
            "report medians (min-max) and ratios to LIMIT (cores x one env in-process), "
            "start-up time, memory per env and the parent's CPU time per step. Without "
            f"options: a quick run (n={_listed(quick.num_envs)}, {_listed(quick.workloads)}, "
            f"{quick.rounds} round of {quick.seconds:g} s per contender); --full: the long "
            f"sweep (n={_listed(full.num_envs)}, {_listed(full.workloads)}, {full.rounds} "
            f"rounds of {full.seconds:g} s, every contender but Ray's); --ray adds Ray. "
            "Prints a Markdown report; --out also writes throughput.json, throughput.md and "
            "throughput.png. Method: benchmarks/README.md."
        ),
    )
    p.add_argument(
        "--game", default=DEFAULT_GAME, help="stable-retro game id (default: %(default)s)"
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="start from the long sweep instead of the quick comparison (tens of minutes)",
    )
    p.add_argument(
        "--ray", action="store_true", help="also measure retrovec's Ray backend (extra ray)"
    )
    p.add_argument(
        "--num-envs",
        type=positive_int,
        nargs="+",
        default=None,
        metavar="N",
        help=f"vector sizes to measure (default: {_listed(quick.num_envs)}; "
        f"--full: {_listed(full.num_envs)})",
    )
    p.add_argument(
        "--workloads",
        nargs="+",
        choices=list(benchmark.WORKLOADS),
        default=None,
        metavar="W",
        help="rgb: raw frames; atari: Preprocessing.atari() in each env "
        f"(default: {_listed(quick.workloads)}; --full: {_listed(full.workloads)})",
    )
    p.add_argument(
        "--contenders",
        nargs="+",
        choices=list(benchmark.CONTENDERS),
        default=None,
        metavar="C",
        help=f"some of {', '.join(benchmark.CONTENDERS)} (default: "
        f"{_listed(benchmark.QUICK_CONTENDERS)}; --full: every one but retrovec-ray)",
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        help=f"interleaved rounds; medians are over these (default: {quick.rounds}; "
        f"--full: {full.rounds})",
    )
    p.add_argument(
        "--seconds",
        type=positive_float,
        default=None,
        metavar="S",
        help=f"timed seconds per measurement (default: {quick.seconds:g}; "
        f"--full: {full.seconds:g})",
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
    p.set_defaults(handler=_cmd_bench, requires=[("psutil", "bench")])


def _listed(values: Any) -> str:
    return " ".join(str(value) for value in values)


def bench_config(args: argparse.Namespace) -> Any:
    """The ``retrovec.benchmark.BenchmarkConfig`` of ``retrovec bench``'s arguments.

    The preset (``QUICK``, or ``FULL`` with ``--full``) with every option given put in
    its place, and Ray's contender added with ``--ray``.
    """
    from retrovec import benchmark

    preset = benchmark.FULL if args.full else benchmark.QUICK
    contenders = list(preset.contenders if args.contenders is None else args.contenders)
    if args.ray and "retrovec-ray" not in contenders:
        contenders.append("retrovec-ray")
    return dataclasses.replace(
        preset,
        game=args.game,
        num_envs=tuple(dict.fromkeys(args.num_envs or preset.num_envs)),
        workloads=tuple(dict.fromkeys(args.workloads or preset.workloads)),
        contenders=tuple(dict.fromkeys(contenders)),
        rounds=args.rounds or preset.rounds,
        seconds=args.seconds or preset.seconds,
        growth_steps=args.growth_steps,
        seed=args.seed,
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from retrovec.benchmark import CONTENDERS, render_markdown, run_benchmark, write_outputs
    from retrovec.errors import RetrovecError

    config = bench_config(args)
    try:
        result = run_benchmark(config, progress=not args.no_progress)
    except RetrovecError as exc:
        print_error("bench", f"cannot make {args.game!r}: {one_line(exc)}")
        return 2
    written = write_outputs(result, args.out, args.json)
    print(render_markdown(result))
    labels = {c.label for c in CONTENDERS.values()}
    for skipped in result["skipped"]:  # a contender of the preset that cannot run here
        if skipped["num_envs"] is None and skipped["contender"] in labels:
            print(
                f"retrovec bench: skipped {skipped['contender']}: {skipped['reason']}",
                file=sys.stderr,
            )
    for kind, path in written.items():
        print(f"retrovec bench: {kind}: {path}", file=sys.stderr)
    for error in result["errors"]:
        what = error["contender"] or error["kind"]
        print_error("bench", f"{what} n={error['num_envs']}: {error['error'].splitlines()[0]}")
    return 1 if result["errors"] else 0
