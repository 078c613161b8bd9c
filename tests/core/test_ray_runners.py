"""The Ray env-runner backend (``RayRunnerVectorEnv``, what ``make(backend="ray")`` builds).

The shared behaviour suite of ``test_backends.py`` runs here again on runners (its tests
are imported, and this module's ``backend``/``make_envs`` fixtures build runners of 2 envs,
so a 3-env vector env has a runner of 2 and one of 1): lockstep equality with gymnasium's
AsyncVectorEnv across episode ends in all three autoreset modes, errors, dead emulators,
timeouts and EnvPool batches. Then what only runners have: the layout, seeds that do not
depend on it, a lost runner (raise, or restart of all its envs), an emulator restarted
inside its runner, placement groups and argument checks.
"""

from __future__ import annotations

import os
import signal

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from retrovec import AsyncRetroVectorEnv, WorkerCrashedError
from tests.compare import assert_same
from tests.core import test_backends as suite
from tests.envs import fns, make_airstriker, probe_fns
from tests.failures import actions, wait_gone

pytestmark = pytest.mark.timeout(180)

# The behaviour suite, collected here once more with this module's fixtures.
test_airstriker_matches_gymnasium_across_episode_ends = (
    suite.test_airstriker_matches_gymnasium_across_episode_ends
)
test_dict_tuple_spaces_and_varied_infos_match_gymnasium = (
    suite.test_dict_tuple_spaces_and_varied_infos_match_gymnasium
)
test_make_builds_the_backend_asked_for = suite.test_make_builds_the_backend_asked_for
test_seeding_calls_attributes_and_render = suite.test_seeding_calls_attributes_and_render
test_out_of_order_and_closed_errors_are_gymnasiums = (
    suite.test_out_of_order_and_closed_errors_are_gymnasiums
)
test_env_exception_keeps_its_type_and_remote_traceback = (
    suite.test_env_exception_keeps_its_type_and_remote_traceback
)
test_exception_while_building_an_env = suite.test_exception_while_building_an_env
test_step_wait_timeout_keeps_the_call_pending = suite.test_step_wait_timeout_keeps_the_call_pending
test_killed_worker_raises_worker_crashed_error = (
    suite.test_killed_worker_raises_worker_crashed_error
)
test_killed_worker_is_restarted_and_its_episode_truncated = (
    suite.test_killed_worker_is_restarted_and_its_episode_truncated
)
test_async_batches_follow_each_envs_own_trajectory = (
    suite.test_async_batches_follow_each_envs_own_trajectory
)


@pytest.fixture
def backend(ray_local):
    return "ray"


@pytest.fixture(params=[True, False], ids=["channel", "ray-calls"])
def local_channel(request):
    """Every runner test runs twice: commands to runners on this node through their local
    channel (the default), and through Ray actor calls (``local_channel=False``, the path
    of runners on other nodes)."""
    return request.param


@pytest.fixture
def make_envs(ray_local, local_channel):
    """Runners of 2 envs each, half a CPU per env (what a test gives wins)."""
    from retrovec.core.ray_runners import RayRunnerVectorEnv

    opened = []

    def build(env_fns, **kwargs):
        kwargs.setdefault("envs_per_runner", 2)
        kwargs.setdefault("num_cpus", 0.5)  # two vector envs fit on the 4-CPU instance
        kwargs.setdefault("local_channel", local_channel)
        envs = RayRunnerVectorEnv(env_fns, **kwargs)
        assert envs.control_paths == ["channel" if local_channel else "ray"] * envs.num_runners
        opened.append(envs)
        return envs

    yield build
    for envs in opened:
        envs.close(timeout=10.0)


def _kill_runner(ray, envs, runner: int) -> None:
    """``ray.kill`` runner ``runner`` and wait until its process is gone (the kill is
    asynchronous: a command sent at once over the local channel may still be answered)."""
    pid = envs.runner_pids[runner]
    ray.kill(envs.runners[runner], no_restart=True)
    assert wait_gone([pid], 10.0) == [], f"runner {runner} (pid {pid}) did not die"


