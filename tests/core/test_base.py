"""retrovec.core.base: the base class is the whole vector env but for a transport.

``InProcessVectorEnv`` gives it the simplest transport there is (every env in this process,
every command answered at once; of no use with stable-retro, which allows one emulator per
process) and must then behave exactly as gymnasium's vector envs do: the five transport
methods are the whole contract. The process and Ray transports are tested on the real
emulator in test_backends.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState

from retrovec.core.actions import IN_ARENA
from retrovec.core.base import RetroVectorEnvBase
from retrovec.core.server import EnvServer, describe, error_reply
from retrovec.core.slots import CALL
from retrovec.errors import RemoteTraceback, WorkerCrashedError
from tests.envs import FailingEnv, ToyError, fns, make_toy
from tests.lockstep import run_lockstep


class InProcessVectorEnv(RetroVectorEnvBase):
    """Every env in this process, each behind the same :class:`EnvServer` the workers use.
    ``kill(i)`` makes env ``i`` answer as a dead worker until it is replaced."""

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
        self.servers: list[EnvServer | None] = [None] * self.num_envs
        self.answers: dict[int, Any] = {}
        self.dead: set[int] = set()
        self.posted: list[tuple[int, str]] = []
        self._dispatch([(index, "build", None) for index in range(self.num_envs)], CALL)
        self._state = AsyncState.WAITING_CALL
        self._adopt_spaces(self._finish_call("__init__", timeout))
        self._attach_driver_arena()

    def kill(self, index: int) -> None:
        self.dead.add(index)

    # the transport
    def _encode(self, kind: str, argument: Any) -> Any:
        return kind, argument

    def _post(self, index: int, message: Any) -> bool:
        kind, argument = message
        self.posted.append((index, kind))
        if index in self.dead:
            return False
        try:
            self.answers[index] = (True, self._run(index, kind, argument))
        except Exception as error:
            self.answers[index] = error_reply(error)
        return True

    def _run(self, index: int, kind: str, argument: Any) -> Any:
        if kind == "build":
            env = self.env_fns[index]()
            self.servers[index] = EnvServer(env, self.autoreset_mode)
            return describe(env)
        server = self.servers[index]
        if kind == "step":
            action = self._read_actions[index]() if argument is IN_ARENA else argument
            observation, reward, terminated, truncated, info = server.step(action)
            self._arena.rewards[index] = reward
            self._arena.terminations[index] = terminated
            self._arena.truncations[index] = truncated
            return observation, info
        return server.handle(kind, argument)

    def _replies(
        self, pending: set[int], timeout: float | None, wanted: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        for index in sorted(pending):
            pending.discard(index)
            yield index, self.answers.pop(index, None)

    def _replace_worker(self, index: int) -> None:
        self.dead.discard(index)
        self._check_description(index, self._request(index, "build", None)[1])

    def close_extras(self, timeout=None, terminate=False) -> None:
        for server in self.servers:
            if server is not None:
                server.close()
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
