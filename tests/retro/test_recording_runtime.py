"""Recording switched on and off at runtime, on the fast path: movies that never lie.

Each movie is replayed in a subprocess (one emulator per process) with
``retrovec.retro.replay`` and must give back exactly the rewards the vector env returned
for the episode it recorded, step for step, with one movie step per env step.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from retrovec.retro.factory import make
from retrovec.retro.recording import MovieRecord, read_movie_record
from retrovec.retro.replay import movie_info
from tests.movies import replay_movies

GAME = "Airstriker-Genesis-v0"


def _run(envs, steps: int, seed: int) -> list[list[tuple[float, bool, bool]]]:
    """Step with seeded random actions; per env, (reward, terminated, truncated) per step."""
    envs.action_space.seed(seed)
    out: list[list[tuple[float, bool, bool]]] = [[] for _ in range(envs.num_envs)]
    for _ in range(steps):
        _, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
        for i in range(envs.num_envs):
            out[i].append((float(rewards[i]), bool(terminated[i]), bool(truncated[i])))
    return out


def _recorded_episodes(steps: list[tuple[float, bool, bool]]) -> list[list[float]]:
    """The rewards of the episodes a recording started before ``steps`` holds: it starts
    with the first episode that starts (NEXT_STEP: the step after an episode's end is the
    reset); the last one may be cut by stop_recording."""
    episodes: list[list[float]] = []
    current: list[float] | None = None
    after_end = False
    for reward, terminated, truncated in steps:
        if current is None:
            if after_end:  # the reset step: the recorded episode starts here
                current, after_end = [], False
            else:
                after_end = terminated or truncated
            continue
        current.append(reward)
        if terminated or truncated:
            episodes.append(current)
            current, after_end = None, True
    if current:
        episodes.append(current)
    return episodes


def _check_movies(paths: list[str], live: list[list[float]]) -> list[dict[str, np.ndarray]]:
    assert len(paths) == len(live)
    replays = replay_movies(*map(Path, paths))
    for path, replayed, rewards in zip(paths, replays, live):
        assert movie_info(path).steps == len(rewards)  # one movie step per env step
        np.testing.assert_array_equal(replayed["rewards"], rewards)
        record = read_movie_record(path)
        assert record is not None and record.steps == len(rewards)
        assert record.episode_return == sum(rewards)
    return replays


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_recording_started_mid_run_replays_to_the_live_return(
    tmp_path: Path, context: str
) -> None:
    envs = make(GAME, 3, max_episode_steps=300, context=context)
    try:
        envs.reset(seed=0)
        _run(envs, 40, seed=1)  # mid-episode, mid-run
        folders = envs.at([0, 2]).call("start_recording", tmp_path)
        assert folders == (str(tmp_path / "env-000"), str(tmp_path / "env-002"))
        assert envs.get_attr("recording") == (True, False, True)
        steps = _run(envs, 660, seed=2)
        written = envs.at([0, 2]).call("stop_recording")
        assert envs.get_attr("recording") == (False, False, False)
    finally:
        envs.close()
    assert not (tmp_path / "env-001").exists()
    live = _recorded_episodes(steps[0])
    assert [len(e) for e in live] == [300, 98]  # a whole episode, then one cut short
    assert sum(live[0]) > 0, "the test needs an episode that scores"
    _check_movies(written[0], live)
    assert [read_movie_record(p).complete for p in written[0]] == [True, False]
    _check_movies(written[1], _recorded_episodes(steps[2]))


def test_stable_retro_auto_record_and_record_movie_through_call(tmp_path: Path) -> None:
    """The issue's reproduction: auto_record gave a 0-step movie replaying 0 against a
    live return of 60, record_movie + stop_record an unreadable file."""
    envs = make(GAME, 2, max_episode_steps=250)
    try:
        envs.reset(seed=0)
        _run(envs, 10, seed=3)
        envs.at(0).call("auto_record", str(tmp_path / "auto"))
        envs.at(1).call("record_movie", str(tmp_path / "one.bk2"))
        steps = _run(envs, 600, seed=4)
        envs.call("stop_record")
    finally:
        envs.close()
    auto = sorted(str(p) for p in (tmp_path / "auto").glob("*.bk2"))
    live = _recorded_episodes(steps[0])
    assert [len(e) for e in live] == [250, 108]
    assert sum(live[0]) > 0
    _check_movies(auto, live)
    # record_movie: one movie of one whole episode (a .bk2 has one start state).
    _check_movies([str(tmp_path / "one.bk2")], _recorded_episodes(steps[1])[:1])


def test_record_subset_and_default_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    envs = make(GAME, 3, record=True, record_envs=[1], max_episode_steps=20)
    try:
        envs.reset(seed=0)
        steps = _run(envs, 30, seed=5)
        assert envs.get_attr("recording") == (False, True, False)
    finally:
        envs.close()
    root = tmp_path / "retrovec-movies" / GAME
    assert sorted(p.name for p in root.iterdir()) == ["env-001"]
    movies = sorted((root / "env-001").glob("*.bk2"))
    assert [movie_info(p).steps for p in movies] == [20, 9]  # from the first reset on
    # make()'s record= starts at the first reset, so no episode is skipped here.
    rewards = [r for r, _, _ in steps[1]]
    replays = replay_movies(*movies)
    np.testing.assert_array_equal(replays[0]["rewards"], rewards[:20])


def test_recording_at_runtime_on_the_ray_backend(ray_local, tmp_path: Path) -> None:
    envs = make(GAME, 2, max_episode_steps=250, backend="ray", num_cpus=0.5)
    try:
        envs.reset(seed=0)
        _run(envs, 10, seed=1)
        envs.at(1).call("start_recording", tmp_path)
        steps = _run(envs, 600, seed=5)
        (written,) = envs.at([1]).call("stop_recording")
    finally:
        envs.close()
    live = _recorded_episodes(steps[1])
    assert [len(e) for e in live] == [250, 108]
    assert sum(live[0]) > 0
    _check_movies(written, live)


def test_power_on_episodes_replay_from_where_they_started(tmp_path: Path) -> None:
    """With State.NONE a reset restores nothing: each movie starts from the emulator as
    the episode found it, so the second episode's movie must not start at power-on."""
    import stable_retro

    envs = make(GAME, 1, state=stable_retro.State.NONE, record=tmp_path,
                max_episode_steps=30)
    try:
        obs, _ = envs.reset(seed=0)
        envs.action_space.seed(0)
        frames = [obs[0]]
        for _ in range(61):  # two episodes and the reset step between them
            obs, *_ = envs.step(envs.action_space.sample())
            frames.append(obs[0])
    finally:
        envs.close()
    movies = sorted((tmp_path / "env-000").glob("*.bk2"))
    assert [p.name for p in movies] == [f"{GAME}-none-{n:06d}.bk2" for n in range(2)]
    first, second = replay_movies(*movies)
    np.testing.assert_array_equal(first["next_observations"], np.stack(frames[1:31]))
    np.testing.assert_array_equal(second["observations"][0], frames[31])  # the reset frame
    np.testing.assert_array_equal(second["next_observations"], np.stack(frames[32:62]))


