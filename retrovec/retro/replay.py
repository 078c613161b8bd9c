"""Play back stable-retro ``.bk2`` movies: observations and the buttons pressed, or an mp4.

A movie (from ``retrovec.make(..., record=DIR)``, see :mod:`retrovec.retro.recording`, or from
stable-retro's own ``record=``) holds a start state and the buttons every player pressed
on every frame. :func:`replay` runs the game's emulator from that state with those
buttons and yields, step by step, what the player saw and what they pressed: the data for
behaviour cloning, or for checking a recording. :func:`movie_to_mp4` renders a movie to a
video file.

Both run **one emulator in this process**, and stable-retro allows one per process: do
not replay while this process holds another emulator, and do not start vector envs with
the ``fork`` start method while a replay is open (a forked worker would inherit it).
:func:`replay` closes its emulator when the iteration ends or the generator is closed;
``with contextlib.closing(replay(path)) as steps:`` makes that explicit when you stop
early.

Example:
    >>> from retrovec.retro.replay import replay
    >>> for step in replay("movies/env-000/Airstriker-Genesis-v0-Level1-000000.bk2"):
    ...     observations.append(step.observation)  # doctest: +SKIP
    ...     actions.append(step.action)
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import stable_retro
from stable_retro.data import Integrations

from retrovec.retro.games import resolve_inttype, validate_data_file, validate_game

__all__ = ["MovieInfo", "ReplayStep", "movie_info", "movie_to_mp4", "replay"]


class ReplayStep(NamedTuple):
    """One recorded step: what the player saw, what they pressed, and what followed.

    Attributes:
        observation: The frame before the buttons were pressed (for the first step, the
            frame ``reset`` returned).
        action: The buttons held on this step, ``uint8`` 0/1 of shape
            ``(num_buttons * players,)``: player 1's buttons, then player 2's, in the
            order of ``env.unwrapped.buttons``. This is the ``MultiBinary`` action of a
            ``use_restricted_actions=Actions.FILTERED`` (or ``ALL``) env, after
            filtering.
        reward: Player 1's reward, as the env returned it.
        rewards: Every player's reward, ``float64`` of shape ``(players,)``.
        terminated: The scenario's done condition after this step.
        info: The RAM variables of ``data.json`` after this step.
        next_observation: The frame after this step.
    """

    observation: np.ndarray
    action: np.ndarray
    reward: float
    rewards: np.ndarray
    terminated: bool
    info: dict[str, Any]
    next_observation: np.ndarray


class MovieInfo(NamedTuple):
    """What a movie file says about itself, read without an emulator.

    Attributes:
        game: The game id the movie was recorded on.
        players: The number of players.
        steps: The number of recorded steps (button frames after the start).
    """

    game: str
    players: int
    steps: int


def _open_movie(path: str | os.PathLike[str]) -> stable_retro.Movie:
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"No such movie file: {name!r}")
    if os.path.getsize(name) == 0:
        raise ValueError(f"{name!r} is empty, not a .bk2 movie")
    try:
        return stable_retro.Movie(name)
    except RuntimeError as error:
        raise ValueError(f"{name!r} is not a readable .bk2 movie: {error}") from error


def movie_info(path: str | os.PathLike[str]) -> MovieInfo:
    """Read a movie's game, player count and length, without running an emulator.

    Args:
        path: A ``.bk2`` file.

    Returns:
        The :class:`MovieInfo`.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a readable movie.

    Example:
        >>> movie_info("movies/env-000/Airstriker-Genesis-v0-Level1-000000.bk2")  # doctest: +SKIP
        MovieInfo(game='Airstriker-Genesis-v0', players=1, steps=1234)
    """
    movie = _open_movie(path)
    steps = -1  # the first frame is the one reset plays
    while movie.step():
        steps += 1
    return MovieInfo(movie.get_game(), int(movie.players), max(steps, 0))


class _Plan(NamedTuple):
    """A checked movie and the arguments of the env that plays it back."""

    movie: stable_retro.Movie
    game: str
    players: int
    scenario: str | None
    info: str | None
    inttype: Integrations


def _plan(
    path: str | os.PathLike[str],
    scenario: str | os.PathLike[str] | None,
    info: str | os.PathLike[str] | None,
    inttype: Integrations,
) -> _Plan:
    """Open the movie and check that its game can run here; build no emulator yet."""
    movie = _open_movie(path)
    game = movie.get_game()
    inttype = resolve_inttype(inttype)
    validate_game(game, inttype)
    return _Plan(
        movie=movie,
        game=game,
        players=int(movie.players),
        scenario=validate_data_file(game, scenario, "scenario", inttype),
        info=validate_data_file(game, info, "info", inttype),
        inttype=inttype,
    )


def _replay_env(plan: _Plan) -> stable_retro.RetroEnv:
    """Build the movie's env, positioned at the movie's start (the one emulator)."""
    plan.movie.step()  # the start frame: its state is where the recording began
    env = stable_retro.make(
        plan.game,
        state=stable_retro.State.NONE,
        inttype=plan.inttype,
        scenario=plan.scenario,
        info=plan.info,
        players=plan.players,
        use_restricted_actions=stable_retro.Actions.ALL,
        render_mode=None,
    )
    env.multi_rewards = True
    state = plan.movie.get_state()
    if state:
        env.initial_state = state
    return env


def replay(
    path: str | os.PathLike[str],
    *,
    scenario: str | os.PathLike[str] | None = None,
    info: str | os.PathLike[str] | None = None,
    inttype: Integrations = Integrations.DEFAULT,
) -> Iterator[ReplayStep]:
    """Play a ``.bk2`` movie back in this process, yielding every recorded step.

    The emulator starts from the movie's start state and is stepped with the recorded
    buttons, so the observations are exactly those the recording env saw (the emulators
    are deterministic). The file and the game are checked at once; the emulator starts
    at the first ``next()`` and is closed when the iteration ends or the iterator is
    closed or garbage-collected.

    Args:
        path: A ``.bk2`` file.
        scenario: The scenario that computes reward and done, as in
            :func:`retrovec.make`; ``None``: the game's ``scenario.json``. The movie
            itself records no rewards.
        info: The data file that names RAM variables; ``None``: the game's
            ``data.json``.
        inttype: Integrations to search for the movie's game: pass the one the movie
            was recorded with for a custom integration (``Integrations.DEFAULT``
            includes the integrations added in this process).

    Returns:
        An iterator of one :class:`ReplayStep` per recorded step.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a readable movie.
        UnknownGameError, RomNotImportedError: The movie's game cannot run here.

    Example:
        >>> steps = list(replay("movie.bk2"))  # doctest: +SKIP
        >>> observations = np.stack([s.observation for s in steps])  # doctest: +SKIP
        >>> actions = np.stack([s.action for s in steps])  # doctest: +SKIP
    """
    return _replay(_plan(path, scenario, info, inttype))


def _replay(plan: _Plan) -> Iterator[ReplayStep]:
    env = _replay_env(plan)
    try:
        yield from _play(env, plan.movie)
    finally:
        env.close()
        del env
        gc.collect()  # the emulator must be gone before this process makes another


def _play(
    env: stable_retro.RetroEnv,
    movie: stable_retro.Movie,
    after_frame: Callable[[], None] | None = None,
) -> Iterator[ReplayStep]:
    """Replay ``movie`` on ``env``; ``after_frame`` runs after the reset's frame and after
    every recorded step (to read the emulator then, say its sound)."""
    observation, _ = env.reset()
    if after_frame is not None:
        after_frame()
    players = int(movie.players)
    buttons = env.num_buttons
    while movie.step():
        keys = np.array(
            [movie.get_key(i, p) for p in range(players) for i in range(buttons)],
            dtype=np.uint8,
        )
        next_observation, reward, terminated, _, step_info = env.step(keys)
        if after_frame is not None:
            after_frame()
        rewards = np.asarray(reward, dtype=np.float64).reshape(players)
        yield ReplayStep(
            observation=observation,
            action=keys,
            reward=float(rewards[0]),
            rewards=rewards,
            terminated=bool(terminated),
            info=dict(step_info),
            next_observation=next_observation,
        )
        observation = next_observation


def movie_to_mp4(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    fps: float | None = None,
    audio: bool = True,
    inttype: Integrations = Integrations.DEFAULT,
) -> str:
    """Render a ``.bk2`` movie to an mp4 video, with the game's sound, in this process.

    The same as :func:`retrovec.retro.video.movie_to_video`; see there. Needs the
    ``video`` extra: ``pip install 'retrovec[video]'``.

    Args:
        path: A ``.bk2`` file.
        out: The video file; ``None``: ``path`` with ``.mp4`` in place of ``.bk2``.
        fps: Frames per second; ``None``: the emulator's own frame rate (about 60).
        audio: Add the game's sound (an AAC track); ``False``: video only.
        inttype: Integrations to search for the movie's game, as in :func:`replay`.

    Returns:
        The path of the video, whose frames are the start frame then one per step.

    Raises:
        ModuleNotFoundError: ``imageio``/``imageio-ffmpeg`` is missing (with the
            install hint).
        FileNotFoundError, ValueError, UnknownGameError, RomNotImportedError: as
            :func:`replay`.

    Example:
        >>> movie_to_mp4("movies/env-000/Airstriker-Genesis-v0-Level1-000000.bk2")  # doctest: +SKIP
        'movies/env-000/Airstriker-Genesis-v0-Level1-000000.mp4'
    """
    from retrovec.retro.video import movie_to_video

    return movie_to_video(path, out, fps=fps, audio=audio, inttype=inttype)
