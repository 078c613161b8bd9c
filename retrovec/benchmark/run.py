"""A whole run: the plan (interleaved rounds), executing it, and the summaries.

:func:`run_benchmark` executes the tasks of :func:`plan_tasks` in order, records every raw
number in ``measurements``, and :func:`summarize` adds medians, min-max and ratios to
LIMIT. The result is a plain JSON-serialisable dict (layout in :func:`run_benchmark`).
"""

from __future__ import annotations

import dataclasses
import datetime
import multiprocessing
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from retrovec.benchmark.contenders import CONTENDERS, WORKLOADS, Contender, contender_status
from retrovec.benchmark.measure import measure_contender, measure_growth, run_child
from retrovec.core.processes import available_cores

__all__ = [
    "DEFAULT_GAME",
    "DEFAULT_NUM_ENVS",
    "DEFAULT_ROUNDS",
    "DEFAULT_SECONDS",
    "FORMAT",
    "FULL",
    "QUICK",
    "QUICK_CONTENDERS",
    "BenchmarkConfig",
    "Task",
    "describe_machine",
    "plan_tasks",
    "run_benchmark",
    "spread",
    "summarize",
]

DEFAULT_GAME = "Airstriker-Genesis-v0"
DEFAULT_NUM_ENVS = (1, 2, 4, 8, 16)
DEFAULT_ROUNDS = 3
DEFAULT_SECONDS = 3.0
FORMAT = "retrovec-benchmark/1"

#: The contenders of a quick comparison: retrovec against what people use today.
QUICK_CONTENDERS = ("retrovec", "gymnasium", "sb3")