def _expected(seeds, level, t) -> np.ndarray:
    """ProbeEnv observations: ``[seed, level, t]`` per env."""
    n = len(seeds)
    level = np.broadcast_to(np.asarray(level, dtype=np.float64), (n,))
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,))
    return np.stack([np.asarray(seeds, dtype=np.float64), level, t], axis=1)


# --------------------------------------------------------------------------- layout


def test_layout_is_visible_and_each_runner_hosts_its_block(make_envs):
    envs = make_envs(probe_fns(5), envs_per_runner=2)
    assert envs.envs_per_runner == 2 and envs.num_runners == 3
    assert [list(r) for r in envs.runner_envs] == [[0, 1], [2, 3], [4]]
    assert [envs.runner_of(i) for i in range(5)] == [0, 0, 1, 1, 2]
    assert len(set(envs.runner_pids)) == 3 and len(set(envs.worker_pids)) == 5
    assert not set(envs.runner_pids) & set(envs.worker_pids)
    assert envs.node_ids == [envs.runner_node_ids[envs.runner_of(i)] for i in range(5)]
    assert envs.observation_paths == ["arena"] * 3  # all on the driver's node
    with pytest.raises(IndexError):
        envs.runner_of(5)


@pytest.mark.parametrize("per_runner", [1, 3])
def test_env_i_gets_seed_plus_i_whatever_the_layout(make_envs, per_runner):
    envs = make_envs(probe_fns(4), envs_per_runner=per_runner)
    observations, _ = envs.reset(seed=20)
    np.testing.assert_array_equal(observations, _expected([20, 21, 22, 23], 0, 0))
    assert envs.np_random_seed == (20, 21, 22, 23)
    observations, *_ = envs.step(actions(4))
    np.testing.assert_array_equal(observations, _expected([20, 21, 22, 23], 0, 1))


@pytest.mark.parametrize("per_runner", [1, None])
@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_airstriker_lockstep_with_the_process_backend(make_envs, per_runner, mode):
    """Runners of 1 and the default layout (all 3 envs in one runner here), against the
    process backend, across episode ends."""
    env_fns = fns(make_airstriker, 3, max_episode_steps=20)
    envs = make_envs(env_fns, envs_per_runner=per_runner, autoreset_mode=mode)
    with AsyncRetroVectorEnv(env_fns, autoreset_mode=mode) as reference:
        assert_same(reference.reset(seed=5), envs.reset(seed=5), "reset")
        reference.action_space.seed(5)
        ends = 0
        for t in range(45):
            sampled = reference.action_space.sample()
            expected = reference.step(sampled)
            assert_same(expected, envs.step(sampled), f"step {t}")
            done = expected[2] | expected[3]
            ends += int(done.sum())
            if mode == AutoresetMode.DISABLED and done.any():
                assert_same(
                    reference.reset(options={"reset_mask": done.copy()}),
                    envs.reset(options={"reset_mask": done.copy()}),
                    f"masked reset after step {t}",
                )
    assert ends >= 6


def test_default_envs_per_runner_fills_the_largest_node(make_envs, ray_local):
    # the session's node has 4 CPUs (default_envs_per_runner's doctests: several nodes)
    envs = make_envs(probe_fns(4), envs_per_runner=None, num_cpus=1)
    assert envs.envs_per_runner == 4 and envs.num_runners == 1


def test_observations_through_the_object_store_equal_those_read_from_the_arena(make_envs):
    """The path of a runner on another node, forced here: the same results."""
    mapped = make_envs(probe_fns(3), envs_per_runner=2)
    shipped = make_envs(probe_fns(3), envs_per_runner=2)
    for runner in range(shipped.num_runners):
        shipped._unmap_arena(runner)
    assert shipped.observation_paths == ["object store"] * 2
    assert_same(mapped.reset(seed=4), shipped.reset(seed=4), "reset")
    for t in range(3):
        assert_same(mapped.step(actions(3)), shipped.step(actions(3)), f"step {t}")


