"""docs/cleanrl.md: its CleanRL-style loop runs unchanged on retrovec (the page's code is run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

DOC = Path(__file__).resolve().parents[2] / "docs" / "cleanrl.md"


def doc_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/cleanrl.md should have exactly one python block"
    return blocks[0]


def test_the_documented_loop_runs_and_masks_reset_steps(capsys):
    namespace: dict = {"__name__": "cleanrl_doc"}
    exec(compile(doc_code(), str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "iteration 1:" in printed
    # Episodes of at most 20 steps, 32 steps per env: each env finished one or more, seen
    # by RecordEpisodeStatistics, and the step after each end was masked out.
    assert len(namespace["episode_returns"]) >= 2
    valid, dones = namespace["valid"], namespace["dones"]  # the last iteration's rollout
    ended = dones[:-1].bool()
    assert ended.any()
    assert (valid[1:][ended] == 0).all()
    # nothing else is masked (an end at the rollout's last step masks the next rollout's first)
    assert int((valid[1:] == 0).sum()) == int(ended.sum())