# ----------------------------------------------------------------- keep_best


def test_keep_best_keeps_the_best_and_deletes_only_beaten_movies(tmp_path: Path) -> None:
    scenario = tmp_path / "per-frame.json"  # reward 1 per frame: return = steps
    scenario.write_text(json.dumps({"reward": {"time": {"reward": 1.0}}}))
    old = tmp_path / "movies" / "env-000" / f"{GAME}-Level1-000000.bk2"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"not ours")  # a movie already there is never touched
    envs = make(GAME, 1, scenario=str(scenario))
    kept_after: list[list[float]] = []
    try:
        envs.reset(seed=0)
        envs.call("start_recording", tmp_path / "movies", keep_best=2)
        for length in (5, 9, 3, 12, 7):
            envs.reset()  # finishes the previous movie, starts the next
            for _ in range(length):
                envs.step(envs.action_space.sample())
            envs.reset()
            (records,) = envs.get_attr("movie_records")
            kept_after.append(sorted(r.episode_return for r in records))
        envs.call("stop_recording")
    finally:
        envs.close()
    assert kept_after == [[5.0], [5.0, 9.0], [5.0, 9.0], [9.0, 12.0], [9.0, 12.0]]
    names = sorted(p.name for p in old.parent.iterdir())
    assert old.read_bytes() == b"not ours"
    records = [read_movie_record(old.parent / n) for n in names if n.endswith(".bk2")]
    assert sorted(r.episode_return for r in records if r) == [9.0, 12.0]
    assert len(names) == 1 + 2 * 2  # the old file, two movies and their .json


# ----------------------------------------------------------------- fast path data


class _DataProbe(gym.Wrapper):
    """Puts stable-retro's own GameData accessors in the info after every step."""

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        data = self.env.unwrapped.data
        info = dict(info, total=data.total_reward(), current=data.current_reward(),
                    done=data.is_done())
        return observation, reward, terminated, truncated, info


def test_game_data_accessors_stay_true_on_the_fast_path() -> None:
    envs = make(GAME, 1, wrappers=[_DataProbe])
    try:
        envs.reset(seed=0)
        assert envs.get_attr("fast_scenario") == (True,)
        envs.action_space.seed(0)
        rewards, totals, currents, dones, terminations = [], [], [], [], []
        for _ in range(600):
            _, reward, terminated, _, info = envs.step(envs.action_space.sample())
            rewards.append(reward[0])
            totals.append(info["total"][0])
            currents.append(info["current"][0])
            dones.append(info["done"][0])
            terminations.append(terminated[0])
            if terminated[0]:
                break
    finally:
        envs.close()
    assert sum(rewards) > 0
    np.testing.assert_array_equal(totals, np.cumsum(rewards))
    np.testing.assert_array_equal(currents, rewards)
    assert dones == terminations


