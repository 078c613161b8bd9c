"""A parent process that holds an emulator: ``retrovec.make`` picks ``forkserver`` by itself,
and a worker that meets stable-retro's "one emulator per process" says what to do.

The parent must build an emulator, which this test process never does (stable-retro
allows one per process), so each case runs as a script in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from retrovec.retro.emulators import choose_context, parent_emulators


def _script(folder: Path, code: str) -> str:
    """Run ``code`` as a script file (spawn and forkserver re-import a script, not ``-c``)."""
    script = folder / "script.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_this_process_holds_no_emulator_so_the_context_is_left_alone() -> None:
    assert parent_emulators() == 0
    assert choose_context(None) is None
    assert choose_context("fork") == "fork"


def test_a_parent_emulator_makes_workers_start_by_forkserver(tmp_path: Path) -> None:
    out = _script(tmp_path, """
        import numpy as np, stable_retro, retrovec
        from retrovec.retro.emulators import parent_emulators

        if __name__ == "__main__":
            env = stable_retro.make("Airstriker-Genesis-v0", render_mode=None)
            env.reset()
            print("held", parent_emulators())
            envs = retrovec.make("Airstriker-Genesis-v0", 2)
            print("context", envs.context)
            obs, _ = envs.reset(seed=0)
            print("frames", obs.shape, bool((obs[0] == obs[1]).all()))
            envs.close()
            try:
                retrovec.make("Airstriker-Genesis-v0", 2, context="fork")
            except RuntimeError as error:
                print("fork error:", error)
            env.close()
            print("held", parent_emulators())
            envs = retrovec.make("Airstriker-Genesis-v0", 2)
            print("context", envs.context)
            envs.close()
    """)
    lines = out.splitlines()
    assert lines[:3] == ["held 1", "context forkserver", "frames (2, 224, 320, 3) True"]
    assert lines[3].startswith("fork error: The worker of env 0 could not") or lines[
        3
    ].startswith("fork error: This worker could not build its emulator")
    assert "close it (env.close()) before retrovec.make" in lines[3]
    assert "context='forkserver' or context='spawn'" in lines[3]
    assert "Cannot create multiple emulator instances per process" in lines[3]  # stable-retro's
    assert lines[4:] == ["held 0", "context None"]


def test_an_env_at_the_top_level_of_a_spawned_script_is_explained(tmp_path: Path) -> None:
    """spawn runs the main module's top level again in each worker: an emulator built there
    blocks the worker's own, and the error says to guard it."""
    out = _script(tmp_path, """
        import stable_retro, retrovec

        env = stable_retro.make("Airstriker-Genesis-v0", render_mode=None)  # unguarded

        if __name__ == "__main__":
            try:
                retrovec.make("Airstriker-Genesis-v0", 1, context="spawn")
            except RuntimeError as error:
                print("spawn error:", error)
            env.close()
    """)
    assert "spawn error: This worker could not build its emulator" in out
    assert "Under the 'spawn' start method" in out
    assert 'if __name__ == "__main__":' in out
