"""retrovec.retro.replay: play .bk2 movies back step by step, or render them to mp4.

Replays run an emulator, so they run in subprocesses; only the checks that fail before
any emulator starts run in this process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from retrovec.errors import UnknownGameError
from retrovec.retro.factory import make
from retrovec.retro.replay import movie_info, movie_to_mp4, replay
from tests.movies import python, replay_movies

GAME = "Airstriker-Genesis-v0"
STEPS = 30


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A movie of ``STEPS`` random steps, and the observations the vector env returned."""
    folder = tmp_path_factory.mktemp("movies")
    envs = make(GAME, 1, record=folder, seed=3)
    try:
        obs, _ = envs.reset(seed=0)
        observations = [obs[0]]
        for _ in range(STEPS):
            obs, *_ = envs.step(envs.action_space.sample())
            observations.append(obs[0])
    finally:
        envs.close()
    return folder / "env-000" / f"{GAME}-Level1-000000.bk2", np.stack(observations)


def test_movie_info_reads_without_an_emulator(recording) -> None:
    path, _ = recording
    assert movie_info(path) == (GAME, 1, STEPS)


def test_replay_yields_every_step(recording) -> None:
    path, observations = recording
    (replayed,) = replay_movies(path)
    np.testing.assert_array_equal(replayed["observations"], observations[:-1])
    np.testing.assert_array_equal(replayed["next_observations"], observations[1:])
    assert replayed["actions"].shape == (STEPS, 12) and replayed["actions"].dtype == np.uint8
    assert replayed["player_rewards"].shape == (STEPS, 1)
    assert not replayed["terminated"].any()


_STOP_EARLY_THEN_MAKE = """
import sys, stable_retro
from retrovec.retro.replay import replay
steps = replay(sys.argv[1])
first = next(steps)
steps.close()  # ends the emulator: this process may make another one now
env = stable_retro.make("Airstriker-Genesis-v0", render_mode=None)
env.close()
print(first.action.shape, first.reward, first.rewards.tolist())
"""


def test_closing_a_replay_frees_the_emulator(recording) -> None:
    path, _ = recording
    done = python(_STOP_EARLY_THEN_MAKE, str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(12,) 0.0 [0.0]"


_STABLE_RETRO_RECORD = """
import sys, numpy as np, stable_retro
env = stable_retro.make("Airstriker-Genesis-v0", render_mode=None, record=sys.argv[1])
env.action_space.seed(0)
obs, _ = env.reset()
frames = [obs]
for _ in range(20):
    frames.append(env.step(env.action_space.sample())[0])
env.unwrapped.stop_record()
env.close()
np.save(sys.argv[2], np.stack(frames))
"""


def test_replays_movies_recorded_by_stable_retro_itself(tmp_path: Path) -> None:
    done = python(_STABLE_RETRO_RECORD, str(tmp_path), str(tmp_path / "frames.npy"))
    assert done.returncode == 0, done.stderr
    (replayed,) = replay_movies(tmp_path / f"{GAME}-Level1-000000.bk2")
    frames = np.load(tmp_path / "frames.npy")
    np.testing.assert_array_equal(replayed["observations"], frames[:-1])
    np.testing.assert_array_equal(replayed["next_observations"][-1], frames[-1])


_TO_MP4 = """
import sys
from retrovec.retro.replay import movie_to_mp4
print(movie_to_mp4(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
"""


def test_movie_to_mp4(recording, tmp_path: Path) -> None:
    imageio = pytest.importorskip("imageio.v2")
    path, observations = recording
    out = tmp_path / "movie.mp4"
    done = python(_TO_MP4, str(path), str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    with imageio.get_reader(str(out)) as reader:
        assert reader.get_meta_data()["fps"] == pytest.approx(60, abs=0.5)
        video = np.stack(list(reader.iter_data()))
    assert video.shape == (STEPS + 1, 224, 320, 3)
    difference = np.abs(video.astype(float) - observations.astype(float)).mean(axis=(1, 2, 3))
    assert difference.max() < 6  # H.264 is lossy, but these are the same frames


def test_movie_to_mp4_next_to_the_movie_by_default(tmp_path: Path, recording) -> None:
    pytest.importorskip("imageio")
    path, _ = recording
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    done = python(_TO_MP4, str(copy))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(copy.with_suffix(".mp4"))
    assert copy.with_suffix(".mp4").stat().st_size > 0


# ------------------------------------------- errors, before any emulator starts


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No such movie"):
        replay(tmp_path / "nope.bk2")  # raised at the call, not at the first next()
    with pytest.raises(FileNotFoundError):
        movie_info(tmp_path / "nope.bk2")


@pytest.mark.parametrize("content", [b"", b"not a zip file at all"])
def test_not_a_movie(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.bk2"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.bk2"):
        replay(path)


def test_unknown_game(recording, monkeypatch) -> None:
    path, _ = recording
    monkeypatch.setattr("stable_retro.Movie.get_game", lambda self: "NoSuchGame-Nes-v0")
    with pytest.raises(UnknownGameError):
        replay(path)


def test_movie_to_mp4_without_imageio(recording, monkeypatch) -> None:
    path, _ = recording
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    with pytest.raises(ModuleNotFoundError, match="retrovec\\[video\\]"):
        movie_to_mp4(path)