def test_calls_to_some_envs_of_a_runner(make_envs):
    envs = make_envs(probe_fns(4), envs_per_runner=2)
    envs.reset(seed=0)
    observations, _ = envs.reset(seed=[5, None, None, 8], options={
        "reset_mask": np.array([True, False, False, True])})
    np.testing.assert_array_equal(observations, _expected([5, 1, 2, 8], 0, 0))
    # targeted calls (envs.at): one call to one env inside a runner, results in the order given
    assert envs.at([3, 0]).get_attr("tag") == (3, 0)
    envs.at(1).set_attr("level", 9)
    assert envs.get_attr("level") == (0, 9, 0, 0)
    assert envs.at(2).call("echo", 5) == 5


# --------------------------------------------------------------------------- faults


def test_a_lost_runner_raises_naming_all_its_envs(make_envs, ray_local):
    envs = make_envs(probe_fns(4), envs_per_runner=2)
    envs.reset(seed=0)
    pids = [envs.runner_pids[1], *envs.worker_pids[2:]]
    _kill_runner(ray_local, envs, 1)
    with pytest.raises(WorkerCrashedError) as caught:
        envs.step(actions(4))
    assert caught.value.env_index == 2 and caught.value.env_indices == (2, 3)
    assert "Ray runner 1" in str(caught.value.__notes__) and "[2, 3]" in str(
        caught.value.__notes__
    )
    assert isinstance(caught.value.__cause__, ray_local.exceptions.RayActorError)
    assert wait_gone(pids, 10.0) == []  # its emulators do not outlive it


def test_a_lost_runner_is_restarted_and_all_its_envs_truncated(make_envs, ray_local):
    envs = make_envs(probe_fns(4), envs_per_runner=2, on_worker_failure="restart")
    envs.reset(seed=0)
    envs.step(actions(4))
    old_runner, old_workers = envs.runner_pids[0], envs.worker_pids[:2]
    _kill_runner(ray_local, envs, 0)
    with pytest.warns(UserWarning, match="restarting it"):
        observations, rewards, terminations, truncations, infos = envs.step(actions(4))
    assert truncations.tolist() == [True, True, False, False] and not terminations.any()
    assert rewards.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert infos["_worker_restarted"].tolist() == [True, True, False, False]
    np.testing.assert_array_equal(observations, _expected([-1, -1, 2, 3], 0, [0, 0, 2, 2]))
    assert envs.restart_counts.tolist() == [1, 1, 0, 0]
    assert envs.runner_pids[0] != old_runner
    assert not set(envs.worker_pids[:2]) & set(old_workers)
    observations, rewards, *_ = envs.step(actions(4))  # NEXT_STEP: their reset step
    assert rewards.tolist() == [0.0, 0.0, 1.0, 1.0]
    observations, rewards, *_ = envs.step(actions(4))
    np.testing.assert_array_equal(observations, _expected([-1, -1, 2, 3], 0, [1, 1, 4, 4]))
    observations, _ = envs.reset(seed=7)
    np.testing.assert_array_equal(observations, _expected([7, 8, 9, 10], 0, 0))


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_a_lost_single_runner_on_this_node_is_restarted(make_envs, ray_local, mode):
    """One runner on the driver's node: its arena is the batch buffer itself; its
    replacement's arena takes over, the observations of the step that reports the loss
    included (SAME_STEP: in ``final_obs`` too)."""
    envs = make_envs(probe_fns(3), envs_per_runner=3, on_worker_failure="restart",
                     autoreset_mode=mode)
    assert envs.observation_paths == ["arena"]
    envs.reset(seed=0)
    before, *_ = envs.step(actions(3))
    _kill_runner(ray_local, envs, 0)
    with pytest.warns(UserWarning, match="restarting it"):
        observations, rewards, _, truncations, infos = envs.step(actions(3))
    np.testing.assert_array_equal(before, _expected([0, 1, 2], 0, 1))  # a copy: unchanged
    np.testing.assert_array_equal(observations, _expected([-1, -1, -1], 0, 0))
    assert truncations.all() and not rewards.any() and infos["worker_restarted"].all()
    if mode == AutoresetMode.SAME_STEP:
        np.testing.assert_array_equal(infos["final_obs"][2], [-1, 0, 0])
    assert envs.observation_paths == ["arena"] and envs.restart_counts.tolist() == [1, 1, 1]
    for t in range(1, 4):
        observations, rewards, *_ = envs.step(actions(3))
    np.testing.assert_array_equal(observations[0], [-1, 0, 3 if mode == AutoresetMode.SAME_STEP else 2])


