"""Small gymnasium envs for testing the process machinery (not retro features).

They live in an importable module so that the spawn and forkserver start methods can
unpickle them in the workers.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ToyError(Exception):
    """Raised by FailingEnv."""


class ToyEnv(gym.Env):
    """Deterministic for a given seed, with Dict/Tuple spaces and varied infos.

    Episodes terminate at random (seeded) or truncate after ``max_steps``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, max_steps: int = 12, render_mode: str | None = None, scale: float = 1.0):
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.scale = scale
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Box(-scale, scale, (3,), np.float32),
                "flag": spaces.Discrete(4),
                "pair": spaces.Tuple((spaces.MultiBinary(3), spaces.MultiDiscrete([3, 5]))),
            }
        )
        self.action_space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)))
        self.t = 0
        self.total = 0.0

    def _observation(self) -> dict[str, Any]:
        space = self.observation_space
        return {
            "position": self.np_random.uniform(-self.scale, self.scale, 3).astype(np.float32),
            "flag": int(self.np_random.integers(4)),
            "pair": (
                self.np_random.integers(0, 2, 3).astype(space["pair"][0].dtype),
                self.np_random.integers([3, 5]).astype(space["pair"][1].dtype),
            ),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.total = 0.0
        info = {"reset_tag": "fresh", "start": int(self.np_random.integers(100))}
        if options:
            info["options_seen"] = sorted(options)
        return self._observation(), info

    def step(self, action):
        discrete, continuous = action
        self.t += 1
        reward = float(discrete) + float(np.sum(continuous)) + float(self.np_random.random())
        self.total += reward
        terminated = bool(self.np_random.random() < 0.1)
        truncated = self.t >= self.max_steps
        info: dict[str, Any] = {"t": self.t, "total": self.total, "vector": np.full(2, self.t)}
        if self.t % 2 == 0:
            info["even"] = True
            info["nested"] = {"half": self.t // 2, "label": f"step-{self.t}"}
        return self._observation(), reward, terminated, truncated, info

    def render(self):
        return np.full((4, 6, 3), self.t, dtype=np.uint8)

    def add(self, a, b=0):
        return a + b + self.t


def make_toy(**kwargs: Any) -> ToyEnv:
    return ToyEnv(**kwargs)


class FailingEnv(ToyEnv):
    """Raises ToyError in the method named by ``fail_in`` (after ``after`` good steps)."""

    def __init__(self, fail_in: str, after: int = 0, **kwargs: Any):
        if fail_in == "init":
            raise ToyError("boom in init")
        super().__init__(**kwargs)
        self.fail_in = fail_in
        self.after = after
        self.steps_done = 0

    def reset(self, *, seed=None, options=None):
        if self.fail_in == "reset":
            raise ToyError("boom in reset")
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self.fail_in == "step" and self.steps_done >= self.after:
            raise ToyError("boom in step")
        self.steps_done += 1
        return super().step(action)

    def explode(self):
        raise ToyError("boom in call")


class CrashingEnv(ToyEnv):
    """Dies without a word in ``step``: by a signal, or by ``os._exit``."""

    def __init__(self, how: str = "SIGKILL", **kwargs: Any):
        super().__init__(**kwargs)
        self.how = how

    def step(self, action):
        faulthandler.disable()  # the crash is the point: no dump in the test log
        if self.how == "exit":
            os._exit(3)
        os.kill(os.getpid(), getattr(signal, self.how))
        time.sleep(10)
        return super().step(action)


class SlowEnv(ToyEnv):
    """Sleeps ``delay`` seconds in every step."""

    def __init__(self, delay: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.delay = delay

    def step(self, action):
        time.sleep(self.delay)
        return super().step(action)


class TextEnv(gym.Env):
    """An observation space that cannot live in shared memory."""

    def __init__(self):
        self.observation_space = spaces.Text(8)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "start", {}

    def step(self, action):
        return f"act{int(action)}", 0.0, False, False, {}


def fns(factory, n: int, **kwargs: Any) -> list:
    """``n`` picklable env functions."""
    return [partial(factory, **kwargs) for _ in range(n)]


def make_airstriker(max_episode_steps: int | None = None, render_mode: str | None = None):
    """The real emulator: Airstriker, optionally cut into short episodes by a TimeLimit."""
    import stable_retro

    env = stable_retro.make("Airstriker-Genesis-v0", render_mode=render_mode)
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
    return env


class KillOnce(gym.Wrapper):
    """Kills its own worker process in ``method`` (``reset``, ``step`` or ``poke``, which is
    reached through ``envs.call("poke")``), once: the marker file makes a restarted
    worker, built from the same env function, behave."""

    def __init__(self, env: gym.Env, method: str, marker: str, after: int = 0, how: str = "SIGKILL"):
        super().__init__(env)
        self.method = method
        self.marker = marker
        self.after = after
        self.how = how
        self.calls = 0

    def _maybe_die(self, method: str) -> None:
        if method != self.method or os.path.exists(self.marker):
            return
        self.calls += 1
        if self.calls > self.after:
            open(self.marker, "w").close()
            faulthandler.disable()
            os.kill(os.getpid(), getattr(signal, self.how))
            time.sleep(10)

    def reset(self, **kwargs):
        self._maybe_die("reset")
        return self.env.reset(**kwargs)

    def step(self, action):
        self._maybe_die("step")
        return self.env.step(action)

    def poke(self):
        self._maybe_die("poke")
        return os.getpid()


def make_airstriker_killed_once(method: str, marker: str, after: int = 0, max_episode_steps: int = 1000):
    """Airstriker whose worker dies once, in ``method``."""
    return KillOnce(make_airstriker(max_episode_steps=max_episode_steps), method, marker, after)


class SlowSteps(gym.Wrapper):
    """Sleeps ``delay`` seconds in every step of the wrapped env."""

    def __init__(self, env: gym.Env, delay: float):
        super().__init__(env)
        self.delay = delay

    def step(self, action):
        time.sleep(self.delay)
        return self.env.step(action)


def make_slow_airstriker(delay: float):
    """The real emulator, slowed down: for timeouts."""
    return SlowSteps(make_airstriker(max_episode_steps=1000), delay)


# ----------------------------------------------------------------------------------------
# Fakes for tests/core/test_failure_paths.py: small, fast envs whose failures are switched
# on through constructor arguments or set_attr, and whose results can be checked exactly.


class ProbeEnv(gym.Env):
    """A tiny env whose results say where they came from.

    The observation is ``[seed, level, t]`` (float64): the seed of the last reset (``-1``
    for ``None``), ``options["level"]`` of the last reset (``0`` without one), and the
    steps since that reset. Every step has reward 1.0 and neither flag set; its info holds
    ``t`` and, when :attr:`info_bytes` is set, ``blob``: ``info_bytes`` bytes of value
    ``t % 256``.

    Switches (constructor arguments, or ``set_attr`` on a live env):

    * ``delay``: seconds every step sleeps.
    * ``info_bytes``: size of ``info["blob"]``.
    * ``step_marker``: a file created at the end of every step, just before the reply.
    * ``fail_next_step``: the next step raises :class:`ToyError` (once).
    * ``die_on_seed`` and ``die_marker``: ``reset(seed=die_on_seed)`` kills the worker
      with ``os._exit(7)`` the first time only (the marker file remembers).
    * ``close_marker``: ``close()`` creates ``f"{close_marker}.{tag}"``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        tag: int = 0,
        delay: float = 0.0,
        info_bytes: int = 0,
        die_on_seed: int | None = None,
        die_marker: str | None = None,
        close_marker: str | None = None,
    ):
        self.tag = tag
        self.delay = delay
        self.info_bytes = info_bytes
        self.step_marker: str | None = None
        self.fail_next_step = False
        self.die_on_seed = die_on_seed
        self.die_marker = die_marker
        self.close_marker = close_marker
        self.observation_space = spaces.Box(-1e9, 1e9, (3,), np.float64)
        self.action_space = spaces.Discrete(2)
        self.seed_seen = -1
        self.level = 0
        self.t = 0

    def _observation(self) -> np.ndarray:
        return np.array([self.seed_seen, self.level, self.t], dtype=np.float64)

    def reset(self, *, seed=None, options=None):
        if (
            self.die_on_seed is not None
            and seed == self.die_on_seed
            and self.die_marker is not None
            and not os.path.exists(self.die_marker)
        ):
            open(self.die_marker, "w").close()
            faulthandler.disable()
            os._exit(7)
        super().reset(seed=seed)
        self.seed_seen = -1 if seed is None else seed
        self.level = int((options or {}).get("level", 0))
        self.t = 0
        return self._observation(), {"reset_seed": self.seed_seen}

    def step(self, action):
        if self.delay:
            time.sleep(self.delay)
        if self.fail_next_step:
            self.fail_next_step = False
            raise ToyError("boom in step")
        self.t += 1
        info: dict[str, Any] = {"t": self.t}
        if self.info_bytes:
            info["blob"] = bytes([self.t % 256]) * self.info_bytes
        if self.step_marker is not None:
            open(self.step_marker, "w").close()
        return self._observation(), 1.0, False, False, info

    def echo(self, value=None):
        return value

    def reply_for(self, tag: int):
        """An object the parent cannot unpickle for env ``tag``; the tag for the others."""
        return Unloadable() if tag == self.tag else self.tag

    def close(self):
        if self.close_marker is not None:
            open(f"{self.close_marker}.{self.tag}", "w").close()


def probe_fns(n: int, **kwargs: Any) -> list:
    """``n`` ProbeEnv functions, tagged 0 to n-1."""
    return [partial(ProbeEnv, tag=i, **kwargs) for i in range(n)]


def _refuse_to_load(*args: Any) -> None:
    raise RuntimeError("this object cannot be unpickled here")


class Unloadable:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self):
        return _refuse_to_load, ()


class UnpicklableEnvFn:
    """An env function that builds a ProbeEnv but cannot be pickled (spawn, forkserver)."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    def __call__(self) -> ProbeEnv:
        return ProbeEnv(**self.kwargs)

    def __reduce__(self):
        raise TypeError("UnpicklableEnvFn cannot be pickled")


def make_probe_counting_builds(counter: str, die_on: int, **kwargs: Any) -> ProbeEnv:
    """A ProbeEnv, built by a worker that dies (``os._exit(5)``) on the ``die_on``-th build
    counted in the file ``counter`` (shared by every worker built from this function)."""
    count = 1
    if os.path.exists(counter):
        with open(counter) as file:
            count = int(file.read() or 0) + 1
    with open(counter, "w") as file:
        file.write(str(count))
    if count == die_on:
        faulthandler.disable()
        os._exit(5)
    return ProbeEnv(**kwargs)


class BigSpaceEnv(gym.Env):
    """An observation space whose bounds are arrays (~1.5 MB pickled): the worker's first
    reply (its description) is large."""

    metadata = {"render_modes": []}

    def __init__(self, shape: tuple[int, ...] = (512, 512, 3)):
        low = np.zeros(shape, dtype=np.uint8)
        high = np.full(shape, 255, dtype=np.uint8)
        self.observation_space = spaces.Box(low, high, dtype=np.uint8)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, np.uint8), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.uint8), 0.0, False, False, {}


# ----------------------------------------------------------------------------------------
# Fakes for tests/core/test_ray_failure_paths.py (the same failure paths on Ray actors).


class MarkedProbeEnv(ProbeEnv):
    """A :class:`ProbeEnv` that says when it is busy, so that a test can kill its actor in
    the middle of a command.

    Switches (constructor arguments, or ``set_attr`` on a live env), besides ProbeEnv's:

    * ``entered_marker``: a file created on entering ``reset`` and ``step``.
    * ``reset_delay``: seconds every ``reset`` sleeps (after creating the marker).
    """

    def __init__(self, reset_delay: float = 0.0, entered_marker: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.reset_delay = reset_delay
        self.entered_marker = entered_marker

    def _enter(self) -> None:
        if self.entered_marker is not None:
            open(self.entered_marker, "w").close()

    def reset(self, *, seed=None, options=None):
        self._enter()
        if self.reset_delay:
            time.sleep(self.reset_delay)
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self._enter()
        return super().step(action)

    def slow_echo(self, value=None, seconds: float = 0.0):
        """``value``, after ``seconds``: a ``call`` that takes a while."""
        time.sleep(seconds)
        return value

    def unpicklable_for(self, tag: int):
        """A lock (no reply can carry it) for env ``tag``; the tag for the others."""
        import threading

        return threading.Lock() if tag == self.tag else self.tag


def marked_probe_fns(n: int, **kwargs: Any) -> list:
    """``n`` MarkedProbeEnv functions, tagged 0 to n-1."""
    return [partial(MarkedProbeEnv, tag=i, **kwargs) for i in range(n)]


def make_probe_raising_on_build(counter: str, raise_on: int, **kwargs: Any) -> ProbeEnv:
    """A ProbeEnv, whose ``raise_on``-th build counted in the file ``counter`` raises
    :class:`ToyError` (the env's own error while a replacement is built)."""
    count = 1
    if os.path.exists(counter):
        with open(counter) as file:
            count = int(file.read() or 0) + 1
    with open(counter, "w") as file:
        file.write(str(count))
    if count == raise_on:
        raise ToyError(f"boom in build {count}")
    return ProbeEnv(**kwargs)


def make_probe_slow_on_build(counter: str, slow_on: int, seconds: float, **kwargs: Any) -> ProbeEnv:
    """A ProbeEnv, whose ``slow_on``-th build counted in the file ``counter`` first sleeps
    ``seconds`` (a replacement that takes a while to build)."""
    count = 1
    if os.path.exists(counter):
        with open(counter) as file:
            count = int(file.read() or 0) + 1
    with open(counter, "w") as file:
        file.write(str(count))
    if count == slow_on:
        time.sleep(seconds)
    return ProbeEnv(**kwargs)
