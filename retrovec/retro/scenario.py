"""A game's reward and episode end, computed from the live RAM without ``update_ram``.

stable-retro evaluates a game's scenario file (``scenario.json``: reward variables, done
conditions) in C++ inside ``GameData.update_ram()``, which ``RetroEnv.step`` calls after
every emulator frame. Before evaluating, that call clones the console's whole RAM (64 KiB
on the Genesis) so that the next frame can take deltas against the copy: on Airstriker it
costs 67 µs of a 420 µs ``RetroEnv.step``, 16% of every frame, although the scenario reads
three variables. :class:`FastScenario` reads the same file and evaluates the same rules
from just the variables it names (``GameData.lookup_value``, under a microsecond each),
remembering their previous values itself. Written by hand because it runs once per
emulator frame on the hot path, and nothing in stable-retro exposes the rules.

It follows stable-retro's ``Scenario`` exactly: ``measurement`` ``delta`` (the default for
rewards) or ``absolute`` (the default for done conditions), every ``op`` with its
``reference``, ``reward``/``penalty`` multipliers in 32-bit floats, the per-frame ``time``
reward, per-player ``rewards``, done ``condition`` ``any``/``all`` and nested ``nodes``.
Scenarios that run Lua (``script``, ``scripts``) or hold values it cannot read the way the
C++ does are not compiled: :meth:`FastScenario.for_env` returns ``None`` and the caller
keeps calling ``update_ram``.

One difference cannot be ruled out without knowing the C++ hash map's iteration order: a
player's reward terms are summed in 32-bit floats, and when two or more terms of one
frame are nonzero and are not all whole numbers whose magnitudes add up to less than
2**24, the order of the additions can change the last bit. Scenarios with more than one
reward variable are therefore compiled only when every multiplier is a whole number, and
such a frame (a reward of 16.7 million or more in one frame) is the only place the sums
can differ.

A :class:`FastScenario` must see every frame: once it drives an env, stepping the
``RetroEnv`` directly (``env.unwrapped.step``) would take its first delta against the
RAM of the last ``update_ram`` call, which may be many frames old.
"""

from __future__ import annotations

import json
import operator
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FastScenario", "ScenarioRules", "remember_scenario_path", "scenario_path"]

_INT64 = 1 << 63

# stable-retro's Retro::calculate(op, reference, value) for each op name; an unknown or
# missing name is NOOP, which returns the value itself.
_OPS: dict[str, Callable[[int, int], int]] = {
    "equal": lambda value, reference: int(value == reference),
    "negative-equal": lambda value, reference: int(value == -reference),
    "not-equal": lambda value, reference: int(value != reference),
    "less-than": lambda value, reference: int(value < reference),
    "greater-than": lambda value, reference: int(value > reference),
    "less-or-equal": lambda value, reference: int(value <= reference),
    "greater-or-equal": lambda value, reference: int(value >= reference),
    "nonzero": lambda value, reference: int(value != 0),
    "zero": lambda value, reference: int(value == 0),
    "positive": lambda value, reference: int(value > 0),
    "negative": lambda value, reference: int(value < 0),
    "sign": lambda value, reference: (value > 0) - (value < 0),
}


def _noop(value: int, reference: int) -> int:
    return value


class _Unsupported(Exception):
    """The scenario uses something this module does not evaluate exactly."""


def _number(spec: dict[str, Any], key: str, kind: type) -> Any:
    value = spec.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise _Unsupported(f"{key}={value!r}")
    return value


def _word(spec: dict[str, Any], key: str) -> str:
    value = spec.get(key, "")
    if not isinstance(value, str):
        raise _Unsupported(f"{key}={value!r}")
    return value


@dataclass(frozen=True)
class _Measure:
    """One variable measured as stable-retro's ``Scenario::calculate`` does."""

    name: str
    delta: bool
    op: Callable[[int, int], int]
    reference: int

    @classmethod
    def parse(cls, name: str, spec: Any, delta_by_default: bool) -> _Measure:
        if not isinstance(spec, dict):
            raise _Unsupported(f"variable {name!r}: {spec!r}")
        measurement = _word(spec, "measurement")
        delta = {"delta": True, "absolute": False}.get(measurement, delta_by_default)
        return cls(name, delta, _OPS.get(_word(spec, "op"), _noop), _number(spec, "reference", int))

    def measure(self, values: dict[str, int], deltas: dict[str, int]) -> int:
        return self.op(deltas[self.name] if self.delta else values[self.name], self.reference)


