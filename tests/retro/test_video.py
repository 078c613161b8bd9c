"""Rendering every env, tiling frames, and recording a vector env to an mp4 as it runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import SyncVectorEnv

from retrovec.retro.factory import make
from retrovec.retro.video import VectorVideoRecorder, VideoWriter, tile_frames
from tests.movies import python

imageio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")

GAME = "Airstriker-Genesis-v0"


def read_video(path: Path) -> np.ndarray:
    with imageio.get_reader(str(path)) as reader:
        return np.stack(list(reader.iter_data()))


class ColorEnv(gym.Env[np.ndarray, int]):
    """8x6 RGB frames of one color: the step count times 20, per env offset."""

    metadata: ClassVar[dict[str, Any]] = {"render_fps": 40, "render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(0, 255, shape=(8, 6, 3), dtype=np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self.render_mode = "rgb_array"

    def _frame(self) -> np.ndarray:
        return np.full((8, 6, 3), (self.offset + 20 * self.t) % 256, dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        return self._frame(), 0.0, False, False, {}

    def render(self):
        return self._frame()


def color_envs(n: int) -> SyncVectorEnv:
    return SyncVectorEnv([lambda i=i: ColorEnv(100 * i) for i in range(n)])


# ------------------------------------------------------------------ tile_frames


def test_tile_frames_grid_and_black_cells() -> None:
    frames = np.stack([np.full((2, 3, 3), i + 1, dtype=np.uint8) for i in range(5)])
    tiled = tile_frames(frames)  # 5 frames: 3 columns, 2 rows
    assert tiled.shape == (4, 9, 3) and tiled.dtype == np.uint8
    assert (tiled[:2, :3] == 1).all() and (tiled[:2, 6:] == 3).all()
    assert (tiled[2:, 3:6] == 5).all()
    assert (tiled[2:, 6:] == 0).all()  # the empty cell is black
    assert tile_frames(frames, columns=1).shape == (10, 3, 3)
    assert tile_frames(frames, columns=9).shape == (2, 15, 3)  # never wider than N
    assert tile_frames(tuple(frames[:1])).shape == (2, 3, 3)
    assert tile_frames(np.zeros((4, 5, 7), np.float32)).shape == (10, 14)  # grayscale


@pytest.mark.parametrize(
    ("frames", "columns", "text"),
    [
        ([], None, "at least one frame"),
        ([np.zeros((2, 2, 3)), np.zeros((2, 3, 3))], None, "one shape"),
        ([np.zeros(4)], None, "(H, W) or (H, W, C)"),
        ([np.zeros((2, 2))], 0, "columns must be"),
    ],
)
def test_tile_frames_rejects(frames, columns, text) -> None:
    with pytest.raises(ValueError) as excinfo:
        tile_frames(frames, columns)
    assert text in str(excinfo.value)


# ------------------------------------------------------------------ VideoWriter


def test_video_writer_odd_sizes_and_grayscale(tmp_path: Path) -> None:
    path = tmp_path / "gray.mp4"
    with VideoWriter(path, fps=10) as writer:
        for value in (0, 128, 255):
            writer.write(np.full((7, 5), value, dtype=np.uint8))
    video = read_video(path)
    assert video.shape == (3, 8, 6, 3)  # padded to even sizes, grayscale made RGB
    assert abs(int(video[2, :7, :5].mean()) - 255) < 8
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.zeros((7, 5), np.uint8))


def test_video_writer_rejects_other_frames(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "x.mp4") as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((4, 4, 3), np.float32))
        writer.write(np.zeros((4, 4, 3), np.uint8))
        with pytest.raises(ValueError, match="first frame's shape"):
            writer.write(np.zeros((6, 4, 3), np.uint8))


def test_missing_imageio_says_how_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'retrovec\[video\]'"):
        VideoWriter(tmp_path / "x.mp4")


# ------------------------------------------------------------ VectorVideoRecorder


def test_recorder_tiles_observations_every_k_steps(tmp_path: Path) -> None:
    path = tmp_path / "train.mp4"
    envs = VectorVideoRecorder(color_envs(3), path, every=2, columns=3)
    assert envs.writer.fps == 20.0  # render_fps 40, one frame every 2 steps
    with envs:
        envs.reset(seed=0)
        for _ in range(7):
            envs.step(envs.action_space.sample())
        assert envs.frames_written == 4  # reset, steps 2, 4, 6
    video = read_video(path)
    assert video.shape == (4, 8, 18, 3)
    for frame, t in zip(video, (0, 2, 4, 6)):
        for i in range(3):
            expected = (100 * i + 20 * t) % 256
            assert abs(float(frame[:, 6 * i : 6 * i + 6].mean()) - expected) < 8


def test_recorder_stops_after_max_frames(tmp_path: Path) -> None:
    with VectorVideoRecorder(color_envs(2), tmp_path / "short.mp4", max_frames=3) as envs:
        envs.reset(seed=0)
        for _ in range(10):
            envs.step(envs.action_space.sample())
        assert envs.frames_written == 3 and envs.writer.closed
    assert len(read_video(tmp_path / "short.mp4")) == 3


def test_recorder_checks_its_source(tmp_path: Path) -> None:
    ram = SyncVectorEnv([lambda: gym.make("CartPole-v1")])
    with pytest.raises(ValueError, match="source='render'"):
        VectorVideoRecorder(ram, tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        VectorVideoRecorder(ram, tmp_path / "x.mp4", source="render")
    with pytest.raises(ValueError, match="every must be"):
        VectorVideoRecorder(color_envs(1), tmp_path / "x.mp4", every=0)
    with pytest.raises(ValueError, match="source must be"):
        VectorVideoRecorder(color_envs(1), tmp_path / "x.mp4", source="frames")
    ram.close()


def test_render_gives_every_env_frame_through_make(tmp_path: Path) -> None:
    envs = make(GAME, 2, state="Level1", render_mode="rgb_array")
    recorder = VectorVideoRecorder(envs, tmp_path / "render.mp4", source="render")
    try:
        assert recorder.writer.fps == 60.0  # stable-retro's video.frames_per_second
        obs, _ = recorder.reset(seed=0)
        frames = envs.render()
        assert isinstance(frames, tuple) and len(frames) == 2
        for frame, observation in zip(frames, obs):
            np.testing.assert_array_equal(frame, observation)
        for _ in range(4):
            obs, *_ = recorder.step(recorder.action_space.sample())
        np.testing.assert_array_equal(np.stack(envs.render()), obs)
    finally:
        recorder.close()
    assert envs.closed
    video = read_video(tmp_path / "render.mp4")
    assert video.shape == (5, 224, 640, 3)  # 2 envs side by side
    expected = tile_frames(obs).astype(float)
    assert np.abs(video[-1].astype(float) - expected).mean() < 6


_RAISE_IN_LOOP = """
import sys, retrovec
from retrovec.retro.video import VectorVideoRecorder
envs = VectorVideoRecorder(retrovec.make("Airstriker-Genesis-v0", 4), sys.argv[1], every=2)
envs.reset(seed=0)
for step in range(100):
    envs.step(envs.action_space.sample())
    if step == 19:
        raise RuntimeError("the training loop died")
"""


def test_the_video_is_complete_when_the_training_loop_raises(tmp_path: Path) -> None:
    path = tmp_path / "crash.mp4"
    done = python(_RAISE_IN_LOOP, str(path))
    assert done.returncode == 1 and "the training loop died" in done.stderr
    video = read_video(path)
    assert video.shape == (11, 448, 640, 3)  # reset + 10 frames, 4 envs in a 2x2 grid
