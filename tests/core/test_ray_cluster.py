"""The two-node ``ray start`` cluster tests (tests/ray_cluster_cases.py), each run in a
pytest process of its own: their driver must not be one that already used the session's
local Ray instance. (That instance's ``ray.init`` also sets ``RAY_AUTH_MODE=token`` in
this process's environment; a driver in token mode on a cluster without tokens sees its
actors die before they start, so the cases' driver runs with ``disabled``, as the nodes.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case", [
    "test_runners_on_two_nodes_step_like_the_process_backend",
    "test_a_lost_node_is_a_crash_or_a_restart_of_its_runner_on_the_node_left",
])
def test_two_node_cluster(case, ray_session):
    ray_session.shutdown()  # no second cluster beside ours; later tests start theirs again
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"tests/ray_cluster_cases.py::{case}"],
        cwd=ROOT, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert "1 passed" in done.stdout
