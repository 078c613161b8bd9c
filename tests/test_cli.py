"""The ``retrovec`` command line.

The subprocess tests run the real thing (``python -m retrovec``, so ``retrovec.make`` and
real emulators); the in-process tests replace ``retrovec.make`` with a fake vector env to
check parsing, dispatch and error handling quickly.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from retrovec import cli
from retrovec.errors import UnknownGameError, WorkerCrashedError
from tests.conftest import _is_multiprocessing_helper

REPO_ROOT = Path(__file__).resolve().parents[1]

# The module that defines retrovec.make (which __init__ may re-export under the same name,
# shadowing the submodule attribute); the CLI looks the factory up there at call time.
MAKE_MODULE = importlib.import_module("retrovec.retro.factory")

RUN_FIELDS = {
    "game",
    "state",
    "seed",
    "num_envs",
    "autoreset_mode",
    "vector_steps",
    "total_steps",
    "make_seconds",
    "reset_seconds",
    "wall_seconds",
    "steps_per_second",
    "episodes",
    "episodes_truncated",
    "return_mean",
    "return_std",
    "length_mean",
    "length_std",
    "episode_returns",
    "episode_lengths",
}


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "retrovec", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ----------------------------------------------------------------- real emulators


def test_run_json_with_real_emulators() -> None:
    proc = run_cli("run", "--num-envs", "2", "--steps", "200", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # stdout is exactly one JSON object
    assert set(result) == RUN_FIELDS
    assert result["game"] == "Airstriker-Genesis-v0"
    assert result["num_envs"] == 2
    assert result["seed"] == 0
    assert result["autoreset_mode"] == "NextStep"
    assert result["total_steps"] == 200
    assert result["vector_steps"] == 100
    assert result["steps_per_second"] > 0
    assert result["wall_seconds"] > 0
    assert result["episodes"] == len(result["episode_returns"]) == len(result["episode_lengths"])
    if result["episodes"] == 0:  # Airstriker episodes take ~1,500 random steps
        assert result["return_mean"] is None and result["length_mean"] is None


def test_run_text_same_step_with_real_emulators() -> None:
    proc = run_cli("run", "--num-envs", "2", "--steps", "100", "--autoreset-mode", "same_step")
    assert proc.returncode == 0, proc.stderr
    assert "env steps/s:" in proc.stdout
    assert "total steps: 100 (50 vector steps)" in proc.stdout
    assert "SameStep autoreset" in proc.stdout


def test_unknown_game_exits_2_with_one_line_message() -> None:
    proc = run_cli("run", "--game", "NoSuchGame-Nes-v0", "--num-envs", "1", "--steps", "10")
    assert proc.returncode == 2
    assert "NoSuchGame-Nes-v0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_usage_error_exits_2() -> None:
    proc = run_cli("run", "--num-envs", "0")
    assert proc.returncode == 2
    assert "--num-envs" in proc.stderr


# ----------------------------------------------------------------- in-process, fake make


class FiveStepEnv(gym.Env[np.ndarray, np.int64]):
    """Episodes of 5 steps with reward 1 per step."""

    metadata: ClassVar[dict[str, Any]] = {}
    observation_space = gym.spaces.Box(0, 5, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], dtype=np.float32), 1.0, self.t == 5, False, {}


@pytest.fixture
def fake_make(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Make the CLI's retrovec.make build a SyncVectorEnv of FiveStepEnv; record the kwargs."""
    calls: list[dict[str, Any]] = []

    def make(**kwargs: Any) -> SyncVectorEnv:
        calls.append(kwargs)
        return SyncVectorEnv(
            [FiveStepEnv] * kwargs["num_envs"],
            autoreset_mode=kwargs.get("autoreset_mode", AutoresetMode.NEXT_STEP),
        )

    monkeypatch.setattr(MAKE_MODULE, "make", make)
    return calls


