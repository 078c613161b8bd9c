"""Helpers for the recording, replay and video tests: run Python in a fresh interpreter.

stable-retro allows one emulator per process, and the test process starts vector envs
(forking workers), so anything that runs an emulator here (a replay, a reference env)
runs in a subprocess instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

_REPLAY = """
import sys, numpy as np
from retrovec.retro.replay import replay
for path, out in zip(sys.argv[1::2], sys.argv[2::2]):
    steps = list(replay(path))
    np.savez(
        out,
        observations=np.stack([s.observation for s in steps]),
        next_observations=np.stack([s.next_observation for s in steps]),
        actions=np.stack([s.action for s in steps]),
        rewards=np.array([s.reward for s in steps]),
        player_rewards=np.stack([s.rewards for s in steps]),
        terminated=np.array([s.terminated for s in steps]),
    )
"""


def python(code: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``args`` in a fresh interpreter that imports this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )


def replay_movies(*paths: Path) -> list[dict[str, np.ndarray]]:
    """Replay each movie with :func:`retrovec.retro.replay.replay` in one subprocess.

    Returns:
        Per movie: ``observations``, ``next_observations``, ``actions``, ``rewards``
        (player 1's), ``player_rewards`` and ``terminated``, one row per step.
    """
    args: list[str] = []
    outs = []
    for path in paths:
        out = path.with_suffix(".replay.npz")
        args += [str(path), str(out)]
        outs.append(out)
    done = python(_REPLAY, *args)
    assert done.returncode == 0, done.stderr
    results = []
    for out in outs:
        with np.load(out) as data:
            results.append({key: data[key] for key in data.files})
    return results
