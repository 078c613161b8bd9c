"""Soak test: a long mixed workload with random worker kills and restarts.

Runs ``num_envs`` Airstriker emulators with ``on_worker_failure="restart"``, short
episodes (a TimeLimit), and SIGKILLs a random worker now and then, either while it is idle
or in the middle of a step. It checks, and reports:

- every kill was noticed exactly once (restarts == kills, one ``worker_restarted`` flag
  per kill);
- every episode is accounted for: each env's steps split exactly into finished episodes
  plus the one in progress, which matches the step counter inside the worker; no episode
  is longer than the time limit;
- gymnasium's own ``RecordEpisodeStatistics`` vector wrapper saw the same episodes;
- nothing leaked: no child process, no file descriptor, no ``/dev/shm`` entry.

    python benchmarks/soak.py --seconds 600 --num-envs 8

The kills are drawn from a seeded generator, so a run can be repeated.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np
import psutil
from gymnasium.wrappers.vector import RecordEpisodeStatistics

import retrovec


def _is_reaper(process: psutil.Process) -> bool:
    try:
        return "retrovec-reaper" in " ".join(process.cmdline())
    except psutil.Error:  # gone, or a zombie
        return False


def _snapshot() -> dict:
    gc.collect()
    # retrovec's reaper (retrovec/core/reaper.py) is one process per parent that lives as
    # long as the parent, by design; it and the one pipe to it are not a leak.
    reapers = [p for p in psutil.Process().children(recursive=True) if _is_reaper(p)]
    return {
        "children": len(psutil.Process().children(recursive=True)) - len(reapers),
        "fds": len(os.listdir("/proc/self/fd")) - len(reapers),
        "shm": sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else [],
    }


def soak(
    seconds: float = 30.0,
    num_envs: int = 4,
    episode_steps: int = 150,
    kill_probability: float = 0.01,
    seed: int = 0,
) -> dict:
    """Run the soak; returns the report. Raises AssertionError if a check fails."""
    rng = np.random.default_rng(seed)
    before = _snapshot()
    envs = retrovec.make(
        num_envs=num_envs,
        max_episode_steps=episode_steps,
        on_worker_failure="restart",
        max_restarts=10**6,
        context="fork",
    )
    stats = RecordEpisodeStatistics(envs, buffer_length=10**6)
    kills = {"idle": 0, "mid_step": 0}
    killed: set[int] = set()  # the pids of every worker killed so far
    restarts_seen = 0
    episodes: list[int] = []
    length = np.zeros(num_envs, dtype=np.int64)  # steps in the current episode
    taken = np.zeros(num_envs, dtype=np.int64)  # steps that belong to an episode
    after_done = np.zeros(num_envs, dtype=bool)
    steps = 0
    actions = np.zeros((num_envs, 12), dtype=np.int8)
    started = time.monotonic()
    try:
        stats.reset(seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one "restarting it" warning per kill
            while time.monotonic() - started < seconds:
                actions[:] = rng.integers(0, 2, actions.shape)
                kill = rng.random() < kill_probability
                victim = int(rng.integers(num_envs))
                pid = envs.processes[victim].pid
                # A worker killed but not yet noticed (a restart comes at the next step) is
                # not killed again: that kill would count without a death to restart.
                kill = kill and pid not in killed
                if kill and rng.random() < 0.5:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                    kills["idle"] += 1
                    kill = False
                timer = None
                if kill:  # lands while the step is in flight (or just after: then idle)
                    timer = threading.Timer(0.0003, os.kill, (pid, signal.SIGKILL))
                    timer.start()
                    killed.add(pid)
                    kills["mid_step"] += 1
                _, _, terminations, truncations, infos = stats.step(actions)
                if timer is not None:
                    timer.join()
                steps += num_envs
                restarted = infos.get("_worker_restarted", np.zeros(num_envs, dtype=bool))
                restarts_seen += int(restarted.sum())
                # NEXT_STEP: the step after an episode end is a reset step, in no episode
                counted = ~after_done
                length[counted] += 1
                taken[counted] += 1
                done = terminations | truncations
                for index in np.flatnonzero(done):
                    if restarted[index]:  # that step never happened: the worker died
                        length[index] -= 1
                        taken[index] -= 1
                    episodes.append(int(length[index]))
                    length[index] = 0
                after_done = done
        elapsed = time.monotonic() - started
        in_worker = np.array(envs.get_attr("_elapsed_steps"))
        in_worker[after_done] = 0  # ended episodes' counters are reset at the next step
        killed = kills["idle"] + kills["mid_step"]
        report = {
            "seconds": round(elapsed, 1),
            "num_envs": num_envs,
            "env_steps": steps,
            "env_steps_per_second": round(steps / elapsed, 1),
            "kills": kills,
            "restarts": int(envs.restart_counts.sum()),
            "restart_flags_seen": restarts_seen,
            "episodes_finished": len(episodes),
            "episodes_seen_by_RecordEpisodeStatistics": int(stats.episode_count),
        }
        assert report["restarts"] == killed, f"{killed} kills but {report['restarts']} restarts"
        assert restarts_seen == killed, f"{killed} kills but {restarts_seen} restart flags"
        assert np.array_equal(length, in_worker), f"in progress {length} != workers' {in_worker}"
        assert sum(episodes) + int(length.sum()) == int(taken.sum()), "steps not accounted for"
        assert max(episodes, default=0) <= episode_steps, "an episode outlived its time limit"
        assert stats.episode_count == len(episodes), (
            f"RecordEpisodeStatistics saw {stats.episode_count}, we saw {len(episodes)}"
        )
    finally:
        stats.close()
    after = _snapshot()
    leaks = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    report["leaks"] = leaks or "none"
    assert not leaks, f"leaked: {leaks}"
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Soak test with random worker kills.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--episode-steps", type=int, default=150)
    parser.add_argument("--kill-probability", type=float, default=0.01, help="per vector step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = soak(args.seconds, args.num_envs, args.episode_steps, args.kill_probability, args.seed)
    json.dump(report, sys.stdout, indent=2)
    print()
    return report


if __name__ == "__main__":
    main()
