"""A short run of benchmarks/soak.py: random worker kills, every episode accounted for."""

import importlib.util
from pathlib import Path

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def test_short_soak_with_random_kills():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    report = soak.soak(seconds=8, num_envs=3, episode_steps=100, kill_probability=0.03, seed=1)
    kills = report["kills"]["idle"] + report["kills"]["mid_step"]
    assert kills >= 5  # the run really killed workers
    assert report["restarts"] == kills == report["restart_flags_seen"]
    assert report["episodes_finished"] >= 20
    assert report["leaks"] == "none"
