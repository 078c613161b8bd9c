"""The ``retrovec`` command line: argument parsing and dispatch only.

Subcommands live in a subparsers table (``run``, ``games``, ``states``, ``bench``,
``train``, ``evaluate``). Each subcommand is a ``_add_<name>_parser`` function that
registers its arguments and a ``_cmd_<name>(args) -> int`` handler; the work itself lives
in library modules (``retrovec.training.random_rollout`` for ``run``, ``retrovec.retro.games`` for
``games`` and ``states``, ``retrovec.benchmark`` for ``bench``, ``retrovec.training.ppo`` for
``train`` and ``evaluate``, imported only when those run, so the other commands never
import torch).

Exit codes: 0 success, 1 failure while running (a worker crashed, ...), 2 bad usage or a
game/state that cannot be made, 130 interrupted with Ctrl-C.

Example:
    Shell::

        $ retrovec run --game Airstriker-Genesis-v0 --num-envs 4 --steps 10000
        $ python -m retrovec run --num-envs 2 --seconds 5 --json

    Python::

        >>> from retrovec.cli import main
        >>> main(["run", "--num-envs", "0"])  # doctest: +SKIP
        2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["build_parser", "main"]

DEFAULT_GAME = "Airstriker-Genesis-v0"
DEFAULT_NUM_ENVS = 4
DEFAULT_STEPS = 10_000

#: ``--autoreset-mode`` choices and the :class:`gymnasium.vector.AutoresetMode` member
#: names they map to. ``DISABLED`` is left out: a random-action loop wants autoreset.
AUTORESET_CHOICES = {"next_step": "NEXT_STEP", "same_step": "SAME_STEP"}

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not value > 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (notes and tracebacks left out)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def _error(command: str, message: str) -> None:
    print(f"retrovec {command}: error: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- run


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
        type=_positive_int,
        default=DEFAULT_NUM_ENVS,
        metavar="N",
        help="number of emulators, one worker process each (default: %(default)s)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps",
        type=_positive_int,
        metavar="TOTAL",
        help="total env steps, summed over envs; rounded up to whole vector steps",
    )
    budget.add_argument(
        "--seconds", type=_positive_float, metavar="S", help="run for S seconds of stepping"
    )
    p.add_argument(
        "--state", default=None, help="save state to start from (default: the game's default)"
    )
    p.add_argument(
        "--seed",
        type=_nonnegative_int,
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
        f"total steps: {result['total_steps']} ({result['vector_steps']} vector steps)",
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
        _error("run", f"cannot make {what}: {_one_line(exc)}")
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
        _error("run", _one_line(exc))
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


# --------------------------------------------------------------------------- games


def _add_games_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "games",
        help="list the stable-retro games, one per line",
        description=(
            "Print the ids of the games stable-retro has an integration for, sorted, one "
            "per line. Exits 1 when no game matches."
        ),
    )
    p.add_argument(
        "--imported",
        action="store_true",
        help="only games whose ROM is imported, i.e. that retrovec.make can run now",
    )
    p.add_argument(
        "--filter", metavar="TEXT", help="only games whose id contains TEXT (ignoring case)"
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="search every integration (stable, experimental, contrib), not only stable",
    )
    p.set_defaults(handler=_cmd_games)


def _cmd_games(args: argparse.Namespace) -> int:
    from stable_retro.data import Integrations

    from retrovec.retro.games import list_games

    inttype = Integrations.ALL if args.all else Integrations.DEFAULT
    games = list_games(inttype, imported_only=args.imported, contains=args.filter)
    if not games:
        what = "imported game" if args.imported else "game"
        match = f" matches {args.filter!r}" if args.filter is not None else " found"
        _error("games", f"no {what}{match}")
        return 1
    print("\n".join(games))
    return 0


# --------------------------------------------------------------------------- states


def _add_states_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "states",
        help="list a game's save states, one per line",
        description=(
            "Print the names of the save states shipped with GAME (what make(state=...) "
            "accepts besides a .state path), sorted, one per line."
        ),
    )
    p.add_argument("game", metavar="GAME", help="stable-retro game id")
    p.add_argument(
        "--all",
        action="store_true",
        help="search every integration (stable, experimental, contrib), not only stable",
    )
    p.set_defaults(handler=_cmd_states)


def _cmd_states(args: argparse.Namespace) -> int:
    from stable_retro.data import Integrations

    from retrovec.errors import RetrovecError
    from retrovec.retro.games import list_states

    inttype = Integrations.ALL if args.all else Integrations.DEFAULT
    try:
        states = list_states(args.game, inttype, strict=True)
    except RetrovecError as exc:
        _error("states", _one_line(exc))
        return 2
    if states:
        print("\n".join(states))
    return 0


# --------------------------------------------------------------------------- bench


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
        type=_positive_int,
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
        type=_positive_int,
        default=benchmark.DEFAULT_ROUNDS,
        help="interleaved rounds; medians are over these (default: %(default)s)",
    )
    p.add_argument(
        "--seconds",
        type=_positive_float,
        default=benchmark.DEFAULT_SECONDS,
        metavar="S",
        help="timed seconds per measurement (default: %(default)s)",
    )
    p.add_argument(
        "--growth-steps",
        type=_nonnegative_int,
        default=0,
        metavar="STEPS",
        help="also run each contender STEPS env steps at the largest N and report memory "
        "growth per 1k steps; 0 skips it (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=_nonnegative_int, default=0, help="reset and action seed (default: 0)"
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
        _error("bench", f"cannot make {args.game!r}: {_one_line(exc)}")
        return 2
    written = write_outputs(result, args.out, args.json)
    print(render_markdown(result))
    for kind, path in written.items():
        print(f"retrovec bench: {kind}: {path}", file=sys.stderr)
    for error in result["errors"]:
        what = error["contender"] or error["kind"]
        _error("bench", f"{what} n={error['num_envs']}: {error['error'].splitlines()[0]}")
    return 1 if result["errors"] else 0


# --------------------------------------------------------------------------- train


def _add_train_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train batched PPO on a game (needs the train extra: torch, tensorboard)",
        description=(
            "Train PPO (retrovec.training.ppo) on GAME with Atari preprocessing and discrete actions; "
            "TensorBoard events and checkpoint.pt go to --run-dir. Options not listed here "
            "are set with --arg FIELD=VALUE (any field of retrovec.training.ppo.Args). See docs/ppo.md."
        ),
    )
    p.add_argument(
        "--game", default=DEFAULT_GAME, help="stable-retro game id (default: %(default)s)"
    )
    p.add_argument("--state", default=None, help="save state (default: the game's default)")
    p.add_argument("--num-envs", type=_positive_int, default=8, metavar="N",
                   help="parallel envs (default: %(default)s)")
    p.add_argument("--total-timesteps", type=_positive_int, default=10_000_000, metavar="T",
                   help="agent steps over all envs (default: %(default)s)")
    p.add_argument("--num-steps", type=_positive_int, default=128, metavar="S",
                   help="steps per env per rollout (default: %(default)s)")
    p.add_argument("--max-episode-steps", type=_positive_int, default=27_000, metavar="S",
                   help="truncate episodes after S agent steps (default: %(default)s)")
    p.add_argument("--learning-rate", type=_positive_float, default=2.5e-4, metavar="LR",
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--seed", type=_nonnegative_int, default=1, help="seed (default: %(default)s)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else CPU), cpu, cuda... (default: %(default)s)")
    p.add_argument("--run-dir", default="runs/ppo",
                   help="TensorBoard events and checkpoint.pt (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=50, metavar="K",
                   help="save checkpoint.pt every K iterations (default: %(default)s)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue from this checkpoint.pt")
    p.add_argument("--arg", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any other retrovec.training.ppo.Args field, e.g. --arg ent_coef=0.02")
    p.add_argument("--eval-episodes", type=_nonnegative_int, default=0, metavar="N",
                   help="after training, report mean +- std return over N episodes (default: 0)")
    p.add_argument("--video", default=None, metavar="MP4",
                   help="with --eval-episodes: save the evaluation as this mp4")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.set_defaults(handler=_cmd_train)


def _parse_value(text: str) -> Any:
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
        _error("train", f"{exc.name} is missing: pip install 'retrovec[train]'")
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
            _error(
                "train", f"--arg wants FIELD=VALUE, FIELD one of {sorted(fields)}; got {item!r}"
            )
            return 2
        values[name] = _parse_value(text)
    config = ppo.Args(**values)
    try:
        config.check()
    except ValueError as exc:
        _error("train", str(exc))
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


# --------------------------------------------------------------------------- evaluate


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
    p.add_argument("--episodes", type=_positive_int, default=10, metavar="N",
                   help="episodes to finish (default: %(default)s)")
    p.add_argument("--num-envs", type=_positive_int, default=2, metavar="N",
                   help="envs playing in parallel (default: %(default)s)")
    p.add_argument("--seed", type=_nonnegative_int, default=100,
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
        _error("evaluate", "give either a CHECKPOINT or --random, not both or neither")
        return 2
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        _error("evaluate", f"no checkpoint file at {args.checkpoint!r}")
        return 2
    if args.random and (args.video or args.greedy):
        _error("evaluate", "--video and --greedy need a CHECKPOINT")
        return 2
    try:
        from retrovec.training import ppo
    except ModuleNotFoundError as exc:
        _error("evaluate", f"{exc.name} is missing: pip install 'retrovec[train]'")
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


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per subcommand.

    Returns:
        The parser; each subcommand sets ``handler`` (a ``Namespace -> int`` function).

    Example:
        >>> args = build_parser().parse_args(["run", "--num-envs", "2", "--steps", "100"])
        >>> args.command, args.num_envs, args.steps, args.seconds
        ('run', 2, 100, None)
    """
    parser = argparse.ArgumentParser(
        prog="retrovec",
        description="Many stable-retro emulators in parallel as one gymnasium vector env.",
    )
    try:
        from retrovec import __version__ as version
    except ImportError:  # pragma: no cover - package metadata not written yet
        version = "unknown"
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_parser(subparsers)
    _add_games_parser(subparsers)
    _add_states_parser(subparsers)
    _add_bench_parser(subparsers)
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``retrovec`` command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The process exit code (argparse's usage errors give 2, ``--help`` gives 0).

    Example:
        >>> main(["--help"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        _error(args.command, "interrupted")
        return 130
