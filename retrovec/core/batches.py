"""EnvPool-style asynchronous batches: ``async_reset()``, ``send()`` and ``recv()``.

With ``num_envs=16, batch_size=8``, ``recv()`` returns the first 8 envs to finish, while
the other 8 keep running; the agent computes actions for those 8 and ``send``s them back.
The emulators never wait for the slowest env or for the agent, which is how EnvPool keeps
every core busy. The API is EnvPool's, which its users know::

    envs = retrovec.make("Airstriker-Genesis-v0", num_envs=16, batch_size=8)
    envs.async_reset()
    while True:
        observations, rewards, terminations, truncations, infos = envs.recv()
        env_id = infos["env_id"]                       # which envs these rows are
        envs.send(policy(observations), env_id)

Each env autoresets in its own worker, following the vector env's ``autoreset_mode``.
Results come back in the order the envs finished. ``step()`` and the rest of the
gymnasium API keep working once every batch in flight has been received.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.error import AlreadyPendingCallError, ResetNeeded
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import concatenate, create_empty_array

from retrovec.core.slots import BATCH
from retrovec.errors import WorkerTimeoutError

__all__ = ["AsyncBatchesMixin"]


class _BatchInfos:
    """Lets gymnasium's own ``_add_info`` batch infos over ``batch_size`` rows."""

    _add_info = VectorEnv._add_info

    def __init__(self, size: int) -> None:
        self.num_envs = size


def _take(batch: Any, rows: np.ndarray) -> Any:
    """Copy the given rows out of a nested dict/tuple of batch arrays."""
    if isinstance(batch, np.ndarray):
        return batch[rows]
    if isinstance(batch, dict):
        return {key: _take(value, rows) for key, value in batch.items()}
    return tuple(_take(value, rows) for value in batch)


