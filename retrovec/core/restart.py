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

__all__ = ["POLICY", "Recovery", "policy_table"]


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
