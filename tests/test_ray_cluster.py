"""Two Ray nodes on this machine (a head and a second node, as ``ray start --head`` and
``ray start --address=...`` would make them): envs pinned by node-specific custom
resources land on both nodes and step exactly as the process backend does. The cluster
is always torn down, and none of its processes outlive the test."""

from __future__ import annotations

import os
import time

import numpy as np
import psutil
import pytest

from retrovec import AsyncRetroVectorEnv
from tests.compare import assert_same
from tests.envs import fns, make_airstriker


def _ray_processes() -> set[int]:
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "ray" in command:
            found.add(child.pid)
    return found


def test_envs_on_two_nodes_step_like_the_process_backend(ray_session):
    ray = ray_session
    from ray.cluster_utils import Cluster

    from retrovec.ray_backend import RayRetroVectorEnv

    ray.shutdown()  # this test runs its own cluster; later tests start the local one again
    before = _ray_processes()
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cluster = None
    envs = reference = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 2, "resources": {"node_a": 2},
                            "include_dashboard": False, "object_store_memory": 100 * 1024**2},
        )
        cluster.add_node(num_cpus=2, resources={"node_b": 2}, object_store_memory=100 * 1024**2)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()

        env_fns = fns(make_airstriker, 4, max_episode_steps=20)
        on = [{"resources": {node: 1}} for node in ("node_a", "node_b", "node_a", "node_b")]
        envs = RayRetroVectorEnv(env_fns, actor_options=on)
        nodes = {node["NodeID"]: node["Resources"] for node in ray.nodes() if node["Alive"]}
        assert len(nodes) == 2
        for index, node_id in enumerate(envs.node_ids):
            assert on[index]["resources"].keys() <= nodes[node_id].keys(), index
        assert envs.node_ids[0] != envs.node_ids[1]

        reference = AsyncRetroVectorEnv(env_fns)
        assert_same(reference.reset(seed=3), envs.reset(seed=3), "reset")
        reference.action_space.seed(3)
        ends = 0
        for t in range(25):
            actions = reference.action_space.sample()
            expected = reference.step(actions)
            assert_same(expected, envs.step(actions), f"step {t}")
            ends += int(np.sum(expected[2] | expected[3]))
        assert ends >= 4  # crossed episode ends on both nodes
    finally:
        for closable in (envs, reference):
            if closable is not None:
                closable.close(timeout=10.0)
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    deadline = time.monotonic() + 10.0
    left = _ray_processes() - before
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _ray_processes() - before
    assert not left, f"Ray processes left behind: {sorted(left)}"
