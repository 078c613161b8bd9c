"""``retrovec roms import``: ale-py's Atari ROMs by default, or the ROMs under PATH."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from retrovec import cli
from retrovec.retro.games import list_games


def test_import_without_a_path_imports_ale_pys_roms(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["roms", "import"]) == 0
    out = capsys.readouterr().out
    found = re.match(r"retrovec roms: imported (\d+) games from ale-py \(.*ale_py/roms\)", out)
    assert found and int(found.group(1)) >= 30, out
    assert "`retrovec games --imported`" in out
    assert {"Pong-Atari2600-v0", "Breakout-Atari2600-v0"} <= set(list_games(imported_only=True))


def test_a_path_with_the_rom_of_a_game_imports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from retrovec.retro.roms import ale_roms_dir

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "pong.bin").write_bytes((Path(ale_roms_dir()) / "pong.bin").read_bytes())
    assert cli.main(["roms", "import", str(tmp_path / "mine")]) == 0
    assert capsys.readouterr().out.startswith(f"retrovec roms: imported 1 game from {tmp_path}")


def test_a_path_without_a_known_rom_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("no ROM here")
    assert cli.main(["roms", "import", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"retrovec roms: error: no ROM in {tmp_path} matches a stable-retro integration "
        "(ROMs are recognised by their SHA-1)\n"
    )


def test_without_ale_py_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ale_py", None)  # as if ale-py were not installed
    assert cli.main(["roms", "import"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs ale-py, which is not installed: pip install 'retrovec[atari]'" in err
    assert "pip install -e '.[atari]'" in err
