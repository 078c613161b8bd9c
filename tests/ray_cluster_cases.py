"""A two-node Ray cluster on this machine, made the way users make one: ``ray start --head``
and ``ray start --address=...`` in a shell. Env runners pinned to each node by custom
resources land on both nodes and step exactly as the process backend does; then one node
is lost (its raylet and everything under it killed), and the envs of its runner become
``WorkerCrashedError`` or, with ``on_worker_failure="restart"``, are rebuilt in a runner
on the node that is left. ``ray stop`` tears the cluster down, and none of its processes outlive the
module."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import pytest

from retrovec import AsyncRetroVectorEnv, WorkerCrashedError
from tests.compare import assert_same
from tests.envs import fns, make_airstriker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The head notices a lost node within about 5 to 10 seconds (Ray's default: about 30 s),
#: without mistaking a node that is only slow on a busy machine for a lost one.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "5",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_cli(*args: str, env: dict[str, str]) -> str:
    """Run the ``ray`` command line of this interpreter's environment; return its output."""
    ray_exe = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    done = subprocess.run(
        [ray_exe, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`ray {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def _processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(process.info["cmdline"] or ()):
                found.append(process)
        except psutil.Error:
            continue
    return found


class TwoNodeCluster:
    """Handles on the cluster: its address, and each node's id and node-manager port."""

    def __init__(self, address: str, temp_dir: str, node_b_port: int) -> None:
        self.address = address
        self.temp_dir = temp_dir
        self.node_b_port = node_b_port

    def node_ids(self, ray) -> dict[str, str]:
        """``{"node_a": id, "node_b": id}`` for the nodes alive now."""
        ids = {}
        for node in ray.nodes():
            if node["Alive"]:
                for name in ("node_a", "node_b"):
                    if name in node["Resources"]:
                        ids[name] = node["NodeID"]
        return ids

    def lose_node_b(self) -> int:
        """SIGKILL node b's raylet and every process under it, as if the machine vanished;
        returns how many processes were killed."""
        raylets = [
            p for p in _processes_with(f"--node_manager_port={self.node_b_port}")
            if "raylet" in " ".join(p.cmdline())
        ]
        assert len(raylets) == 1, raylets
        victims = [raylets[0], *raylets[0].children(recursive=True)]
        for process in victims:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        return len(victims)


@pytest.fixture(scope="module")
def two_nodes(ray_session):
    """``ray start --head`` (resource ``node_a``) plus ``ray start --address`` (resource
    ``node_b``) on localhost, 2 CPUs each; the driver connects with ``ray.init(address)``."""
    ray = ray_session
    ray.shutdown()  # this module runs its own cluster; later tests start the local one again
    # ...and the local instance's processes must be gone before ours start.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        "ray" in " ".join(child.cmdline()) for child in psutil.Process().children(recursive=True)
    ):
        time.sleep(0.2)
    temp_dir = tempfile.mkdtemp(prefix="rvray-", dir="/tmp")  # short: Ray's socket paths
    # Token authentication off on both nodes: Ray 2.5x turns it on for a head that finds
    # ~/.ray/auth_token, and a node started without the token cannot join it then.
    env = {**os.environ, **FAST_HEALTH_CHECKS, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    # The actors import tests.envs: the repository goes on their PYTHONPATH.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    port, node_b_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=2", f"--object-store-memory={100 * 1024**2}", "--disable-usage-stats"]
    try:
        _ray_cli(
            "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}", "--include-dashboard=false",
            f"--resources={json.dumps({'node_a': 2})}", *common, env=env,
        )
        _ray_cli(
            "start", f"--address={address}", "--node-ip-address=127.0.0.1",
            f"--node-manager-port={node_b_port}",
            f"--resources={json.dumps({'node_b': 2})}", *common, env=env,
        )
        os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver as the nodes
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        cluster = TwoNodeCluster(address, temp_dir, node_b_port)
        deadline = time.monotonic() + 60
        while len(cluster.node_ids(ray)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(cluster.node_ids(ray)) == 2, ray.nodes()
        yield cluster
    finally:
        ray.shutdown()
        _ray_cli("stop", "--force", env=env)
        deadline = time.monotonic() + 20
        left = _processes_with(temp_dir)
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = _processes_with(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left behind: {[p.pid for p in left]}"


def test_runners_on_two_nodes_step_like_the_process_backend(two_nodes, ray_session):
    """One runner of two envs per node (a custom resource each): both nodes host envs, the
    head's runner is read through its mapped arena and driven through its local channel,
    the other's commands are Ray calls and its replies come through the object store, and
    every result equals the process backend's."""
    from retrovec.core.ray_runners import RayRunnerVectorEnv

    ray = ray_session
    env_fns = fns(make_airstriker, 4, max_episode_steps=20)
    on = [{"resources": {node: 1}} for node in ("node_a", "node_b")]
    nodes = two_nodes.node_ids(ray)
    with RayRunnerVectorEnv(env_fns, envs_per_runner=2, runner_options=on) as envs, (
        AsyncRetroVectorEnv(env_fns)
    ) as reference:
        assert envs.runner_node_ids == [nodes["node_a"], nodes["node_b"]]
        assert envs.node_ids == [nodes[n] for n in ("node_a", "node_a", "node_b", "node_b")]
        assert [envs.runner_of(i) for i in range(4)] == [0, 0, 1, 1]
        assert envs.observation_paths == ["arena", "object store"]  # the driver is on node a
        assert envs.control_paths == ["channel", "ray"]  # node b's runner: Ray calls only
        assert_same(reference.reset(seed=3), envs.reset(seed=3), "reset")
        reference.action_space.seed(3)
        ends = 0
        for t in range(25):
            actions = reference.action_space.sample()
            expected = reference.step(actions)
            assert_same(expected, envs.step(actions), f"step {t}")
            ends += int(np.sum(expected[2] | expected[3]))
        assert ends >= 4  # crossed episode ends on both nodes


def test_a_lost_node_is_a_crash_or_a_restart_of_its_runner_on_the_node_left(
    two_nodes, ray_session
):
    """Runs last in this module: node b does not come back."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from retrovec.core.ray_runners import RayRunnerVectorEnv

    ray = ray_session
    nodes = two_nodes.node_ids(ray)

    def placed(node: str) -> dict:
        # soft: a replacement may go elsewhere once the node is gone
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(nodes[node], soft=True)}

    on = [placed("node_a"), placed("node_b")]
    env_fns = fns(make_airstriker, 4, max_episode_steps=50)
    common = {"envs_per_runner": 2, "runner_options": on, "num_cpus": 0.5, "timeout": 60}
    raising = RayRunnerVectorEnv(env_fns, **common)
    restarting = RayRunnerVectorEnv(env_fns, on_worker_failure="restart", **common)
    no_op = np.zeros((4, 12), dtype=np.int8)
    try:
        for envs in (raising, restarting):
            assert envs.runner_node_ids == [nodes["node_a"], nodes["node_b"]]
            assert envs.control_paths == ["channel", "ray"]
            envs.reset(seed=0)
            envs.step(no_op)

        assert two_nodes.lose_node_b() >= 4  # the raylet, two runners, their emulators...

        with pytest.raises(WorkerCrashedError, match="env 2") as caught:
            raising.step(no_op)
        assert caught.value.env_index == 2 and caught.value.env_indices == (2, 3)
        assert "lost with all its envs: [2, 3]" in " ".join(caught.value.__notes__)
        assert isinstance(caught.value.__cause__, ray.exceptions.RayActorError)
        raising.close(timeout=10.0)  # frees its CPU on node a for the replacement below

        with pytest.warns(UserWarning, match="Ray runner of env 2 died"):
            _, rewards, terminations, truncations, infos = restarting.step(no_op)
        assert truncations.tolist() == [False, False, True, True] and not terminations.any()
        assert rewards[2:].tolist() == [0.0, 0.0]
        assert infos["worker_restarted"].tolist() == [False, False, True, True]
        assert restarting.restart_counts.tolist() == [0, 0, 1, 1]
        assert restarting.runner_node_ids == [nodes["node_a"], nodes["node_a"]]
        assert restarting.control_paths == ["channel", "channel"]  # its new node is ours
        for _ in range(60):  # all envs keep stepping, across episode ends
            restarting.step(no_op)
    finally:
        raising.close(timeout=10.0)
        restarting.close(timeout=10.0)
