"""Draw the learning curve of a `retrovec train` run from its TensorBoard events.

Every finished episode's return (``charts/episodic_return``) is a dot; the line is the
mean of the last ``--window`` episodes; the grey band is the random policy's mean ± std,
measured by ``retrovec evaluate --random`` and passed in with ``--random MEAN STD``.
It also prints the mean return in bins of ``--bin`` agent steps, for the notes.

Needs ``matplotlib`` (``pip install 'retrovec[bench]'``) and ``tensorboard``.

Example::

    python benchmarks/ppo_curve.py runs/ppo_airstriker --random 180.0 49.8 \\
        --out docs/images/ppo_airstriker.png
"""

from __future__ import annotations

import argparse

import numpy as np


def read_scalars(run_dir: str, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of one TensorBoard scalar in ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    events = accumulator.Scalars(tag)
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--random", nargs=2, type=float, metavar=("MEAN", "STD"))
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--bin", type=int, default=100_000)
    parser.add_argument("--title", default="PPO on Airstriker-Genesis-v0 (8 envs, retrovec)")
    parser.add_argument("--out", default="ppo_curve.png")
    args = parser.parse_args()

    steps, returns = read_scalars(args.run_dir, "charts/episodic_return")
    order = np.argsort(steps, kind="stable")
    steps, returns = steps[order], returns[order]
    window = min(args.window, len(returns))
    rolling = np.convolve(returns, np.ones(window) / window, mode="valid")

    for start in range(0, int(steps.max()) + 1, args.bin):
        in_bin = (steps >= start) & (steps < start + args.bin)
        if in_bin.any():
            print(f"steps {start:>9,}-{start + args.bin:<9,} episodes {in_bin.sum():>4} "
                  f"mean return {returns[in_bin].mean():7.1f} ± {returns[in_bin].std():6.1f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    axes.scatter(steps, returns, s=4, alpha=0.25, color="tab:blue", label="episode return")
    axes.plot(steps[window - 1:], rolling, color="tab:blue", linewidth=2,
              label=f"mean of the last {window} episodes")
    if args.random:
        mean, std = args.random
        axes.axhspan(mean - std, mean + std, color="grey", alpha=0.25)
        axes.axhline(mean, color="grey", linestyle="--",
                     label=f"random policy: {mean:.1f} ± {std:.1f}")
    axes.set_xlabel("agent steps (all envs)")
    axes.set_ylabel("episodic return (game score)")
    axes.set_title(args.title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
