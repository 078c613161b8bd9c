"""Record episodes as stable-retro ``.bk2`` movies, inside the workers, on or off at runtime.

``retrovec.make(..., record=DIR)`` makes env ``i`` write one movie per episode into
``DIR/env-{i:03d}/``; ``record=True`` writes into ``./retrovec-movies/<game>/env-{i:03d}/``
(:data:`DEFAULT_FOLDER`), and ``record_envs=[0, 3]`` records only those envs::

    DIR/
      env-000/Airstriker-Genesis-v0-Level1-000000.bk2     the movie
      env-000/Airstriker-Genesis-v0-Level1-000000.json    its game, steps and return
      env-003/Airstriker-Genesis-v0-Level1-000000.bk2

Every env of :func:`retrovec.make` has a :class:`RecordMovies` layer (outermost), so
recording also starts and stops at runtime, for all envs or chosen ones::

    envs.call("start_recording", "movies")                 # every env, from its next episode
    envs.at([0, 2]).call("start_recording", "movies", keep_best=5)
    envs.at([0, 2]).call("stop_recording")                 # finishes the movies at once

and stable-retro's own ``record_movie(path)``, ``auto_record(dir)`` and ``stop_record()``
called through ``envs.call`` go to the same machinery.

**A movie never lies.** A ``.bk2`` holds a start state and the buttons of every frame;
stable-retro plays it back by loading the state, running one frame with no buttons (the
frame ``RetroEnv.reset`` runs) and then the recorded buttons. So a movie can only start
where an episode starts: recording switched on mid-episode starts with the env's next
episode (an env not reset yet: its first), and one movie holds one episode. The layer
does not guess where that is: while recording, it stands in ``RetroEnv.movie``, where
``RetroEnv.reset`` and every emulator frame (``RetroEnv.step``, and the fast path of
:mod:`retrovec.retro.wrappers.fused`, which writes movies exactly as ``RetroEnv.step``
does) report to it. The start state is ``RetroEnv.initial_state`` as the reset restored
it (a curriculum's draw, a snapshot, a ``.state`` file) or, for power-on envs, the
emulator as this layer's ``reset`` found it; when neither is known (a power-on env reset
by a layer below this one) the episode is not recorded (``episodes_skipped`` counts
them). No-op starts, frame skips and sticky repeats are in the movie: it holds every
emulator frame.

A movie is finished, and only then written (stable-retro writes a ``.bk2`` when it is
closed), when the game's scenario says the episode is done, at the next reset, when
recording stops, and when the env closes. The vector env closes its envs on ``close()``,
on garbage collection and at interpreter exit, so a training loop that dies with an
exception still leaves complete movies; only a worker killed outright loses the episode
it was playing. An episode of zero steps writes no file. Nothing is overwritten: episode
numbers continue after the highest in the folder, and each name is claimed atomically
(``O_CREAT | O_EXCL``).

Next to each movie, ``X.json`` (:class:`MovieRecord`) holds its game, state, steps and
return: the sum of the scenario's rewards over its frames (``data.total_reward()``, the
return a replay gives; the agent's return when no-op starts earn nothing). With
``keep_best=N`` only the N best movies of that recording stay (see :class:`RecordMovies`),
and :func:`best_movies` picks the best of a whole folder tree.

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

import json
import os
from typing import Any, SupportsFloat

import gymnasium as gym

# The file side (folders, names, the .json records) lives in movie_files; its names stay
# importable from here, where they were before.
from retrovec.retro.movie_files import (
    DEFAULT_FOLDER,
    MovieRecord,
    best_movies,
    check_keep_best,
    claim_movie_name,
    env_movie_dir,
    movie_folders,
    movie_name,
    next_episode_number,
    read_movie_record,
    record_path,
)

__all__ = [
    "DEFAULT_FOLDER",
    "MovieRecord",
    "RecordMovies",
    "best_movies",
    "env_movie_dir",
    "movie_folders",
    "movie_name",
    "next_episode_number",
    "read_movie_record",
]


class _MovieSlot:
    """Stands in ``RetroEnv.movie`` while a :class:`RecordMovies` records.

    ``RetroEnv.step`` (and the fast path) call ``set_key`` for every button, then
    ``step()``, on every frame; ``RetroEnv.reset`` calls ``step()`` alone, after its first
    frame. That tells episode starts from frames without any guessing.
    """

    def __init__(self, owner: RecordMovies) -> None:
        self._owner = owner
        self._keys = False

    def __bool__(self) -> bool:
        return True

    def set_key(self, key: int, value: Any, player: int = 0) -> None:
        self._keys = True
        movie = self._owner._movie
        if movie is not None:
            movie.set_key(key, value, player)

    def step(self) -> bool:
        if self._keys:
            self._keys = False
            self._owner._on_frame()
        else:
            self._owner._on_reset_frame()
        return True

    def close(self) -> None:
        # RetroEnv.stop_record() called on the RetroEnv itself, below the layer.
        self._owner._stop(detach=False)


class RecordMovies(gym.Wrapper):
    """Record a stable-retro env's episodes as ``.bk2`` movies; on and off at runtime.

    It may sit anywhere above the :class:`stable_retro.RetroEnv` (:func:`retrovec.make`
    puts it outermost in every env); see the module docstring for how it finds episode
    starts. Recording into a folder writes one movie per episode, named
    :func:`movie_name` with the next free episode number, plus its ``.json``
    :class:`MovieRecord`.

    **keep_best=N**: of the movies one recording (one ``start_recording`` call, or the
    ``record=`` of :func:`retrovec.make`) writes, only the N with the highest returns
    stay. When a movie finishes and there are N + 1, the lowest-return one is deleted
    with its ``.json`` (of equal returns, the newer one goes: a movie is deleted only
    once N others beat it). Nothing else is ever deleted: not movies already in the
    folder, not other envs' movies, not other recordings' movies, not a ``record_movie``
    file.

    Args:
        env: An env whose ``unwrapped`` is a :class:`stable_retro.RetroEnv`.
        directory: Start recording into this folder now (from the first episode);
            ``None``: not until :meth:`start_recording`.
        index: The env's index in its vector env: :meth:`start_recording` with a folder
            records into ``folder/env-{index:03d}``.
        keep_best: As for :meth:`start_recording`, for ``directory``.

    Attributes:
        movie_paths: The movies finished so far (and not deleted by ``keep_best``), in
            order.
        movie_records: Their :class:`MovieRecord`, in the same order.
        episodes_skipped: Episodes not recorded because their start state was unknown.

    Raises:
        TypeError: ``directory`` given but ``env.unwrapped`` is not a RetroEnv.
        ValueError: A bad ``keep_best``.

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

    def __init__(
        self,
        env: gym.Env,
        directory: str | os.PathLike[str] | None = None,
        *,
        index: int | None = None,
        keep_best: int | None = None,
    ) -> None:
        super().__init__(env)
        self.index = index
        self.directory: str | None = None
        self.movie_paths: list[str] = []
        self.movie_records: list[MovieRecord] = []
        self.episodes_skipped = 0
        self._slot: _MovieSlot | None = None
        self._movie: Any = None  # the stable_retro.Movie of the episode being recorded
        self._folder: str | None = None  # per-episode movies go here...
        self._path: str | None = None  # ...or the one movie of record_movie(path) here
        self._keep_best: int | None = None
        self._kept: list[tuple[float, int, str]] = []  # (return, order, path) of keep_best
        self._order = 0
        self._temp: str | None = None
        self._state: str | None = None
        self._steps = 0
        self._base: float | None = None  # data.total_reward() when the movie started
        self._power_on: bytes | None = None
        self._next_episode = 0
        if directory is not None:
            retro = self._retro("record=")
            if retro.movie is not None or retro.movie_path is not None:
                retro.stop_record()  # stable-retro's own record= would write a second movie
            self.directory = os.path.abspath(os.fspath(directory))
            self._begin(folder=self.directory, path=None, keep_best=keep_best)

    # ------------------------------------------------------------------ public API

    @property
    def recording(self) -> bool:
        """Whether this env records (or waits for its next episode to record)."""
        return self._slot is not None

    def start_recording(
        self, folder: str | os.PathLike[str] | None = None, *, keep_best: int | None = None
    ) -> str:
        """Record every episode from the next one on, one movie each, into a folder.

        A recording already on is stopped first (its movie under way is finished).

        Args:
            folder: ``None``: the ``record=`` folder of :func:`retrovec.make` (if it was
                given, else ``./retrovec-movies/<game>/env-{index:03d}``); else
                ``folder/env-{index:03d}`` (just ``folder`` for an env outside a vector
                env). Created if missing.
            keep_best: Keep only the N best movies of this recording (see the class
                docstring); ``None``: keep them all.

        Returns:
            The absolute folder the movies go to.

        Raises:
            TypeError: The env is not a stable-retro env.
            RuntimeError: A stable-retro movie of its own is being recorded.
            ValueError: A bad ``keep_best``.
        """
        retro = self._retro("start_recording")
        keep_best = check_keep_best(keep_best)
        if folder is None:
            folder = self.directory or os.path.join(DEFAULT_FOLDER, retro.gamename)
            if self.directory is None and self.index is not None:
                folder = env_movie_dir(folder, self.index)
        elif self.index is not None:
            folder = env_movie_dir(folder, self.index)
        folder = os.path.abspath(os.fspath(folder))
        self._stop()
        self._begin(folder=folder, path=None, keep_best=keep_best)
        return folder

    def stop_recording(self) -> list[str]:
        """Stop recording; the movie of the episode under way is finished now.

        Returns:
            The movies this env finished so far (:attr:`movie_paths`).
        """
        self._stop()
        return list(self.movie_paths)

    def record_movie(self, path: str | os.PathLike[str]) -> None:
        """stable-retro's ``RetroEnv.record_movie``, made exact: record the next episode
        (one movie, which a ``.bk2`` is) into ``path``, until it ends or
        :meth:`stop_record`. stable-retro's own, called mid-episode, would pair the
        episode's start state with buttons from the middle."""
        self._retro("record_movie")
        path = os.path.abspath(os.fspath(path))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._stop()
        self._begin(folder=None, path=path, keep_best=None)

    def auto_record(self, path: str | os.PathLike[str] | None = None) -> None:
        """stable-retro's ``RetroEnv.auto_record``: one movie per episode into ``path``
        (default: the working directory), from the next episode on, numbered after the
        movies already there instead of from 0 (stable-retro's own overwrites them)."""
        self._retro("auto_record")
        folder = os.path.abspath(os.fspath(path) if path else os.getcwd())
        self._stop()
        self._begin(folder=folder, path=None, keep_best=None)

    def stop_record(self) -> None:
        """stable-retro's ``RetroEnv.stop_record``: :meth:`stop_recording`."""
        self._stop()

    # ------------------------------------------------------------------ gym.Wrapper

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset; a recording env starts its movie at the reset's first frame."""
        if self._slot is not None:
            retro = self._check_slot()
            if retro is not None and not retro.initial_state:
                # Power-on: RetroEnv.reset restores nothing, so the episode starts here.
                self._power_on = retro.em.get_state()
        try:
            return self.env.reset(**kwargs)
        finally:
            self._power_on = None

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step; a movie is finished as soon as the game's scenario says it is done."""
        result = self.env.step(action)
        finished = self._movie is not None and self._check_slot() is not None
        if finished and self.env.unwrapped.data.is_done():
            self._finish(complete=True)
        return result

    def close(self) -> None:
        """Finish the current movie, then close the env."""
        try:
            self._stop()
        finally:
            super().close()

    # ------------------------------------------------------------------ internals

    def _retro(self, what: str) -> Any:
        import stable_retro

        retro = self.env.unwrapped
        if not isinstance(retro, stable_retro.RetroEnv):
            raise TypeError(
                f"{what} needs stable-retro envs: the env (from make_fn) is "
                f"{type(retro).__name__}, not a stable_retro.RetroEnv."
            )
        return retro

    def _check_slot(self) -> Any:
        """The RetroEnv, or ``None`` if someone replaced our slot in ``RetroEnv.movie``
        (stable-retro's own ``record_movie`` called below this layer): recording ends."""
        retro = self.env.unwrapped
        if retro.movie is not self._slot:
            self._finish(complete=False)
            self._end()
            return None
        return retro

    def _begin(self, folder: str | None, path: str | None, keep_best: int | None) -> None:
        retro = self.env.unwrapped
        if retro.movie is not None and retro.movie is not self._slot:
            raise RuntimeError(
                "this env already records a stable-retro movie of its own "
                "(RetroEnv.record_movie); call stop_record first"
            )
        if folder is not None:
            os.makedirs(folder, exist_ok=True)
            self._next_episode = next_episode_number(folder)
        self._folder, self._path = folder, path
        self._keep_best = check_keep_best(keep_best)
        self._kept = []
        self._slot = _MovieSlot(self)
        retro.movie = self._slot

    def _stop(self, detach: bool = True) -> None:
        self._finish(complete=False)
        if detach and self._slot is not None and self.env.unwrapped.movie is self._slot:
            self.env.unwrapped.movie = None
        self._end()

    def _end(self) -> None:
        self._slot = None
        self._folder = self._path = None

    def _on_reset_frame(self) -> None:
        """``RetroEnv.reset`` ran its first frame: the old movie ends, a new one starts."""
        self._finish(complete=True)
        if self._slot is None:  # that was record_movie's one movie
            return
        retro = self.env.unwrapped
        start = retro.initial_state or self._power_on
        self._power_on = None
        if not start:
            self.episodes_skipped += 1
            return
        import stable_retro

        directory = self._folder if self._folder is not None else os.path.dirname(self._path)
        self._temp = os.path.join(directory, f".recording-{os.getpid()}-{id(self):x}.bk2")
        movie = stable_retro.Movie(self._temp, True, retro.players)
        movie.configure(retro.gamename, retro.em)
        movie.set_state(start)
        movie.step()  # the reset's frame, with no buttons, as RetroEnv.reset records it
        statename = retro.statename
        self._state = statename if isinstance(statename, str) else None
        self._steps = 0
        self._base = None
        self._movie = movie

    def _on_frame(self) -> None:
        movie = self._movie
        if movie is None:
            return
        if self._base is None:  # the reset's update_ram has run by now
            self._base = float(self.env.unwrapped.data.total_reward())
        movie.step()
        self._steps += 1

    def _finish(self, complete: bool) -> None:
        movie, self._movie = self._movie, None
        temp, self._temp = self._temp, None
        if movie is None or temp is None:
            return
        retro = self.env.unwrapped
        episode_return = 0.0
        if self._base is not None:
            episode_return = float(retro.data.total_reward()) - self._base
        movie.close()  # writes the file
        del movie
        if self._steps == 0:
            if os.path.exists(temp):
                os.unlink(temp)
            return
        if self._path is not None:
            path = self._path
            os.replace(temp, path)
        else:
            path, episode = claim_movie_name(
                self._folder, retro.gamename, self._state, self._next_episode
            )
            os.replace(temp, path)
            self._next_episode = episode + 1
        record = MovieRecord(
            path=path,
            game=retro.gamename,
            state=self._state,
            players=int(retro.players),
            steps=self._steps,
            episode_return=episode_return,
            env=self.index,
            complete=complete,
        )
        with open(record_path(path), "w") as file:
            json.dump(record._asdict(), file, indent=1)
        self.movie_paths.append(path)
        self.movie_records.append(record)
        if self._path is not None:  # record_movie: one movie
            self._stop()
        elif self._keep_best is not None:
            self._keep(record)

    def _keep(self, record: MovieRecord) -> None:
        self._order += 1
        self._kept.append((record.episode_return, self._order, record.path))
        if len(self._kept) <= self._keep_best:
            return
        # The lowest return goes; of equal returns the newer one (it beat nobody).
        worst = min(self._kept, key=lambda kept: (kept[0], -kept[1]))
        self._kept.remove(worst)
        path = worst[2]
        for name in (path, record_path(path)):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        index = self.movie_paths.index(path)
        del self.movie_paths[index]
        del self.movie_records[index]
