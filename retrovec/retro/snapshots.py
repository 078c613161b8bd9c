"""Snapshots: save one env's emulator and episode, load it into any env of the same game.

:func:`retrovec.make` puts :class:`SaveStates` outside every env's wrappers, so that a
:class:`Snapshot` holds everything the episode needs to go on:

* the emulator (``em.get_state()``, the bytes of a ``.state`` file) and its last frame;
* the values the reward and done rules take deltas against: the fast path's
  (:class:`~retrovec.retro.scenario.FastScenario`), or stable-retro's own ``GameData``
  when the fast path is off (it is rebased on the loaded RAM);
* each wrapper's episode state: ``TimeLimit``'s elapsed steps, sticky actions' previous
  action, the frame stack, ``RecordEpisodeStatistics``' sums (a wrapper of your own that
  keeps episode state may define ``episode_state()`` and ``restore_episode_state(state)``);
* the env's random generator (sticky actions and no-op starts draw from it);
* the last observation and info the env returned.

It pickles, so it travels through ``call``, and loads into any env of the same game
built with the same wrappers::

    snapshot = envs.at(0).call("save_snapshot", label="cell-7")
    observation, info = envs.at(3).call("load_snapshot", snapshot)        # now
    envs.at([1, 2]).call("load_snapshot", snapshot, when="next_reset")    # next episode

``when="now"`` continues the episode from the snapshot: from then on env 3 returns
exactly the frames, rewards and flags env 0 returned after the save for the same actions.
The call returns the snapshot's observation and info, since the vector env's last batch
still shows env 3 before the load; a pending autoreset of env 3 is dropped. It refuses to
load into an env that is recording a movie (the movie could not show the jump: use
``when="next_reset"``). ``when="next_reset"`` starts env 3's next episode (only that one)
from the snapshot's emulator, as it would start from a ``.state`` file: the episode's
counters start at zero, no-op starts run, ``statename`` and ``info["state"]`` are the
snapshot's label. :meth:`Snapshot.to_state_file` writes a ``.state`` file that
``retrovec.make(state=...)`` and stable-retro accept.

A snapshot holds no "episode over" flag: one saved on the step that ended an episode
continues past that end when loaded ``"now"`` (save mid-episode, as Go-Explore does).
stable-retro's own ``data.total_reward()`` counts from the load.

One limit comes from the emulators: a few cores keep some input state outside their save
state. Stella's paddle games (Pong, Breakout) do: after a load they go on exactly as every
other env that loaded the same snapshot, but not as the env that saved it, which never
went through a load. Joystick games (Freeway) and the Genesis are exact
(``tests/retro/test_snapshots.py``).

Example:
    >>> import numpy as np, retrovec
    >>> with retrovec.make("Airstriker-Genesis-v0", num_envs=2) as envs:
    ...     _ = envs.reset(seed=0)
    ...     snapshot = envs.at(0).call("save_snapshot")
    ...     observation, info = envs.at(1).call("load_snapshot", snapshot)
    ...     actions = np.ones((2, 12), np.int8)
    ...     observations = envs.step(actions)[0]
    ...     bool((observations[0] == observations[1]).all())
    True
    >>> snapshot  # doctest: +ELLIPSIS
    Snapshot(game='Airstriker-Genesis-v0', label='snapshot', emulator=... bytes, layers=[...])
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import os
from collections.abc import Callable
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from retrovec.core.server import Restored

__all__ = ["WHEN", "SaveStates", "Snapshot"]

WHEN = ("now", "next_reset")
"""When :meth:`SaveStates.load_snapshot` applies a snapshot."""


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Snapshot:
    """One env's emulator and episode at one moment (see the module docstring).

    Attributes:
        game: The game id of the env it was saved in.
        label: A name for the state (``statename`` and ``info["state"]`` of an episode
            started from it).
        emulator: The emulator's serialized state (``RetroEnv.em.get_state()``).
        frame: The emulator's last observation (``RetroEnv.img``, or ``ram`` with RAM
            observations).
        observation: The last observation the env returned.
        info: The last info the env returned.
        rng: The state of the env's ``np_random`` bit generator.
        layers: ``(wrapper class name, its episode state)`` for each layer of the env,
            outermost first.
    """

    game: str
    label: str
    emulator: bytes
    frame: np.ndarray | None
    observation: Any
    info: dict[str, Any]
    rng: dict[str, Any]
    layers: tuple[tuple[str, Any], ...]

    def __repr__(self) -> str:
        names = [name for name, _ in self.layers]
        return (
            f"Snapshot(game={self.game!r}, label={self.label!r}, "
            f"emulator={len(self.emulator)} bytes, layers={names})"
        )

    def to_state_file(self, path: str | os.PathLike[str]) -> str:
        """Write the emulator as a gzip-compressed ``.state`` file and return its path.

        The file holds the emulator only (as stable-retro's own states do): an episode
        started from it runs one frame with no buttons and then the no-op starts, as
        from any state.
        """
        path = os.fspath(path)
        with gzip.open(path, "wb") as file:
            file.write(self.emulator)
        return path


# The episode state of gymnasium's wrappers: (get, set) per class. retrovec's own stateful
# layer (FusedFrameSkip) defines episode_state/restore_episode_state; the stateless ones
# (FrameSkip's scratch buffer, NoopReset, the observation transforms, PlayerRewards,
# GameVariables, StartStates) need nothing.
def _layer_codecs() -> dict[type, tuple[Callable[[Any], Any], Callable[[Any, Any], None]]]:
    from gymnasium.wrappers import (
        FrameStackObservation,
        RecordEpisodeStatistics,
        StickyAction,
        TimeLimit,
    )

    def set_fields(layer: Any, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(layer, name, copy.deepcopy(value))

    def fields(*names: str) -> Callable[[Any], dict[str, Any]]:
        return lambda layer: {name: copy.deepcopy(getattr(layer, name)) for name in names}

    def get_stack(layer: Any) -> list[Any]:
        return [copy.deepcopy(frame) for frame in layer.obs_queue]

    def set_stack(layer: Any, frames: list[Any]) -> None:
        layer.obs_queue.clear()
        layer.obs_queue.extend(copy.deepcopy(frames))

    return {
        TimeLimit: (fields("_elapsed_steps"), set_fields),
        StickyAction: (
            fields("last_action", "is_sticky_actions", "num_repeats", "repeats_taken"),
            set_fields,
        ),
        FrameStackObservation: (get_stack, set_stack),
        RecordEpisodeStatistics: (fields("episode_returns", "episode_lengths"), set_fields),
    }


def _observes_ram(retro: Any) -> bool:
    import stable_retro

    return retro._obs_type == stable_retro.Observations.RAM


def _layers(env: gym.Env) -> list[gym.Env]:
    """The wrappers of ``env``, outermost first, without the unwrapped env."""
    layers = []
    while isinstance(env, gym.Wrapper):
        layers.append(env)
        env = env.env
    return layers


def _layer_state(layer: gym.Env, codecs: dict) -> Any:
    own = getattr(type(layer), "episode_state", None)
    if callable(own):
        return own(layer)
    codec = codecs.get(type(layer))
    return None if codec is None else codec[0](layer)


def _restore_layer(layer: gym.Env, state: Any, codecs: dict) -> None:
    own = getattr(type(layer), "restore_episode_state", None)
    if callable(own):
        own(layer, state)
        return
    codec = codecs.get(type(layer))
    if codec is not None:
        codec[1](layer, state)


class SaveStates(gym.Wrapper):
    """Saves and loads :class:`Snapshot` s of the env it wraps (its outermost layer).

    Args:
        env: An env whose ``unwrapped`` is a :class:`stable_retro.RetroEnv`, with all its
            wrappers.
    """

    def __init__(self, env: gym.Env) -> None:
        import stable_retro

        if not isinstance(env.unwrapped, stable_retro.RetroEnv):
            raise TypeError(
                "SaveStates needs a stable-retro env, got one whose unwrapped env is "
                f"{type(env.unwrapped).__name__}"
            )
        super().__init__(env)
        self._last: tuple[Any, dict[str, Any]] | None = None

    @classmethod
    def wrap(cls, env: gym.Env) -> gym.Env:
        """``SaveStates(env)`` for a stable-retro env; any other env (a ``make_fn`` may
        build one) unchanged."""
        import stable_retro

        return cls(env) if isinstance(env.unwrapped, stable_retro.RetroEnv) else env

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset, remembering the observation and info for the next snapshot."""
        observation, info = self.env.reset(seed=seed, options=options)
        self._last = (observation, info)
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step, remembering the observation and info for the next snapshot."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._last = (observation, info)
        return observation, reward, terminated, truncated, info

    def save_snapshot(self, label: str = "snapshot") -> Snapshot:
        """A :class:`Snapshot` of this env now.

        Args:
            label: The snapshot's name: ``statename`` and ``info["state"]`` of an episode
                started from it, and the state part of a recorded movie's file name.

        Raises:
            RuntimeError: The env was not reset yet.
            TypeError: ``label`` is not a non-empty ``str``.
        """
        if self._last is None:
            raise RuntimeError("save_snapshot needs an episode: reset the env first")
        if not isinstance(label, str) or not label:
            raise TypeError(f"label must be a non-empty str, got {label!r}")
        retro = self.unwrapped
        frame = retro.ram if _observes_ram(retro) else retro.img
        codecs = _layer_codecs()
        observation, info = self._last
        return Snapshot(
            game=retro.gamename,
            label=label,
            emulator=retro.em.get_state(),
            frame=None if frame is None else np.array(frame),
            observation=copy.deepcopy(observation),
            info=copy.deepcopy(info),
            rng=copy.deepcopy(retro.np_random.bit_generator.state),
            layers=tuple(
                (type(layer).__qualname__, _layer_state(layer, codecs))
                for layer in _layers(self.env)
            ),
        )

    def load_snapshot(
        self, snapshot: Snapshot, when: str = "now", restore_rng: bool = True
    ) -> Restored | None:
        """Continue from ``snapshot`` now, or start the next episode from it.

        Args:
            snapshot: From :meth:`save_snapshot` in an env of the same game (any env:
                this one, another of the vector env, another vector env).
            when: ``"now"``: the episode goes on from the snapshot, counters and all.
                ``"next_reset"``: the next episode (only that one) starts from its
                emulator state.
            restore_rng: With ``when="now"``, also take the snapshot's random generator
                state (``np_random``), so that sticky actions and the no-op starts of
                later episodes repeat exactly; ``False`` keeps this env's. A curriculum's
                start-state draws (:mod:`retrovec.retro.curriculum`) stay this env's.

        Returns:
            With ``when="now"``, ``Restored(observation, info)``: the snapshot's last
            observation and info (a named tuple); else ``None``.

        Raises:
            TypeError: ``snapshot`` is not a :class:`Snapshot`.
            ValueError: A snapshot of another game, of an env with other wrappers
                (``"now"`` only), or a bad ``when``.
            RuntimeError: ``"now"`` while this env records a movie.
        """
        if not isinstance(snapshot, Snapshot):
            raise TypeError(
                f"load_snapshot needs a Snapshot from save_snapshot, got {type(snapshot).__name__}"
            )
        if when not in WHEN:
            raise ValueError(f"when must be one of {list(WHEN)}, got {when!r}")
        retro = self.unwrapped
        if snapshot.game != retro.gamename:
            raise ValueError(
                f"cannot load a snapshot of {snapshot.game!r} into an env of "
                f"{retro.gamename!r}: a snapshot loads only into an env of the same game"
            )
        if when == "next_reset":
            self.env.get_wrapper_attr("start_next_episode_from")(snapshot.emulator, snapshot.label)
            return None
        layers = _layers(self.env)
        names = [type(layer).__qualname__ for layer in layers]
        saved = [name for name, _ in snapshot.layers]
        if names != saved:
            raise ValueError(
                "cannot continue a snapshot saved under other wrappers: it was saved under "
                f"{saved}, this env has {names}; build both envs alike, or load it with "
                "when='next_reset'"
            )
        if retro.movie is not None:
            raise RuntimeError(
                "cannot load a snapshot mid-episode while this env records a movie (the "
                "movie could not show the jump): stop recording, or load it with "
                "when='next_reset'"
            )
        if not retro.em.set_state(snapshot.emulator):
            raise ValueError(f"the emulator of {retro.gamename!r} rejected the snapshot's state")
        if snapshot.frame is not None:
            if _observes_ram(retro):
                retro.ram = np.array(snapshot.frame)
            else:
                retro.img = np.array(snapshot.frame)
        # stable-retro's GameData takes deltas against the RAM of its last update_ram: make
        # that the loaded RAM (the second call), then clear the totals the first call's
        # delta against the old RAM added.
        data = retro.data
        data.update_ram()
        data.update_ram()
        data.reset()
        if restore_rng:
            retro.np_random.bit_generator.state = copy.deepcopy(snapshot.rng)
        codecs = _layer_codecs()
        for layer, (_, state) in zip(layers, snapshot.layers):
            _restore_layer(layer, state, codecs)
        observation, info = copy.deepcopy(snapshot.observation), copy.deepcopy(snapshot.info)
        self._last = (observation, info)
        return Restored(observation, info)