@dataclass(frozen=True)
class _RewardTerm:
    measure: _Measure
    reward: np.float32
    penalty: np.float32

    @classmethod
    def parse(cls, name: str, spec: Any) -> _RewardTerm:
        measure = _Measure.parse(name, spec, delta_by_default=True)
        return cls(
            measure,
            np.float32(_number(spec, "reward", float)),
            np.float32(_number(spec, "penalty", float)),
        )

    def value(self, measured: int) -> np.float32:
        # RewardSpec::calculate: float measured = ...; scaled by penalty or reward.
        as_float = np.float32(measured)
        if measured < 0:
            return as_float * self.penalty
        if measured > 0:
            return as_float * self.reward
        return as_float


@dataclass(frozen=True)
class _PlayerReward:
    time: np.float32  # the time term: calculate(value=1, delta=1), constant per frame
    terms: tuple[_RewardTerm, ...]
    whole: bool  # every multiplier a whole number: small sums are exact in any order

    @classmethod
    def parse(cls, spec: Any) -> _PlayerReward:
        if not isinstance(spec, dict) or "script" in spec:
            raise _Unsupported("a reward script")
        variables = spec.get("variables", {})
        if not isinstance(variables, dict):
            raise _Unsupported(f"reward variables {variables!r}")
        terms = tuple(_RewardTerm.parse(name, var) for name, var in variables.items())
        time = _RewardTerm.parse("", spec.get("time", {}))
        whole = all(
            float(m).is_integer() and abs(m) < 2**24
            for term in (time, *terms)
            for m in (term.reward, term.penalty)
        )
        if len(terms) > 1 and not whole:
            raise _Unsupported("several reward variables with fractional multipliers")
        return cls(time.value(time.measure.op(1, time.measure.reference)), terms, whole)

    def reward(self, values: dict[str, int], deltas: dict[str, int]) -> float:
        total = self.time
        for term in self.terms:
            measured = term.measure.measure(values, deltas)
            if measured:
                total = total + term.value(measured)
        return float(total)


@dataclass(frozen=True)
class _DoneNode:
    all_of: bool
    tests: tuple[_Measure, ...]
    nodes: tuple[_DoneNode, ...]

    @classmethod
    def parse(cls, spec: Any, top: bool) -> _DoneNode:
        if not isinstance(spec, dict) or (top and "script" in spec):
            raise _Unsupported("a done script")
        variables = spec.get("variables", {})
        nodes = spec.get("nodes", {})
        if not isinstance(variables, dict) or not isinstance(nodes, dict):
            raise _Unsupported(f"done {spec!r}")
        return cls(
            all_of=spec.get("condition") == "all",
            tests=tuple(
                _Measure.parse(name, var, delta_by_default=False)
                for name, var in variables.items()
            ),
            nodes=tuple(cls.parse(node, top=False) for node in nodes.values()),
        )

    def done(self, values: dict[str, int], deltas: dict[str, int]) -> bool:
        # Scenario::isDone: pure tests, so the C++ map order cannot change the answer.
        results = (test.measure(values, deltas) > 0 for test in self.tests)
        results_and_nodes = (*results, *(node.done(values, deltas) for node in self.nodes))
        return all(results_and_nodes) if self.all_of else any(results_and_nodes)


@dataclass(frozen=True)
class ScenarioRules:
    """A scenario file compiled for :class:`FastScenario`.

    Attributes:
        players: One reward rule per player the file defines (``reward`` is player 0's;
            ``rewards`` lists them in order).
        done: The done conditions (``None``: the episode never ends by itself).
        variables: Every RAM variable the rules read, in first-use order.

    Example:
        >>> rules = ScenarioRules.parse({
        ...     "reward": {"variables": {"score": {"reward": 1.0}}},
        ...     "done": {"variables": {"lives": {"op": "zero"}}}})
        >>> rules.variables
        ('score', 'lives')
        >>> ScenarioRules.parse({"scripts": ["script.lua"]}) is None
        True
    """

    players: tuple[_PlayerReward, ...]
    done: _DoneNode | None
    variables: tuple[str, ...]

    @classmethod
    def parse(cls, manifest: Any) -> ScenarioRules | None:
        """Compile a parsed scenario file; ``None`` if it needs the C++ (Lua scripts,
        values of unexpected types, both ``reward`` and ``rewards``)."""
        try:
            if not isinstance(manifest, dict) or manifest.get("scripts"):
                raise _Unsupported("scripts")
            if "reward" in manifest and "rewards" in manifest:
                raise _Unsupported("both reward and rewards")
            if "rewards" in manifest:
                specs = manifest["rewards"]
                if not isinstance(specs, list):
                    raise _Unsupported(f"rewards {specs!r}")
            else:
                specs = [manifest.get("reward", {})]
            players = tuple(_PlayerReward.parse(spec) for spec in specs)
            done = _DoneNode.parse(manifest["done"], top=True) if "done" in manifest else None
        except _Unsupported:
            return None
        names: dict[str, None] = {}
        for player in players:
            names.update((term.measure.name, None) for term in player.terms)
        pending = [done] if done is not None else []
        while pending:
            node = pending.pop(0)
            names.update((test.name, None) for test in node.tests)
            pending.extend(node.nodes)
        return cls(players, done, tuple(names))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScenarioRules | None:
        """Read and compile a scenario file; ``None`` if it is unreadable or unsupported."""
        try:
            with open(path) as file:
                return cls.parse(json.load(file))
        except (OSError, ValueError):
            return None