# --------------------------------------------------------------------------- config and plan


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What to measure.

    Attributes:
        game: stable-retro game id.
        num_envs: The vector sizes, in order.
        workloads: Names from :data:`WORKLOADS`.
        contenders: Ids from :data:`CONTENDERS`; ``None``: every one that can run here.
        rounds: Interleaved rounds (at least 3 for a table worth quoting).
        seconds: Timed seconds per measurement (one contender, one ``num_envs``, one round).
        growth_steps: Env steps of the memory-growth run per contender and workload, at the
            largest ``num_envs``; 0 skips it.
        seed: Seed of the resets and the pre-drawn actions.
    """

    game: str = DEFAULT_GAME
    num_envs: tuple[int, ...] = DEFAULT_NUM_ENVS
    workloads: tuple[str, ...] = tuple(WORKLOADS)
    contenders: tuple[str, ...] | None = None
    rounds: int = DEFAULT_ROUNDS
    seconds: float = DEFAULT_SECONDS
    growth_steps: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_envs", tuple(self.num_envs))
        object.__setattr__(self, "workloads", tuple(self.workloads))
        if self.contenders is not None:
            object.__setattr__(self, "contenders", tuple(self.contenders))
        if not self.num_envs or any(not isinstance(n, int) or n < 1 for n in self.num_envs):
            raise ValueError(f"num_envs must be ints >= 1, got {self.num_envs!r}")
        unknown = [w for w in self.workloads if w not in WORKLOADS]
        if not self.workloads or unknown:
            raise ValueError(f"workloads must be some of {list(WORKLOADS)}, got {self.workloads!r}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an int >= 1, got {self.rounds!r}")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds!r}")
        if not isinstance(self.growth_steps, int) or self.growth_steps < 0:
            raise ValueError(f"growth_steps must be an int >= 0, got {self.growth_steps!r}")


#: ``retrovec bench`` without options: retrovec, gymnasium's ``AsyncVectorEnv`` and SB3's
#: ``SubprocVecEnv`` at 4 envs on raw frames, one round of 2 s each (about half a minute
#: with start-up and the LIMIT measurement).
QUICK = BenchmarkConfig(
    num_envs=(4,), workloads=("rgb",), contenders=QUICK_CONTENDERS, rounds=1, seconds=2.0
)

#: ``retrovec bench --full``: the sweep of ``benchmarks/README.md`` over every contender
#: but Ray's (``--ray`` adds it): 5 sizes x 2 workloads x 3 rounds of 3 s each.
FULL = BenchmarkConfig(contenders=tuple(c for c in CONTENDERS if c != "retrovec-ray"))


@dataclasses.dataclass(frozen=True)
class Task:
    """One measurement of the plan.

    Attributes:
        kind: ``"bare"`` (bare emulator), ``"single"`` (one plain env in-process: LIMIT),
            ``"fast"`` (one env of retrovec's workers in-process), ``"contender"`` (a
            timed contender) or ``"growth"`` (the long memory run).
        round: 1-based round; 0 for growth runs (after the rounds).
        workload: Workload name; ``None`` for ``"bare"``.
        contender: The contender id for ``"contender"`` and ``"growth"``, else ``None``.
        num_envs: Vector size (1 for ``"bare"`` and ``"single"``).
    """

    kind: str
    round: int
    workload: str | None = None
    contender: str | None = None
    num_envs: int = 1

    def describe(self, rounds: int) -> str:
        """A short label for the progress bar."""
        where = f"round {self.round}/{rounds}" if self.round else "growth"
        if self.kind == "bare":
            return f"{where} bare emulator"
        if self.kind == "single":
            return f"{where} {self.workload} LIMIT (1 env in-process)"
        if self.kind == "fast":
            return f"{where} {self.workload} 1 fast env in-process"
        label = CONTENDERS[self.contender].label if self.contender else "?"
        return f"{where} {self.workload} {label} n={self.num_envs}"


def plan_tasks(
    config: BenchmarkConfig, contenders: Sequence[Contender]
) -> tuple[list[Task], list[dict[str, Any]]]:
    """The measurements of a run, interleaved round by round.

    Each round measures the bare emulator, then for each workload its LIMIT, one fast env
    in-process and, for each ``num_envs``, every contender; round ``r`` rotates the
    contender order by ``r - 1`` so that no contender always runs first. The growth runs
    (if any) come last.

    Args:
        config: What to measure.
        contenders: The contenders that can run.

    Returns:
        ``(tasks, skipped)``: the tasks in order, and a note for each (contender,
        ``num_envs``) left out because it needs more envs.

    Example:
        >>> cs = [CONTENDERS["retrovec"], CONTENDERS["gymnasium"]]
        >>> tasks, _ = plan_tasks(BenchmarkConfig(num_envs=(1,), workloads=("rgb",),
        ...                                       rounds=2), cs)
        >>> [(t.round, t.kind, t.contender) for t in tasks]  # doctest: +NORMALIZE_WHITESPACE
        [(1, 'bare', None), (1, 'single', None), (1, 'fast', None),
         (1, 'contender', 'retrovec'), (1, 'contender', 'gymnasium'), (2, 'bare', None),
         (2, 'single', None), (2, 'fast', None), (2, 'contender', 'gymnasium'),
         (2, 'contender', 'retrovec')]
    """
    tasks: list[Task] = []
    skipped = [
        {"contender": c.label, "num_envs": n, "reason": f"needs num_envs >= {c.min_envs}"}
        for c in contenders
        for n in config.num_envs
        if n < c.min_envs
    ]
    for r in range(1, config.rounds + 1):
        shift = (r - 1) % max(1, len(contenders))
        order = [*contenders[shift:], *contenders[:shift]]
        tasks.append(Task("bare", r))
        for workload in config.workloads:
            tasks += [Task("single", r, workload), Task("fast", r, workload)]
            for n in config.num_envs:
                tasks += [Task("contender", r, workload, c.id, n) for c in order if n >= c.min_envs]
    if config.growth_steps:
        n = max(config.num_envs)
        for workload in config.workloads:
            tasks += [Task("growth", 0, workload, c.id, n) for c in contenders if n >= c.min_envs]
    return tasks, skipped


# --------------------------------------------------------------------------- the run


def describe_machine() -> dict[str, Any]:
    """The machine and software a run measured, for the JSON and the report.

    Returns:
        CPU model (from ``/proc/cpuinfo``), available and total cores, memory, OS,
        Python and package versions, default multiprocessing start method, load average.
    """
    import psutil

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in (
        "numpy",
        "gymnasium",
        "stable-retro",
        "retrovec",
        "stable-baselines3",
        "matplotlib",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": model,
        "cores_available": available_cores(),
        "cores_total": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "start_method": multiprocessing.get_start_method(allow_none=True)
        or multiprocessing.get_context().get_start_method(),
        "load_average": list(os.getloadavg()),
    }


def _execute(task: Task, config: BenchmarkConfig) -> dict[str, Any]:
    """Run one task; returns its raw numbers."""
    if task.kind in ("bare", "single", "fast"):
        spec = {
            "kind": task.kind,
            "game": config.game,
            "workload": task.workload or "rgb",
            "seconds": config.seconds,
            "seed": config.seed,
        }
        return run_child(spec)
    contender = CONTENDERS[task.contender or ""]
    workload = WORKLOADS[task.workload or ""]
    if task.kind == "growth":
        return measure_growth(
            contender, config.game, workload, task.num_envs, config.growth_steps, config.seed
        )
    return measure_contender(
        contender, config.game, workload, task.num_envs, config.seconds, config.seed
    )


def run_benchmark(config: BenchmarkConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """Run every measurement of ``config`` and summarise them.

    A measurement that fails is recorded (``error`` in its raw entry, listed in
    ``errors``) and the run goes on.

    Args:
        config: What to measure; ``None``: the defaults.
        progress: Show a tqdm bar on stderr over the measurements (round, contender, n).

    Returns:
        The result, JSON-serialisable: ``format``, ``created``, ``machine``, ``config``,
        ``contenders`` (label -> description), ``skipped``, ``measurements`` (every raw
        number), ``bare_emulator``, ``workloads`` (per workload: ``limit``,
        ``single_env``, ``results`` per contender and ``num_envs``, ``growth``) and
        ``errors``.

    Raises:
        ValueError: An unknown contender id.
        retrovec.RetrovecError: The game cannot be made (checked before measuring).
    """
    from tqdm import tqdm

    from retrovec.retro.games import validate_game

    config = config if config is not None else BenchmarkConfig()
    validate_game(config.game)
    contenders, skipped_contenders = contender_status(config.contenders)
    tasks, skipped = plan_tasks(config, contenders)
    machine = describe_machine()
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    measurements: list[dict[str, Any]] = []
    bar = tqdm(
        tasks, unit="meas", file=sys.stderr, disable=None if progress else True, dynamic_ncols=True
    )
    with bar:
        for task in bar:
            bar.set_description_str(task.describe(config.rounds), refresh=True)
            entry = dataclasses.asdict(task)
            try:
                entry.update(_execute(task, config))
            except Exception as exc:  # recorded; one broken contender must not end the run
                entry["error"] = f"{type(exc).__name__}: {exc}"
            measurements.append(entry)
    machine["load_average_end"] = list(os.getloadavg())
    return summarize(
        {
            "format": FORMAT,
            "created": created,
            "machine": machine,
            "config": {  # tuples as lists: the result is the same after a JSON round trip
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(config).items()
            },
            "contenders": {c.label: c.description for c in contenders},
            "skipped": [
                *(
                    {"contender": k, "num_envs": None, "reason": v}
                    for k, v in skipped_contenders.items()
                ),
                *skipped,
            ],
            "measurements": measurements,
        }
    )


# --------------------------------------------------------------------------- summaries


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of ``values`` (``None`` each when empty).

    Example:
        >>> spread([3.0, 1.0, 2.0])
        {'values': [3.0, 1.0, 2.0], 'median': 2.0, 'min': 1.0, 'max': 3.0}
    """
    values = [float(v) for v in values]
    if not values:
        return {"values": [], "median": None, "min": None, "max": None}
    return {
        "values": values,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def _ratios(rates: dict[str, Any], limit: float | None) -> dict[str, float | None]:
    if not limit or rates["median"] is None:
        return {"median": None, "min": None, "max": None}
    return {key: rates[key] / limit for key in ("median", "min", "max")}


def _ok(measurements: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [
        m for m in measurements if "error" not in m and all(m.get(k) == v for k, v in match.items())
    ]


def _references(
    measurements: list[dict[str, Any]], name: str, cores: int, bare: dict[str, Any]
) -> dict[str, Any]:
    """LIMIT, the single env and the bare emulator (in env steps) of one workload."""
    workload = WORKLOADS[name]
    singles = _ok(measurements, kind="single", workload=name)
    single = spread([m["steps_per_second"] for m in singles])
    limit = spread([cores * m["steps_per_second"] for m in singles])
    fasts = _ok(measurements, kind="fast", workload=name)
    fast = spread([m["steps_per_second"] for m in fasts])
    bare_steps = {
        key: None if bare[key] is None else bare[key] / workload.frame_skip
        for key in ("median", "min", "max")
    }
    return {
        "description": workload.description,
        "preprocessing": repr(workload.preprocessing) if workload.preprocessing else None,
        "frame_skip": workload.frame_skip,
        "observation_shape": singles[0]["observation_shape"] if singles else None,
        "limit": {"cores": cores, **limit},
        "single_env": {
            **single,
            "ratio_to_limit": _ratios(single, limit["median"]),
            "startup_seconds": spread([m["startup_seconds"] for m in singles]),
        },
        "fast_single_env": {
            **fast,
            "ratio_to_limit": _ratios(fast, limit["median"]),
            "cpu_us_per_env_step": spread([m["cpu_us_per_call"] for m in fasts]),
        },
        "bare_emulator": {
            **bare_steps,
            "unit": f"env steps/s ({workload.frame_skip} emulator frames each), one core",
            "ratio_to_limit": _ratios(bare_steps, limit["median"]),
        },
    }


def _growth_row(label: str, m: dict[str, Any]) -> dict[str, Any]:
    keys = ("num_envs", "env_steps", "seconds", "bytes_per_1k_steps")
    return {"contender": label, **{key: m[key] for key in keys}}


def _summarize_workload(result: dict[str, Any], name: str, bare: dict[str, Any]) -> dict[str, Any]:
    measurements = result["measurements"]
    summary = _references(measurements, name, result["machine"]["cores_available"], bare)
    limit = summary["limit"]["median"]
    summary["results"], summary["growth"] = [], []
    for cid, contender in CONTENDERS.items():
        mine = [m for m in measurements if m["workload"] == name and m["contender"] == cid]
        for n in result["config"]["num_envs"]:
            runs = [m for m in mine if m["kind"] == "contender" and m["num_envs"] == n]
            if runs:
                summary["results"].append(_summarize_runs(contender.label, cid, n, runs, limit))
        for m in _ok(mine, kind="growth"):
            summary["growth"].append(_growth_row(contender.label, m))
    return summary


def _summarize_runs(
    label: str, cid: str, n: int, runs: list[dict[str, Any]], limit: float | None
) -> dict[str, Any]:
    ok = [m for m in runs if "error" not in m]
    rates = spread([m["steps_per_second"] for m in ok])
    return {
        "contender": label,
        "id": cid,
        "num_envs": n,
        "steps_per_second": rates,
        "ratio_to_limit": _ratios(rates, limit),
        "startup_seconds": spread([m["startup_seconds"] for m in ok]),
        "pss_per_env_bytes": spread([m["pss_per_env"] for m in ok]),
        "parent_pss_bytes": spread([m["parent_pss"] for m in ok]),
        "parent_cpu_us_per_call": spread([m["parent_cpu_us_per_call"] for m in ok]),
        "worker_cpu_us_per_env_step": spread(
            [m["worker_cpu_us_per_env_step"] for m in ok if m.get("worker_cpu_us_per_env_step")]
        ),
        "busy_cores": spread([m["busy_cores"] for m in ok if "busy_cores" in m]),
        "errors": [m["error"] for m in runs if "error" in m],
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Add the summaries (medians, min-max, ratios to LIMIT) to a result's raw numbers.

    Args:
        result: A result with ``machine``, ``config`` and ``measurements``, as
            :func:`run_benchmark` builds it (or as loaded back from its JSON).

    Returns:
        The same dict with ``bare_emulator``, ``workloads`` and ``errors`` (re)computed.
    """
    measurements = result["measurements"]
    bare = spread([m["frames_per_second"] for m in _ok(measurements, kind="bare")])
    result["bare_emulator"] = {**bare, "unit": "emulator frames/s"}
    result["workloads"] = {
        name: _summarize_workload(result, name, bare) for name in result["config"]["workloads"]
    }
    result["errors"] = [
        {k: m[k] for k in ("kind", "round", "workload", "contender", "num_envs", "error")}
        for m in measurements
        if "error" in m
    ]
    return result