class EchoEnv(gym.Env):
    """Its observation is the last action it got."""

    observation_space = gym.spaces.Box(0, 7, (1,), np.int64)
    action_space = gym.spaces.Discrete(8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.int64), {}

    def step(self, action):
        return np.array([action], np.int64), 0.0, False, False, {}


def test_each_env_gets_its_own_action_whatever_the_order_sent(make_envs):
    """``send`` with a runner's envs out of order, and ``step``: each env gets its own."""
    envs = make_envs([EchoEnv] * 4, envs_per_runner=4, batch_size=4)
    envs.async_reset(seed=0)
    envs.recv(timeout=30)
    order = [0, 2, 1, 3]
    envs.send(np.array([5, 7, 6, 4]), order)
    observations, *_, infos = envs.recv(timeout=30)
    got = dict(zip(infos["env_id"].tolist(), observations[:, 0].tolist()))
    assert got == {0: 5, 2: 7, 1: 6, 3: 4}
    observations, *_ = envs.step(np.array([1, 2, 3, 4]))
    assert observations[:, 0].tolist() == [1, 2, 3, 4]


def test_envpool_calls_in_flight_to_a_lost_runner_each_give_a_truncated_row(
    make_envs, ray_local
):
    """Two calls in flight to one runner (envs 0 and 1 sent apart) when it is lost: the
    first read replaces the runner, the second (to the old one) is its env's loss too."""
    envs = make_envs(probe_fns(4), envs_per_runner=2, batch_size=1,
                     on_worker_failure="restart")
    envs.async_reset(seed=0)
    assert sorted(int(envs.recv(timeout=30)[4]["env_id"][0]) for _ in range(4)) == [0, 1, 2, 3]
    envs.set_attr("delay", [3.0, 0.0, 0.0, 0.0])
    envs.send(actions(1), [0])  # runner 0 is busy with it for 3 s...
    envs.send(actions(1), [1])  # ...and this call waits behind it
    _kill_runner(ray_local, envs, 0)
    rows = {}

    def receive_row() -> None:
        observations, rewards, _, truncations, infos = envs.recv(timeout=30)
        rows[int(infos["env_id"][0])] = (
            observations[0].tolist(), float(rewards[0]), bool(truncations[0]),
            bool(infos["worker_restarted"][0]),
        )

    for _ in range(2):  # the second: a call to the old runner, replaced meanwhile
        with pytest.warns(UserWarning, match="Ray runner of env [01] died"):
            receive_row()
    assert rows == {0: ([-1, 0, 0], 0.0, True, True), 1: ([-1, 0, 0], 0.0, True, True)}
    assert envs.restart_counts.tolist() == [1, 1, 0, 0]
    envs.send(actions(4), [0, 1, 2, 3])  # every env steps on (0 and 1: their reset step)
    got = {}
    for _ in range(4):
        observations, rewards, *_, infos = envs.recv(timeout=30)
        got[int(infos["env_id"][0])] = (observations[0].tolist(), float(rewards[0]))
    assert got == {0: ([-1, 0, 0], 0.0), 1: ([-1, 0, 0], 0.0), 2: ([2, 0, 1], 1.0),
                   3: ([3, 0, 1], 1.0)}


def test_an_emulator_killed_inside_a_runner_is_restarted_by_that_runner(make_envs):
    envs = make_envs(probe_fns(4), envs_per_runner=2, on_worker_failure="restart")
    envs.reset(seed=0)
    runners = list(envs.runner_pids)
    old = envs.worker_pids[3]
    os.kill(old, signal.SIGKILL)
    assert wait_gone([old], 10.0) == []
    with pytest.warns(UserWarning, match="emulator of env 3 died.*runner is restarting it"):
        _, _, _, truncations, infos = envs.step(actions(4))
    assert truncations.tolist() == [False, False, False, True]
    assert infos["_worker_restarted"].tolist() == [False, False, False, True]
    assert envs.runner_pids == runners  # the runner itself lived on
    assert envs.worker_pids[3] != old and envs.restart_counts.tolist() == [0, 0, 0, 1]
    with pytest.raises(WorkerCrashedError):  # raise mode: the driver raises for it
        other = make_envs(probe_fns(2), envs_per_runner=2)
        other.reset(seed=0)
        os.kill(other.worker_pids[1], signal.SIGKILL)
        for _ in range(3):
            other.step(actions(2))


