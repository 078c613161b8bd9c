"""ale-py's ROMs import into stable-retro, so Atari games and Pong's 2-player state exist."""

import pytest

import retrovec
from retrovec.retro.roms import ale_roms_dir, import_ale_roms, import_roms


def test_ale_roms_import_and_pong_is_playable():
    assert import_ale_roms() >= 30
    imported = retrovec.list_games(imported_only=True)
    assert "Pong-Atari2600-v0" in imported and "Breakout-Atari2600-v0" in imported
    assert "Start.2P" in retrovec.list_states("Pong-Atari2600-v0")


def test_ale_roms_dir_exists():
    assert ale_roms_dir().endswith("roms")


def test_importing_from_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such file or folder"):
        import_roms(str(tmp_path / "nowhere"))
