"""Record every env's episodes as stable-retro ``.bk2`` movies, inside the workers.

``retrovec.make(..., record=DIR)`` wraps env ``i`` in :class:`RecordMovies` writing to
``DIR/env-{i:03d}/``, one movie per episode::

    DIR/
      env-000/Airstriker-Genesis-v0-Level1-000000.bk2
      env-000/Airstriker-Genesis-v0-Level1-000001.bk2
      env-001/Airstriker-Genesis-v0-Level1-000000.bk2

Nothing is ever overwritten: episode numbers continue after the highest one already in the
folder (a second run into the same ``DIR`` adds ``...-000002.bk2`` and on), and each file
name is claimed atomically (``O_CREAT | O_EXCL``), so even two runs writing into the same
folder at the same time never share a name.

A movie is finished (and only then written: stable-retro writes a ``.bk2`` when it is
closed) when its episode terminates, when the env resets, and when the env closes. The
vector env closes its envs on ``close()``, on garbage collection and at interpreter exit,
so a training loop that dies with an exception still leaves complete movies. Only a worker
killed outright (SIGKILL, a segfault) loses the episode it was playing.

A movie holds the start state and the buttons pressed on every frame; play it back with
:func:`retrovec.retro.replay.replay`.

Example:
    >>> import retrovec
    >>> envs = retrovec.make("Airstriker-Genesis-v0", 2, record="movies")  # doctest: +SKIP
    >>> try:  # doctest: +SKIP
    ...     envs.reset(seed=0)
    ...     for _ in range(100):
    ...         envs.step(envs.action_space.sample())
    ... finally:
    ...     envs.close()
    >>> sorted(p.name for p in Path("movies/env-000").glob("*.bk2"))  # doctest: +SKIP
    ['Airstriker-Genesis-v0-Level1-000000.bk2']
"""

from __future__ import annotations

import os
import re
from typing import Any, SupportsFloat

import gymnasium as gym
import stable_retro

__all__ = ["RecordMovies", "env_movie_dir", "movie_name", "next_episode_number"]

_EPISODE = re.compile(r"-(\d{6,})\.bk2$")


def env_movie_dir(root: str | os.PathLike[str], index: int) -> str:
    """The folder where env ``index`` of a vector env records its movies.

    Args:
        root: The ``record=`` folder given to :func:`retrovec.make`.
        index: The env's index in the vector env.

    Returns:
        ``root/env-{index:03d}``.

    Example:
        >>> env_movie_dir("movies", 3)
        'movies/env-003'
    """
    return os.path.join(os.fspath(root), f"env-{index:03d}")


def movie_name(game: str, state: str | None, episode: int) -> str:
    """The file name of one episode's movie: stable-retro's own pattern.

    Args:
        game: The game id.
        state: The state the episode started from: a name, a ``.state`` path, or
            ``None`` for power-on.
        episode: The episode number within the env's folder.

    Returns:
        ``{game}-{state}-{episode:06d}.bk2``, with ``state`` reduced to its base name
        without ``.state`` (``"none"`` for power-on).

    Example:
        >>> movie_name("Airstriker-Genesis-v0", "Level1.state", 7)
        'Airstriker-Genesis-v0-Level1-000007.bk2'
        >>> movie_name("Pong-Atari2600-v0", "/saves/Start.2P.state", 0)
        'Pong-Atari2600-v0-Start.2P-000000.bk2'
        >>> movie_name("Airstriker-Genesis-v0", None, 0)
        'Airstriker-Genesis-v0-none-000000.bk2'
    """
    label = "none"
    if state:
        label = os.path.basename(state)
        if label.endswith(".state"):
            label = label[: -len(".state")]
    return f"{game}-{label}-{episode:06d}.bk2"