class AsyncBatchesMixin:
    """``async_reset``/``send``/``recv`` for both backends: the slots owned by
    :data:`~retrovec.core.slots.BATCH` in :class:`~retrovec.core.base.RetroVectorEnvBase`'s
    slot table."""

    def _init_async_batches(self, batch_size: int | None) -> None:
        if batch_size is None:
            batch_size = self.num_envs
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
            1 <= batch_size <= self.num_envs
        ):
            raise ValueError(
                f"batch_size must be an int from 1 to num_envs={self.num_envs}, got {batch_size!r}."
            )
        #: How many envs :meth:`recv` returns.
        self.batch_size = batch_size
        self._parked_batch: tuple | None = None  # a received batch not handed over yet

    def _assert_no_batches(self, method: str) -> None:
        waiting = self._slots.owned(BATCH)
        if waiting:
            raise AlreadyPendingCallError(
                f"Calling `{method}` while envs {waiting} are still running after "
                "`send`/`async_reset`; `recv()` them first.",
                "recv",
            )

    def _release_batches_for_reset(self, method: str) -> None:
        """A reset may follow an env's error in a batch: then the batches still running are
        abandoned (their replies are read and dropped). Otherwise they must be received."""
        if self._broken is not None:
            self._slots.abandon(BATCH)
            self._parked_batch = None
        else:
            self._assert_no_batches(method)

    def async_reset(
        self, seed: int | list[int | None] | None = None, options: dict | None = None
    ) -> None:
        """Reset every env without waiting; :meth:`recv` returns the results in batches.

        Args:
            seed: As for :meth:`reset`.
            options: As for :meth:`reset`, without ``reset_mask`` (every env resets).

        Raises:
            ValueError: ``options`` holds ``reset_mask``.
        """
        self._assert_usable(allow_reset=True)
        self._release_batches_for_reset("async_reset")
        self._assert_no_call_pending("async_reset")
        seeds = self._seeds(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be None or a dict, got {options!r}.")
        if options is not None and "reset_mask" in options:
            raise ValueError(
                "async_reset() resets every env; `options['reset_mask']` is for reset(). "
                "To restart some envs in EnvPool mode, send() them until their episodes end."
            )
        self._dispatch(
            [(index, "reset", (seeds[index], options)) for index in range(self.num_envs)], BATCH
        )
        for slot in self._slots:
            slot.episode_end = None
        self._ever_reset[:] = True
        self._broken = None

    def send(self, actions: Any, env_id: Any = None) -> None:
        """Step the envs ``env_id`` with ``actions`` without waiting.

        Args:
            actions: One action per env in ``env_id``, batched like :attr:`action_space`
                but with ``len(env_id)`` rows.
            env_id: The envs to step (``info["env_id"]`` from :meth:`recv`); ``None``
                means every env.

        Raises:
            ValueError: An env id out of range, repeated, still running, or received
                actions of the wrong shape, dtype or range.
            ResetNeeded: Some of the envs were never reset.
        """
        self._assert_usable()
        self._assert_no_call_pending("send")
        ids = np.arange(self.num_envs) if env_id is None else np.asarray(env_id).reshape(-1)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"env_id must hold integer env indices, got {env_id!r}.")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs):
            raise ValueError(f"env_id must be in [0, {self.num_envs}), got {ids.tolist()}.")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"env_id holds an env twice: {ids.tolist()}.")
        busy = [int(i) for i in ids if self._slots[i].owner == BATCH]
        if busy:
            raise ValueError(
                f"Envs {busy} are still running or their results were not received yet: "
                "send only to envs that recv() returned."
            )
        if not self._ever_reset[ids].all():
            raise ResetNeeded("Call async_reset() (or reset()) before send().")
        arguments = self._step_arguments(actions, rows=ids)
        self._dispatch(self._step_commands(ids.tolist(), arguments, BATCH), BATCH)

    def recv(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Wait for the first :attr:`batch_size` envs to finish and return their results.

        Args:
            timeout: Seconds to wait (``None``: the constructor's ``timeout``).

        Returns:
            ``(observations, rewards, terminations, truncations, infos)`` with
            :attr:`batch_size` rows, in the order the envs finished;
            ``infos["env_id"]`` says which env each row is. A reset's row has reward 0
            and neither flag set.

        Raises:
            RuntimeError: Fewer than ``batch_size`` envs are running or finished.
            WorkerTimeoutError: They did not finish in time; those that did are kept.
        """
        self._assert_usable()
        if self._parked_batch is None:
            with self._guard:  # see _finish_call: a finished batch is parked, then handed over
                self._parked_batch = self._receive_batch(timeout)
        batch, self._parked_batch = self._parked_batch, None
        return batch

    def _receive_batch(
        self, timeout: float | None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        size = self.batch_size
        slots = self._slots
        owned = len(slots.owned(BATCH))
        if owned < size:
            raise RuntimeError(
                f"recv() returns batch_size={size} envs, but only {owned} are running or "
                "finished: send() to more envs first (or call async_reset())."
            )
        if timeout is None:
            timeout = self.timeout
        finished = len(slots.finished(BATCH))
        if finished < size:
            self._wait_for(set(slots.busy(BATCH)), timeout, wanted=size - finished)
        batch = slots.finished(BATCH)[:size]
        if len(batch) < size:
            raise WorkerTimeoutError("recv", timeout, slots.busy(BATCH))
        kinds = [slots[index].kind for index in batch]
        payloads = self._resolve(batch, "recv")

        rows = np.array(batch, dtype=np.int64)
        arena = self._arena
        rewards = arena.rewards[rows]
        terminations = arena.terminations[rows]
        truncations = arena.truncations[rows]
        resets = np.array([kind == "reset" for kind in kinds])
        rewards[resets] = 0.0
        terminations[resets] = False
        truncations[resets] = False
        if self._observations_shared:
            observations = _take(self.observations, rows)
        else:
            observations = concatenate(
                self.single_observation_space,
                [payload[0] for payload in payloads],
                create_empty_array(self.single_observation_space, n=size, fn=np.zeros),
            )
        infos = self._batch_infos(rows, [payload[1] for payload in payloads], _BatchInfos(size))
        infos["env_id"] = rows.astype(np.int32)
        return observations, rewards, terminations, truncations, infos
