"""State curricula on the real emulator: a start state drawn per episode, by weight.

Airstriker ships one state, so the tests first make two more (``Later`` and ``Latest``,
Level1 after 150 and 300 random steps) with snapshots written as ``.state`` files.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import retrovec
from retrovec.errors import UnknownStateError
from retrovec.retro.curriculum import check_state_weights

AIRSTRIKER = "Airstriker-Genesis-v0"
CHI_SQUARE_DF2_P001 = 13.816  # the chi-square distribution's 99.9% point, 2 degrees of freedom


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    """``{"Later": path, "Latest": path}``: two more Airstriker states."""
    folder = tmp_path_factory.mktemp("states")
    rng = np.random.default_rng(0)
    paths = {}
    with retrovec.make(AIRSTRIKER, num_envs=1) as envs:
        envs.reset(seed=0)
        for name in ("Later", "Latest"):
            for _ in range(150):
                envs.step(rng.integers(0, 2, (1, 12)))
            snapshot = envs.at(0).call("save_snapshot", label=name)
            paths[name] = snapshot.to_state_file(folder / f"{name}.state")
    return paths


def frame_id(observation):
    return hashlib.sha1(np.ascontiguousarray(observation).tobytes()).hexdigest()


def draw_episodes(envs, seed, resets):
    """The start state of each env's episodes, and each state's reset frames."""
    starts, frames = [], {}
    for index in range(resets):
        observations, infos = envs.reset(seed=seed if index == 0 else None)
        starts.append(list(infos["state"]))
        for state, observation in zip(infos["state"], observations):
            frames.setdefault(state, set()).add(frame_id(observation))
    return starts, frames


def test_start_states_follow_the_weights_over_200_episodes(states):
    weights = {"Level1": 5, states["Later"]: 3, states["Latest"]: 2}
    with retrovec.make(AIRSTRIKER, num_envs=4, state=weights) as envs:
        starts, frames = draw_episodes(envs, seed=0, resets=50)
    drawn = [state for row in starts for state in row]
    counts = {state: drawn.count(state) for state in weights}
    expected = {state: 200 * w / sum(weights.values()) for state, w in weights.items()}
    chi_square = sum((counts[s] - expected[s]) ** 2 / expected[s] for s in weights)
    print(
        "\n200 episodes:",
        {s.rsplit("/", 1)[-1]: (counts[s], expected[s]) for s in weights},
        f"chi-square={chi_square:.2f} (df=2, 99.9% point {CHI_SQUARE_DF2_P001})",
    )
    assert sum(counts.values()) == 200
    assert chi_square < CHI_SQUARE_DF2_P001, counts
    # Each state really is where its episodes start: one reset frame per state, all different.
    assert all(len(ids) == 1 for ids in frames.values()), frames
    assert len(set.union(*frames.values())) == 3


def test_the_check_above_fails_for_draws_that_ignore_the_weights(states):
    """The chi-square bound rejects uniform draws (67/67/67 against 100/60/40)."""
    expected = [100, 60, 40]
    uniform = [200 / 3] * 3
    chi_square = sum((u - e) ** 2 / e for u, e in zip(uniform, expected))
    assert chi_square > CHI_SQUARE_DF2_P001


def test_a_seed_fixes_every_envs_sequence_of_start_states(states):
    weights = {"Level1": 1, states["Later"]: 1, states["Latest"]: 1}
    runs = []
    for seed in (7, 7, 8):
        with retrovec.make(AIRSTRIKER, num_envs=2, state=weights) as envs:
            runs.append(draw_episodes(envs, seed=seed, resets=12)[0])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    env_0, env_1 = ([row[i] for row in runs[0]] for i in (0, 1))
    assert env_0 != env_1  # env i is seeded with seed + i


def test_the_draws_leave_the_no_op_starts_as_they_were(states):
    """The curriculum draws from a stream of its own: no-op counts do not change."""
    preprocessing = retrovec.Preprocessing(noop_max=30)
    observations = []
    for state in ("Level1", {"Level1": 1.0}):
        with retrovec.make(
            AIRSTRIKER, num_envs=2, state=state, preprocessing=preprocessing
        ) as envs:
            observations.append(envs.reset(seed=3)[0])
    assert np.array_equal(*observations)


def test_new_weights_take_effect_at_the_next_reset_for_the_chosen_envs(states):
    weights = {"Level1": 1, states["Later"]: 1}
    with retrovec.make(AIRSTRIKER, num_envs=4, state=weights, max_episode_steps=3) as envs:
        envs.reset(seed=0)
        envs.at([0, 1]).call("set_state_weights", {states["Latest"]: 1})
        assert envs.at(0).get_attr("state_weights") == {states["Latest"]: 1.0}
        assert envs.at(2).get_attr("state_weights") == {"Level1": 1.0, states["Later"]: 1.0}
        starts, _ = draw_episodes(envs, seed=None, resets=10)
        assert all(row[0] == row[1] == states["Latest"] for row in starts)
        assert {row[i] for row in starts for i in (2, 3)} == {"Level1", states["Later"]}
        # Automatic resets draw too: with max_episode_steps=3, step 4 starts a new episode.
        envs.call("set_state_weights", {"Level1": 1})
        for _ in range(3):
            envs.step(envs.action_space.sample())
        infos = envs.step(envs.action_space.sample())[4]
        assert list(infos["state"]) == ["Level1"] * 4
        assert envs.get_attr("statename") == ("Level1.state",) * 4


def test_bad_weights_fail_in_the_parent_before_any_worker_starts(states):
    with pytest.raises(UnknownStateError, match="has no state 'Level9'"):
        retrovec.make(AIRSTRIKER, num_envs=2, state={"Level1": 1, "Level9": 1})
    with pytest.raises(ValueError, match="finite numbers >= 0, got -1 for 'Level1'"):
        retrovec.make(AIRSTRIKER, num_envs=2, state={"Level1": -1})
    with pytest.raises(ValueError, match="must not all be zero"):
        retrovec.make(AIRSTRIKER, num_envs=2, state={"Level1": 0, states["Later"]: 0.0})
    with pytest.raises(ValueError, match="at least one state"):
        retrovec.make(AIRSTRIKER, num_envs=2, state={})
    with pytest.raises(TypeError, match="must be numbers, got 'high'"):
        retrovec.make(AIRSTRIKER, num_envs=2, state={"Level1": "high"})


def test_bad_weights_at_runtime_raise_the_same_errors(states):
    with retrovec.make(AIRSTRIKER, num_envs=2, state={"Level1": 1}) as envs:
        envs.reset(seed=0)
        with pytest.raises(UnknownStateError, match="has no state 'Level9'"):
            envs.at(1).call("set_state_weights", {"Level9": 1})
        with pytest.raises(ValueError, match="must not all be zero"):
            envs.call("set_state_weights", {"Level1": 0})
        assert envs.get_attr("state_weights") == ({"Level1": 1.0},) * 2  # unchanged
        envs.at(0).call("set_state_weights", None)  # back to the env's own state
        assert envs.get_attr("state_weights") == (None, {"Level1": 1.0})


def test_check_state_weights_keeps_order_and_converts():
    import pathlib

    assert check_state_weights({pathlib.Path("a.state"): 1, "Level1": np.float32(0.5)}) == {
        "a.state": 1.0,
        "Level1": 0.5,
    }
    with pytest.raises(TypeError, match="mapping"):
        check_state_weights(["Level1"])
    with pytest.raises(TypeError, match="keys must be state names"):
        check_state_weights({1: 1.0})
    with pytest.raises(ValueError, match="finite"):
        check_state_weights({"Level1": float("nan")})


def test_under_spawn_the_curriculum_draws_the_same(states):
    weights = {"Level1": 1, states["Later"]: 1, states["Latest"]: 1}
    runs = []
    for context in ("fork", "spawn"):
        with retrovec.make(AIRSTRIKER, num_envs=2, state=weights, context=context) as envs:
            runs.append(draw_episodes(envs, seed=5, resets=6))
    assert runs[0] == runs[1]


def test_on_ray_the_curriculum_and_its_runtime_change_work(states, ray_local):
    weights = {"Level1": 1, states["Later"]: 1}
    with retrovec.make(AIRSTRIKER, num_envs=2, state=weights, backend="ray") as envs:
        starts, _ = draw_episodes(envs, seed=0, resets=8)
        assert {s for row in starts for s in row} == set(weights)
        envs.at(1).call("set_state_weights", {states["Latest"]: 1})
        _, infos = envs.reset()
        assert infos["state"][1] == states["Latest"]
        assert envs.at(1).call("lookup_value", "lives") == infos["lives"][1]


def test_with_make_fn_the_states_are_found_in_the_workers(states):
    import stable_retro

    weights = {"Level1": 1, states["Later"]: 1}
    with retrovec.make(AIRSTRIKER, num_envs=2, state=weights, make_fn=stable_retro.make) as envs:
        starts, frames = draw_episodes(envs, seed=0, resets=6)
    assert {s for row in starts for s in row} == set(weights)
    assert all(len(ids) == 1 for ids in frames.values())


def cartpole(**kwargs):
    import gymnasium as gym

    return gym.make("CartPole-v1")


def test_a_curriculum_needs_stable_retro_envs():
    with pytest.raises(TypeError, match="state= weights need stable-retro envs"):
        retrovec.make(AIRSTRIKER, num_envs=1, state={"Level1": 1}, make_fn=cartpole)
