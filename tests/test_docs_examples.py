"""Every Python example in README.md and docs/ runs, as a reader would paste it.

A page's ```python blocks run in order in one namespace (``__name__ == "__main__"``), in a
fresh working directory, so later blocks may use what earlier ones made, as a tutorial
does. Blocks of ``>>>`` lines run as doctests. A block that cannot run as it stands (a
fragment that names things defined elsewhere, a run of hours, a Ray cluster's address)
says so on the line before its fence: ``<!-- not run: why -->``. Every block is either run
or marked, so no example escapes silently. The docstring examples of the package itself
run too: pytest collects them (``--doctest-modules`` in pyproject.toml).
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
NOT_RUN = re.compile(r"<!-- not run: (?P<why>[^>]+?) -->")


def python_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, why_not_run)`` for each ```python block of ``page``."""
    lines = page.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index
            previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
            marker = NOT_RUN.search(previous)
            index += 1
            code = []
            while lines[index].strip() != "```":
                code.append(lines[index])
                index += 1
            blocks.append((start + 1, "\n".join(code) + "\n", marker and marker["why"]))
        index += 1
    return blocks


def test_every_block_is_run_or_says_why_not():
    blocks = [(page, *block) for page in PAGES for block in python_blocks(page)]
    assert len(blocks) > 30
    run = [b for b in blocks if b[3] is None]
    assert len(run) > 20, "most examples must run"
    for page, line, _, why in blocks:
        assert why is None or len(why) > 10, f"{page.name}:{line}: say why it is not run"


def run_page(page: Path) -> None:
    """Run a page's examples here, in order, in one namespace (``__main__``)."""
    namespace: dict = {"__name__": "__main__"}
    for line, code, why in python_blocks(page):
        if why is not None:
            continue
        where = f"{page.relative_to(ROOT)}:{line}"
        if code.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(code, namespace, where, str(page), line)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            runner.run(test)
            if runner.failures:
                raise AssertionError(f"{where}: doctest failed (output above)")
        else:
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_the_examples_of_a_page_run(page, tmp_path):
    """Each page in its own interpreter and empty directory, as a reader runs it: what an
    example changes (stable-retro's custom integration paths, files) stays there."""
    if all(why is not None for _, _, why in python_blocks(page)):
        pytest.skip("every example of this page says why it is not run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_docs_examples", str(page)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, f"{page.name}:\n{done.stdout}\n{done.stderr}"


if __name__ == "__main__":
    run_page(Path(sys.argv[1]))