def test_run_dispatches_to_make(
    fake_make: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(
        [
            "run",
            "--game",
            "Airstriker-Genesis-v0",  # real names: the CLI checks them before make()
            "--num-envs",
            "3",
            "--steps",
            "36",
            "--state",
            "Level1",
            "--autoreset-mode",
            "same_step",
            "--json",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert fake_make == [
        {
            "game": "Airstriker-Genesis-v0",
            "num_envs": 3,
            "state": "Level1",
            "autoreset_mode": AutoresetMode.SAME_STEP,
        }
    ]
    result = json.loads(capsys.readouterr().out)
    # 12 vector steps in SAME_STEP: each env ends episodes at steps 5 and 10.
    assert result["episodes"] == 6
    assert result["episode_returns"] == [5.0] * 6
    assert result["episode_lengths"] == [5] * 6
    assert (result["return_mean"], result["return_std"]) == (5.0, 0.0)
    assert result["state"] == "Level1"


def test_run_defaults(fake_make: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--no-progress"]) == 0
    assert fake_make == [
        {
            "game": cli.DEFAULT_GAME,
            "num_envs": cli.DEFAULT_NUM_ENVS,
            "autoreset_mode": AutoresetMode.NEXT_STEP,
        }
    ]
    out = capsys.readouterr().out
    assert f"total steps: {cli.DEFAULT_STEPS}" in out
    assert "return:      5.00 ± 0.00" in out
    assert "length:      5.0 ± 0.0" in out


def test_run_text_without_episodes(
    fake_make: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--num-envs", "2", "--steps", "4", "--no-progress"]) == 0
    assert "no episode finished" in capsys.readouterr().out


def test_make_error_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def make(**kwargs: Any) -> None:
        raise UnknownGameError("no integration\nhas that game")

    monkeypatch.setattr(MAKE_MODULE, "make", make)
    assert cli.main(["run", "--game", "Pong-Atari2600-v0"]) == 2  # passes the checks
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot make 'Pong-Atari2600-v0'" in err and "no integration has that game" in err


def test_worker_crash_while_running_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed: list[bool] = []

    class Crashing(SyncVectorEnv):
        def step(self, actions):
            raise WorkerCrashedError(0, -9, "step")

        def close(self, **kwargs: Any) -> None:
            closed.append(True)
            super().close(**kwargs)

    monkeypatch.setattr(MAKE_MODULE, "make", lambda **kw: Crashing([FiveStepEnv]))
    assert cli.main(["run", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "SIGKILL" in err and "Traceback" not in err
    assert closed  # the env is closed on the way out


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--num-envs", "0"],
        ["run", "--num-envs", "x"],
        ["run", "--steps", "-5"],
        ["run", "--seconds", "0"],
        ["run", "--steps", "10", "--seconds", "1"],
        ["run", "--autoreset-mode", "disabled"],
        ["nosuchcommand"],
        [],
    ],
)
def test_usage_errors_return_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert capsys.readouterr().err


def test_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert cli.main(["run", "--help"]) == 0
    assert "--autoreset-mode" in capsys.readouterr().out


def test_ctrl_c_exits_130_and_stops_workers() -> None:
    psutil = pytest.importorskip("psutil")
    import signal
    import time

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    # `python -m retrovec`, but with Python's Ctrl-C handler installed even when this test
    # runs with SIGINT ignored (as a shell without job control starts background jobs).
    script = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('retrovec', run_name='__main__', alter_sys=True)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "run", "--num-envs", "2", "--seconds", "60"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        parent = psutil.Process(proc.pid)

        def workers_of_run() -> list:
            return [child for child in parent.children()
                    if not _is_multiprocessing_helper(child)]  # not retrovec's reaper

        deadline = time.monotonic() + 60
        while len(workers_of_run()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = workers_of_run()
        assert len(workers) == 2
        time.sleep(1.0)  # let it get into the step loop
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert err.strip() == "retrovec run: error: interrupted"
    assert out == ""
    psutil.wait_procs(workers, timeout=10)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
