"""Movies to mp4 with the game's sound: the best episodes of a recording, and any .bk2.

Rendering runs an emulator, so it runs in a subprocess; the streams are read back with
the ffmpeg binary imageio-ffmpeg ships (``ffmpeg -i``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from retrovec.retro.factory import make
from retrovec.retro.recording import best_movies
from tests.movies import python

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("imageio")

GAME = "Airstriker-Genesis-v0"


def ffmpeg_streams(path: Path) -> tuple[list[str], float]:
    """The ``Stream #`` lines of ``ffmpeg -i`` and the duration in seconds."""
    done = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True, text=True, check=False,
    )
    streams = [line.strip() for line in done.stderr.splitlines() if "Stream #" in line]
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", done.stderr).groups()
    return streams, int(h) * 3600 + int(m) * 60 + float(s)


def mean_volume(path: Path) -> float:
    done = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-vn",
         "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True, text=True, check=False,
    )
    return float(re.search(r"mean_volume: (-?[\d.]+) dB", done.stderr).group(1))


_RENDER_BEST = """
import sys
from retrovec.retro.video import render_best_movies
print("\\n".join(render_best_movies(sys.argv[1], 1, sys.argv[2])))
"""


def test_the_best_episode_renders_to_mp4_with_sound(tmp_path: Path) -> None:
    movies = tmp_path / "movies"
    envs = make(GAME, 2, record=movies, record_keep_best=1, max_episode_steps=200)
    try:
        envs.reset(seed=0)
        envs.action_space.seed(0)
        for _ in range(700):
            envs.step(envs.action_space.sample())
    finally:
        envs.close()
    (best,) = best_movies(movies, 1)
    assert best.episode_return > 0
    done = python(_RENDER_BEST, str(movies), str(tmp_path / "best"))
    assert done.returncode == 0, done.stderr
    (video,) = map(Path, done.stdout.split())
    assert video.name == "01-" + Path(best.path).stem + ".mp4"
    streams, duration = ffmpeg_streams(video)
    print("\n".join(streams))  # pytest -s shows them
    assert len(streams) == 2
    assert "Video: h264" in streams[0] and "320x224" in streams[0]
    assert "Audio: aac" in streams[1] and "48000 Hz, stereo" in streams[1]
    assert duration == pytest.approx((best.steps + 1) / 59.92, abs=0.1)
    assert mean_volume(video) > -40  # the game's music, not silence


_CONVERT = """
import sys
from retrovec.retro.replay import movie_to_mp4
print(movie_to_mp4(sys.argv[1], sys.argv[2], audio=sys.argv[3] == "yes"))
"""


def test_atari_movie_with_and_without_sound(tmp_path: Path) -> None:
    from retrovec.retro.wrappers import Preprocessing

    envs = make("Pong-Atari2600-v0", 1, preprocessing=Preprocessing.atari())
    try:
        envs.reset(seed=0)
        envs.call("start_recording", tmp_path)
        envs.reset(seed=1)  # the recording starts with this episode
        envs.action_space.seed(0)
        rewards = [envs.step(envs.action_space.sample())[1][0] for _ in range(250)]
        (paths,) = envs.call("stop_recording")
    finally:
        envs.close()
    (path,) = map(Path, paths)
    from tests.movies import replay_movies

    (replayed,) = replay_movies(path)
    assert min(rewards) < 0  # the opponent scored: the movie must show it too
    assert replayed["rewards"].sum() == sum(rewards)
    noops = len(replayed["rewards"]) - 4 * 250  # frame_skip=4, then 1..30 no-op starts
    assert 1 <= noops <= 30
    for audio in ("yes", "no"):
        out = tmp_path / f"pong-{audio}.mp4"
        done = python(_CONVERT, str(path), str(out), audio)
        assert done.returncode == 0, done.stderr
        streams, _ = ffmpeg_streams(out)
        assert len(streams) == (2 if audio == "yes" else 1)
    # Pong's 31,400 Hz (which AAC does not take) resampled to 48 kHz.
    assert "48000 Hz" in ffmpeg_streams(tmp_path / "pong-yes.mp4")[0][1]


def test_mux_audio_rejects_what_is_not_sound(tmp_path: Path) -> None:
    from retrovec.retro.video import mux_audio

    with pytest.raises(ValueError, match="int16"):
        mux_audio(tmp_path / "v.mp4", np.zeros((10, 2), np.float32), 44100, tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="rate must be > 0"):
        mux_audio(tmp_path / "v.mp4", np.zeros((10, 2), np.int16), 0, tmp_path / "o.mp4")
    with pytest.raises(RuntimeError, match="ffmpeg could not add the sound"):
        mux_audio(tmp_path / "v.mp4", np.zeros((10, 2), np.int16), 44100, tmp_path / "o.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
