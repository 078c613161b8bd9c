"""Frames into pictures and mp4 files: tile a batch, record a vector env while it trains.

* :func:`tile_frames` puts ``N`` frames side by side in a grid (empty cells black).
* :class:`VideoWriter` writes frames to an mp4 with ``imageio``'s ffmpeg plugin.
* :class:`VectorVideoRecorder` is a gymnasium ``VectorWrapper`` that writes the tiled
  observations (or ``render()`` frames) of every env to one mp4, every ``every`` steps.
* :func:`movie_to_video` renders a ``.bk2`` movie to an mp4 **with the game's sound**
  (the emulator's own samples, ``em.get_audio()`` after every frame, at
  ``em.get_audio_rate()``), muxed by :func:`mux_audio` with imageio-ffmpeg's ffmpeg;
  :func:`render_best_movies` does it for the best movies of a recording folder.

Writing video needs the optional ``video`` extra (``pip install 'retrovec[video]'``:
``imageio`` and ``imageio-ffmpeg``, which ships its own ffmpeg binary). It is imported
only when a video is written, so ``import retrovec.retro.video`` works without it and
:func:`tile_frames` never needs it.

Example:
    >>> import numpy as np
    >>> frames = np.full((3, 2, 2, 3), 255, dtype=np.uint8)   # three white 2x2 frames
    >>> tile_frames(frames).shape                             # a 2x2 grid, one cell black
    (4, 4, 3)
    >>> with VectorVideoRecorder(retrovec.make(num_envs=4), "train.mp4",
    ...                          every=4) as envs:  # doctest: +SKIP
    ...     envs.reset(seed=0)
    ...     for _ in range(1000):
    ...         envs.step(envs.action_space.sample())
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import wave
import weakref
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper

__all__ = [
    "AUDIO_RATE",
    "VectorVideoRecorder",
    "VideoWriter",
    "movie_to_video",
    "mux_audio",
    "render_best_movies",
    "require_imageio",
    "tile_frames",
]

_INSTALL_HINT = (
    "Writing video needs imageio and imageio-ffmpeg: pip install 'retrovec[video]' "
    "(or pip install imageio imageio-ffmpeg)."
)
DEFAULT_FPS = 30.0
AUDIO_RATE = 48_000
"""The sample rate of the AAC track :func:`mux_audio` writes (consoles have odd rates,
such as the Atari 2600's 31,400 Hz, which AAC does not take; ffmpeg resamples)."""


def require_imageio() -> Any:
    """Import ``imageio.v2`` (with its ffmpeg plugin), or say how to install it.

    Returns:
        The ``imageio.v2`` module.

    Raises:
        ModuleNotFoundError: ``imageio`` or ``imageio-ffmpeg`` is missing; the message
            gives the ``pip install`` line.
    """
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio will use)
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(_INSTALL_HINT) from error
    return imageio


