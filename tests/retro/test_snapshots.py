"""Snapshots on the real emulator: saved in one env, loaded in another, bit for bit.

The main check (:func:`continue_after_load`): four Airstriker envs play different random
actions, env 3 has its own shorter episode (a masked reset), then env 0's snapshot is
loaded into env 3 and both get the same actions for 1,000 steps: every observation,
reward, flag and info must be equal, across the ``TimeLimit`` truncation that the
snapshot's step counter decides and the episodes after it.
"""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import stable_retro

import retrovec
from retrovec import Preprocessing
from retrovec.core.server import Restored
from retrovec.retro.snapshots import Snapshot

AIRSTRIKER = "Airstriker-Genesis-v0"
PONG = "Pong-Atari2600-v0"
FREEWAY = "Freeway-Atari2600-v0"

CONFIGS = {
    "fast-path": {},
    "fast-path-off": {"preprocessing": Preprocessing(fused=False)},
    "atari": {"preprocessing": Preprocessing.atari(sticky_action_prob=0.25)},
    "atari-fast-path-off": {
        "preprocessing": Preprocessing.atari(sticky_action_prob=0.25, fused=False)
    },
}


def random_actions(envs, rng, count):
    return rng.integers(0, 2, size=(count, *envs.action_space.shape), dtype=np.int8)


def same_row(infos, a, b):
    """Env ``a``'s and env ``b``'s entries of a batched info are equal."""
    keys = {key for key in infos if not key.startswith("_")}
    return all(
        infos[f"_{key}"][a] == infos[f"_{key}"][b]
        and (not infos[f"_{key}"][a] or np.array_equal(infos[key][a], infos[key][b]))
        for key in keys
    )


def continue_after_load(steps=1000, **make_kwargs):
    """Run the scenario of the module docstring; return what it measured."""
    rng = np.random.default_rng(1)
    with retrovec.make(AIRSTRIKER, num_envs=4, max_episode_steps=600, **make_kwargs) as envs:
        envs.reset(seed=0)
        for t in range(200):
            if t == 80:  # env 3 starts a new episode: its TimeLimit count differs from env 0's
                envs.reset(options={"reset_mask": np.array([False, False, False, True])})
            if t == 199:  # env 0's score differs from env 3's: a load must rebase the deltas
                envs.at(0).call("set_value", "score", 500)
            observations = envs.step(random_actions(envs, rng, 1)[0])[0]
        assert not np.array_equal(observations[0], observations[3])
        assert envs.at(0).call("lookup_value", "score") != envs.at(3).call("lookup_value", "score")
        snapshot = envs.at(0).call("save_snapshot", label="cell")
        assert envs.at(3).get_attr("_elapsed_steps") == 120  # 200 - 80 steps
        restored = envs.at(3).call("load_snapshot", snapshot)
        assert isinstance(restored, Restored)
        assert np.array_equal(restored.observation, observations[0])
        assert envs.at(3).get_attr("_elapsed_steps") == 200
        mismatches, ends, total = 0, 0, 0.0
        for actions in random_actions(envs, rng, steps):
            actions[3] = actions[0]  # the same actions for envs 0 and 3
            observations, rewards, terminations, truncations, infos = envs.step(actions)
            same = (
                np.array_equal(observations[0], observations[3])
                and rewards[0] == rewards[3]
                and terminations[0] == terminations[3]
                and truncations[0] == truncations[3]
                and same_row(infos, 0, 3)
            )
            mismatches += not same
            ends += bool(terminations[0] or truncations[0])
            total += float(rewards[0])
        return {"steps": steps, "mismatches": mismatches, "episode_ends": ends, "return": total}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_snapshot_of_env_0_loaded_in_env_3_continues_bit_identically(config):
    result = continue_after_load(**CONFIGS[config])
    print(config, result)
    assert result["mismatches"] == 0, result
    assert result["episode_ends"] >= 1  # the TimeLimit (600 steps, 200 used) ended one
    assert result["return"] > 0  # rewards happened, so comparing them compared something


def test_under_spawn_the_snapshot_continues_bit_identically():
    result = continue_after_load(steps=300, context="spawn")
    assert result["mismatches"] == 0, result


def test_the_check_notices_an_env_that_was_not_loaded():
    """The comparison above can fail: without the load, envs 0 and 3 differ."""
    rng = np.random.default_rng(1)
    with retrovec.make(AIRSTRIKER, num_envs=4) as envs:
        envs.reset(seed=0)
        for _ in range(200):
            envs.step(random_actions(envs, rng, 1)[0])
        observations = envs.step(random_actions(envs, rng, 1)[0])[0]
        assert not np.array_equal(observations[0], observations[3])


