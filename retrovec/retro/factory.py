"""Build stable-retro environments: many in worker processes, or one in this process.

:func:`make` is the entry point of retrovec: it checks its arguments in the parent, then
returns an :class:`~retrovec.core.process_backend.AsyncRetroVectorEnv` whose workers each build one
emulator (stable-retro allows one per process). :func:`make_env` builds a single env in
the calling process; the ``retrovec/Retro-v0`` gymnasium id builds with both
(:mod:`retrovec.retro.registration`).

Example:
    >>> from retrovec.retro.factory import make
    >>> envs = make("Airstriker-Genesis-v0", num_envs=2)  # doctest: +SKIP
    >>> obs, infos = envs.reset(seed=0)  # doctest: +SKIP
    >>> obs.shape  # doctest: +SKIP
    (2, 224, 320, 3)
    >>> envs.close()  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import stable_retro
from stable_retro import Actions, Observations, State
from stable_retro.data import Integrations

from retrovec.core.process_backend import AsyncRetroVectorEnv
from retrovec.core.processes import available_cores
from retrovec.errors import SpacesMismatchError
from retrovec.retro import make_checks as checks
from retrovec.retro.curriculum import WrapStartStates, check_state_weights, locate_states
from retrovec.retro.emulators import SECOND_EMULATOR, choose_context, second_emulator_error
from retrovec.retro.games import resolve_inttype, validate_data_file, validate_game, validate_state
from retrovec.retro.make_checks import check_wrappers as _check_wrappers
from retrovec.retro.make_checks import is_int_at_least as _is_int_at_least
from retrovec.retro.make_checks import spaces_mismatch
from retrovec.retro.multiplayer import PlayerRewards, fix_multi_discrete
from retrovec.retro.recording import RecordMovies, movie_folders
from retrovec.retro.scenario import remember_scenario_path, scenario_path
from retrovec.retro.snapshots import SaveStates
from retrovec.retro.variables import GameVariables
from retrovec.retro.wrappers.fused import fast_step
from retrovec.retro.wrappers.preprocessing import Preprocessing

__all__ = ["BACKENDS", "DEFAULT_GAME", "default_num_envs", "make", "make_env"]

BACKENDS = ("process", "ray")
"""Where :func:`make` runs the envs: worker processes here, or Ray actors."""

DEFAULT_GAME = "Airstriker-Genesis-v0"
"""The one game whose ROM ships with stable-retro."""

StateArg = str | os.PathLike[str] | State | None
Wrapper = Callable[[gym.Env], gym.Env]
DataFileArg = str | os.PathLike[str] | None

_ONE_GAME = "a game id string such as 'Airstriker-Genesis-v0'"
_ONE_STATE = "a state name, a .state path, a stable_retro.State or None (power-on)"
_ONE_FILE = "None, a file name without .json, or the path of a .json file"


def _is_state(value: object) -> bool:
    return value is None or isinstance(value, (str, os.PathLike, State))


def default_num_envs() -> int:
    """The number of envs :func:`make` builds when not told: the CPUs this process may use.

    Returns:
        ``len(os.sched_getaffinity(0))`` where the OS has it (it honours ``taskset`` and
        CPU pinning), else ``os.cpu_count()``, and at least 1.

    Example:
        >>> default_num_envs() >= 1
        True
    """
    return available_cores()


def _make_retro_env(
    game: str,
    state: StateArg,
    retro_kwargs: dict[str, Any],
    make_fn: Callable[..., gym.Env] | None,
    wrappers: tuple[Wrapper, ...],
    custom_paths: tuple[str, ...],
) -> gym.Env:
    """Build one env inside a worker; :func:`make` binds it with ``functools.partial``."""
    if custom_paths:  # a spawned worker does not inherit the parent's custom integrations
        Integrations._init()
        for path in custom_paths:
            if path not in Integrations.CUSTOM_PATHS:
                Integrations.add_custom_path(path)
    try:
        env = (make_fn or stable_retro.make)(game=game, state=state, **retro_kwargs)
    except RuntimeError as error:  # stable-retro's bare "one emulator per process"
        if SECOND_EMULATOR in str(error):
            raise second_emulator_error(error) from error
        raise
    fix_multi_discrete(env)  # stable-retro's own crashes with players >= 2
    if make_fn is None:  # lets FusedFrameSkip compute rewards without update_ram
        path = scenario_path(game, retro_kwargs.get("scenario"), retro_kwargs.get("inttype"))
        remember_scenario_path(env, path)
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def make(
    game: str | Sequence[str] = DEFAULT_GAME,
    num_envs: int | None = None,
    *,
    state: StateArg | Sequence[StateArg] = State.DEFAULT,
    scenario: DataFileArg | Sequence[DataFileArg] = None,
    info: DataFileArg | Sequence[DataFileArg] = None,
    players: int = 1,
    obs_type: Observations = Observations.IMAGE,
    use_restricted_actions: Actions = Actions.FILTERED,
    inttype: Integrations = Integrations.DEFAULT,
    render_mode: str | None = None,
    preprocessing: Preprocessing | None = None,
    max_episode_steps: int | None = None,
    wrappers: Sequence[Wrapper] = (),
    make_fn: Callable[..., gym.Env] | None = None,
    validate: bool | None = None,
    seed: int | None = None,
    multi_rewards: bool = False,
    record: str | os.PathLike[str] | bool | None = None,
    record_envs: Sequence[int] | None = None,
    record_keep_best: int | None = None,
    backend: str = "process",
    **vector_kwargs: Any,
) -> AsyncRetroVectorEnv:
    """Run ``num_envs`` copies of a stable-retro game, each in its own worker process.

    Every argument is checked in this process before any worker starts, so a typo fails
    fast with a message that says what was expected. The returned env is not reset: call
    ``envs.reset(seed=...)`` as with any gymnasium vector env.

    Args:
        game: A stable-retro game id (see :func:`retrovec.retro.games.list_games`), or a
            sequence with one per env: one vector env then plays several games (the
            Retro Contest setup), which must have the same spaces after ``preprocessing``
            and ``wrappers`` (e.g. ``Preprocessing(resize=...)`` and a
            :class:`~retrovec.retro.wrappers.Discretizer` with combos per console); if
            they do not, ``SpacesMismatchError`` says which envs play what and how to make
            them match. Each env's ``gamename`` attribute says its game.
        num_envs: How many envs (and worker processes). ``None``: the length of the
            sequences among ``game``, ``state``, ``scenario`` and ``info`` (which must
            agree), else :func:`default_num_envs` (the CPUs this process may use).
        state: Where each env starts: ``stable_retro.State.DEFAULT`` (the game's default
            state), ``stable_retro.State.NONE`` or ``None`` (power-on, as in stable-retro's
            docs), a state name such as ``"Level1"``, or the path (``str`` or
            ``pathlib.Path``, absolute or relative to the working directory) of a
            gzip-compressed ``.state`` file; or a sequence (list, tuple) of those with
            exactly one per env. A string is one state. Paths are made absolute ``str``
            here, also with a ``make_fn`` (a worker may run in another directory).
            Or a mapping ``{state: weight}`` (names or ``.state`` paths; weights >= 0,
            not all zero), for every env: each episode starts from a state drawn with
            probability proportional to its weight, from the env's own generator that
            ``reset(seed=...)`` seeds; the reset info's ``"state"`` names it, and
            ``envs.at(i).call("set_state_weights", {...})`` changes the weights (see
            :mod:`retrovec.retro.curriculum`).
        scenario: Name (without ``.json``) or ``.json`` path of the scenario file that
            defines reward and done; ``None``: the game's ``scenario.json``. Or a
            sequence with one per env.
        info: Name or ``.json`` path of the data file that names RAM variables;
            ``None``: the game's ``data.json``. Or a sequence with one per env.
        players: Number of players. Every ``use_restricted_actions`` works with two
            players, ``MULTI_DISCRETE`` included (stable-retro's own decoding of it
            crashes; retrovec gives those envs
            :func:`~retrovec.retro.multiplayer.fix_multi_discrete`'s); see
            ``docs/multiplayer.md``.
        obs_type: ``Observations.IMAGE`` (RGB frames) or ``Observations.RAM``.
        use_restricted_actions: The action space, as in :func:`stable_retro.make`.
        inttype: Integrations to search for the game. The default,
            ``Integrations.DEFAULT``, is stable-retro's: stable games plus whatever
            ``stable_retro.data.add_custom_integration`` added in this process. It is
            resolved here and the custom paths are re-added in each worker, so custom
            integrations also work with the ``spawn`` and ``forkserver`` start methods.
        render_mode: ``None`` or ``"rgb_array"``; workers cannot open windows.
        preprocessing: A :class:`~retrovec.retro.wrappers.Preprocessing` (frame skip and
            max-pooling, sticky actions, no-op starts, grayscale, crop, resize, frame
            stack, channels first), e.g. ``Preprocessing.atari()``. Each worker applies it
            to its env before ``max_episode_steps`` and ``wrappers``; see
            ``docs/preprocessing.md``.
        max_episode_steps: If given, each env is wrapped in
            :class:`gymnasium.wrappers.TimeLimit` after ``preprocessing`` and before
            ``wrappers``: it counts agent steps (calls to ``step``), so with
            ``frame_skip=4`` an episode lasts at most ``4 * max_episode_steps`` frames
            (no-op frames at reset not counted).
        wrappers: Callables ``env -> env`` applied in order inside each worker, e.g.
            gymnasium wrapper classes. With the ``spawn`` or ``forkserver`` start methods
            they must be picklable by cloudpickle.
        make_fn: Replaces :func:`stable_retro.make` in each worker. It is called as
            ``make_fn(game=..., state=..., scenario=..., info=..., players=...,
            obs_type=..., use_restricted_actions=..., inttype=..., render_mode=...)`` and
            must return a gymnasium env; it may build a ``RetroEnv`` subclass, register a
            custom integration first, or ignore ``game`` altogether.
        validate: Check ``game``, ``state``, ``scenario`` and ``info`` against the files
            of stable-retro's integrations. ``None`` (default): check them unless
            ``make_fn`` is given, since a custom ``make_fn`` may resolve them its own way
            (say, an integration it registers inside the worker). Pass ``True`` to keep
            the checks with a ``make_fn`` that uses stable-retro's integrations. Argument
            types, counts and ``render_mode`` are always checked.
        seed: If given, seeds ``action_space``, ``single_action_space``,
            ``observation_space`` and ``single_observation_space`` so that ``sample()`` is
            reproducible. It does not reset the env; pass a seed to ``reset`` for that.
            Note that ``RetroEnv.reset(seed=...)`` only seeds ``np_random``: the emulator
            itself is deterministic and restarts from the same state.
        multi_rewards: Also report every player's reward: the step info gets
            ``info["rewards"]``, shape ``(players,)`` (batched: ``(num_envs, players)``),
            while the reward stays player 1's; see :mod:`retrovec.retro.multiplayer`.
        record: A folder: every env writes one stable-retro ``.bk2`` movie per episode
            into its own subfolder ``record/env-{i:03d}/``, numbered after the movies
            already there, never overwriting one; see :mod:`retrovec.retro.recording`. The
            folders are created here. ``True``: the default folder
            ``./retrovec-movies/<game>/`` (relative to this process's working
            directory), so env ``i`` records into
            ``./retrovec-movies/<game>/env-{i:03d}/``. Every env can also start and stop
            recording at runtime (``envs.at([0, 2]).call("start_recording", folder)``,
            ``call("stop_recording")``), with or without ``record``.
        record_envs: Record only these envs (indices), e.g. ``record="movies",
            record_envs=[0, 3]``; ``None``: every env.
        record_keep_best: Keep only each recording env's N movies with the highest
            returns (see :class:`~retrovec.retro.recording.RecordMovies`); ``None``: all.
        **vector_kwargs: Passed to :class:`~retrovec.core.process_backend.AsyncRetroVectorEnv`:
            ``shared_memory``, ``copy``, ``context``, ``daemon``, ``observation_mode``,
            ``autoreset_mode``, ``timeout``. ``context`` (the start method) not given:
            the platform's default, except that when it is ``fork`` and this process
            holds a live stable-retro env (which forked workers would inherit, and
            stable-retro allows one emulator per process), ``"forkserver"``; see
            :mod:`retrovec.retro.emulators`.
        backend: ``"process"`` (default): every env in a worker process of this
            machine. ``"ray"``: Ray env runners anywhere in a Ray cluster, each a process
            vector env for ``envs_per_runner`` envs, behind the same API
            (:class:`~retrovec.core.ray_runners.RayRunnerVectorEnv`; needs
            ``pip install 'retrovec[ray]'``; see ``docs/ray.md``). ``vector_kwargs`` then
            go to that class (``envs_per_runner``, ``num_cpus``, ``runner_options``,
            ``placement_group``, ``copy``, ...).

    Returns:
        The vector env, not yet reset. Close it (or use it in a ``with`` block) to stop
        the workers.

    Raises:
        UnknownGameError: No integration has ``game``; the message lists close names.
        RomNotImportedError: The game's ROM is not imported; the message says how.
        UnknownStateError: The game has no such state; the message lists its states.
        InvalidGameError: ``num_envs`` < 1, a per-env sequence whose length is not
            ``num_envs``, or a missing scenario or info file. When an argument is given
            per env, these messages start with the envs concerned (``"env 2: ..."``).
        SpacesMismatchError: The envs' spaces differ (several games: the message lists
            which envs play what and how to make the spaces match).
        ValueError: ``render_mode`` is not ``None`` or ``"rgb_array"``; bad ``players``,
            ``max_episode_steps`` or ``seed``; ``record`` is a file; ``preprocessing``
            that needs images with ``obs_type=Observations.RAM``; ``state`` weights
            that are negative, not finite or all zero.
        TypeError: An argument of the wrong type, such as ``wrappers`` that are not a
            sequence of callables.

    Example:
        >>> import retrovec
        >>> envs = retrovec.make("Airstriker-Genesis-v0", num_envs=2,
        ...                      state=["Level1", "/path/to/Later.state"])  # doctest: +SKIP
        >>> with envs:  # doctest: +SKIP
        ...     obs, infos = envs.reset(seed=0)
        ...     obs, rewards, terminations, truncations, infos = envs.step(
        ...         envs.action_space.sample())

        Two Atari games in one vector env (same console, so the same buttons):

        >>> envs = retrovec.make(["Pong-Atari2600-v0", "Breakout-Atari2600-v0"],
        ...                      preprocessing=retrovec.Preprocessing.atari())  # doctest: +SKIP
        >>> envs.get_attr("gamename")  # doctest: +SKIP
        ('Pong-Atari2600-v0', 'Breakout-Atari2600-v0')
    """
    weights = None
    if isinstance(state, Mapping):  # a curriculum: StartStates draws a state per episode
        weights = check_state_weights(state)
        state = next(iter(weights))  # what each env is built with, before its first draw
    per_env_args = {"game": game, "state": state, "scenario": scenario, "info": info}
    num_envs = checks.infer_num_envs(num_envs, per_env_args, default_num_envs())
    games = checks.per_env("game", game, num_envs, checks.is_game, _ONE_GAME)
    states = checks.per_env("state", state, num_envs, _is_state, _ONE_STATE)
    states = [State.NONE if s is None else s for s in states]  # None: power-on
    scenarios = checks.per_env("scenario", scenario, num_envs, checks.is_data_file, _ONE_FILE)
    infos = checks.per_env("info", info, num_envs, checks.is_data_file, _ONE_FILE)
    # Errors name the envs when an argument differs per env ("env 2: Unknown game ...").
    name_envs = any(not isinstance(v, (str, os.PathLike, State, type(None)))
                    for v in per_env_args.values())
    if render_mode not in (None, "rgb_array"):
        raise ValueError(
            f"render_mode must be None or 'rgb_array', got {render_mode!r}: the envs run in "
            "worker processes, which cannot open windows; use 'rgb_array' and show the "
            "frames from envs.render() yourself."
        )
    if not _is_int_at_least(players, 1):
        raise ValueError(f"players must be an int >= 1, got {players!r}")
    if max_episode_steps is not None and not _is_int_at_least(max_episode_steps, 1):
        raise ValueError(
            f"max_episode_steps must be None or an int >= 1, got {max_episode_steps!r}"
        )
    if seed is not None and not _is_int_at_least(seed, 0):
        raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if not isinstance(multi_rewards, bool):
        raise TypeError(f"multi_rewards must be True or False, got {multi_rewards!r}")
    movie_dirs = movie_folders(record, record_envs, games, record_keep_best)
    wrappers = _check_wrappers(wrappers)
    if make_fn is not None and not callable(make_fn):
        raise TypeError(f"make_fn must be callable like stable_retro.make, got {make_fn!r}")
    if not isinstance(obs_type, Observations):
        raise TypeError(f"obs_type must be a stable_retro.Observations, got {obs_type!r}")
    if not isinstance(use_restricted_actions, Actions):
        raise TypeError(
            f"use_restricted_actions must be a stable_retro.Actions, got {use_restricted_actions!r}"
        )
    if preprocessing is not None:
        if not isinstance(preprocessing, Preprocessing):
            raise TypeError(
                "preprocessing must be None or a retrovec.retro.wrappers.Preprocessing, e.g. "
                f"Preprocessing.atari(), got {preprocessing!r}"
            )
        if obs_type == Observations.RAM and preprocessing.image_steps:
            raise ValueError(
                f"preprocessing {', '.join(preprocessing.image_steps)} need image "
                "observations, but obs_type is Observations.RAM; with RAM use only "
                "frame_skip (with max_pool=False), sticky_action_prob, noop_max and "
                "frame_stack"
            )

    inttype = resolve_inttype(inttype)
    if validate or (validate is None and make_fn is None):
        checks.validate_envs(games, states, scenarios, infos, inttype, name_envs)
    else:  # str paths (stable-retro takes no Path), absolute (a worker may chdir)
        for values in (states, scenarios, infos):
            values[:] = [checks.absolute_file(v) for v in values]
    locations = None if weights is None else locate_states(
        games, weights, inttype, validate or (validate is None and make_fn is None)
    )

    if max_episode_steps is not None:
        limit = functools.partial(gym.wrappers.TimeLimit, max_episode_steps=max_episode_steps)
        wrappers = (limit, *wrappers)
    if multi_rewards:  # outside preprocessing, whose frame skip sums per-player rewards
        wrappers = (PlayerRewards, *wrappers)
    # Above the preprocessing: the game variables in reset infos and each episode's start
    # state; outermost, seeing every layer: snapshots (retrovec.retro.snapshots).
    start = WrapStartStates(weights, locations, inttype)
    wrappers = (GameVariables.wrap, start, *wrappers, SaveStates.wrap)
    if preprocessing is not None:  # inside the TimeLimit: max_episode_steps counts agent steps
        wrappers = (preprocessing.wrap, *wrappers)
    else:  # RetroEnv.step without update_ram; Preprocessing(fused=False) turns it off
        wrappers = (fast_step, *wrappers)
    # Movies: outermost in every env, so that any env can start recording at runtime; they
    # see every frame through RetroEnv.movie wherever they sit (retrovec.retro.recording).
    for directory in movie_dirs:
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
    per_env: list[tuple[Wrapper, ...]] = [
        (functools.partial(RecordMovies, directory=d, index=i,
                           keep_best=record_keep_best if d else None),)
        for i, d in enumerate(movie_dirs)
    ]
    custom_paths: tuple[str, ...] = ()
    if inttype & Integrations.CUSTOM_ONLY:
        Integrations._init()
        custom_paths = tuple(Integrations.CUSTOM_PATHS)
    retro_kwargs = dict(
        scenario=scenario,
        info=info,
        players=players,
        obs_type=obs_type,
        use_restricted_actions=use_restricted_actions,
        inttype=inttype,
        render_mode=render_mode,
    )
    env_fns = [
        functools.partial(
            _make_retro_env, g, s, dict(retro_kwargs, scenario=sc, info=inf), make_fn,
            (*wrappers, *last), custom_paths,
        )
        for g, s, sc, inf, last in zip(games, states, scenarios, infos, per_env)
    ]
    # Retro button spaces: actions are checked in the parent, and 0/1 floats (a Bernoulli
    # sample from a policy) are accepted (see AsyncRetroVectorEnv's validate_actions).
    vector_kwargs.setdefault("validate_actions", True)
    if backend == "process":  # forkserver when fork would inherit this process's emulator
        vector_kwargs["context"] = choose_context(vector_kwargs.get("context"))
    try:
        if backend == "ray":
            from retrovec.core.ray_runners import RayRunnerVectorEnv  # Ray: optional extra

            envs = RayRunnerVectorEnv(env_fns, **vector_kwargs)
        else:
            envs = AsyncRetroVectorEnv(env_fns, **vector_kwargs)
    except SpacesMismatchError as error:
        if len(set(zip(games, scenarios, infos))) < 2:
            raise
        # Several games: show every game's spaces, each from one env built alone in a
        # process here (Ray's envs may not be buildable on this machine: left out).
        context = vector_kwargs.get("context")
        probe = None if backend == "ray" else (
            lambda i: checks.probe_spaces(env_fns[i], context)
        )
        raise spaces_mismatch(error, games, scenarios, infos, probe) from error
    if seed is not None:
        try:
            for space in (
                envs.action_space,
                envs.single_action_space,
                envs.observation_space,
                envs.single_observation_space,
            ):
                space.seed(seed)
        except BaseException:
            envs.close()
            raise
    return envs


def make_env(
    game: str = DEFAULT_GAME,
    state: StateArg = State.DEFAULT,
    *,
    inttype: Integrations = Integrations.DEFAULT,
    render_mode: str | None = None,
    preprocessing: Preprocessing | None = None,
    **retro_kwargs: Any,
) -> gym.Env:
    """Build one stable-retro env in this process, after the same checks as :func:`make`.

    ``gymnasium.make("retrovec/Retro-v0", ...)`` builds with it. Unlike
    :func:`stable_retro.make`, ``render_mode`` defaults to ``None`` rather than
    ``"human"`` (which opens a window). Only one emulator may exist per process.

    Args:
        game: A stable-retro game id.
        state: A ``stable_retro.State``, ``None`` (power-on), state name, or ``.state``
            path.
        inttype: Integrations to search for the game.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``.
        preprocessing: As in :func:`make`: applied to the env before it is returned
            (``gymnasium.make``'s ``max_episode_steps`` then wraps it, as in :func:`make`).
        **retro_kwargs: Other arguments of :class:`stable_retro.RetroEnv`: ``scenario``,
            ``info``, ``players``, ``obs_type``, ``use_restricted_actions``, ``record``.

    Returns:
        A :class:`stable_retro.RetroEnv`, wrapped by ``preprocessing`` if given.

    Raises:
        UnknownGameError, RomNotImportedError, UnknownStateError: as :func:`make`.

    Example:
        >>> env = make_env("Airstriker-Genesis-v0", state="Level1")  # doctest: +SKIP
        >>> obs, info = env.reset()  # doctest: +SKIP
        >>> env.close()  # doctest: +SKIP
    """
    inttype = resolve_inttype(inttype)
    validate_game(game, inttype)
    state = validate_state(game, State.NONE if state is None else state, inttype)
    for kind in ("scenario", "info"):
        retro_kwargs[kind] = validate_data_file(game, retro_kwargs.get(kind), kind, inttype)
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise TypeError(
            "preprocessing must be None or a retrovec.retro.wrappers.Preprocessing, got "
            f"{preprocessing!r}"
        )
    env = stable_retro.make(
        game=game, state=state, inttype=inttype, render_mode=render_mode, **retro_kwargs
    )
    remember_scenario_path(env, scenario_path(game, retro_kwargs.get("scenario"), inttype))
    fix_multi_discrete(env)
    if preprocessing is None:
        return env
    try:
        return preprocessing.wrap(env)
    except BaseException:
        env.close()  # free this process's one emulator slot
        raise