def next_episode_number(directory: str | os.PathLike[str]) -> int:
    """One more than the highest episode number of the movies in ``directory``.

    Args:
        directory: A folder of ``.bk2`` movies named as :func:`movie_name` names them.

    Returns:
        0 for an empty or missing folder.

    Example:
        >>> next_episode_number("/no/such/folder")
        0
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    numbers = [int(m.group(1)) for m in map(_EPISODE.search, names) if m]
    return max(numbers, default=-1) + 1


def _claim(directory: str, game: str, state: str | None, episode: int) -> tuple[str, int]:
    """Create an empty file with the first free episode number >= ``episode``."""
    while True:
        path = os.path.join(directory, movie_name(game, state, episode))
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            episode += 1
            continue
        return path, episode


class RecordMovies(gym.Wrapper):
    """Write one ``.bk2`` movie per episode of a stable-retro env into ``directory``.

    Wrap the :class:`stable_retro.RetroEnv` directly (before any wrapper whose ``reset``
    steps the env): the movie starts from the state the inner ``reset`` starts from.
    :func:`retrovec.make` does this for you with ``record=DIR``. A movie is recorded in a
    hidden temporary file and gets its final name, the next free episode number, when it
    is finished; an episode of zero steps writes no file.

    Args:
        env: A :class:`stable_retro.RetroEnv`, possibly wrapped.
        directory: Where the movies go; created if missing.

    Attributes:
        movie_paths: The movies finished so far, in order.

    Raises:
        TypeError: ``env.unwrapped`` is not a :class:`stable_retro.RetroEnv`.

    Example:
        >>> env = RecordMovies(stable_retro.make("Airstriker-Genesis-v0",
        ...                                      render_mode=None), "movies")  # doctest: +SKIP
        >>> obs, info = env.reset()  # doctest: +SKIP
        >>> for _ in range(10):  # doctest: +SKIP
        ...     obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> env.close()  # doctest: +SKIP
        >>> env.movie_paths  # doctest: +SKIP
        ['movies/Airstriker-Genesis-v0-Level1-000000.bk2']
    """

    def __init__(self, env: gym.Env, directory: str | os.PathLike[str]) -> None:
        super().__init__(env)
        retro = env.unwrapped
        if not isinstance(retro, stable_retro.RetroEnv):
            raise TypeError(
                "record= needs stable-retro envs: the env (from make_fn) is "
                f"{type(retro).__name__}, not a stable_retro.RetroEnv."
            )
        if retro.movie is not None or retro.movie_path is not None:
            retro.stop_record()  # stable-retro's own record= would write a second movie
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.movie_paths: list[str] = []
        self._retro = retro
        self._temp_path: str | None = None
        self._state_label: str | None = None
        self._steps = 0
        self._next_episode = next_episode_number(self.directory)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Finish the current movie, reset, and start recording the new episode."""
        self._finish()
        retro = self._retro
        # Where the inner reset starts from: the save state, or (power-on, State.NONE)
        # wherever the emulator is now, since RetroEnv.reset then restores nothing.
        start = retro.initial_state or retro.em.get_state()
        observation, info = self.env.reset(**kwargs)
        self._start(start)
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step (RetroEnv itself writes the buttons into the movie); finish on termination."""
        result = self.env.step(action)
        if self._retro.movie is not None:
            self._steps += 1
            if result[2]:  # terminated: the episode is over whatever comes next
                self._finish()
        return result

    def close(self) -> None:
        """Finish the current movie, then close the env."""
        try:
            self._finish()
        finally:
            super().close()

    def _start(self, state: bytes) -> None:
        retro = self._retro
        statename = retro.statename
        self._state_label = statename if isinstance(statename, str) else None
        self._temp_path = os.path.join(
            self.directory, f".recording-{os.getpid()}-{id(self):x}.bk2"
        )
        movie = stable_retro.Movie(self._temp_path, True, retro.players)
        movie.configure(retro.gamename, retro.em)
        movie.set_state(state)
        # RetroEnv.reset has already stepped the emulator once with no buttons held;
        # record that frame too, exactly as RetroEnv.reset does for its own record=.
        movie.step()
        retro.movie = movie
        self._steps = 0

    def _finish(self) -> None:
        retro = self._retro
        movie, retro.movie = retro.movie, None
        temp, self._temp_path = self._temp_path, None
        if movie is None or temp is None:
            return
        movie.close()  # writes the file
        del movie
        if self._steps == 0:
            if os.path.exists(temp):
                os.unlink(temp)
            return
        path, episode = _claim(
            self.directory, retro.gamename, self._state_label, self._next_episode
        )
        os.replace(temp, path)
        self._next_episode = episode + 1
        self.movie_paths.append(path)
