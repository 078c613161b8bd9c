"""The report of a run: a Markdown text, a PNG plot (matplotlib, optional), the files.

Everything here reads only the result dict of :func:`retrovec.benchmark.run_benchmark`
(or its JSON loaded back), so a report can be redrawn without measuring again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OUTPUT_STEM", "plot", "render_markdown", "write_outputs"]

OUTPUT_STEM = "throughput"
PLOT_HINT = (
    "pip install 'retrovec[bench]' (from a clone of the repository: pip install -e '.[bench]') "
    "to get the plot (matplotlib)"
)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def _span(values: dict[str, Any], fmt: Any = _rate) -> str:
    """``"median (min-max)"`` of a :func:`~retrovec.benchmark.spread` dict."""
    return f"{fmt(values['median'])} ({fmt(values['min'])}-{fmt(values['max'])})"


def _header(result: dict[str, Any]) -> list[str]:
    m, c = result["machine"], result["config"]
    v = m["versions"]
    rounds = "1 round" if c["rounds"] == 1 else f"{c['rounds']} interleaved rounds"
    software = ", ".join(
        f"{package} {version}" for package, version in v.items() if version is not None
    )
    load_end = m.get("load_average_end", [math.nan])[0]
    return [
        "# retrovec throughput benchmark",
        "",
        f"`{c['game']}`, {rounds} of ~{c['seconds']:g} s per measurement. Figures are "
        "medians over the rounds (min-max); x LIMIT is a figure divided by "
        f"LIMIT = {m['cores_available']} cores x one env stepped in-process (no IPC), "
        "same workload. Higher is better.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores_available']} cores available "
        f"({m['cores_total']} total), {m['memory_bytes'] / 2**30:.1f} GiB; {m['platform']}; "
        f"Python {m['python']}, {software}; start method {m['start_method']}; "
        f"load average {m['load_average'][0]:.2f} at start, {load_end:.2f} at end; "
        f"{result['created']}.",
    ]


def _find(w: dict[str, Any], label: str, n: int) -> dict[str, Any] | None:
    return next((r for r in w["results"] if r["contender"] == label and r["num_envs"] == n), None)


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row["steps_per_second"]["median"] is None:
        return "error"
    return f"{_rate(row['steps_per_second']['median'])} ({_ratio(row['ratio_to_limit']['median'])})"


def _throughput_table(w: dict[str, Any], num_envs: Sequence[int]) -> list[str]:
    limit = f"{_rate(w['limit']['median'])} (1.00)"
    lines = [
        "| contender | " + " | ".join(f"n={n}" for n in num_envs) + " |",
        "|---|" + "---|" * len(num_envs),
        f"| LIMIT ({w['limit']['cores']} cores x 1 env) | "
        + " | ".join([limit] * len(num_envs))
        + " |",
    ]
    for label in dict.fromkeys(r["contender"] for r in w["results"]):
        lines.append(
            f"| {label} | " + " | ".join(_cell(_find(w, label, n)) for n in num_envs) + " |"
        )
    return lines


def _details_row(r: dict[str, Any]) -> str:
    if r["steps_per_second"]["median"] is None:
        error = r["errors"][0].replace("|", "/")
        return f"| {r['contender']} | {r['num_envs']} | error: {error} |" + " - |" * 7
    worker = (r.get("worker_cpu_us_per_env_step") or {}).get("median")
    busy = (r.get("busy_cores") or {}).get("median")
    return (
        f"| {r['contender']} | {r['num_envs']} | {_span(r['steps_per_second'])} "
        f"| {_span(r['ratio_to_limit'], _ratio)} "
        f"| {r['startup_seconds']['median']:.2f} | {_mib(r['pss_per_env_bytes']['median'])} "
        f"| {_mib(r['parent_pss_bytes']['median'])} "
        f"| {r['parent_cpu_us_per_call']['median']:,.0f} "
        f"| {'-' if worker is None else f'{worker:,.0f}'} "
        f"| {'-' if busy is None else f'{busy:.2f}'} |"
    )


def _details_table(w: dict[str, Any]) -> list[str]:
    return [
        (
            "| contender | n | env steps/s | x LIMIT | start-up s | PSS/env MiB "
            "| parent PSS MiB | parent CPU us/batched step | worker CPU us/env step "
            "| busy cores |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_details_row(r) for r in w["results"]),
    ]


def _reference_lines(w: dict[str, Any], bare: dict[str, Any]) -> list[str]:
    lim, one, b = w["limit"], w["single_env"], w["bare_emulator"]
    lines = [
        f"- LIMIT: {_span(lim)} env steps/s = {lim['cores']} x one env in-process: "
        f"{_span(one)} env steps/s (x LIMIT {_ratio(one['ratio_to_limit']['median'])}), "
        "a plain RetroEnv under the standard wrapper chain.",
        "- Bare emulator (set_button_mask + em.step + em.get_screen, no env around it): "
        f"{_span(bare)} frames/s, i.e. {_rate(b['median'])} env steps/s on one core "
        f"(x LIMIT {_ratio(b['ratio_to_limit']['median'])}).",
    ]
    fast = w.get("fast_single_env")
    if fast and fast["median"] is not None:
        lines.append(
            f"- One env of retrovec's workers in-process (fused loop, FastScenario): "
            f"{_span(fast)} env steps/s (x LIMIT {_ratio(fast['ratio_to_limit']['median'])}), "
            f"{fast.get('cpu_us_per_env_step', {}).get('median') or 0:,.0f} us of CPU per "
            "env step: compare the workers' CPU per env step below."
        )
    if w["observation_shape"]:
        lines.append(f"- Observation per env: {tuple(w['observation_shape'])} uint8.")
    return lines


def _growth_table(w: dict[str, Any]) -> list[str]:
    if not w["growth"]:
        return []
    lines = [
        "",
        "Memory growth, bytes per 1,000 env steps (after a warm-up of a tenth of the run):",
        "",
        "| contender | n | env steps | parent RSS | parent PSS | workers RSS | workers PSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in w["growth"]:
        b = g["bytes_per_1k_steps"]
        lines.append(
            f"| {g['contender']} | {g['num_envs']} | {g['env_steps']:,} | {b['parent_rss']:,.0f} "
            f"| {b['parent_pss']:,.0f} | {b['workers_rss']:,.0f} | {b['workers_pss']:,.0f} |"
        )
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    """The report as Markdown: header, then per workload a throughput table and details.

    Args:
        result: As returned by :func:`run_benchmark`.

    Returns:
        The Markdown text (ends with a newline).
    """
    lines = _header(result)
    num_envs = result["config"]["num_envs"]
    for name, w in result["workloads"].items():
        lines += ["", f"## Workload `{name}`: {w['description']}", ""]
        lines += _reference_lines(w, result["bare_emulator"])
        lines += ["", "Env steps/s, median over rounds (x LIMIT):", ""]
        lines += _throughput_table(w, num_envs)
        lines += ["", "Details (medians over rounds; memory read after the timed loop):", ""]
        lines += _details_table(w)
        lines += _growth_table(w)
    lines += ["", "Contenders:", ""]
    lines += [f"- **{label}**: {text}" for label, text in result["contenders"].items()]
    for s in result["skipped"]:
        where = f" at n={s['num_envs']}" if s["num_envs"] is not None else ""
        lines.append(f"- skipped: {s['contender']}{where}: {s['reason']}")
    for e in result["errors"]:
        lines.append(
            f"- error: {e['kind']} {e['contender'] or ''} {e['workload'] or ''} "
            f"n={e['num_envs']} round {e['round']}: {e['error']}"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str | os.PathLike[str]) -> str | None:
    """Steps/s against ``num_envs``, one panel per workload, with the LIMIT line.

    Needs matplotlib (the ``bench`` extra), imported here; uses no global pyplot state.

    Args:
        result: As returned by :func:`run_benchmark`.
        path: Where to write the PNG.

    Returns:
        ``None`` when written, else why not (matplotlib missing).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return f"no plot: matplotlib is not installed; {PLOT_HINT}"
    workloads = result["workloads"]
    fig = Figure(figsize=(6 * len(workloads), 4.5), layout="constrained")
    axes = fig.subplots(1, len(workloads), squeeze=False)[0]
    for ax, (name, w) in zip(axes, workloads.items(), strict=True):
        _plot_workload(ax, name, w, result["config"]["num_envs"])
    m = result["machine"]
    fig.suptitle(f"{result['config']['game']}: {m['cpu_model']}, {m['cores_available']} cores")
    fig.savefig(os.fspath(path), dpi=120)
    return None


