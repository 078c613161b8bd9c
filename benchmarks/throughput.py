"""Env steps per second on Airstriker: retrovec against gymnasium's and SB3's vector envs.

A thin script over :mod:`retrovec.benchmark`, with exactly the options of
``retrovec bench`` (it runs that command). Every contender is measured in the same run,
interleaved round by round; each figure is the median over the rounds with its min-max,
and a ratio to LIMIT = (CPU cores) x (one env stepped in-process, no IPC). Method and
caveats: benchmarks/README.md.

    python benchmarks/throughput.py --num-envs 8 --rounds 3 --seconds 3
    python benchmarks/throughput.py --num-envs 1 2 4 8 16 --workloads rgb atari \\
        --rounds 5 --seconds 5 --growth-steps 100000 --out benchmarks/results

``--out DIR`` writes throughput.json, throughput.md and throughput.png (the plot needs
matplotlib: ``pip install -e '.[bench]'``); ``--json FILE`` writes the JSON alone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from retrovec.cli import main as retrovec_main


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``retrovec bench`` with ``argv`` (default: this script's arguments).

    Args:
        argv: The options, as for ``retrovec bench``.

    Returns:
        Its exit code: 0, 1 if a measurement failed, 2 on bad usage.
    """
    return retrovec_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
