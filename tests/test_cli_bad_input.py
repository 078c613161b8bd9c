"""Every subcommand answers bad input with one line and exit code 2, and starts and writes
nothing: no worker, no run directory, no TensorBoard file, no video, no benchmark output.

Each case runs ``retrovec.cli.main`` in-process with the working directory an empty
``tmp_path``; the files the cases need (a real checkpoint, a file that is not one, a
folder) live elsewhere. A missing dependency is simulated with ``sys.modules[name] =
None``, which makes ``import name`` fail as if it were not installed.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from retrovec import cli
from retrovec.retro.games import list_games
from tests.conftest import _is_multiprocessing_helper

REPO_ROOT = Path(__file__).resolve().parents[1]
FACTORY = importlib.import_module("retrovec.retro.factory")
GAME = "Airstriker-Genesis-v0"
INSTALL_TRAIN = (
    "pip install 'retrovec[train]' (from a clone of the repository: pip install -e '.[train]')"
)


def _children() -> set[int]:
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if not _is_multiprocessing_helper(p)
    }


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail if a vector env is built; check that no process appeared."""
    before = _children()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("bad input reached AsyncRetroVectorEnv")

    monkeypatch.setattr(FACTORY, "AsyncRetroVectorEnv", refuse)
    yield
    assert multiprocessing.active_children() == []
    assert _children() <= before


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Inputs outside the working directory: a checkpoint of Airstriker, one of an unknown
    game, a file that is not a checkpoint, a folder."""
    torch = pytest.importorskip("torch")
    from retrovec.training.ppo_agent import Agent
    from retrovec.training.ppo_args import Args
    from retrovec.training.ppo_checkpoints import save_checkpoint

    where = tmp_path_factory.mktemp("inputs")
    agent = Agent(4, 7)
    optimizer = torch.optim.Adam(agent.parameters())
    save_checkpoint(where / "checkpoint.pt", agent, optimizer, Args(), 16, 1)
    save_checkpoint(where / "nope.pt", agent, optimizer, Args(game="Nope-Genesis-v0"), 16, 1)
    (where / "notes.txt").write_text("not a checkpoint\n")
    (where / "folder").mkdir()
    return {
        "ckpt": str(where / "checkpoint.pt"),
        "nope_ckpt": str(where / "nope.pt"),
        "text": str(where / "notes.txt"),
        "folder": str(where / "folder"),
        "missing": str(where / "missing.pt"),
    }


def _atari_not_imported() -> str:
    imported = set(list_games(imported_only=True))
    for game in list_games():
        if game.endswith("-Atari2600-v0") and game not in imported:
            return game
    pytest.skip("every Atari ROM is imported here")


# (argv, texts the one line must hold). {name} stands for files[name]; {atari} for an Atari
# game whose ROM is not imported.
CASES: list[tuple[list[str], list[str]]] = [
    # unknown game / state, and where to look them up
    (["run", "--game", "Airstrikr-Genesis-v0"], ["Unknown game", "`retrovec games` lists all"]),
    (["run", "--state", "Level2"], ["has no state 'Level2'", "`retrovec states " + GAME + "`"]),
    (["run", "--state", "{missing}"], ["no such file"]),
    (["run", "--state", "{folder}"], ["is a folder"]),
    (["run", "--game", "{atari}"], ["retrovec roms import", "pip install 'retrovec[atari]'"]),
    (["run", "--num-envs", "0"], ["--num-envs: must be a positive integer"]),
    (["games", "--imported", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["states", "Airstrikr-Genesis-v0"], ["Unknown game", "`retrovec games`"]),
    (["states"], ["required: GAME"]),
    (["bench", "--game", "Nope-v0", "--out", "out"], ["Unknown game 'Nope-v0'"]),
    (["bench", "--state", "x"], ["unrecognized arguments: --state"]),
    (["bench", "--contenders", "envpool", "--out", "out"], ["invalid choice: 'envpool'"]),
    (["bench", "--out", "{text}"], ["is a file; give a folder"]),
    (["bench", "--json", "{folder}"], ["is a folder; give a file name"]),
    (["train", "--game", "Airstrikr-Genesis-v0"], ["Unknown game", "`retrovec games`"]),
    (["train", "--state", "Level2"], ["has no state 'Level2'"]),
    (["train", "--state", "{missing}"], ["no such file"]),
    (["train", "--resume", "{missing}"], ["checkpoint", "no such file"]),
    (["train", "--resume", "{folder}"], ["is a folder, not a file"]),
    (["train", "--resume", "{text}"], ["is not a checkpoint written by `retrovec train`"]),
    (["train", "--resume", "{ckpt}", "--game", "Pong-Atari2600-v0"], ["was trained on"]),
    (["train", "--device", "gpu"], ["--device gpu is not a torch device"]),
    (["train", "--arg", "ent_coef=abc"], ["ent_coef takes a number (float), got 'abc'"]),
    (["train", "--arg", "update_epochs=2.5"], ["update_epochs takes an integer"]),
    (["train", "--arg", "norm_adv=maybe"], ["norm_adv takes true or false"]),
    (["train", "--arg", "no_such_field=1"], ["--arg wants FIELD=VALUE", "'ent_coef'"]),
    (["train", "--arg", "num_envs=4"], ["use --num-envs"]),
    (["train", "--total-timesteps", "10"], ["total_timesteps (10) must be >="]),
    (["train", "--eval-episodes", "1", "--video", "eval.avi"], ["give an .mp4 file name"]),
    (["train", "--run-dir", "{text}"], ["is a file; give a folder"]),
    (["evaluate"], ["give either a CHECKPOINT or --random"]),
    (["evaluate", "{ckpt}", "--random"], ["give either a CHECKPOINT or --random"]),
    (["evaluate", "--random", "--video", "eval.mp4"], ["need a CHECKPOINT"]),
    (["evaluate", "--random", "--game", "Nope-v0"], ["Unknown game 'Nope-v0'"]),
    (["evaluate", "{missing}"], ["no such file"]),
    (["evaluate", "{folder}"], ["is a folder, not a file"]),
    (["evaluate", "{text}"], ["is not a checkpoint written by `retrovec train`"]),
    (["evaluate", "{nope_ckpt}"], ["the checkpoint's game: Unknown game 'Nope-Genesis-v0'"]),
    (["evaluate", "{ckpt}", "--device", "gpu"], ["--device gpu is not a torch device"]),
    (["evaluate", "{ckpt}", "--episodes", "0"], ["--episodes: must be a positive integer"]),
    (["roms", "import", "{missing}"], ["no such file or folder"]),
    (["roms"], ["required: ACTION"]),
]


def _ids() -> list[str]:
    return [" ".join(argv) for argv, _ in CASES]


def _answer(argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    """Run ``retrovec ARGV`` in the empty ``tmp_path``; return its one line on stderr
    after checking the exit code, stdout and that nothing was written."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    command = argv[0] if argv else ""
    assert lines[0].startswith(f"retrovec {command}: error: "), lines[0]
    assert sorted(os.listdir(tmp_path)) == [], "a failed command wrote files"
    return lines[0]


