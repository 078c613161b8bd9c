"""Measuring one thing: a timed loop, memory snapshots, and the measuring child processes.

The LIMIT (one env in-process) and the bare emulator run in a fresh Python process each
(:func:`run_child`): stable-retro allows one emulator per process, and the benchmark's own
process must never hold an emulator while it forks workers.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrovec.benchmark.contenders import (
    ACTION_BATCHES,
    WORKLOADS,
    Contender,
    EnvRunner,
    Runner,
    Workload,
)

__all__ = [
    "BenchmarkError",
    "Timing",
    "cpu_seconds_of",
    "measure_contender",
    "measure_growth",
    "memory_snapshot",
    "run_child",
    "time_calls",
]

#: Never fewer timed calls than this, however slow a call is.
MIN_TIMED_CALLS = 3
#: The warm-up before each timed loop: ``seconds / 10`` within these bounds (seconds).
WARM_UP_BOUNDS = (0.05, 0.5)
#: Seconds a child process (LIMIT, bare emulator) may take beyond its measuring time.
CHILD_TIMEOUT_MARGIN = 120.0


class BenchmarkError(RuntimeError):
    """A measurement that could not run (a child process failed, a contender broke)."""


# --------------------------------------------------------------------------- measuring


@dataclasses.dataclass(frozen=True)
class Timing:
    """The timed loop of one measurement.

    Attributes:
        calls: Timed calls of the step function.
        seconds: Wall time of those calls.
        cpu_seconds: CPU time of this process (``time.process_time``) during them.
        probed_seconds: How much ``probe`` (e.g. the workers' CPU time) grew during them;
            ``None`` without a probe.
    """

    calls: int
    seconds: float
    cpu_seconds: float
    probed_seconds: float | None = None


def _warm_up(timer: timeit.Timer, target: float) -> float:
    """Run ``timer`` in doubling batches until one takes ``target`` s; seconds per call."""
    number = 4
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= target or number >= 1 << 20:
            return max(elapsed, 1e-9) / number
        number *= 2


def time_calls(
    step: Callable[[], None], seconds: float, probe: Callable[[], float] | None = None
) -> Timing:
    """Warm ``step`` up, then time about ``seconds`` of calls with :mod:`timeit`.

    The warm-up runs doubling batches until one takes ``seconds / 10`` (bounded by
    :data:`WARM_UP_BOUNDS`), and sizes the timed loop from that batch's rate.

    Args:
        step: The function to time (one vector step, one ``recv``/``send``, ...).
        seconds: Wanted duration of the timed loop.
        probe: Read just before and just after the timed loop (a counter in seconds).

    Returns:
        The :class:`Timing`.

    Example:
        >>> t = time_calls(lambda: None, 0.01)
        >>> t.calls >= MIN_TIMED_CALLS and t.seconds > 0
        True
    """
    timer = timeit.Timer(step)
    low, high = WARM_UP_BOUNDS
    per_call = _warm_up(timer, min(max(seconds / 10, low), high))
    number = max(MIN_TIMED_CALLS, math.ceil(seconds / per_call))
    probed = probe() if probe is not None else 0.0
    cpu_start = time.process_time()
    elapsed = timer.timeit(number)
    cpu = time.process_time() - cpu_start
    probed = probe() - probed if probe is not None else None
    return Timing(number, elapsed, cpu, probed)


def cpu_seconds_of(pids: Sequence[int]) -> Callable[[], float]:
    """A probe for :func:`time_calls`: the CPU time (user + system) of processes ``pids``.

    Example:
        >>> probe = cpu_seconds_of([os.getpid()])
        >>> probe() > 0
        True
    """
    import psutil

    processes = [psutil.Process(pid) for pid in pids]

    def probe() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    return probe


def _memory(pid: int | None = None) -> tuple[int, int]:
    """``(rss, pss)`` in bytes of one process (this one when ``pid`` is ``None``)."""
    import psutil

    info = psutil.Process(pid).memory_full_info()
    return int(info.rss), int(getattr(info, "pss", info.rss))


def memory_snapshot(worker_pids: Sequence[int]) -> dict[str, int]:
    """RSS and PSS of this process and of the workers (summed), in bytes.

    Args:
        worker_pids: The worker processes' ids.

    Returns:
        ``parent_rss``, ``parent_pss``, ``workers_rss``, ``workers_pss``.
    """
    parent_rss, parent_pss = _memory()
    worker = [_memory(pid) for pid in worker_pids]
    return {
        "parent_rss": parent_rss,
        "parent_pss": parent_pss,
        "workers_rss": sum(rss for rss, _ in worker),
        "workers_pss": sum(pss for _, pss in worker),
    }


def _start(
    contender: Contender, game: str, workload: Workload, n: int, seed: int
) -> tuple[Runner, float]:
    """Build and reset a contender; returns it and the start-up seconds."""
    gc.collect()
    start = time.perf_counter()
    runner = contender.build(game, workload, n, seed)
    try:
        runner.reset()
    except BaseException:
        runner.close()
        raise
    return runner, time.perf_counter() - start


def measure_contender(
    contender: Contender, game: str, workload: Workload, num_envs: int, seconds: float, seed: int
) -> dict[str, Any]:
    """One timed measurement: build, reset, warm up, time, read memory, close.

    Args:
        contender: What to run.
        game: stable-retro game id.
        workload: Per-env work.
        num_envs: Vector size.
        seconds: Timed seconds.
        seed: Reset and action seed.

    Returns:
        ``steps_per_second`` (env steps), ``startup_seconds``, ``calls``, ``env_steps``,
        ``seconds``, ``parent_cpu_us_per_call``, ``worker_cpu_us_per_env_step`` (all
        workers' CPU time over the timed loop per env step), ``busy_cores`` (parent and
        workers' CPU time over wall time), the :func:`memory_snapshot` fields,
        ``pss_per_env`` and ``workers``.
    """
    runner, startup = _start(contender, game, workload, num_envs, seed)
    try:
        pids = runner.worker_pids()
        timing = time_calls(runner.step, seconds, cpu_seconds_of(pids) if pids else None)
        memory = memory_snapshot(pids)
    finally:
        runner.close()
        gc.collect()
    env_steps = timing.calls * runner.steps_per_call
    return {
        "steps_per_second": env_steps / timing.seconds,
        "startup_seconds": startup,
        "calls": timing.calls,
        "env_steps": env_steps,
        "seconds": timing.seconds,
        "parent_cpu_us_per_call": 1e6 * timing.cpu_seconds / timing.calls,
        # Where the time goes: CPU of every worker per env step, and cores kept busy.
        "worker_cpu_us_per_env_step": (
            None if timing.probed_seconds is None else 1e6 * timing.probed_seconds / env_steps
        ),
        "busy_cores": (timing.cpu_seconds + (timing.probed_seconds or 0.0)) / timing.seconds,
        **memory,
        "pss_per_env": memory["workers_pss"] / num_envs,
        "workers": len(pids),
    }


def measure_growth(
    contender: Contender, game: str, workload: Workload, num_envs: int, steps: int, seed: int
) -> dict[str, Any]:
    """Memory before and after ``steps`` env steps (after a warm-up of a tenth of that).

    Args:
        contender: What to run.
        game: stable-retro game id.
        workload: Per-env work.
        num_envs: Vector size.
        steps: Env steps between the two snapshots (rounded up to whole calls).
        seed: Reset and action seed.

    Returns:
        ``env_steps``, ``seconds``, ``before`` and ``after`` (:func:`memory_snapshot`) and
        ``bytes_per_1k_steps`` (the growth of each field per 1,000 env steps).
    """
    runner, _ = _start(contender, game, workload, num_envs, seed)
    try:
        for _ in range(max(1, math.ceil(steps / 10 / runner.steps_per_call))):
            runner.step()
        pids = runner.worker_pids()
        gc.collect()
        before = memory_snapshot(pids)
        calls = math.ceil(steps / runner.steps_per_call)
        start = time.perf_counter()
        for _ in range(calls):
            runner.step()
        seconds = time.perf_counter() - start
        gc.collect()
        after = memory_snapshot(pids)
    finally:
        runner.close()
        gc.collect()
    env_steps = calls * runner.steps_per_call
    return {
        "env_steps": env_steps,
        "seconds": seconds,
        "before": before,
        "after": after,
        "bytes_per_1k_steps": {k: (after[k] - before[k]) * 1000 / env_steps for k in before},
    }


# --------------------------------------------------------------------------- child processes


def _child_single(spec: dict[str, Any]) -> dict[str, Any]:
    """One env of the workload stepped in this process.

    ``kind`` ``"single"`` is the LIMIT measurement: a plain RetroEnv under the workload's
    standard wrapper chain (:func:`retrovec.benchmark.contenders.plain_env`), what
    gymnasium's and SB3's users step. ``"fast"`` is retrovec's own worker env
    (:func:`retrovec.benchmark.contenders.fast_env`), the same results with less work.
    """
    from retrovec.benchmark.contenders import fast_env, plain_env

    start = time.perf_counter()
    build = fast_env if spec["kind"] == "fast" else plain_env
    env = build(spec["game"], WORKLOADS[spec["workload"]])
    runner = EnvRunner(env, spec["seed"])
    try:
        runner.reset()
        startup = time.perf_counter() - start
        timing = time_calls(runner.step, spec["seconds"])
        shape = list(env.observation_space.shape)
        rss, pss = _memory()
    finally:
        runner.close()
    return {
        "steps_per_second": timing.calls / timing.seconds,
        "startup_seconds": startup,
        "calls": timing.calls,
        "seconds": timing.seconds,
        "cpu_us_per_call": 1e6 * timing.cpu_seconds / timing.calls,
        "observation_shape": shape,
        "rss": rss,
        "pss": pss,
    }


def _child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """The bare emulator: ``set_button_mask`` + ``em.step`` + one ``em.get_screen`` a frame."""
    import stable_retro

    env = stable_retro.make(spec["game"], render_mode=None)
    try:
        env.reset(seed=spec["seed"])
        em = env.unwrapped.em
        rng = np.random.default_rng(spec["seed"])
        buttons = rng.integers(0, 2, (ACTION_BATCHES, env.unwrapped.num_buttons), dtype=np.uint8)
        index = 0

        def frame() -> None:
            nonlocal index
            em.set_button_mask(buttons[index % ACTION_BATCHES], 0)
            em.step()
            em.get_screen()
            index += 1

        timing = time_calls(frame, spec["seconds"])
    finally:
        env.close()
    return {
        "frames_per_second": timing.calls / timing.seconds,
        "calls": timing.calls,
        "seconds": timing.seconds,
    }


_CHILD_KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "single": _child_single,
    "fast": _child_single,
    "bare": _child_bare,
}


def _child_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of a measuring child: one JSON spec in argv, one JSON line out."""
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    print(json.dumps(_CHILD_KINDS[spec["kind"]](spec)), flush=True)


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run a measurement in a fresh Python process, so this one never holds an emulator.

    Args:
        spec: ``kind`` (``"single"``, ``"fast"`` or ``"bare"``), ``game``, ``workload``,
            ``seconds``, ``seed``.

    Returns:
        The child's result dict.

    Raises:
        BenchmarkError: The child failed; the message ends with its stderr.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [package_root, child_env.get("PYTHONPATH")])
    )
    code = "from retrovec.benchmark.measure import _child_main; _child_main()"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(spec)],
            capture_output=True,
            text=True,
            env=child_env,
            timeout=spec["seconds"] * 3 + CHILD_TIMEOUT_MARGIN,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(
            f"{spec['kind']} measurement timed out after {exc.timeout:.0f} s"
        ) from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchmarkError(
            f"{spec['kind']} measurement failed (exit {done.returncode}): {done.stderr[-2000:]}"
        )
    return json.loads(lines[-1])