def test_a_runner_lost_after_restarting_an_emulator_is_noticed(make_envs, ray_local):
    """The emulator a runner restarts is started after the driver connected (forked, it
    may hold a copy of the runner's end of the channel until it is reaped): the runner's
    death is still noticed (EOF, or its process ending) and its envs restarted."""
    envs = make_envs(probe_fns(2), envs_per_runner=2, on_worker_failure="restart")
    envs.reset(seed=0)
    old = envs.worker_pids[0]
    os.kill(old, signal.SIGKILL)
    assert wait_gone([old], 10.0) == []
    with pytest.warns(UserWarning, match="runner is restarting it"):
        envs.step(actions(2))
    runner = envs.runner_pids[0]
    _kill_runner(ray_local, envs, 0)
    with pytest.warns(UserWarning, match="restarting it"):
        _, rewards, _, truncations, infos = envs.step(actions(2))
    assert truncations.tolist() == [True, True] and rewards.tolist() == [0.0, 0.0]
    assert envs.runner_pids[0] != runner and envs.restart_counts.tolist() == [2, 1]
    envs.step(actions(2))
    observations, _ = envs.reset(seed=3)
    np.testing.assert_array_equal(observations, _expected([3, 4], 0, 0))


def test_envpool_batches_count_envs_and_whole_runners_arrive_together(make_envs):
    envs = make_envs(probe_fns(4), envs_per_runner=2, batch_size=2)
    envs.async_reset(seed=0)
    seen = set()
    for _ in range(6):
        *_, infos = envs.recv(timeout=30)
        ids = infos["env_id"].tolist()
        assert len(ids) == 2
        seen.add(tuple(sorted(ids)))
        envs.send(actions(2), ids)
    assert seen <= {(0, 1), (2, 3)}  # a runner's envs finish together
    for _ in range(2):
        envs.recv(timeout=30)


# --------------------------------------------------------------------------- options


def test_a_placement_group_it_creates_is_removed_at_close(make_envs, ray_local):
    from ray.util.placement_group import placement_group_table

    envs = make_envs(probe_fns(3), envs_per_runner=2, placement_group="SPREAD")
    group = envs._created_group
    assert placement_group_table(group)["state"] == "CREATED"
    observations, _ = envs.reset(seed=1)
    np.testing.assert_array_equal(observations, _expected([1, 2, 3], 0, 0))
    envs.close()
    assert placement_group_table(group)["state"] == "REMOVED"


def test_runner_arguments_are_checked(make_envs):
    with pytest.raises(ValueError, match="envs_per_runner must be None or an int >= 1"):
        make_envs(probe_fns(2), envs_per_runner=0)
    with pytest.raises(ValueError, match="one dict per runner"):
        make_envs(probe_fns(4), envs_per_runner=2, runner_options=[{}])
    with pytest.raises(ValueError, match="num_cpus must be a number >= 0"):
        make_envs(probe_fns(2), num_cpus=-1)
    with pytest.raises(ValueError, match="local_channel must be True or False"):
        make_envs(probe_fns(2), local_channel="yes")


def test_a_layout_ray_could_never_place_is_refused_at_once():
    from retrovec.core.runner_placement import check_cluster_fits

    check_cluster_fits(16, 0.125, 16, [2.0])  # fits: nothing raised
    check_cluster_fits(16, 0, 16, [2.0])  # num_cpus=0 reserves nothing
    with pytest.raises(ValueError, match=r"16 envs at num_cpus=1 need 16 CPUs.*has 2.*num_cpus=0\.125"):
        check_cluster_fits(16, 1, 2, [2.0])
    with pytest.raises(ValueError, match=r"a runner of 4 envs at num_cpus=1 needs 4 CPUs on one node.*num_cpus=0\.5"):
        check_cluster_fits(4, 1, 4, [2.0, 2.0])
