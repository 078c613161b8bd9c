"""The reusable throughput measurement behind ``retrovec bench`` and ``benchmarks/throughput.py``.

Total env steps per second over the vector, for several contenders stepping the same
stable-retro game with the same per-env work, all measured in **one run**, interleaved
round by round::

    round 1: bare emulator; per workload: LIMIT, then per num_envs: every contender
    round 2: the same, the contender order rotated by one
    ...

so that the machine's noise (other processes, thermal state) hits every contender alike.
Each figure is the median over the rounds with its min-max, and also a ratio to

    LIMIT = (CPU cores available) x (one env stepped in-process, no IPC, same workload)

where the cores are ``len(os.sched_getaffinity(0))``. The in-process env runs in a fresh
subprocess (stable-retro allows one emulator per process, and this process must never hold
an emulator while it forks workers); so does the bare emulator (``set_button_mask`` +
``em.step`` + one ``em.get_screen`` per frame, no Python env around it).

Every measurement builds its contender afresh (construct + first reset is the start-up
time), warms it up, then times about ``seconds`` of step calls with :class:`timeit.Timer`
(so the garbage collector is off in the timed loop, as for any ``timeit`` figure). Actions
are drawn before the timed loop. After the loop it reads the parent's CPU time
(``time.process_time``) and the PSS of the parent and of the workers. With
``growth_steps`` it also runs each contender that long at the largest ``num_envs`` and
reports the growth of RSS/PSS per 1,000 env steps.

Modules, in the order data flows:

* :mod:`~retrovec.benchmark.contenders`: workloads, contenders, the runners they build.
* :mod:`~retrovec.benchmark.measure`: one timed loop, memory, the measuring subprocesses.
* :mod:`~retrovec.benchmark.run`: the interleaved plan, the run, the summaries (JSON).
* :mod:`~retrovec.benchmark.report`: Markdown, PNG plot, output files.

Example:
    >>> from retrovec.benchmark import BenchmarkConfig, run_benchmark, write_outputs
    >>> config = BenchmarkConfig(num_envs=(1, 2), rounds=3, seconds=1.0)
    >>> result = run_benchmark(config, progress=True)  # doctest: +SKIP
    >>> write_outputs(result, "benchmarks/results")  # doctest: +SKIP
    {'json': 'benchmarks/results/throughput.json', 'markdown': ..., 'png': ...}
"""

from retrovec.benchmark.contenders import (
    CONTENDERS,
    WORKLOADS,
    Contender,
    Runner,
    Workload,
    contender_status,
)
from retrovec.benchmark.measure import BenchmarkError, time_calls
from retrovec.benchmark.report import plot, render_markdown, write_outputs
from retrovec.benchmark.run import (
    DEFAULT_GAME,
    DEFAULT_NUM_ENVS,
    DEFAULT_ROUNDS,
    DEFAULT_SECONDS,
    FULL,
    QUICK,
    QUICK_CONTENDERS,
    BenchmarkConfig,
    Task,
    describe_machine,
    plan_tasks,
    run_benchmark,
    spread,
    summarize,
)

__all__ = [
    "CONTENDERS",
    "DEFAULT_GAME",
    "DEFAULT_NUM_ENVS",
    "DEFAULT_ROUNDS",
    "DEFAULT_SECONDS",
    "FULL",
    "QUICK",
    "QUICK_CONTENDERS",
    "WORKLOADS",
    "BenchmarkConfig",
    "BenchmarkError",
    "Contender",
    "Runner",
    "Task",
    "Workload",
    "contender_status",
    "describe_machine",
    "plan_tasks",
    "plot",
    "render_markdown",
    "run_benchmark",
    "spread",
    "summarize",
    "time_calls",
    "write_outputs",
]