@pytest.mark.parametrize(("argv", "texts"), CASES, ids=_ids())
def test_bad_input_gets_one_line_exit_2_and_writes_nothing(
    argv: list[str],
    texts: list[str],
    files: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    nothing_starts: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    names = {**files, "atari": "{atari}"}
    argv = [arg.format(**names) for arg in argv]
    if "{atari}" in argv:
        argv = [_atari_not_imported() if arg == "{atari}" else arg for arg in argv]
    line = _answer(argv, capsys, tmp_path)
    for text in texts:
        assert text in line


def test_cuda_without_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    for argv in (["train", "--device", "cuda"], ["train", "--device", "cuda:1"]):
        assert "CUDA is not available here" in _answer(argv, capsys, tmp_path)


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("torch", ["train"], "train"),
        ("tensorboard", ["train"], "train"),
        ("torch", ["evaluate", "checkpoint.pt"], "train"),
        ("psutil", ["bench"], "bench"),
        ("ale_py", ["roms", "import"], "atari"),
        ("imageio", ["train", "--eval-episodes", "1", "--video", "eval.mp4"], "video"),
    ],
)
def test_a_missing_dependency_says_how_to_install_it(
    module: str,
    argv: list[str],
    extra: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    if argv[-1] == "checkpoint.pt":  # a real file elsewhere, so the check gets to torch
        elsewhere = tmp_path.parent / f"{tmp_path.name}-input.pt"
        elsewhere.write_bytes(b"x")
        argv = [*argv[:-1], str(elsewhere)]
    monkeypatch.setitem(sys.modules, module, None)
    line = _answer(argv, capsys, tmp_path)
    package = {"ale_py": "ale-py"}.get(module, module)
    assert re.search(rf"\b{package}\b", line) and "is not installed" in line
    assert f"pip install 'retrovec[{extra}]'" in line
    assert f"pip install -e '.[{extra}]'" in line


def _run_python(code: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        text=True,
        timeout=300,
        check=False,
        **kwargs,
    )


def test_evaluate_random_runs_without_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "from retrovec.cli import main\n"
        "code = main(['evaluate', '--random', '--episodes', '2', '--num-envs', '2',\n"
        "             '--max-episode-steps', '5'])\n"
        "assert sys.modules['torch'] is None\n"
        "sys.exit(code)\n"
    )
    done = _run_python(code, tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("retrovec evaluate: 2 episodes: return 0.00 +- 0.00")
    assert "length 5 agent steps" in done.stdout


def test_plurals(capsys: pytest.CaptureFixture[str]) -> None:
    from retrovec.cli.run import _format_stats_text
    from retrovec.cli.train import _print_evaluation

    _print_evaluation("evaluate", {"returns": [3.0], "lengths": [7], "mean": 3.0, "std": 0.0})
    assert "evaluate: 1 episode: return" in capsys.readouterr().out
    result = {
        "game": GAME, "state": None, "num_envs": 1, "autoreset_mode": "NextStep", "seed": 0,
        "steps_per_second": 1.0, "total_steps": 1, "vector_steps": 1, "wall_seconds": 1.0,
        "make_seconds": 0.0, "reset_seconds": 0.0, "episodes": 0, "episodes_truncated": 0,
    }  # fmt: skip
    assert "total steps: 1 (1 vector step)" in _format_stats_text(result)


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """``retrovec games | head -1``: the reader is gone before the command writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: every write fails with EPIPE
    try:
        done = _run_python(
            "import sys; from retrovec.cli import main; sys.exit(main(['games', '--all']))",
            tmp_path,
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 1
