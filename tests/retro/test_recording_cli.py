"""``retrovec movies``: info, convert (with sound) and best; bad input is exit 2, no file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from retrovec.cli import main
from retrovec.retro.factory import make
from tests.movies import python

GAME = "Airstriker-Genesis-v0"

_CLI = "import sys; from retrovec.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def movies(tmp_path_factory) -> Path:
    """Two envs' movies of 40-step episodes, with their .json records."""
    folder = tmp_path_factory.mktemp("movies")
    envs = make(GAME, 2, record=folder, max_episode_steps=40)
    try:
        envs.reset(seed=0)
        for _ in range(90):
            envs.step(envs.action_space.sample())
    finally:
        envs.close()
    return folder


def test_info_prints_one_line_per_movie(movies: Path, capsys) -> None:
    paths = sorted(str(p) for p in (movies / "env-000").glob("*.bk2"))
    assert main(["movies", "info", *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(paths) == 3
    assert lines[0].startswith(f"{paths[0]}: {GAME}, 1 player(s), 40 steps, return ")
    assert lines[2].endswith(" (episode cut short)")


def test_best_lists_the_highest_returns_first(movies: Path, capsys) -> None:
    assert main(["movies", "best", str(movies), "-n", "4"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4
    returns = [float(row[0]) for row in rows]
    assert returns == sorted(returns, reverse=True)
    assert all(Path(row[2]).exists() for row in rows)


def test_convert_writes_an_mp4_with_sound(movies: Path, tmp_path: Path) -> None:
    pytest.importorskip("imageio")
    import imageio_ffmpeg

    movie = next((movies / "env-001").glob("*-000000.bk2"))
    out = tmp_path / "one.mp4"
    done = python(_CLI, "movies", "convert", str(movie), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    probe = python(
        "import subprocess, sys; subprocess.run([sys.argv[1], '-hide_banner', '-i', sys.argv[2]])",
        imageio_ffmpeg.get_ffmpeg_exe(), str(out),
    )
    assert "Video: h264" in probe.stderr and "Audio: aac" in probe.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "{tmp}/missing.bk2"], "No such movie file"),
        (["convert", "{tmp}/missing.bk2"], "No such movie file"),
        (["convert", "{tmp}/empty.bk2"], "is empty, not a .bk2 movie"),
        (["convert", "{movie}", "-o", "{tmp}/out.avi"], "must be an .mp4 file"),
        (["convert", "{movie}", "-o", "{tmp}/no/such/out.mp4"], "no such folder"),
        (["best", "{tmp}/no-such-dir"], "no such folder"),
        (["best", "{tmp}"], "no movie with a .json record"),
        (["best", "{movies}", "--render", "{tmp}/empty.bk2"], "must be a folder"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    argv, message, movies: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "empty.bk2").write_bytes(b"")
    movie = next((movies / "env-000").glob("*-000000.bk2"))
    args = [a.format(tmp=tmp_path, movie=movie, movies=movies) for a in argv]
    before = sorted(tmp_path.rglob("*"))
    assert main(["movies", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("retrovec movies: error: ") and "\n" not in err
    assert message in err
    assert sorted(tmp_path.rglob("*")) == before


def test_usage_errors_exit_2(capsys) -> None:
    assert main(["movies"]) == 2
    assert main(["movies", "best", "x", "-n", "0"]) == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_convert_without_imageio_says_how_to_install(movies, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    movie = next((movies / "env-000").glob("*-000000.bk2"))
    assert main(["movies", "convert", str(movie), "-o", str(tmp_path / "x.mp4")]) == 2
    assert "retrovec[video]" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
