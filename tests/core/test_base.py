"""retrovec.core.base: the base class is the whole vector env but for a transport.

``InProcessVectorEnv`` gives it the simplest transport there is (every env in this process,
every command answered at once; of no use with stable-retro, which allows one emulator per
process) and must then behave exactly as gymnasium's vector envs do: the four transport
methods are the whole contract. The process and Ray transports are tested on the real
emulator in test_backends.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.autoreset import autoreset_step
from retrovec.errors import RemoteTraceback, WorkerCrashedError
from retrovec.core.base import RetroVectorEnvBase
from retrovec.core.worker import error_reply
from tests.envs import FailingEnv, ToyError, fns, make_toy
from tests.lockstep import run_lockstep


class InProcessVectorEnv(RetroVectorEnvBase):
    """Every env in this process. ``kill(i)`` makes env ``i`` answer as a dead worker."""

    _worker_noun = "in-process env"

    def __init__(self, env_fns, *, copy=True, observation_mode="same",
                 autoreset_mode=AutoresetMode.NEXT_STEP, timeout=None,
                 on_worker_failure="raise", max_restarts=3, batch_size=None) -> None:
        env_fns = self._init_base(
            env_fns, copy=copy, observation_mode=observation_mode,
            autoreset_mode=autoreset_mode, timeout=timeout,
            on_worker_failure=on_worker_failure, max_restarts=max_restarts,
            batch_size=batch_size,
        )
        self.envs: list[Any] = [None] * self.num_envs
        self.needs_reset = [False] * self.num_envs
        self.last_observation: list[Any] = [None] * self.num_envs
        self.answers: dict[int, Any] = {}
        self.dead: set[int] = set()
        self.posted: list[tuple[int, str]] = []
        self._state = AsyncState.WAITING_CALL
        for index in range(self.num_envs):
            self._send(index, "build", None, "__init__")
        self._adopt_spaces(self._collect("__init__", timeout))
        self._attach_driver_arena()

    def kill(self, index: int) -> None:
        self.dead.add(index)

    # the transport
    def _post(self, index: int, kind: str, argument: Any) -> bool:
        self.posted.append((index, kind))
        if index in self.dead:
            self.answers[index] = None
            return True
        try:
            self.answers[index] = (True, self._run(index, kind, argument))
        except Exception as error:
            self.answers[index] = error_reply(error)
        return True

    def _run(self, index: int, kind: str, argument: Any) -> Any:
        if kind == "build":
            env = self.envs[index] = self.env_fns[index]()
            return {"observation_space": env.observation_space,
                    "action_space": env.action_space, "metadata": dict(env.metadata),
                    "render_mode": env.render_mode}
        env = self.envs[index]
        if kind in ("reset", "reset-after-restart"):
            seed, options = argument or (None, None)
            observation, info = env.reset(seed=seed, options=options)
            self.last_observation[index] = observation
            self.needs_reset[index] = (
                kind == "reset-after-restart" and self.autoreset_mode is AutoresetMode.NEXT_STEP
            )
            return observation, info
        if kind == "reset-noop":
            return self.last_observation[index], {}
        if kind == "step":
            action = self._read_actions[index]() if argument is None else argument
            observation, reward, terminated, truncated, info, self.needs_reset[index] = (
                autoreset_step(env, action, self.autoreset_mode, self.needs_reset[index])
            )
            self._arena.rewards[index] = reward
            self._arena.terminations[index] = terminated
            self._arena.truncations[index] = truncated
            self.last_observation[index] = observation
            return observation, info
        if kind == "call":
            name, args, kwargs = argument
            attribute = env.get_wrapper_attr(name)
            return attribute(*args, **kwargs) if callable(attribute) else attribute
        if kind == "setattr":
            return env.set_wrapper_attr(*argument)
        raise AssertionError(f"unknown command {kind!r}")

    def _replies_from(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        for index in sorted(pending):
            pending.discard(index)
            yield index, self.answers.pop(index)

    def _restart_worker(self, index: int) -> tuple[Any, dict]:
        self.dead.discard(index)
        self._check_description(index, self._request(index, "build", None, "restart"))
        return self._request(index, "reset-after-restart", None, "restart")

    def close_extras(self, timeout=None, terminate=False) -> None:
        for env in self.envs:
            if env is not None:
                env.close()
        if self._arena is not None:
            self._write_actions = None
            self._read_actions = []
            self._arena.close()
            self._arena = None


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_the_base_on_a_trivial_transport_steps_like_gymnasium(mode):
    """Spaces, seeding, autoreset, reset masks, infos: all the base's, identical."""
    ends = run_lockstep(InProcessVectorEnv, fns(make_toy, 3, max_steps=4), mode, steps=20)
    assert ends >= 9


def test_an_env_exception_keeps_its_type_and_remote_traceback():
    envs = InProcessVectorEnv(fns(FailingEnv, 2, fail_in="step"))
    try:
        envs.reset(seed=0)
        with pytest.raises(ToyError) as caught:
            envs.step(envs.action_space.sample())
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert "Raised in the in-process env of env 0 during `step_wait`" in str(
            caught.value.__notes__
        )
    finally:
        envs.close()


def test_a_dead_env_is_a_crash_or_a_restart_through_the_transport_hooks():
    raising = InProcessVectorEnv(fns(make_toy, 2))
    restarting = InProcessVectorEnv(fns(make_toy, 2), on_worker_failure="restart")
    try:
        for envs in (raising, restarting):
            envs.reset(seed=0)
            envs.kill(1)
        with pytest.raises(WorkerCrashedError, match="env 1"):
            raising.step(raising.action_space.sample())
        with pytest.warns(UserWarning, match="in-process env of env 1 died"):
            _, rewards, _, truncations, infos = restarting.step(restarting.action_space.sample())
        assert truncations.tolist() == [False, True] and rewards[1] == 0.0
        assert infos["worker_restarted"].tolist() == [False, True]
        assert restarting.restart_counts.tolist() == [0, 1]
        assert [kind for i, kind in restarting.posted[-2:]] == ["build", "reset-after-restart"]
        restarting.step(restarting.action_space.sample())  # NEXT_STEP: env 1's reset step
    finally:
        raising.close()
        restarting.close()


def test_async_batches_run_on_the_transport_hooks():
    envs = InProcessVectorEnv(fns(make_toy, 4), batch_size=2)
    try:
        envs.async_reset(seed=0)
        actions = (np.zeros(2, dtype=np.int64), np.zeros((2, 2), dtype=np.float32))
        for _ in range(5):
            observations, rewards, _, _, infos = envs.recv()
            assert len(rewards) == 2 and len(infos["env_id"]) == 2
            envs.send(actions, infos["env_id"])
    finally:
        envs.close()
