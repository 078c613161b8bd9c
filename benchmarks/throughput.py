"""Env steps per second on Airstriker: retrovec against gymnasium's AsyncVectorEnv.

Every contender runs in the same process, interleaved round by round, so the machine's
noise hits them alike; each figure is the median of the rounds with its min-max, and also
a ratio to LIMIT = (CPU cores) x (one RetroEnv stepped in-process, no IPC).

    python benchmarks/throughput.py --num-envs 8 --rounds 3 --seconds 3

The actions are drawn once up front, so sampling costs nothing inside the timed loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import timeit
from collections.abc import Callable
from functools import partial

import gymnasium as gym
import numpy as np

GAME = "Airstriker-Genesis-v0"

_SINGLE_ENV_RATE = """
import timeit, numpy as np, stable_retro
env = stable_retro.make({game!r}, render_mode=None)
env.reset(seed=0)
rng = np.random.default_rng(0)
actions = rng.integers(0, 2, (256, env.action_space.n), dtype=np.int8)
i = 0
def step():
    global i
    _, _, term, trunc, _ = env.step(actions[i % 256]); i += 1
    if term or trunc: env.reset()
step()
number = max(1, int({seconds} * 1500))
print(number / timeit.timeit(step, number=number))
"""


def make_retro_env(game: str = GAME) -> gym.Env:
    import stable_retro

    return stable_retro.make(game, render_mode=None)


def single_env_rate(seconds: float) -> float:
    """Steps/s of one RetroEnv stepped in a fresh process (the parent owns no emulator)."""
    code = _SINGLE_ENV_RATE.format(game=GAME, seconds=seconds)
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(output.stdout.strip())


def stepper(envs: gym.vector.VectorEnv, actions: np.ndarray) -> Callable[[], None]:
    index = 0

    def step() -> None:
        nonlocal index
        envs.step(actions[index % len(actions)])
        index += 1

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per contender per round")
    parser.add_argument("--json", type=str, default=None, help="also write results here")
    args = parser.parse_args(argv)

    import retrovec

    n = args.num_envs
    env_fns = [partial(make_retro_env, GAME) for _ in range(n)]
    contenders = {
        "retrovec copy=True": lambda: retrovec.AsyncRetroVectorEnv(env_fns, copy=True),
        "retrovec copy=False": lambda: retrovec.AsyncRetroVectorEnv(env_fns, copy=False),
        "gymnasium AsyncVectorEnv (shm)": lambda: gym.vector.AsyncVectorEnv(env_fns),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    rates["LIMIT"] = []
    cores = len(os.sched_getaffinity(0))
    rng = np.random.default_rng(0)
    for round_index in range(args.rounds):
        for name, build in contenders.items():
            envs = build()
            try:
                envs.reset(seed=0)
                actions = rng.integers(0, 2, (256, *envs.action_space.shape), dtype=np.int8)
                step = stepper(envs, actions)
                for _ in range(20):  # warm-up
                    step()
                per_second = 1500 * min(cores, n) / n
                number = max(10, int(args.seconds * per_second))
                elapsed = timeit.timeit(step, number=number)
                rates[name].append(number * n / elapsed)
            finally:
                envs.close()
        rates["LIMIT"].append(cores * single_env_rate(args.seconds))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    limit = statistics.median(rates["LIMIT"])
    results = {
        "game": GAME,
        "num_envs": n,
        "cores": cores,
        "rounds": args.rounds,
        "rows": {
            name: {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "ratio_to_limit": statistics.median(values) / limit,
            }
            for name, values in rates.items()
        },
    }
    print(f"\nAirstriker raw RGB frames, n={n}, {cores} cores, {args.rounds} interleaved rounds")
    print(f"| contender | env steps/s (median) | min-max | x LIMIT |")
    print("|---|---|---|---|")
    for name, row in results["rows"].items():
        print(
            f"| {name} | {row['median']:,.0f} | {row['min']:,.0f}-{row['max']:,.0f} "
            f"| {row['ratio_to_limit']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
