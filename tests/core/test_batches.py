"""EnvPool-style batches: recv() returns the first batch_size envs to finish, and each env's
trajectory is exactly what it would be on its own, however the batches fell."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError, ResetNeeded

import retrovec
from retrovec import AsyncRetroVectorEnv, WorkerCrashedError, WorkerTimeoutError
from tests.envs import SlowEnv, ToyEnv, fns, make_toy


def reference_trajectory(seed: int, actions: list, steps: int) -> list:
    """One ToyEnv stepped on its own, with NEXT_STEP autoreset done by hand."""
    env = ToyEnv()
    observation, _ = env.reset(seed=seed)
    out = [(observation, 0.0, False, False)]
    needs_reset = False
    for t in range(steps):
        if needs_reset:
            observation, _ = env.reset()
            reward, terminated, truncated = 0.0, False, False
        else:
            observation, reward, terminated, truncated, _ = env.step(actions[t])
        needs_reset = terminated or truncated
        out.append((observation, reward, terminated, truncated))
    return out


def test_each_env_follows_its_own_trajectory_whatever_the_batches():
    n, batch, steps = 4, 2, 40
    space = ToyEnv().action_space
    plans = []
    for env in range(n):
        space.seed(100 + env)
        plans.append([space.sample() for _ in range(steps * 4)])  # more than will be used

    envs = AsyncRetroVectorEnv(fns(make_toy, n), batch_size=batch)
    got: list[list] = [[] for _ in range(n)]
    try:
        envs.async_reset(seed=7)
        while min(len(g) for g in got) <= steps:
            observations, rewards, terminations, truncations, infos = envs.recv()
            ids = infos["env_id"].tolist()
            assert len(ids) == batch and len(set(ids)) == batch
            for row, env in enumerate(ids):
                got[env].append(
                    (observations["position"][row], observations["flag"][row],
                     rewards[row], terminations[row], truncations[row])
                )
            step_index = [len(got[env]) - 1 for env in ids]
            actions = (
                np.array([plans[env][t][0] for env, t in zip(ids, step_index)]),
                np.stack([plans[env][t][1] for env, t in zip(ids, step_index)]),
            )
            envs.send(actions, ids)
    finally:
        envs.close()

    episode_ends = 0
    for env in range(n):
        expected = reference_trajectory(7 + env, plans[env], steps)
        for t, (mine, theirs) in enumerate(zip(got[env], expected)):
            where = f"env {env} step {t}"
            np.testing.assert_array_equal(mine[0], theirs[0]["position"], where)
            assert mine[1] == theirs[0]["flag"], where
            assert (float(mine[2]), bool(mine[3]), bool(mine[4])) == theirs[1:], where
            episode_ends += bool(theirs[2] or theirs[3])
    assert episode_ends >= 4  # the comparison crossed episode ends (autoresets)


def test_airstriker_batches_and_step_afterwards():
    envs = retrovec.make(num_envs=4, batch_size=2)
    try:
        envs.async_reset(seed=0)
        counts = np.zeros(4, dtype=int)
        for _ in range(40):
            observations, rewards, terminations, truncations, infos = envs.recv()
            assert observations.shape == (2, 224, 320, 3) and rewards.dtype == np.float64
            assert infos["env_id"].dtype == np.int32
            if "score" in infos:  # a step's info (a reset's is empty)
                assert infos["score"].shape == (2,)
            counts[infos["env_id"]] += 1
            envs.send(np.zeros((2, 12), dtype=np.int8), infos["env_id"])
        assert (counts > 0).all()
        with pytest.raises(AlreadyPendingCallError, match=r"recv\(\)"):
            envs.step(np.zeros((4, 12), dtype=np.int8))
        envs.recv()  # the four in flight, two at a time
        envs.recv()
        observations, *_ = envs.step(np.zeros((4, 12), dtype=np.int8))  # then step() works
        assert observations.shape == (4, 224, 320, 3)
    finally:
        envs.close()


def test_misuse_is_refused():
    envs = AsyncRetroVectorEnv(fns(make_toy, 3), batch_size=2)
    try:
        with pytest.raises(ResetNeeded):
            envs.send(envs.action_space.sample(), None)
        with pytest.raises(RuntimeError, match="only 0 are running"):
            envs.recv()
        envs.async_reset(seed=0)
        with pytest.raises(AlreadyPendingCallError):
            envs.async_reset()
        _, _, _, _, infos = envs.recv()
        ids = infos["env_id"]
        other = ({0, 1, 2} - set(ids.tolist())).pop()
        with pytest.raises(ValueError, match="still running"):
            envs.send((np.zeros(1, dtype=np.int64), np.zeros((1, 2), np.float32)), [other])
        with pytest.raises(ValueError, match=r"env_id must be in \[0, 3\)"):
            envs.send((np.zeros(1, dtype=np.int64), np.zeros((1, 2), np.float32)), [5])
        with pytest.raises(ValueError, match="twice"):
            envs.send((np.zeros(2, dtype=np.int64), np.zeros((2, 2), np.float32)), [ids[0], ids[0]])
    finally:
        envs.close()
    checked = AsyncRetroVectorEnv(fns(make_toy, 3), batch_size=2, validate_actions=True)
    try:
        checked.async_reset(seed=0)
        ids = checked.recv()[4]["env_id"]
        with pytest.raises(ValueError, match="outside the action space"):
            checked.send((np.array([7, 0]), np.zeros((2, 2), np.float32)), ids)
    finally:
        checked.close()
    with pytest.raises(ValueError, match="batch_size must be an int from 1 to num_envs=3"):
        AsyncRetroVectorEnv(fns(make_toy, 3), batch_size=4)


def test_recv_timeout_keeps_what_arrived():
    envs = AsyncRetroVectorEnv([make_toy, partial(SlowEnv, 0.5)], batch_size=2)
    try:
        envs.async_reset(seed=0)
        envs.recv()
        envs.send((np.zeros(2, dtype=np.int64), np.zeros((2, 2), np.float32)), [0, 1])
        with pytest.raises(WorkerTimeoutError, match=r"envs \[1\]"):
            envs.recv(timeout=0.05)
        _, _, _, _, infos = envs.recv()
        assert sorted(infos["env_id"].tolist()) == [0, 1]
    finally:
        envs.close()


def test_a_worker_dying_between_batches(tmp_path):
    import os
    import signal

    for mode in ("raise", "restart"):
        envs = retrovec.make(num_envs=2, batch_size=2, on_worker_failure=mode)
        try:
            envs.async_reset(seed=0)
            envs.recv()
            os.kill(envs.processes[1].pid, signal.SIGKILL)
            envs.processes[1].join(5)
            if mode == "raise":
                with pytest.raises(WorkerCrashedError, match="env 1"):
                    envs.send(np.zeros((2, 12), dtype=np.int8), [0, 1])
                    envs.recv()
            else:
                with pytest.warns(UserWarning, match="restarting"):
                    envs.send(np.zeros((2, 12), dtype=np.int8), [0, 1])
                    _, _, _, truncations, infos = envs.recv()
                restarted = infos["env_id"][infos["_worker_restarted"]]
                assert restarted.tolist() == [1]
                assert truncations[infos["env_id"] == 1].all()
        finally:
            envs.close()
