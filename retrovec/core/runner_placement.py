"""Where the Ray env runners go: how many envs each hosts, which envs, and starting them.

The layout half of :class:`~retrovec.core.ray_runners.RayRunnerVectorEnv`: the default
number of envs per runner (as many as the largest node has CPUs for, balanced),
the consecutive block of envs each runner hosts, each runner's ``ray.remote`` options, the
placement group (one bundle per runner, created here or the user's), and starting one runner
actor in its place. Sending commands to the runners is :mod:`retrovec.core.runner_transport`;
reading their replies, :mod:`retrovec.core.runner_replies`.

Example:
    >>> default_envs_per_runner(10, [4.0], 1)  # 4 CPUs: runners of at most 4, balanced
    4
    >>> runner_layout(10, 4)
    [range(0, 4), range(4, 8), range(8, 10)]
    >>> per_runner_options({"resources": {"emu": 1}}, 2, 4)
    [{'resources': {'emu': 1}}, {'resources': {'emu': 1}}]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["RunnerPlacementMixin", "default_envs_per_runner", "per_runner_options", "runner_layout"]


def default_envs_per_runner(num_envs: int, node_cpus: Sequence[float], num_cpus: float) -> int:
    """How many envs each runner hosts when the user does not say: as many as the largest
    node has CPUs for (``num_cpus`` each), balanced over the runners that takes.

    Args:
        num_envs: The number of envs.
        node_cpus: The CPUs of each alive node.
        num_cpus: CPUs reserved per env (``0``: no limit, one runner).

    Returns:
        ``k`` in ``1..num_envs``: runner ``r`` hosts envs ``r*k .. r*k+k-1``.

    Example:
        >>> default_envs_per_runner(16, [4.0, 4.0], 1)
        4
        >>> default_envs_per_runner(5, [], 1), default_envs_per_runner(5, [2.0], 0)
        (5, 5)
    """
    if num_cpus <= 0 or not node_cpus:
        return num_envs
    capacity = max(1, int(max(node_cpus) // num_cpus))
    runners = math.ceil(num_envs / capacity)
    return math.ceil(num_envs / runners)


def runner_layout(num_envs: int, envs_per_runner: int) -> list[range]:
    """The envs of each runner: consecutive blocks of ``envs_per_runner`` (the last may be
    smaller).

    Example:
        >>> runner_layout(5, 2)
        [range(0, 2), range(2, 4), range(4, 5)]
    """
    return [
        range(start, min(start + envs_per_runner, num_envs))
        for start in range(0, num_envs, envs_per_runner)
    ]


def per_runner_options(
    runner_options: dict[str, Any] | Sequence[dict[str, Any]] | None,
    count: int,
    envs_per_runner: int,
) -> list[dict[str, Any]]:
    """One dict of extra ``ray.remote`` options per runner (each a copy of the user's).

    Args:
        runner_options: ``None``, one dict for every runner, or one dict per runner.
        count: How many runners there are.
        envs_per_runner: Envs per runner (named in the error message).

    Returns:
        ``count`` dicts.

    Raises:
        ValueError: A list of options whose length is not ``count``.

    Example:
        >>> per_runner_options(None, 2, 8)
        [{}, {}]
        >>> per_runner_options([{"num_gpus": 1}], 2, 8)
        Traceback (most recent call last):
        ...
        ValueError: runner_options must be a dict or one dict per runner (2 runners of envs_per_runner=8), got 1.
    """
    if runner_options is None or isinstance(runner_options, dict):
        return [dict(runner_options or {}) for _ in range(count)]
    per_runner = [dict(options) for options in runner_options]
    if len(per_runner) != count:
        raise ValueError(
            f"runner_options must be a dict or one dict per runner ({count} runners "
            f"of envs_per_runner={envs_per_runner}), got {len(per_runner)}."
        )
    return per_runner


def check_cluster_fits(
    num_envs: int, num_cpus: float, envs_per_runner: int, node_cpus: Sequence[float]
) -> None:
    """Refuse a layout that Ray could never place, instead of waiting for it forever.

    Ray keeps an actor that asks for more CPUs than any node has pending until a node
    that has them joins, silently: a ``make(num_envs=16, backend="ray")`` on a 2-CPU
    laptop would hang at start-up. Each env is its own process whatever Ray reserves, so
    the fix is usually a smaller ``num_cpus``.

    Args:
        num_envs: The number of envs.
        num_cpus: CPUs reserved per env.
        envs_per_runner: The envs of the largest runner.
        node_cpus: The CPUs of each alive node.

    Raises:
        ValueError: The envs need more CPUs than the cluster has, or one runner more than
            its largest node has.

    Example:
        >>> check_cluster_fits(16, 0.125, 16, [2.0])
        >>> check_cluster_fits(16, 1, 2, [2.0])
        Traceback (most recent call last):
        ...
        ValueError: 16 envs at num_cpus=1 need 16 CPUs, but the Ray cluster has 2 (largest node 2), so Ray would keep the runners waiting for CPUs forever. Pass num_cpus=0.125 (every env is its own process either way; num_cpus is what Ray reserves), fewer envs, or add nodes.
    """
    if num_cpus <= 0 or not node_cpus:
        return
    total, largest = sum(node_cpus), max(node_cpus)
    needed, per_runner = num_cpus * num_envs, num_cpus * envs_per_runner
    if needed <= total + 1e-9 and per_runner <= largest + 1e-9:
        return
    fitting = largest / envs_per_runner if needed <= total else total / num_envs
    what = (
        f"{num_envs} envs at num_cpus={num_cpus:g} need {needed:g} CPUs"
        if needed > total
        else f"a runner of {envs_per_runner} envs at num_cpus={num_cpus:g} needs "
        f"{per_runner:g} CPUs on one node"
    )
    raise ValueError(
        f"{what}, but the Ray cluster has {total:g} (largest node {largest:g}), so Ray "
        f"would keep the runners waiting for CPUs forever. Pass num_cpus={fitting:g} (every "
        "env is its own process either way; num_cpus is what Ray reserves), fewer envs, or "
        "add nodes."
    )


class RunnerPlacementMixin:
    """The runners' layout and start-up, for
    :class:`~retrovec.core.ray_runners.RayRunnerVectorEnv`: which runner hosts an env,
    the placement group, and starting one runner actor in its bundle or spread over the
    nodes."""

    num_envs: int
    num_cpus: float
    runner_envs: list[range]
    runner_options: list[dict[str, Any]]
    env_fns: Any
    _runner_of: Any
    _runner_class: Any
    _inner_options: dict[str, Any]
    _group: Any
    _created_group: Any

    def runner_of(self, index: int) -> int:
        """The runner that hosts env ``index``.

        Raises:
            IndexError: ``index`` is not an env index.
        """
        if not -self.num_envs <= index < self.num_envs:
            raise IndexError(f"env index {index} is out of range for {self.num_envs} envs.")
        return int(self._runner_of[index])

    @property
    def num_runners(self) -> int:
        """How many runners there are."""
        return len(self.runner_envs)

    # ------------------------------------------------------------------ start-up

    def _placement_group(self, placement_group: Any, count: int) -> Any:
        if placement_group is None:
            return None
        if isinstance(placement_group, str):
            from ray.util.placement_group import placement_group as create

            bundles = [{"CPU": self.num_cpus * len(envs)} for envs in self.runner_envs]
            if self.num_cpus == 0:
                bundles = [{"CPU": 0.001} for _ in self.runner_envs]
            group = self._created_group = create(bundles, strategy=placement_group)
            return group
        if placement_group.bundle_count < count:
            raise ValueError(
                f"The placement group has {placement_group.bundle_count} bundles; "
                f"{count} runners need one each."
            )
        return placement_group

    def _start_runner(self, runner: int) -> Any:
        """A new runner actor (its envs are built by ``"build"`` commands)."""
        envs = self.runner_envs[runner]
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus * len(envs), "max_restarts": 0, "max_task_retries": 0,
        }
        if self._group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self._group, placement_group_bundle_index=runner
            )
            if self._created_group is not None and self.num_cpus == 0:
                options["num_cpus"] = 0.001
        elif "scheduling_strategy" not in self.runner_options[runner]:
            options["scheduling_strategy"] = "SPREAD"
        options.update(self.runner_options[runner])
        return self._runner_class.options(**options).remote(
            [self.env_fns[i] for i in envs], list(envs), self._inner_options
        )

    def _remove_placement_group(self) -> None:
        """Remove the placement group this vector env created (not a user's)."""
        if self._created_group is not None:
            try:
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(self._created_group)
            except Exception:  # noqa: BLE001, S110 # pragma: no cover - Ray already shut down
                pass
            self._created_group = None
