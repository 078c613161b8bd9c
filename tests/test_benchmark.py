"""retrovec.benchmark, ``retrovec bench`` and benchmarks/throughput.py.

One tiny real run (n = 1, 2; one round of ~0.3 s per measurement; raw RGB frames; the
retrovec and gymnasium contenders) is shared by the structure tests. Speed is never
asserted here: the figures of a run on a shared machine are not a test.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium.spaces import MultiBinary

from retrovec import benchmark
from retrovec.benchmark import (
    CONTENDERS,
    BenchmarkConfig,
    plan_tasks,
    render_markdown,
    run_benchmark,
    spread,
    summarize,
    time_calls,
    write_outputs,
)
from retrovec.benchmark.contenders import BatchRunner, Sb3Runner
from retrovec.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONTENDERS = ("retrovec", "retrovec-nocopy", "gymnasium")
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    config = BenchmarkConfig(
        num_envs=(1, 2), rounds=1, seconds=0.3, workloads=("rgb",), contenders=TINY_CONTENDERS
    )
    return run_benchmark(config, progress=False)


def _labels(ids: tuple[str, ...] = TINY_CONTENDERS) -> list[str]:
    return [CONTENDERS[cid].label for cid in ids]


def _spreads(node: Any) -> list[dict[str, Any]]:
    """Every median/min/max dict inside ``node``."""
    if isinstance(node, dict):
        found = [node] if {"median", "min", "max"} <= node.keys() else []
        return found + [s for value in node.values() for s in _spreads(value)]
    if isinstance(node, list):
        return [s for value in node for s in _spreads(value)]
    return []


# --------------------------------------------------------------------------- the tiny run


def test_json_structure(tiny: dict[str, Any]) -> None:
    assert json.loads(json.dumps(tiny)) == tiny  # plain JSON, nothing lost
    assert tiny["format"] == "retrovec-benchmark/1"
    assert tiny["errors"] == []
    machine = tiny["machine"]
    for key in ("cpu_model", "cores_available", "cores_total", "memory_bytes", "python"):
        assert machine[key]
    for package in ("numpy", "gymnasium", "stable-retro"):
        assert machine["versions"][package]
    assert tiny["config"]["num_envs"] == [1, 2]
    assert list(tiny["contenders"]) == _labels()
    assert list(tiny["workloads"]) == ["rgb"]
    rgb = tiny["workloads"]["rgb"]
    assert rgb["observation_shape"] == [224, 320, 3]
    assert {(r["contender"], r["num_envs"]) for r in rgb["results"]} == {
        (label, n) for label in _labels() for n in (1, 2)
    }
    for row in rgb["results"]:
        assert row["steps_per_second"]["median"] > 0
        assert row["startup_seconds"]["median"] > 0
        assert row["pss_per_env_bytes"]["median"] > 0
        assert row["parent_pss_bytes"]["median"] > 0
        assert row["parent_cpu_us_per_call"]["median"] > 0
        # where the time goes: every worker's CPU per env step, and the cores kept busy
        assert row["worker_cpu_us_per_env_step"]["median"] > 0
        assert 0 < row["busy_cores"]["median"] <= tiny["machine"]["cores_available"] + 0.5
    assert rgb["fast_single_env"]["cpu_us_per_env_step"]["median"] > 0
    assert tiny["bare_emulator"]["median"] > 0
    # one raw entry per planned measurement: bare, LIMIT, fast env, 3 contenders x 2 sizes
    assert len(tiny["measurements"]) == 1 + 1 + 1 + 3 * 2
    assert rgb["fast_single_env"]["median"] > 0
    assert {m["workers"] for m in tiny["measurements"] if m["kind"] == "contender"} == {1, 2}


def test_ratios_are_rates_over_limit(tiny: dict[str, Any]) -> None:
    rgb = tiny["workloads"]["rgb"]
    limit = rgb["limit"]
    cores = tiny["machine"]["cores_available"]
    assert limit["cores"] == cores
    assert limit["median"] == pytest.approx(cores * rgb["single_env"]["median"])
    for row in rgb["results"]:
        for key in ("median", "min", "max"):
            assert row["ratio_to_limit"][key] == pytest.approx(
                row["steps_per_second"][key] / limit["median"]
            )
    assert rgb["single_env"]["ratio_to_limit"]["median"] == pytest.approx(1 / cores)
    fast = rgb["fast_single_env"]
    assert fast["ratio_to_limit"]["median"] == pytest.approx(fast["median"] / limit["median"])


def test_medians_within_min_max(tiny: dict[str, Any]) -> None:
    found = _spreads(tiny["workloads"])
    assert len(found) > 20
    for s in found:
        if s["median"] is not None:
            assert s["min"] <= s["median"] <= s["max"]


def test_markdown_has_a_row_per_contender(tiny: dict[str, Any]) -> None:
    text = render_markdown(tiny)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for label in _labels():
        assert sum(row.startswith(f"| {label} |") for row in rows) == 3  # throughput + 2 details
    assert any(row.startswith("| LIMIT (") for row in rows)
    assert tiny["machine"]["cpu_model"] in text


def test_write_outputs(tiny: dict[str, Any], tmp_path: Path) -> None:
    written = write_outputs(tiny, tmp_path / "out", tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text()) == tiny
    assert json.loads((tmp_path / "out" / "throughput.json").read_text()) == tiny
    assert (tmp_path / "out" / "throughput.md").read_text() == render_markdown(tiny)
    assert (tmp_path / "out" / "throughput.png").exists() == HAS_MATPLOTLIB
    assert ("png" in written) == HAS_MATPLOTLIB and ("note" in written) != HAS_MATPLOTLIB


def test_summaries_can_be_recomputed_from_the_json(tiny: dict[str, Any]) -> None:
    loaded = json.loads(json.dumps(tiny))
    assert summarize(copy.deepcopy(loaded)) == loaded


def test_a_failed_measurement_is_reported_not_fatal(tiny: dict[str, Any]) -> None:
    broken = copy.deepcopy(tiny)
    entry = next(m for m in broken["measurements"] if m["contender"] == "gymnasium")
    for key in list(entry):
        if key not in ("kind", "round", "workload", "contender", "num_envs"):
            del entry[key]
    entry["error"] = "RuntimeError: boom | bang"
    summarize(broken)
    assert [e["error"] for e in broken["errors"]] == ["RuntimeError: boom | bang"]
    row = next(
        r
        for r in broken["workloads"]["rgb"]["results"]
        if r["id"] == "gymnasium" and r["num_envs"] == entry["num_envs"]
    )
    assert row["steps_per_second"]["median"] is None and row["ratio_to_limit"]["median"] is None
    text = render_markdown(broken)
    assert "error: RuntimeError: boom / bang" in text


# --------------------------------------------------------------------------- the command line


def test_cli_bench_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "--num-envs", "1", "--rounds", "1", "--seconds", "0.2"]
    code = main([*argv, "--workloads", "rgb", "--out", str(out), "--no-progress"])
    assert code == 0
    result = json.loads((out / "throughput.json").read_text())
    assert result["config"]["num_envs"] == [1] and result["config"]["workloads"] == ["rgb"]
    assert (out / "throughput.md").read_text() in capsys.readouterr().out + "\n"
    assert (out / "throughput.png").exists() == HAS_MATPLOTLIB
    for label in ("retrovec copy=True", "gymnasium AsyncVectorEnv"):  # the quick three
        assert label in result["contenders"]
    assert "retrovec ray" not in result["contenders"]
    if importlib.util.find_spec("stable_baselines3") is None:
        assert any(s["contender"] == "SB3 SubprocVecEnv" for s in result["skipped"])
    else:
        assert "SB3 SubprocVecEnv" in result["contenders"]


@pytest.mark.parametrize(
    "args",
    [
        ["--num-envs", "0"],
        ["--rounds", "0"],
        ["--seconds", "-1"],
        ["--workloads", "grey"],
        ["--contenders", "envpool"],
        ["--growth-steps", "-5"],
    ],
)
def test_cli_bench_rejects_bad_options(args: list[str]) -> None:
    assert main(["bench", *args]) == 2


def test_cli_bench_unknown_game(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--game", "Airstrikr-Genesis-v0", "--no-progress"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_cli_bench_defaults_to_the_quick_comparison() -> None:
    from retrovec.benchmark import FULL, QUICK
    from retrovec.cli import build_parser
    from retrovec.cli.bench import bench_config

    def config(*argv: str) -> Any:
        return bench_config(build_parser().parse_args(["bench", *argv]))

    quick = config()
    assert quick == QUICK
    assert quick.contenders == ("retrovec", "gymnasium", "sb3")  # no Ray unless asked
    assert (quick.num_envs, quick.workloads, quick.rounds) == ((4,), ("rgb",), 1)
    full = config("--full")
    assert full == FULL and "retrovec-ray" not in full.contenders
    assert full.num_envs == (1, 2, 4, 8, 16) and full.workloads == ("rgb", "atari")
    assert (full.rounds, full.seconds) == (3, 3.0)
    assert config("--ray").contenders == ("retrovec", "gymnasium", "sb3", "retrovec-ray")
    readme = config("--num-envs", "1", "2", "4", "8", "16", "--workloads", "rgb", "atari",
                    "--rounds", "3")  # fmt: skip
    assert (readme.num_envs, readme.workloads, readme.rounds) == (
        (1, 2, 4, 8, 16),
        ("rgb", "atari"),
        3,
    )
    assert readme.contenders == QUICK.contenders
    picked = config("--contenders", "retrovec", "retrovec-ray", "--seconds", "0.5")
    assert (picked.contenders, picked.seconds) == (("retrovec", "retrovec-ray"), 0.5)


def test_cli_bench_says_when_a_named_contender_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["bench", "--ray", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("retrovec bench: error: contender 'retrovec ray' cannot run here")
    assert "pip install 'retrovec[ray]'" in err and "\n" not in err


def test_throughput_script_takes_the_bench_options() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "throughput.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--num-envs", "--rounds", "--seconds", "--json", "--workloads", "--out"):
        assert option in done.stdout


# --------------------------------------------------------------------------- pieces, no emulator


def test_plan_interleaves_rounds_and_rotates_contenders() -> None:
    contenders = [CONTENDERS[cid] for cid in ("retrovec", "retrovec-batch", "gymnasium")]
    config = BenchmarkConfig(num_envs=(1, 4), workloads=("rgb", "atari"), rounds=3)
    tasks, skipped = plan_tasks(config, contenders)
    assert skipped == [
        {"contender": "retrovec async batches", "num_envs": 1, "reason": "needs num_envs >= 2"}
    ]
    assert [t.round for t in tasks] == sorted(t.round for t in tasks)  # round by round
    for r in (1, 2, 3):
        mine = [t for t in tasks if t.round == r]
        assert [t.kind for t in mine[:3]] == ["bare", "single", "fast"]
        firsts = [t.contender for t in mine if t.kind == "contender" and t.num_envs == 4]
        assert sorted(firsts[:3]) == ["gymnasium", "retrovec", "retrovec-batch"]
    first = [
        next(t.contender for t in tasks if t.round == r and t.num_envs == 4) for r in (1, 2, 3)
    ]
    assert first == ["retrovec", "retrovec-batch", "gymnasium"]  # rotated each round
    grown, _ = plan_tasks(dataclasses.replace(config, growth_steps=100), contenders)
    assert [(t.kind, t.num_envs) for t in grown[len(tasks) :]] == [("growth", 4)] * 6


@pytest.mark.parametrize(
    "changes",
    [
        {"num_envs": ()},
        {"num_envs": (0,)},
        {"workloads": ("grey",)},
        {"rounds": 0},
        {"seconds": 0},
        {"growth_steps": -1},
    ],
)
def test_config_rejects_bad_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BenchmarkConfig(**changes)


def test_unknown_contender_id() -> None:
    with pytest.raises(ValueError, match="unknown contender 'envpool'"):
        benchmark.contender_status(["envpool"])


def test_time_calls_times_about_the_asked_seconds() -> None:
    calls = []
    timing = time_calls(lambda: calls.append(None), 0.05)
    assert timing.calls >= 3 and timing.seconds > 0 and timing.cpu_seconds >= 0
    assert len(calls) > timing.calls  # the warm-up ran first


def test_spread() -> None:
    assert spread([2, 9, 4]) == {"values": [2.0, 9.0, 4.0], "median": 4.0, "min": 2.0, "max": 9.0}
    assert spread([])["median"] is None


class _FakeBatchedEnv:
    """The EnvPool-style API the async-batches contender drives."""

    num_envs = 4
    single_action_space = MultiBinary(3)

    def __init__(self) -> None:
        self.sent: list[tuple[np.ndarray, np.ndarray]] = []
        self.next_ids = np.array([2, 0])

    def async_reset(self, seed: int | None = None) -> None:
        self.sent.append(("reset", seed))

    def recv(self) -> tuple[Any, ...]:
        return None, None, None, None, {"env_id": self.next_ids}

    def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
        self.sent.append((actions, env_id))


def test_batch_runner_sends_a_batch_of_actions_to_the_received_env_ids() -> None:
    envs = _FakeBatchedEnv()
    runner = BatchRunner(envs, seed=0, batch_size=2)
    runner.reset()
    runner.step()
    assert runner.steps_per_call == 2
    actions, env_id = envs.sent[1]
    assert actions.shape == (2, 3) and env_id.tolist() == [2, 0]


class _FakeSb3VecEnv:
    num_envs = 3
    action_space = MultiBinary(5)

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def seed(self, seed: int) -> None:
        self.calls.append(("seed", seed))

    def reset(self) -> None:
        self.calls.append("reset")

    def step(self, actions: np.ndarray) -> None:
        self.calls.append(actions.shape)


def test_sb3_runner_seeds_then_resets_and_steps_whole_batches() -> None:
    venv = _FakeSb3VecEnv()
    runner = Sb3Runner(venv, seed=7)
    runner.reset()
    runner.step()
    assert venv.calls == [("seed", 7), "reset", (3, 5)] and runner.steps_per_call == 3
