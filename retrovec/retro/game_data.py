"""Keep stable-retro's own ``env.data`` true while the fast path skips ``update_ram``.

The fast path (:class:`~retrovec.retro.wrappers.fused.FusedFrameSkip`) computes rewards
and episode ends with :class:`~retrovec.retro.scenario.FastScenario` instead of calling
``data.update_ram()`` after every frame. stable-retro's ``GameData`` computes its
``current_reward()``, ``total_reward()`` and ``is_done()`` inside ``update_ram`` only, so
without help they would still show the values of the last reset, and a wrapper that
calls ``data.update_ram()`` itself (or ``env.unwrapped.step()``, which calls it) would
take its deltas against RAM that is many frames old, and the fast path would then count
those frames' rewards a second time.

Two choices were possible: notice when someone reads those accessors and recompute
them then, or keep them true as the frames go by. Recomputing later is impossible
(a total needs every frame's reward), so :class:`TrackedScenario` keeps them, cheaply:
per frame it stores the rewards and the done flag it has just computed anyway, and adds
a nonzero reward to a 32-bit running total, as stable-retro's ``Scenario::update`` does.
:class:`TrackedGameData` then stands in for ``env.data`` (it forwards everything else to
the real ``GameData``) so that:

* ``current_reward(player)``, ``total_reward(player)`` and ``is_done()`` return what
  stable-retro's would after the same frames (the same 32-bit sums, the reset frame's
  reward included, the same ``ValueError`` for a player out of range);
* ``update_ram()``, called by anyone (a wrapper, ``RetroEnv.step``, ``RetroEnv.reset``),
  still updates the real ``GameData`` and also runs the fast scenario on the frames
  since its last update: its deltas are exactly those stable-retro would take, and the
  fast path goes on from there without counting any frame twice;
* ``reset()`` clears the current reward, the total and the done flag, as stable-retro's
  ``Scenario::restart`` does;
* ``load()`` (a new data or scenario file) is the one thing the fast scenario cannot
  follow: it stops following (:attr:`TrackedScenario.following` turns ``False``), the
  accessors are the real ``GameData``'s again, and the fast path, which checks
  :meth:`TrackedScenario.follows` every step, goes back to ``update_ram`` per frame. So
  does replacing ``env.data`` with another object.

``lookup_value`` and ``lookup_all`` read the live RAM in stable-retro itself and are
always true.

Example:
    >>> import stable_retro
    >>> from retrovec.retro.scenario import remember_scenario_path, scenario_path
    >>> env = stable_retro.make("Airstriker-Genesis-v0", render_mode=None)
    >>> remember_scenario_path(env, scenario_path("Airstriker-Genesis-v0"))
    >>> scenario = TrackedScenario.for_env(env)
    >>> type(env.data).__name__
    'TrackedGameData'
    >>> _ = env.reset(seed=0)
    >>> total = 0.0
    >>> for _ in range(300):
    ...     env.em.set_button_mask(env.action_to_array(env.action_space.sample())[0], 0)
    ...     env.em.step()
    ...     rewards, done = scenario.update()
    ...     total += rewards[0]
    >>> env.data.total_reward() == total
    True
    >>> env.close()
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrovec.retro.scenario import FastScenario

__all__ = ["TrackedGameData", "TrackedScenario"]


class TrackedScenario(FastScenario):
    """A :class:`~retrovec.retro.scenario.FastScenario` that also keeps what stable-retro's
    ``GameData`` would report: the last frame's rewards, the done flag and the totals.

    Build it with :meth:`for_env`, which also puts its :class:`TrackedGameData` in the
    env's ``data`` attribute.

    Attributes:
        data: The :class:`TrackedGameData` standing in for the env's ``GameData``.
        following: ``False`` once the env's data changed in a way the rules cannot follow
            (``data.load(...)``); the accessors then answer from the real ``GameData``.
    """

    def __init__(self, rules: Any, data: Any) -> None:
        super().__init__(rules, data)
        self.data = TrackedGameData(data, self)
        self.following = True
        self._players = len(rules.players)
        self.clear()

    def clear(self) -> None:
        """Zero the current rewards, the totals and the done flag (``data.reset()``)."""
        self.rewards: tuple[float, ...] = (0.0,) * self._players
        self.done = False
        self._totals = [np.float32(0.0)] * self._players

    def update(self) -> tuple[tuple[float, ...], bool]:
        """Evaluate the frame just emulated, as ``FastScenario.update``, and keep the result."""
        if not self._previous and self.rules.variables:
            # No RAM to take deltas against yet (the first update_ram after the emulator
            # was built): stable-retro's lookupDelta gives 0 then, and so do we.
            self.restart()
        rewards, done = super().update()
        self.rewards = rewards
        self.done = done
        for player, reward in enumerate(rewards):
            if reward:  # Scenario::update: m_totalReward[i] += m_reward[i], in float32
                self._totals[player] += np.float32(reward)
        return rewards, done

    def current(self, player: int) -> float:
        """The last frame's reward of ``player`` (0 for players the file defines none for)."""
        return self.rewards[player] if player < self._players else 0.0

    def total(self, player: int) -> float:
        """The sum of ``player``'s rewards since the last ``data.reset()``."""
        return float(self._totals[player]) if player < self._players else 0.0

    def follows(self, env: Any) -> bool:
        """Whether these rules still compute ``env``'s rewards: ``env.data`` is still this
        scenario's :class:`TrackedGameData` and no new data or scenario file was loaded."""
        return self.following and env.data is self.data

    def stop_following(self) -> None:
        """Hand the rewards back to stable-retro (see the module docstring)."""
        if self.following:
            self.following = False
            # The real GameData last saw the RAM at its last update_ram: take the deltas
            # of the next one against the RAM of now, as the fast path has done.
            self.data.real.update_ram()

    @classmethod
    def for_env(cls, env: Any) -> TrackedScenario | None:
        """The tracked scenario of a ``RetroEnv``, its ``data`` replaced by the stand-in.

        Returns:
            ``None`` when the scenario does not compile (see
            :meth:`FastScenario.for_env`): ``env.data`` is then left as it is. An env
            whose ``data`` already is a following :class:`TrackedGameData` gets that
            one's scenario back.
        """
        data = getattr(env, "data", None)
        if isinstance(data, TrackedGameData):
            scenario = data.scenario
            return scenario if scenario.following else None
        scenario = super().for_env(env)
        if scenario is not None:
            env.data = scenario.data
        return scenario  # type: ignore[return-value]


