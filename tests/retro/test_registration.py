"""retrovec.retro.registration: ``gymnasium.make_vec("retrovec/Retro-v0", ...)`` with
retrovec's wrappers (``env_wrappers=``) and vector options as plain keywords, and clear
errors where gymnasium's own ``wrappers=`` cannot work. Real emulator (Airstriker)."""

from __future__ import annotations

import functools
import multiprocessing
import subprocess
import sys

import gymnasium as gym
import numpy as np
import psutil
import pytest
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit

from retrovec.core.process_backend import AsyncRetroVectorEnv
from retrovec.retro.registration import ENV_ID, make_vec_entry_point, register_envs

GAME = "Airstriker-Genesis-v0"


@pytest.fixture(autouse=True)
def registered():
    register_envs()


@pytest.fixture
def no_workers_started():
    """Check that no child process appeared (the error came before any worker)."""
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    assert multiprocessing.active_children() == []
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children


def test_the_spec_points_to_the_entry_points():
    spec = gym.spec(ENV_ID)
    assert spec.entry_point == "retrovec.retro.registration:make_env_entry_point"
    assert spec.vector_entry_point == "retrovec.retro.registration:make_vec_entry_point"


def test_env_wrappers_reach_every_worker_and_vector_options_are_plain_keywords():
    envs = gym.make_vec(
        ENV_ID, num_envs=2, game=GAME, context="forkserver", timeout=60.0,
        env_wrappers=[functools.partial(TimeLimit, max_episode_steps=3), RecordEpisodeStatistics],
    )
    try:
        assert isinstance(envs, AsyncRetroVectorEnv) and envs.timeout == 60.0
        assert all("<RecordEpisodeStatistics<TimeLimit<" in c for c in envs.call("__str__"))
        envs.reset(seed=0)
        actions = np.zeros((2, 12), dtype=np.int8)
        steps = [envs.step(actions) for _ in range(3)]
    finally:
        envs.close()
    assert [s[3].tolist() for s in steps] == [[False, False], [False, False], [True, True]]
    assert steps[2][4]["episode"]["l"].tolist() == [3, 3]  # RecordEpisodeStatistics ran
    assert "episode" not in steps[1][4]


def test_gymnasiums_wrappers_in_the_default_mode_raise_gymnasiums_error(no_workers_started):
    """Documented in the registration docstring: gymnasium refuses before retrovec runs."""
    with pytest.raises(gym.error.Error, match="vector_entry_point` vectorization mode with the wrappers"):
        gym.make_vec(ENV_ID, num_envs=2, game=GAME, wrappers=[RecordEpisodeStatistics])
    with pytest.raises(gym.error.Error, match="`vector_kwargs` is not empty"):
        gym.make_vec(ENV_ID, num_envs=2, game=GAME, vector_kwargs={"context": "spawn"})


@pytest.mark.parametrize("bad", [RecordEpisodeStatistics, "TimeLimit", 3])
def test_env_wrappers_that_are_not_a_sequence_fail_before_any_worker(bad, no_workers_started):
    with pytest.raises(TypeError, match="env_wrappers must be a sequence of callables"):
        gym.make_vec(ENV_ID, num_envs=2, game=GAME, env_wrappers=bad)


def test_env_wrappers_in_async_mode_say_to_use_wrappers(no_workers_started):
    with pytest.raises(TypeError, match="give make_vec wrappers=\\[...\\] there"):
        gym.make_vec(
            ENV_ID, num_envs=2, vectorization_mode="async", game=GAME,
            env_wrappers=[RecordEpisodeStatistics],
        )


def test_the_entry_point_is_retrovec_make():
    envs = make_vec_entry_point(2, game=GAME, env_wrappers=(RecordEpisodeStatistics,))
    try:
        assert envs.num_envs == 2
        assert all("<RecordEpisodeStatistics<" in c for c in envs.call("__str__"))
    finally:
        envs.close()


def test_sync_mode_gets_a_note_saying_what_works():
    """In a fresh interpreter: sync mode builds emulators in the calling process."""
    code = (
        "import gymnasium as gym, retrovec\n"
        "try:\n"
        f"    gym.make_vec('{ENV_ID}', 2, vectorization_mode='sync', game='{GAME}')\n"
        "except RuntimeError as error:\n"
        "    print(str(error)); print(*error.__notes__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Cannot create multiple emulator instances per process" in done.stdout
    assert "vectorization_mode='sync') builds every env in this process" in done.stdout
    assert "env_wrappers=[...]" in done.stdout