def _plot_workload(ax: Any, name: str, w: dict[str, Any], num_envs: Sequence[int]) -> None:
    for label in dict.fromkeys(r["contender"] for r in w["results"]):
        rows = [
            r for r in w["results"] if r["contender"] == label and r["steps_per_second"]["median"]
        ]
        xs = [r["num_envs"] for r in rows]
        med = np.array([r["steps_per_second"]["median"] for r in rows])
        low = med - np.array([r["steps_per_second"]["min"] for r in rows])
        high = np.array([r["steps_per_second"]["max"] for r in rows]) - med
        ax.errorbar(xs, med, yerr=[low, high], marker="o", capsize=3, label=label)
    lim, one = w["limit"], w["single_env"]
    if lim["median"]:
        label = f"LIMIT ({lim['cores']} cores x 1 env)"
        ax.axhline(lim["median"], color="black", linestyle="--", label=label)
        ax.axhspan(lim["min"], lim["max"], color="black", alpha=0.08)
        ax.axhline(one["median"], color="grey", linestyle=":", label="1 env in-process")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(num_envs), [str(n) for n in num_envs])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("num_envs")
    ax.set_ylabel("env steps/s (median, min-max)")
    ax.set_title(f"workload {name}")
    ax.legend(fontsize="small")


def write_outputs(
    result: dict[str, Any],
    out_dir: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Write the JSON, Markdown and PNG of a result.

    Args:
        result: As returned by :func:`run_benchmark`.
        out_dir: Folder for ``throughput.json``, ``throughput.md`` and ``throughput.png``
            (created); ``None``: none of them.
        json_path: Also (or only) write the JSON to this file.

    Returns:
        What was written: ``"json"``, ``"markdown"``, ``"png"`` (in ``out_dir``) and
        ``"json file"`` (``json_path``) mapped to paths, and ``"note"`` saying why the
        plot was skipped.
    """
    written: dict[str, str] = {}
    text = json.dumps(result, indent=2) + "\n"
    if json_path is not None:
        Path(json_path).write_text(text)
        written["json file"] = os.fspath(json_path)
    if out_dir is None:
        return written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{OUTPUT_STEM}.json").write_text(text)
    written["json"] = os.fspath(out / f"{OUTPUT_STEM}.json")
    (out / f"{OUTPUT_STEM}.md").write_text(render_markdown(result))
    written["markdown"] = os.fspath(out / f"{OUTPUT_STEM}.md")
    note = plot(result, out / f"{OUTPUT_STEM}.png")
    if note is None:
        written["png"] = os.fspath(out / f"{OUTPUT_STEM}.png")
    else:
        written["note"] = note
    return written