def test_a_snapshot_pickles_and_names_what_it_holds():
    with retrovec.make(AIRSTRIKER, num_envs=1, max_episode_steps=100) as envs:
        envs.reset(seed=0)
        envs.step(envs.action_space.sample())
        snapshot = envs.at(0).call("save_snapshot", label="here")
    copy = pickle.loads(pickle.dumps(snapshot))
    assert isinstance(copy, Snapshot) and copy.emulator == snapshot.emulator
    assert copy.game == AIRSTRIKER and copy.label == "here"
    names = [name for name, _ in snapshot.layers]
    assert names == ["TimeLimit", "StartStates", "GameVariables", "FusedFrameSkip"]
    assert dict(snapshot.layers)["TimeLimit"] == {"_elapsed_steps": 1}
    assert "here" in repr(snapshot) and "bytes" in repr(snapshot)


def test_a_snapshot_refuses_another_game():
    with retrovec.make(AIRSTRIKER, num_envs=1) as envs:
        envs.reset(seed=0)
        snapshot = envs.at(0).call("save_snapshot")
    with retrovec.make(PONG, num_envs=1) as pong:
        pong.reset(seed=0)
        for when in ("now", "next_reset"):
            with pytest.raises(
                ValueError,
                match="snapshot of 'Airstriker-Genesis-v0' into an env of 'Pong-Atari2600-v0'",
            ):
                pong.at(0).call("load_snapshot", snapshot, when=when)


def test_continuing_needs_the_same_wrappers_but_a_next_episode_does_not():
    with retrovec.make(AIRSTRIKER, num_envs=1) as envs:
        envs.reset(seed=0)
        snapshot = envs.at(0).call("save_snapshot", label="plain")
    with retrovec.make(AIRSTRIKER, num_envs=1, preprocessing=Preprocessing.atari()) as envs:
        envs.reset(seed=0)
        with pytest.raises(ValueError, match="saved under other wrappers.*when='next_reset'"):
            envs.at(0).call("load_snapshot", snapshot)
        assert envs.at(0).call("load_snapshot", snapshot, when="next_reset") is None
        _, infos = envs.reset()
        assert infos["state"][0] == "plain"


def test_bad_arguments_say_what_was_expected():
    with retrovec.make(AIRSTRIKER, num_envs=1) as envs:
        with pytest.raises(RuntimeError, match="reset the env first"):
            envs.at(0).call("save_snapshot")
        envs.reset(seed=0)
        snapshot = envs.at(0).call("save_snapshot")
        with pytest.raises(ValueError, match=r"when must be one of \['now', 'next_reset'\]"):
            envs.at(0).call("load_snapshot", snapshot, when="later")
        with pytest.raises(TypeError, match="needs a Snapshot"):
            envs.at(0).call("load_snapshot", snapshot.emulator)


def test_next_reset_starts_one_episode_from_the_snapshot_with_honest_labels(tmp_path):
    rng = np.random.default_rng(0)
    with retrovec.make(AIRSTRIKER, num_envs=2) as envs:
        envs.reset(seed=0)
        for _ in range(150):
            envs.step(random_actions(envs, rng, 1)[0])
        snapshot = envs.at(0).call("save_snapshot", label="cell-9")
        envs.at(1).call("load_snapshot", snapshot, when="next_reset")
        assert envs.at(1).get_attr("statename") == "Level1.state"  # until that reset
        observations, infos = envs.reset()
        assert list(infos["state"]) == ["Level1", "cell-9"]
        assert envs.get_attr("statename") == ("Level1.state", "cell-9.state")
        assert envs.at(1).call("lookup_value", "score") == snapshot.info["score"]
        from_snapshot = observations[1]
        _, infos = envs.reset()  # only one episode: then the env's own state again
        assert list(infos["state"]) == ["Level1", "Level1"]
        assert envs.get_attr("statename") == ("Level1.state", "Level1.state")
    # As a .state file, the snapshot starts an episode exactly as load_snapshot did.
    path = snapshot.to_state_file(tmp_path / "cell-9.state")
    with gzip.open(path) as file:
        assert file.read() == snapshot.emulator
    with retrovec.make(AIRSTRIKER, num_envs=1, state=path) as envs:
        observations, infos = envs.reset(seed=0)
        assert np.array_equal(observations[0], from_snapshot)
        assert infos["state"][0] == path


def test_loading_now_cancels_a_pending_autoreset():
    rng = np.random.default_rng(0)
    with retrovec.make(AIRSTRIKER, num_envs=2, max_episode_steps=20) as envs:
        envs.reset(seed=0)
        envs.step(random_actions(envs, rng, 1)[0])
        snapshot = envs.at(0).call("save_snapshot")
        action = random_actions(envs, rng, 1)[0]
        action[1] = action[0]
        expected = envs.step(action)[0][0]  # env 0's next frame after the snapshot
        for _ in range(18):
            truncations = envs.step(random_actions(envs, rng, 1)[0])[3]
        assert truncations.all()  # both envs would reset at the next step
        envs.at(1).call("load_snapshot", snapshot)
        observations, _, _, truncations, _ = envs.step(action)
        assert np.array_equal(observations[1], expected)  # env 1 went on from the snapshot
        assert not np.array_equal(observations[0], expected)  # env 0 reset
        assert not truncations[1] and envs.at(1).get_attr("_elapsed_steps") == 2


