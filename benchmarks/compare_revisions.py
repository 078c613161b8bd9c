"""retrovec at two git revisions, measured in one run: throughput and the parent's CPU per
env step, interleaved round by round so that both see the same machine load.

Each revision is checked out into a temporary worktree and measured by its own
``retrovec bench`` (``--contenders retrovec``), run with that worktree first on
``PYTHONPATH``; the rounds alternate between the revisions. Figures are medians over the
rounds, and ratios are taken within each round, then their median reported.

    python benchmarks/compare_revisions.py b56d847 HEAD --num-envs 2 8 \\
        --workloads rgb atari --rounds 5 --seconds 3

Run it from the repository root with retrovec's dependencies installed (the README's test
command sets them up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _worktree(revision: str, root: Path) -> Path:
    path = root / revision.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision],
        check=True, capture_output=True,
    )
    return path


def _bench(tree: Path, args: argparse.Namespace, out: Path) -> dict:
    command = [
        sys.executable, "-c", "import sys; from retrovec.cli import main; sys.exit(main())",
        "bench", "--contenders", "retrovec", "--rounds", "1", "--no-progress",
        "--seconds", str(args.seconds), "--json", str(out),
        "--num-envs", *map(str, args.num_envs), "--workloads", *args.workloads,
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(command, check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def _figures(result: dict) -> dict[tuple[str, int], tuple[float, float]]:
    """(workload, n) -> (env steps/s, parent CPU us per env step)."""
    found = {}
    for row in result["measurements"]:
        if row["kind"] == "contender" and row["contender"] == "retrovec":
            per_env = row["parent_cpu_us_per_call"] / row["num_envs"]
            found[(row["workload"], row["num_envs"])] = (row["steps_per_second"], per_env)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--workloads", nargs="+", default=["rgb", "atari"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        trees = {name: _worktree(rev, root) for name, rev in
                 (("before", args.before), ("after", args.after))}
        samples: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        try:
            for round_ in range(args.rounds):
                order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
                figures = {}
                for name in order:
                    figures[name] = _figures(_bench(trees[name], args, root / f"{name}.json"))
                for key in figures["after"]:
                    (sps_b, cpu_b), (sps_a, cpu_a) = figures["before"][key], figures["after"][key]
                    cell = samples[key]
                    cell["sps_before"].append(sps_b)
                    cell["sps_after"].append(sps_a)
                    cell["cpu_before"].append(cpu_b)
                    cell["cpu_after"].append(cpu_a)
                    cell["sps_ratio"].append(sps_a / sps_b)
                    cell["cpu_ratio"].append(cpu_a / cpu_b)
                print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(tree)], capture_output=True)

    median = statistics.median
    print(f"before = {args.before}, after = {args.after}; {args.rounds} interleaved rounds "
          f"of {args.seconds} s; medians\n")
    print("| workload | n | env steps/s before | after | after/before | parent CPU us per "
          "env step before | after | after/before |")
    print("|---|---|---|---|---|---|---|---|")
    for (workload, n), cell in sorted(samples.items()):
        print(f"| {workload} | {n} | {median(cell['sps_before']):,.0f} | "
              f"{median(cell['sps_after']):,.0f} | {median(cell['sps_ratio']):.2f} | "
              f"{median(cell['cpu_before']):.1f} | {median(cell['cpu_after']):.1f} | "
              f"{median(cell['cpu_ratio']):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
