"""The restart policy: what ``on_worker_failure="restart"`` does for each command that was in
flight (or about to be sent) when an env's worker was found dead.

The policy is keyed by the command, not by which method noticed the death, so a worker that
died while idle is treated exactly as one that died running the command it was about to
get. A replacement worker is built from the same ``env_fn`` and runs the ``replay`` command;
then the ``outcome`` applies. ``docs/errors.md`` carries :func:`policy_table` verbatim (a
test checks it).

Example:
    >>> POLICY["reset"].replay, POLICY["step"].outcome
    ('reset', 'truncated_step')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gymnasium import logger
from gymnasium.vector import AutoresetMode

from retrovec.core.arena import index_structure
from retrovec.errors import WorkerCrashedError, WorkerTimeoutError, describe_exitcode

__all__ = ["POLICY", "Recovery", "ReplacementDied", "RestartMixin", "policy_table"]


class ReplacementDied(Exception):
    """A replacement worker died before it could take commands (the restart loop tries
    again while ``max_restarts`` allows)."""


@dataclass(frozen=True)
class Recovery:
    """What happens to one command whose worker died.

    Attributes:
        replay: What the replacement runs: ``"reset"`` (the same seed and options) or
            ``"reset-after-restart"`` (a fresh episode; the old one is reported truncated).
        outcome: ``"reset"`` (the reset returns normally), ``"truncated_step"`` (this step
            returns a truncated transition), ``"episode_end_next_step"`` (the next step
            returns it) or ``"raise_restarted"`` (``WorkerCrashedError(restarted=True)``,
            and the next step returns the truncated transition).
        user_view: What the user sees, in words (the table in ``docs/errors.md``).
    """

    replay: str
    outcome: str
    user_view: str


POLICY: dict[str, Recovery] = {
    "reset": Recovery(
        "reset",
        "reset",
        "the reset returns normally: the replacement is reset with the same seed and options, "
        "its info flagged `worker_restarted`",
    ),
    "reset-noop": Recovery(
        "reset-after-restart",
        "episode_end_next_step",
        "the masked reset returns normally, that env's row holding the replacement's first "
        "observation; its next step reports the old episode as truncated with "
        "`worker_restarted`",
    ),
    "step": Recovery(
        "reset-after-restart",
        "truncated_step",
        "that step returns normally; for the restarted env: the new reset observation, reward "
        "0, `terminated=False`, `truncated=True`, `info[\"worker_restarted\"]=True` (with its "
        "`_worker_restarted` mask). Under `NEXT_STEP` the following step is that env's reset "
        "step, as after any episode end; under `SAME_STEP` `final_obs` is the reset observation",
    ),
    "call": Recovery(
        "reset-after-restart",
        "raise_restarted",
        "`WorkerCrashedError` with `restarted=True` once the other envs have answered; the "
        "vector env stays usable and the restarted env's next step reports its episode as "
        "truncated",
    ),
    "setattr": Recovery(
        "reset-after-restart",
        "raise_restarted",
        "as for `call`",
    ),
}

_NAMES = {
    "reset": "`reset` (the env was being reset)",
    "reset-noop": "`reset` with a `reset_mask` that leaves the env out",
    "step": "`step`, `send`",
    "call": "`call`, `get_attr`",
    "setattr": "`set_attr`",
}


def policy_table() -> str:
    """The policy as the Markdown table in ``docs/errors.md``.

    Example:
        >>> policy_table().splitlines()[0]
        '| the worker was found dead by | you get |'
    """
    rows = ["| the worker was found dead by | you get |", "|---|---|"]
    rows += [f"| {_NAMES[kind]} | {recovery.user_view} |" for kind, recovery in POLICY.items()]
    return "\n".join(rows)


class RestartMixin:
    """Applies :data:`POLICY` for :class:`~retrovec.core.base.RetroVectorEnvBase`: builds
    replacements through the transport's ``_replace_worker`` and replays commands."""

    def _revive(self, index: int, method: str) -> str:
        """Apply the restart policy to dead slot ``index``; returns the outcome's name."""
        slot = self._slots[index]
        recovery = POLICY[slot.kind]
        replay = (slot.kind, slot.argument) if recovery.replay == "reset" else (
            "reset-after-restart", None
        )
        observation, info = self._restart(index, slot.kind, method, replay)
        info = {**self._info_dict(index, info), "worker_restarted": True}
        outcome = recovery.outcome
        if outcome == "reset":
            result: Any = (observation, info)
        elif outcome == "truncated_step":
            result = self._truncated_step(index, (observation, info))
        else:  # the episode end is reported by this env's next step
            slot.episode_end = (observation, info)
            result = (observation, {}) if outcome == "episode_end_next_step" else None
        self._slots.finish(index, slot.kind, result, slot.owner)
        return outcome

    def _restart(
        self, index: int, kind: str, method: str, replay: tuple[str, Any]
    ) -> tuple[Any, dict]:
        """Replace env ``index``'s worker and run ``replay`` on it, trying again while
        ``max_restarts`` allows; returns the replay's ``(observation, info)``."""
        cause: BaseException | None = self._crash_cause
        while True:
            exitcode = self._last_exitcode = self._exitcode(index)
            self.restart_counts[index] += 1
            if self.restart_counts[index] > self.max_restarts:
                self._crashed = True
                self._broken = (
                    f"the {self._worker_noun} of env {index} died "
                    f"{self.restart_counts[index]} times"
                )
                raise WorkerCrashedError(
                    index, exitcode, f"`{method}`", gave_up_after=self.max_restarts
                ) from cause
            how = "died" if exitcode is None else describe_exitcode(exitcode)
            logger.warn(
                f"The {self._worker_noun} of env {index} {how} during `{kind}`; "
                f"restarting it ({self.restart_counts[index]} of at most {self.max_restarts})."
            )
            try:
                self._replace_worker(index)
                reply = self._request(index, *replay)
            except (ReplacementDied, OSError) as error:
                cause = error
                continue
            except KeyboardInterrupt:
                # The user interrupted, nothing died: this attempt is not counted. The slot
                # stays dead, and the same *_wait builds a replacement again.
                self.restart_counts[index] -= 1
                raise
            if reply is None:
                continue
            if not reply[0]:
                self._crashed = True
                self._broken = (
                    f"the {self._worker_noun} of env {index} failed while being restarted"
                )
                self._raise_worker_error([index], {index: reply[1]}, method)
            return reply[1]

    def _replacement_payload(self, index: int, kind: str | None, argument: Any, step: str) -> Any:
        """Send ``kind`` to env ``index``'s replacement (``None``: only wait for its next
        reply) and return the reply's payload, for a transport's ``_replace_worker``.

        Raises:
            ReplacementDied: It died before answering.
            Exception: The env's own error; the vector env is then unusable.
        """
        reply = self._request(index, kind, argument)
        if reply is None:
            raise ReplacementDied(f"env {index}'s replacement died during {step}")
        if not reply[0]:
            self._crashed = True
            self._broken = (
                f"the {self._worker_noun} of env {index} failed while being restarted"
            )
            self._raise_worker_error([index], {index: reply[1]}, "restart")
        return reply[1]

    def _request(self, index: int, kind: str | None, argument: Any) -> Any:
        """One command to one env outside the slot table (``kind=None``: only wait for its
        next reply), used while it is being restarted. Returns the reply, ``None`` if it
        died; a timeout leaves the vector env unusable."""
        with self._guard:
            if kind is not None and not self._post(index, self._encode(kind, argument)):
                return None
            pending = {index}
            replies = list(self._replies(pending, self.timeout))
        if pending:
            self._crashed = True
            self._broken = (
                f"the {self._worker_noun} of env {index} did not answer while being restarted"
            )
            raise WorkerTimeoutError("restart", self.timeout, [index])
        return replies[0][1]

    def _truncated_step(self, index: int, reset_payload: tuple[Any, dict]) -> tuple[Any, dict]:
        """The step result of an env whose worker was replaced: its episode is truncated
        (reward 0) and the observation is the replacement's reset observation."""
        observation, info = reset_payload
        arena = self._arena
        assert arena is not None
        arena.rewards[index] = 0.0
        arena.terminations[index] = False
        arena.truncations[index] = True
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            final = observation if not self._observations_shared else index_structure(
                self.observations, index
            )
            info = {"final_info": {"worker_restarted": True}, "final_obs": final, **info}
        return observation, info

