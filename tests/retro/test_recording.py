"""make(record=DIR): one .bk2 movie per episode per env, complete whatever ends the run.

Every movie here is replayed in a subprocess (one emulator per process) and must give
back exactly the observations the vector env returned, and the buttons it executed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import psutil
import pytest

from retrovec.retro.factory import make
from retrovec.retro.recording import movie_name
from retrovec.retro.replay import movie_info
from tests.movies import python, replay_movies

GAME = "Airstriker-Genesis-v0"
MOVIE = "Airstriker-Genesis-v0-Level1-{:06d}.bk2"


def _movies(directory: Path) -> list[str]:
    """The folder's entries, less the ``.json`` record next to each movie."""
    names = sorted(p.name for p in directory.iterdir())
    movies = [n for n in names if not n.endswith(".json")]
    assert [n for n in names if n.endswith(".json")] == [
        n[: -len(".bk2")] + ".json" for n in movies if n.endswith(".bk2")
    ]
    return movies


def _executed(envs, actions: np.ndarray) -> np.ndarray:
    """The buttons each env really pressed for ``actions`` (FILTERED drops some combos)."""
    pressed = [envs.call("action_to_array", action)[i][0] for i, action in enumerate(actions)]
    return np.stack(pressed).astype(np.uint8)


def test_every_env_records_its_own_movie_and_it_replays_exactly(tmp_path: Path) -> None:
    envs = make(GAME, 2, record=tmp_path, seed=0)
    try:
        obs, _ = envs.reset(seed=0)
        observations, executed = [obs], []
        for _ in range(40):
            actions = envs.action_space.sample()
            executed.append(_executed(envs, actions))
            obs, *_ = envs.step(actions)
            observations.append(obs)
        assert envs.get_attr("movie_paths") == ([], [])  # written when the episode ends
    finally:
        envs.close()

    assert _movies(tmp_path) == ["env-000", "env-001"]
    for env_dir in ("env-000", "env-001"):
        assert _movies(tmp_path / env_dir) == [MOVIE.format(0)]  # no temporary file left
    replays = replay_movies(*(tmp_path / d / MOVIE.format(0) for d in ("env-000", "env-001")))
    frames = np.stack(observations)  # (41, 2, H, W, 3)
    pressed = np.stack(executed)  # (40, 2, 12)
    for i, replayed in enumerate(replays):
        np.testing.assert_array_equal(replayed["observations"], frames[:-1, i])
        np.testing.assert_array_equal(replayed["next_observations"], frames[1:, i])
        np.testing.assert_array_equal(replayed["actions"], pressed[:, i])
    assert not np.array_equal(replays[0]["actions"], replays[1]["actions"])


def test_one_movie_per_episode_and_no_run_overwrites_another(tmp_path: Path) -> None:
    envs = make(GAME, 1, record=tmp_path, max_episode_steps=10)
    try:
        envs.reset(seed=0)
        for _ in range(25):  # episodes of 10 steps, a reset step between (NEXT_STEP)
            envs.step(envs.action_space.sample())
    finally:
        envs.close()
    folder = tmp_path / "env-000"
    assert _movies(folder) == [MOVIE.format(n) for n in range(3)]
    assert [movie_info(folder / MOVIE.format(n)).steps for n in range(3)] == [10, 10, 3]
    first = (folder / MOVIE.format(0)).read_bytes()

    envs = make(GAME, 1, record=tmp_path)  # a second run into the same folder
    try:
        envs.reset(seed=0)
        for _ in range(5):
            envs.step(envs.action_space.sample())
    finally:
        envs.close()
    assert _movies(folder) == [MOVIE.format(n) for n in range(4)]
    assert (folder / MOVIE.format(0)).read_bytes() == first
    info = movie_info(folder / MOVIE.format(3))
    assert (info.game, info.players, info.steps) == (GAME, 1, 5)