def tile_frames(
    frames: Sequence[np.ndarray] | np.ndarray, columns: int | None = None
) -> np.ndarray:
    """Tile ``N`` equal-sized frames into one image, row by row; empty cells are black.

    Args:
        frames: ``N >= 1`` frames of one shape and dtype, ``(H, W)`` or ``(H, W, C)``:
            a sequence (such as the tuple ``envs.render()`` returns) or an array of
            shape ``(N, H, W[, C])`` (such as a batch of image observations).
        columns: Frames per row; ``None``: ``ceil(sqrt(N))``, a near-square grid.

    Returns:
        An array of shape ``(rows * H, columns * W[, C])`` and the frames' dtype, where
        ``rows = ceil(N / columns)``.

    Raises:
        ValueError: No frames, frames of different shapes, a frame that is not 2-D or
            3-D, or ``columns < 1``.

    Example:
        >>> frames = [np.full((1, 2), i, dtype=np.uint8) for i in (1, 2, 3)]
        >>> tile_frames(frames)
        array([[1, 1, 2, 2],
               [3, 3, 0, 0]], dtype=uint8)
        >>> tile_frames(frames, columns=3)
        array([[1, 1, 2, 2, 3, 3]], dtype=uint8)
    """
    batch = [np.asarray(frame) for frame in frames]
    if not batch:
        raise ValueError("tile_frames needs at least one frame, got none")
    first = batch[0]
    if first.ndim not in (2, 3):
        raise ValueError(
            f"frames must be (H, W) or (H, W, C) images, got a frame of shape {first.shape}"
        )
    for i, frame in enumerate(batch):
        if frame.shape != first.shape:
            raise ValueError(
                f"all frames must have one shape: frame 0 is {first.shape}, frame {i} is "
                f"{frame.shape}"
            )
    n = len(batch)
    if columns is None:
        columns = math.ceil(math.sqrt(n))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be None or an int >= 1, got {columns!r}")
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    height, width = first.shape[:2]
    out = np.zeros((rows * height, columns * width, *first.shape[2:]), dtype=first.dtype)
    for i, frame in enumerate(batch):
        row, column = divmod(i, columns)
        out[row * height : (row + 1) * height, column * width : (column + 1) * width] = frame
    return out


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """An RGB ``uint8`` frame with even height and width (libx264's yuv420p needs them)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"video frames must be uint8 images, got dtype {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[:, :, :3]
    elif frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            "video frames must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) images, got "
            f"shape {frame.shape}"
        )
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)))
    return frame


class VideoWriter:
    """Write RGB or grayscale ``uint8`` frames to an mp4 file (H.264), one at a time.

    The file is opened at the first frame, which fixes the size; frames of odd height or
    width get one black row or column so that H.264 accepts them. Close the writer (or
    use it in a ``with`` block): only a closed file is complete. A writer that is
    garbage-collected or still open at interpreter exit is closed then.

    Args:
        path: The ``.mp4`` file to write (overwritten if it exists).
        fps: Frames per second of the video.

    Raises:
        ModuleNotFoundError: ``imageio``/``imageio-ffmpeg`` is missing (with the
            install hint).
        ValueError: ``fps`` is not positive.

    Example:
        >>> with VideoWriter("out.mp4", fps=30) as writer:  # doctest: +SKIP
        ...     for frame in frames:
        ...         writer.write(frame)
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = DEFAULT_FPS) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self._imageio = require_imageio()
        self.path = os.fspath(path)
        self.fps = float(fps)
        self.frames_written = 0
        self._writer: Any = None
        self._shape: tuple[int, ...] | None = None
        self._finalizer: weakref.finalize | None = None
        self.closed = False

    def write(self, frame: np.ndarray) -> None:
        """Append one frame; every frame must have the first frame's shape.

        Raises:
            ValueError: The writer is closed, or the frame's shape or dtype is wrong.
        """
        if self.closed:
            raise ValueError(f"the video writer of {self.path!r} is closed")
        rgb = _to_rgb(frame)
        if self._writer is None:
            self._writer = self._imageio.get_writer(
                self.path,
                format="FFMPEG",
                mode="I",
                fps=self.fps,
                codec="libx264",
                macro_block_size=1,  # sizes are made even above: never rescale
                ffmpeg_log_level="error",
            )
            self._shape = rgb.shape
            self._finalizer = weakref.finalize(self, self._writer.close)
        elif rgb.shape != self._shape:
            raise ValueError(
                f"every frame must have the first frame's shape {self._shape}, got {rgb.shape}"
            )
        self._writer.append_data(rgb)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (no-op when already closed)."""
        self.closed = True
        if self._finalizer is not None:
            self._finalizer()  # closes the imageio writer, once

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class VectorVideoRecorder(VectorWrapper):
    """Record a vector env to one mp4 as it runs: every env's frame, tiled, every k steps.

    ``reset`` and every ``every``-th ``step`` add one frame to the video: the batch of
    observations (``source="observations"``; they must be ``uint8`` images) or the frames
    of ``envs.render()`` (``source="render"``; needs ``render_mode="rgb_array"``), tiled
    with :func:`tile_frames`. ``close()`` finishes the file, even if closing the envs
    fails; a recorder that is garbage-collected or left open at interpreter exit finishes
    it too, so a training loop that raises still leaves a playable video.

    Args:
        env: The vector env, e.g. from :func:`retrovec.make`.
        path: The ``.mp4`` file to write.
        every: Record one frame every ``every`` steps (``reset`` is always recorded).
        fps: Frames per second of the video; ``None``: the env's frame rate
            (``metadata["render_fps"]`` or stable-retro's
            ``metadata["video.frames_per_second"]``, else 30) divided by ``every``, so
            the video plays in real time.
        columns: Envs per row of the tiled frame; ``None``: a near-square grid.
        source: ``"observations"`` or ``"render"``.
        max_frames: Stop recording (and finish the file) after this many frames;
            ``None``: record until ``close()``.

    Attributes:
        frames_written: Frames in the video so far.

    Raises:
        ModuleNotFoundError: ``imageio``/``imageio-ffmpeg`` is missing (with the
            install hint).
        ValueError: A bad argument, observations that are not ``uint8`` images with
            ``source="observations"``, or an env without ``render_mode="rgb_array"``
            with ``source="render"``.

    Example:
        >>> envs = VectorVideoRecorder(retrovec.make(num_envs=4), "train.mp4",
        ...                            every=4)  # doctest: +SKIP
        >>> try:  # doctest: +SKIP
        ...     envs.reset(seed=0)
        ...     for _ in range(1000):
        ...         envs.step(envs.action_space.sample())
        ... finally:
        ...     envs.close()
    """

    def __init__(
        self,
        env: VectorEnv,
        path: str | os.PathLike[str],
        *,
        every: int = 1,
        fps: float | None = None,
        columns: int | None = None,
        source: str = "observations",
        max_frames: int | None = None,
    ) -> None:
        super().__init__(env)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if max_frames is not None and (
            isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
        ):
            raise ValueError(f"max_frames must be None or an int >= 1, got {max_frames!r}")
        if source == "observations":
            space = env.single_observation_space
            shape = getattr(space, "shape", None) or ()
            is_image = len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))
            if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and is_image):
                raise ValueError(
                    "source='observations' needs uint8 image observations of shape (H, W) or "
                    f"(H, W, 1|3|4), got {space}; record source='render' instead (with "
                    "render_mode='rgb_array')."
                )
        elif source == "render":
            if env.render_mode != "rgb_array":
                raise ValueError(
                    "source='render' needs a vector env made with render_mode='rgb_array', "
                    f"got render_mode={env.render_mode!r}"
                )
        else:
            raise ValueError(f"source must be 'observations' or 'render', got {source!r}")
        if fps is None:
            metadata = env.metadata or {}
            base = metadata.get("render_fps") or metadata.get("video.frames_per_second")
            fps = float(base or DEFAULT_FPS) / every
        self.every = every
        self.columns = columns
        self.source = source
        self.max_frames = max_frames
        self.writer = VideoWriter(path, fps=fps)
        self._steps = 0

    @property
    def frames_written(self) -> int:
        """Frames in the video so far."""
        return self.writer.frames_written

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> Any:
        """Reset the envs and record the first frame."""
        observations, infos = self.env.reset(seed=seed, options=options)
        self._steps = 0
        self._record(observations)
        return observations, infos

    def step(self, actions: Any) -> Any:
        """Step the envs; record a frame every ``every`` steps."""
        result = self.env.step(actions)
        self._steps += 1
        if self._steps % self.every == 0:
            self._record(result[0])
        return result

    def _record(self, observations: Any) -> None:
        if self.writer.closed:
            return
        frames = self.env.render() if self.source == "render" else observations
        self.writer.write(tile_frames(frames, self.columns))
        if self.max_frames is not None and self.writer.frames_written >= self.max_frames:
            self.writer.close()

    def close(self, **kwargs: Any) -> None:
        """Finish the video file, then close the envs."""
        try:
            self.writer.close()
        finally:
            self.env.close(**kwargs)

    def __enter__(self) -> VectorVideoRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def mux_audio(
    video: str | os.PathLike[str],
    samples: np.ndarray,
    rate: float,
    out: str | os.PathLike[str],
) -> str:
    """Add a sound track to an mp4: ``video``'s pictures plus ``samples``, into ``out``.

    Uses the ffmpeg binary that imageio-ffmpeg ships (no system ffmpeg needed). The
    video stream is copied as it is; the sound is encoded as AAC at :data:`AUDIO_RATE`.

    Args:
        video: An mp4 file (``out`` may be the same path: it is replaced atomically).
        samples: ``int16`` samples of shape ``(n, channels)`` (stable-retro's
            ``em.get_audio()`` gives ``(n, 2)`` per frame) or ``(n,)`` for mono.
        rate: Their sample rate, in Hz.
        out: The mp4 to write.

    Returns:
        ``out``.

    Raises:
        ModuleNotFoundError: imageio-ffmpeg is missing (with the install hint).
        ValueError: Samples that are not ``int16`` of shape ``(n,)`` or ``(n, 1|2)``,
            or a rate that is not positive.
        RuntimeError: ffmpeg failed; the message has its error output.

    Example:
        >>> mux_audio("silent.mp4", np.zeros((44100, 2), np.int16), 44100,
        ...           "with-sound.mp4")  # doctest: +SKIP
        'with-sound.mp4'
    """
    require_imageio()
    import imageio_ffmpeg

    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.dtype != np.int16 or samples.ndim != 2 or samples.shape[1] not in (1, 2):
        raise ValueError(
            "samples must be int16 of shape (n,), (n, 1) or (n, 2), got "
            f"{samples.dtype} of shape {samples.shape}"
        )
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate!r}")
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    with tempfile.TemporaryDirectory(dir=folder, prefix=".retrovec-audio-") as scratch:
        sound = os.path.join(scratch, "sound.wav")
        with wave.open(sound, "wb") as file:
            file.setnchannels(samples.shape[1])
            file.setsampwidth(2)
            file.setframerate(int(round(rate)))
            file.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
        muxed = os.path.join(scratch, "muxed.mp4")
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
            "-i", os.fspath(video), "-i", sound,
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-c:a", "aac", "-b:a", "160k", "-ar", str(AUDIO_RATE),
            "-movflags", "+faststart", muxed,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg could not add the sound: {done.stderr.strip()}")
        os.replace(muxed, out)
    return out


def movie_to_video(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    fps: float | None = None,
    audio: bool = True,
    inttype: Any = None,
) -> str:
    """Render a ``.bk2`` movie to an mp4 (H.264), with the game's sound (AAC).

    The movie is replayed in this process (see :mod:`retrovec.retro.replay`: one
    emulator, closed at the end); after every emulated frame the picture goes to the video
    and the emulator's sound samples of that frame (``em.get_audio()``) to the sound
    track, so the two stay in step. ``out`` is written only once complete.

    Args:
        path: A ``.bk2`` file.
        out: The video file; ``None``: ``path`` with ``.mp4`` in place of ``.bk2``.
        fps: Frames per second; ``None``: the emulator's own frame rate (about 60), so
            that picture and sound play in real time.
        audio: Add the sound track; ``False``: pictures only.
        inttype: Integrations to search for the movie's game, as in
            :func:`retrovec.retro.replay.replay`; ``None``: the default ones.

    Returns:
        The path of the video: the start frame, then one frame per recorded step.

    Raises:
        ModuleNotFoundError: ``imageio``/``imageio-ffmpeg`` is missing (with the
            install hint), raised before any emulator starts.
        FileNotFoundError, ValueError, UnknownGameError, RomNotImportedError: as
            :func:`retrovec.retro.replay.replay`.

    Example:
        >>> movie_to_video("movies/env-000/Airstriker-Genesis-v0-Level1-000000.bk2")  # doctest: +SKIP
        'movies/env-000/Airstriker-Genesis-v0-Level1-000000.mp4'
    """
    import gc

    from stable_retro.data import Integrations

    from retrovec.retro import replay as replays

    require_imageio()  # fail before the emulator starts
    name = os.fspath(path)
    if out is None:
        out = (name.removesuffix(".bk2")) + ".mp4"
    out = os.fspath(out)
    plan = replays._plan(name, None, None, Integrations.DEFAULT if inttype is None else inttype)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    env = replays._replay_env(plan)
    try:
        emulator = env.em
        rate = fps if fps is not None else float(emulator.get_screen_rate()) or 60.0
        sound: list[np.ndarray] = []
        after_frame = (lambda: sound.append(emulator.get_audio())) if audio else None
        with tempfile.TemporaryDirectory(dir=folder, prefix=".retrovec-video-") as scratch:
            pictures = os.path.join(scratch, "pictures.mp4")
            with VideoWriter(pictures, fps=rate) as writer:
                first = True
                for step in replays._play(env, plan.movie, after_frame):
                    if first:
                        writer.write(step.observation)
                        first = False
                    writer.write(step.next_observation)
            samples = np.concatenate(sound) if sound else np.zeros((0, 2), np.int16)
            audio_rate = float(emulator.get_audio_rate()) if audio else 0.0
            if audio and len(samples) and audio_rate > 0:
                mux_audio(pictures, samples, audio_rate, out)
            else:
                os.replace(pictures, out)
    finally:
        env.close()
        del env
        gc.collect()  # the emulator must be gone before this process makes another
    return out


def render_best_movies(
    folder: str | os.PathLike[str],
    n: int,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    audio: bool = True,
) -> list[str]:
    """Render the ``n`` best movies under ``folder`` (by return) to mp4, with sound.

    The movies are ranked by :func:`retrovec.retro.recording.best_movies` (from the
    ``.json`` record next to each); nothing is deleted.

    Args:
        folder: A recording folder, e.g. the ``record=`` of :func:`retrovec.make`.
        n: How many.
        out_dir: Where the videos go, named ``{rank:02d}-{movie name}.mp4``; ``None``:
            next to each movie, as ``{movie name}.mp4``.
        audio: Add the game's sound.

    Returns:
        The videos, best first.

    Example:
        >>> render_best_movies("movies", 3, "best")  # doctest: +SKIP
        ['best/01-Airstriker-Genesis-v0-Level1-000004.mp4', ...]
    """
    from retrovec.retro.recording import best_movies

    records = best_movies(folder, n)
    videos = []
    for rank, record in enumerate(records, start=1):
        stem = os.path.basename(record.path)[: -len(".bk2")]
        if out_dir is None:
            out = os.path.join(os.path.dirname(record.path), stem + ".mp4")
        else:
            out = os.path.join(os.fspath(out_dir), f"{rank:02d}-{stem}.mp4")
        videos.append(movie_to_video(record.path, out, audio=audio))
    return videos
