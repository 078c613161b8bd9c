"""`retrovec games` and `retrovec states`: list what can be played (no emulator involved)."""

from __future__ import annotations

import pytest

from retrovec import cli
from tests.test_cli import run_cli


def test_games_imported(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["games", "--imported"]) == 0
    games = capsys.readouterr().out.splitlines()
    assert "Airstriker-Genesis-v0" in games and "Pong-Atari2600-v0" in games
    assert games == sorted(games)


def test_games_all_and_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["games"]) == 0
    stable = capsys.readouterr().out.splitlines()
    assert len(stable) > 1000 and "SonicTheHedgehog-Genesis-v0" in stable
    assert cli.main(["games", "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= len(stable)
    assert cli.main(["games", "--filter", "PONG"]) == 0  # ignoring case
    out = capsys.readouterr().out.splitlines()
    assert "Pong-Atari2600-v0" in out and all("pong" in g.lower() for g in out)


def test_games_none_match_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["games", "--imported", "--filter", "no-such-thing"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "retrovec games: error: no imported game matches 'no-such-thing'\n"


def test_states(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["states", "Pong-Atari2600-v0"]) == 0
    assert capsys.readouterr().out == "Start\nStart.2P\n"
    assert cli.main(["states", "SonicTheHedgehog-Genesis-v0"]) == 0  # ROM not needed
    assert "GreenHillZone.Act1" in capsys.readouterr().out.splitlines()


def test_states_of_an_unknown_game_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["states", "Airstrikr-Genesis-v0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("retrovec states: error: Unknown game 'Airstrikr-Genesis-v0'")
    assert "Did you mean: 'Airstriker-Genesis-v0'" in captured.err
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize("argv", [["states"], ["games", "--filter"], ["games", "extra"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert capsys.readouterr().err


def test_the_installed_command() -> None:
    proc = run_cli("states", "Airstriker-Genesis-v0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Level1\n"
    proc = run_cli("--help")
    assert "games" in proc.stdout and "states" in proc.stdout