def test_loading_now_is_refused_while_recording_a_movie(tmp_path):
    with retrovec.make(AIRSTRIKER, num_envs=1, record=tmp_path) as envs:
        envs.reset(seed=0)
        envs.step(envs.action_space.sample())
        snapshot = envs.at(0).call("save_snapshot")
        with pytest.raises(RuntimeError, match="records a movie.*when='next_reset'"):
            envs.at(0).call("load_snapshot", snapshot)
        envs.at(0).call("load_snapshot", snapshot, when="next_reset")
        _, infos = envs.reset()
        assert infos["state"][0] == "snapshot"


def continue_in_both(game, load_in, **make_kwargs):
    """Save env 0 after 50 random steps, load it into ``load_in``, then give envs 0 and 1
    the same 300 actions; return how many steps differed."""
    rng = np.random.default_rng(0)
    with retrovec.make(game, num_envs=2, **make_kwargs) as envs:
        envs.reset(seed=0)
        for _ in range(50):
            envs.step(rng.integers(0, 2, (2, *envs.single_action_space.shape)))
        snapshot = envs.at(0).call("save_snapshot")
        for index in load_in:
            envs.at(index).call("load_snapshot", snapshot)
        mismatches = 0
        for _ in range(300):
            action = rng.integers(0, 2, envs.single_action_space.shape)
            observations, rewards, *_ = envs.step(np.stack([action, action]))
            mismatches += not (
                np.array_equal(observations[0], observations[1]) and rewards[0] == rewards[1]
            )
        return mismatches


def test_atari_ram_observations_continue_too():
    assert continue_in_both(FREEWAY, [1], obs_type=stable_retro.Observations.RAM) == 0


def test_paddle_games_agree_among_loaded_envs():
    """Stella keeps a paddle's position outside its save state: after a load, Pong goes on
    as every env that loaded the same snapshot does, not as the env that saved it."""
    assert continue_in_both(PONG, [0, 1]) == 0
    assert continue_in_both(PONG, [1]) > 0  # the limit the docs state


def test_on_ray_a_snapshot_continues_in_another_actor(ray_local):
    rng = np.random.default_rng(0)
    with retrovec.make(AIRSTRIKER, num_envs=2, backend="ray", max_episode_steps=500) as envs:
        envs.reset(seed=0)
        for _ in range(100):
            envs.step(random_actions(envs, rng, 1)[0])
        snapshot = envs.at(0).call("save_snapshot")
        observation, info = envs.at(1).call("load_snapshot", snapshot)
        assert info == snapshot.info and np.array_equal(observation, snapshot.observation)
        for _ in range(200):
            action = random_actions(envs, rng, 1)[0][0]
            observations, rewards, *_ = envs.step(np.stack([action, action]))
            assert np.array_equal(observations[0], observations[1])
            assert rewards[0] == rewards[1]


def test_a_movie_of_an_episode_started_from_a_snapshot_carries_its_label(tmp_path):
    with retrovec.make(AIRSTRIKER, num_envs=1, record=tmp_path) as envs:
        envs.reset(seed=0)
        for _ in range(10):
            envs.step(envs.action_space.sample())
        snapshot = envs.at(0).call("save_snapshot", label="cell-9")
        envs.at(0).call("load_snapshot", snapshot, when="next_reset")
        for _ in range(2):  # the snapshot's episode, then one from Level1 again
            envs.reset()
            for _ in range(10):
                envs.step(envs.action_space.sample())
    movies = sorted(path.name for path in tmp_path.rglob("*.bk2"))
    assert len(movies) == 3
    assert [name for name in movies if "cell-9" in name] == [movies[-1]]  # numbered 000001
    assert "-cell-9-000001" in movies[-1]


@pytest.mark.parametrize("restore_rng", [True, False])
def test_restore_rng_decides_whether_sticky_actions_repeat(restore_rng):
    rng = np.random.default_rng(0)
    preprocessing = Preprocessing(sticky_action_prob=0.5)
    with retrovec.make(AIRSTRIKER, num_envs=2, preprocessing=preprocessing) as envs:
        envs.reset(seed=0)
        for _ in range(100):
            envs.step(random_actions(envs, rng, 1)[0])
        snapshot = envs.at(0).call("save_snapshot")
        envs.at(1).call("load_snapshot", snapshot, restore_rng=restore_rng)
        mismatches = 0
        for actions in random_actions(envs, rng, 300):
            actions[1] = actions[0]
            observations = envs.step(actions)[0]
            mismatches += not np.array_equal(observations[0], observations[1])
    assert (mismatches == 0) == restore_rng, mismatches