class FastScenario:
    """Rewards and done flag of one env, frame by frame, as ``update_ram`` would set them.

    Call :meth:`restart` after every ``RetroEnv.reset`` (which itself runs ``update_ram``)
    and :meth:`update` after every emulator frame instead of ``data.update_ram()``.

    Args:
        rules: The compiled scenario.
        data: The env's ``stable_retro.data.GameData`` (``env.data``).

    Raises:
        KeyError: A rule names a variable that the data file does not define.

    Example:
        >>> import stable_retro
        >>> env = stable_retro.make("Airstriker-Genesis-v0", render_mode=None)
        >>> rules = ScenarioRules.load(scenario_path("Airstriker-Genesis-v0"))
        >>> _ = env.reset(seed=0)
        >>> scenario = FastScenario(rules, env.data)
        >>> scenario.restart()
        >>> env.em.step()
        >>> scenario.update()
        ((0.0,), False)
        >>> env.close()
    """

    def __init__(self, rules: ScenarioRules, data: Any) -> None:
        self.rules = rules
        self._lookup = data.lookup_value
        for name in rules.variables:
            self._lookup(name)  # KeyError for an undefined variable, as the C++ raises
        self._previous: dict[str, int] = {}

    def _values(self) -> dict[str, int]:
        lookup = self._lookup
        return {name: operator.index(lookup(name)) for name in self.rules.variables}

    def restart(self) -> None:
        """Take the current RAM as the base of the next frame's deltas."""
        self._previous = self._values()

    def update(self) -> tuple[tuple[float, ...], bool]:
        """Evaluate the rules on the frame just emulated.

        Returns:
            ``(rewards, done)``: one reward per player the scenario defines (at least
            one), as ``data.current_reward(player)`` would return them, and
            ``data.is_done()``.
        """
        values = self._values()
        previous = self._previous
        deltas = {}
        for name, value in values.items():
            delta = value - previous[name]
            if not -_INT64 <= delta < _INT64:  # int64 subtraction wraps in the C++
                delta = (delta + _INT64) % (2 * _INT64) - _INT64
            deltas[name] = delta
        self._previous = values
        rewards = tuple(player.reward(values, deltas) for player in self.rules.players)
        done = self.rules.done.done(values, deltas) if self.rules.done is not None else False
        return rewards, done

    @classmethod
    def for_env(cls, env: Any) -> FastScenario | None:
        """The fast scenario of a ``RetroEnv`` whose scenario path was remembered.

        Returns:
            ``None`` unless :func:`remember_scenario_path` recorded the file ``env`` was
            built with and the file compiles (see :meth:`ScenarioRules.parse`).
        """
        path = _PATHS.get(env)
        rules = _compiled(path) if path is not None else None
        if rules is None:
            return None
        try:
            return cls(rules, env.data)
        except (KeyError, TypeError):
            return None


_PATHS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_RULES: dict[str, ScenarioRules | None] = {}


def _compiled(path: str) -> ScenarioRules | None:
    if path not in _RULES:
        _RULES[path] = ScenarioRules.load(path)
    return _RULES[path]


def scenario_path(game: str, scenario: str | None = None, inttype: Any = None) -> str:
    """The scenario file ``stable_retro.make(game, scenario=scenario)`` loads.

    Args:
        game: A stable-retro game id.
        scenario: ``None`` (the game's ``scenario.json``), a name without ``.json`` in
            the game's folder, or a path ending in ``.json``.
        inttype: The ``stable_retro.data.Integrations`` searched (default: stable ones).

    Example:
        >>> os.path.basename(scenario_path("Airstriker-Genesis-v0"))
        'scenario.json'
    """
    import stable_retro.data

    if inttype is None:
        inttype = stable_retro.data.Integrations.DEFAULT
    name = "scenario" if scenario is None else os.fspath(scenario)
    if name.endswith(".json"):
        return name
    return stable_retro.data.get_file_path(game, name + ".json", inttype)


def remember_scenario_path(env: Any, path: str) -> None:
    """Record which scenario file the ``RetroEnv`` ``env`` was built with, so that
    :meth:`FastScenario.for_env` can compile it (a ``RetroEnv`` does not keep the path)."""
    _PATHS[env] = path