class _OwnFrameSkip(gym.Wrapper):
    """A wrapper as users write them: steps, then runs 2 more frames itself with
    stable-retro's own update_ram and current_reward, or with RetroEnv.step."""

    def __init__(self, env, through_step: bool):
        super().__init__(env)
        self.through_step = through_step

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        retro = self.env.unwrapped
        for _ in range(2):
            if self.through_step:
                observation, extra, terminated, truncated, info = retro.step(action)
            else:
                masks = retro.action_to_array(action)
                retro.em.set_button_mask(masks[0], 0)
                retro.em.step()
                retro.data.update_ram()
                extra = retro.data.current_reward()
            reward += extra
        info = dict(info, total=retro.data.total_reward())
        return observation, reward, terminated, truncated, info


@pytest.mark.parametrize("through_step", [False, True], ids=["update_ram", "unwrapped.step"])
def test_a_wrapper_that_calls_update_ram_gets_what_stable_retro_gives(through_step) -> None:
    import functools

    import stable_retro

    wrapper = functools.partial(_OwnFrameSkip, through_step=through_step)
    results = []
    for make_fn in (None, stable_retro.make):  # the fast path, and stable-retro alone
        envs = make(GAME, 1, wrappers=[wrapper], make_fn=make_fn)
        try:
            envs.reset(seed=0)
            fast = envs.get_attr("fast_scenario") if make_fn is None else None
            envs.action_space.seed(7)
            rewards, totals = [], []
            for _ in range(300):
                _, reward, _, _, info = envs.step(envs.action_space.sample())
                rewards.append(reward[0])
                totals.append(info["total"][0])
        finally:
            envs.close()
        results.append((rewards, totals))
        if make_fn is None:
            assert fast == (True,)
    (fast_rewards, fast_totals), (slow_rewards, slow_totals) = results
    assert sum(slow_rewards) > 0
    assert fast_rewards == slow_rewards
    assert fast_totals == slow_totals


class _RawStableRetro(gym.Wrapper):
    """Calls stable-retro's own record_movie/stop_record on the RetroEnv, below
    retrovec's layer, as stable-retro's docs use them (before a reset)."""

    def raw_record_movie(self, path):
        self.env.unwrapped.record_movie(path)

    def raw_stop_record(self):
        self.env.unwrapped.stop_record()


def test_the_fast_path_writes_stable_retros_own_movies_frame_for_frame(tmp_path) -> None:
    envs = make(GAME, 1, wrappers=[_RawStableRetro])
    try:
        envs.reset(seed=0)
        assert envs.get_attr("fast_scenario") == (True,)
        envs.call("raw_record_movie", str(tmp_path / "raw.bk2"))
        envs.reset(seed=0)
        rewards = [r for r, _, _ in _run(envs, 400, seed=5)[0]]
        envs.call("raw_stop_record")
    finally:
        envs.close()
    assert sum(rewards) > 0
    (replayed,) = replay_movies(tmp_path / "raw.bk2")
    np.testing.assert_array_equal(replayed["rewards"], rewards)


class _Reload(gym.Wrapper):
    """Loads a scenario into stable-retro's GameData mid-run (``data.load``)."""

    def reload(self, data_file, scenario_file):
        return self.env.unwrapped.data.load(data_file, scenario_file)


def test_the_fast_path_steps_aside_when_the_scenario_is_reloaded(tmp_path) -> None:
    import stable_retro.data

    scenario = tmp_path / "per-frame.json"  # reward 1 per frame
    scenario.write_text(json.dumps({"reward": {"time": {"reward": 1.0}}}))
    data_file = stable_retro.data.get_file_path(GAME, "data.json")
    envs = make(GAME, 1, wrappers=[_Reload, _DataProbe])
    try:
        envs.reset(seed=0)
        _run(envs, 20, seed=0)
        assert envs.call("reload", data_file, str(scenario)) == (True,)
        envs.action_space.seed(0)
        infos = [envs.step(envs.action_space.sample()) for _ in range(5)]
        assert envs.get_attr("fast_scenario") == (False,)  # stepped aside: update_ram
    finally:
        envs.close()
    assert [float(step[1][0]) for step in infos] == [1.0] * 5  # the new rules' rewards
    totals = [float(step[4]["total"][0]) for step in infos]
    assert totals == [totals[0] + i for i in range(5)]


# ----------------------------------------------------------------- bad input


def test_bad_record_arguments_fail_in_the_parent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="record_envs needs record="):
        make(GAME, 2, record_envs=[0])
    with pytest.raises(ValueError, match="env 5 does not exist"):
        make(GAME, 2, record=tmp_path / "m", record_envs=[5])
    with pytest.raises(ValueError, match="keep_best must be None or an int >= 1"):
        make(GAME, 2, record=tmp_path / "m", record_keep_best=0)
    with pytest.raises(TypeError, match="record must be None, True"):
        make(GAME, 2, record=3)
    assert not (tmp_path / "m").exists()


def test_movie_record_fields() -> None:
    assert MovieRecord._fields == (
        "path", "game", "state", "players", "steps", "episode_return", "env", "complete"
    )