class TrackedGameData:
    """Stands in for a ``stable_retro.data.GameData`` whose rewards a
    :class:`TrackedScenario` computes; everything else is forwarded to it.

    Args:
        data: The real ``GameData``.
        scenario: The tracked scenario computing its rewards.

    Attributes:
        real: The real ``GameData``.
        scenario: The :class:`TrackedScenario`.
    """

    def __init__(self, data: Any, scenario: TrackedScenario) -> None:
        self.real = data
        self.scenario = scenario

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def update_ram(self) -> None:
        """``GameData.update_ram()``, and the fast scenario's update of the same frames."""
        self.real.update_ram()
        if self.scenario.following:
            self.scenario.update()

    def reset(self) -> None:
        """``GameData.reset()``: the rewards, totals and done flag start over."""
        self.real.reset()
        self.scenario.clear()

    def load(self, *args: Any, **kwargs: Any) -> Any:
        """``GameData.load(...)``: new rules, which the fast scenario stops following."""
        self.scenario.stop_following()
        return self.real.load(*args, **kwargs)

    def current_reward(self, player: int = 0) -> float:
        """The reward of ``player`` on the last frame."""
        value = self.real.current_reward(player)  # its ValueError for a bad player
        return self.scenario.current(player) if self.scenario.following else value

    def total_reward(self, player: int = 0) -> float:
        """The sum of ``player``'s rewards since the last ``reset()``."""
        value = self.real.total_reward(player)
        return self.scenario.total(player) if self.scenario.following else value

    def is_done(self) -> bool:
        """Whether the scenario's done condition held on the last frame."""
        value = self.real.is_done()
        return self.scenario.done if self.scenario.following else value