def test_a_movie_is_written_as_soon_as_its_episode_terminates(tmp_path: Path) -> None:
    scenario = tmp_path / "one-step.json"  # done as soon as the game has 3 lives
    scenario.write_text(
        json.dumps({"done": {"variables": {"lives": {"op": "equal", "reference": 3}}}})
    )
    envs = make(GAME, 1, record=tmp_path / "movies", scenario=str(scenario))
    try:
        envs.reset(seed=0)
        _, _, terminated, _, _ = envs.step(envs.action_space.sample())
        assert terminated[0]
        (paths,) = envs.get_attr("movie_paths")  # before close(): finished at termination
        assert [os.path.basename(p) for p in paths] == [MOVIE.format(0)]
        assert movie_info(paths[0]).steps == 1
        envs.step(envs.action_space.sample())  # the reset step
        envs.step(envs.action_space.sample())  # terminates again
        (paths,) = envs.get_attr("movie_paths")
        assert len(paths) == 2
    finally:
        envs.close()
    # The reset that followed the second episode recorded no step: no empty movie.
    assert _movies(tmp_path / "movies" / "env-000") == [MOVIE.format(0), MOVIE.format(1)]


def test_movies_hold_every_emulator_frame_under_preprocessing(tmp_path: Path) -> None:
    from retrovec.retro.wrappers import Preprocessing

    preprocessing = Preprocessing(frame_skip=4, grayscale=True, resize=84)
    envs = make(GAME, 1, record=tmp_path, preprocessing=preprocessing)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (1, 84, 84)
        for _ in range(10):
            envs.step(envs.action_space.sample())
    finally:
        envs.close()
    assert movie_info(tmp_path / "env-000" / MOVIE.format(0)).steps == 40


_RAISE_IN_LOOP = """
import sys, retrovec
envs = retrovec.make("Airstriker-Genesis-v0", 2, record=sys.argv[1])
envs.reset(seed=0)
for step in range(100):
    envs.step(envs.action_space.sample())
    if step == 19:
        raise RuntimeError("the training loop died")
"""

_KILL_SELF = """
import os, signal, sys, retrovec
envs = retrovec.make("Airstriker-Genesis-v0", 2, record=sys.argv[1])
envs.reset(seed=0)
for step in range(20):
    envs.step(envs.action_space.sample())
print(" ".join(str(p.pid) for p in envs.processes), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_movies_are_complete_when_the_training_loop_raises(tmp_path: Path) -> None:
    done = python(_RAISE_IN_LOOP, str(tmp_path))
    assert done.returncode == 1 and "the training loop died" in done.stderr
    paths = [tmp_path / d / MOVIE.format(0) for d in ("env-000", "env-001")]
    assert [movie_info(p).steps for p in paths] == [20, 20]
    replayed = replay_movies(*paths)  # playable, all the way through
    assert [len(r["actions"]) for r in replayed] == [20, 20]


def test_movies_are_complete_when_the_parent_is_killed(tmp_path: Path) -> None:
    done = python(_KILL_SELF, str(tmp_path))
    assert done.returncode == -9
    workers = [int(pid) for pid in done.stdout.split()]
    # Orphaned workers notice, close their envs (and movies) and exit on their own.
    gone, alive = psutil.wait_procs(
        [p for p in map(_process, workers) if p is not None], timeout=30
    )
    assert not alive
    paths = [tmp_path / d / MOVIE.format(0) for d in ("env-000", "env-001")]
    deadline = time.monotonic() + 10
    while not all(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [movie_info(p).steps for p in paths] == [20, 20]


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def test_movie_names_follow_stable_retro() -> None:
    assert movie_name(GAME, "Level1.state", 12) == MOVIE.format(12)
    assert movie_name(GAME, "/somewhere/Later.state", 0) == f"{GAME}-Later-000000.bk2"


# ----------------------------------------------------------------- bad input


@pytest.fixture
def no_workers(monkeypatch):
    import importlib

    factory = importlib.import_module("retrovec.retro.factory")

    def refuse(*args, **kwargs):
        raise AssertionError("a bad input reached AsyncRetroVectorEnv")

    monkeypatch.setattr(factory, "AsyncRetroVectorEnv", refuse)
    yield
    assert multiprocessing.active_children() == []


def test_record_must_be_a_folder(no_workers, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        make(GAME, 2, record=tmp_path / "file")
    with pytest.raises(TypeError, match="folder path"):
        make(GAME, 2, record=3)


def test_bad_input_creates_no_folder(no_workers, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="Level2"):
        make(GAME, 2, state="Level2", record=tmp_path / "movies")
    assert not (tmp_path / "movies").exists()


def test_record_needs_a_retro_env(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="record= needs stable-retro envs"):
        make(
            "CartPole-v1",
            1,
            make_fn=lambda **kwargs: gym.make(kwargs["game"]),
            record=tmp_path,
        )
