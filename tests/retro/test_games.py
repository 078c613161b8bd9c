"""Tests of retrovec.retro.games: game and state look-ups on disk, without any emulator."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest
import stable_retro
import stable_retro.data as retro_data
from stable_retro.data import Integrations

from retrovec.errors import (
    InvalidGameError,
    RomNotImportedError,
    UnknownGameError,
    UnknownStateError,
)
from retrovec.retro.games import (
    list_games,
    list_states,
    resolve_inttype,
    validate_data_file,
    validate_game,
    validate_state,
)

GAME = "Airstriker-Genesis-v0"


def _not_imported(pattern: str) -> str:
    """A stable game with ``pattern`` in its id whose ROM is not imported, or skip."""
    imported = set(list_games(imported_only=True))
    for game in list_games():
        if pattern in game and game not in imported:
            return game
    pytest.skip(f"every {pattern} ROM is imported here")


@pytest.fixture
def custom_integration(tmp_path: Path):
    """A copy of Airstriker as a custom integration ``RetrovecCopy-Genesis-v0``."""
    source = os.path.dirname(retro_data.get_file_path(GAME, "rom.sha", Integrations.STABLE))
    shutil.copytree(source, tmp_path / "RetrovecCopy-Genesis-v0")
    retro_data.add_custom_integration(str(tmp_path))
    try:
        yield "RetrovecCopy-Genesis-v0"
    finally:
        Integrations.clear_custom_paths()
        retro_data.DefaultIntegrations.reset()


def test_list_games() -> None:
    games = list_games()
    assert GAME in games
    assert games == sorted(games)
    assert len(games) > 1000
    imported = list_games(imported_only=True)
    assert GAME in imported
    assert set(imported) <= set(games)
    assert set(games) < set(list_games(Integrations.ALL))
    assert games == list_games(Integrations.STABLE)


def test_list_states() -> None:
    assert list_states(GAME) == ["Level1"]
    assert list_states("No-Such-Game-v0") == []


def test_resolve_inttype() -> None:
    assert resolve_inttype(Integrations.DEFAULT) is Integrations.STABLE
    assert resolve_inttype(Integrations.ALL) is Integrations.ALL
    with pytest.raises(TypeError, match="Integrations"):
        resolve_inttype("stable")  # type: ignore[arg-type]


def test_validate_game_returns_rom_path() -> None:
    path = validate_game(GAME)
    assert os.path.isfile(path)
    assert path == retro_data.get_romfile_path(GAME)


@pytest.mark.parametrize(
    "typo", ["Airstrikr-Genesis-v0", "airstriker-genesis-v0", "Airstriker-Genesis"]
)
def test_unknown_game_suggests_close_names(typo: str) -> None:
    with pytest.raises(UnknownGameError) as excinfo:
        validate_game(typo)
    message = str(excinfo.value)
    assert message.startswith(f"Unknown game {typo!r}. Did you mean: 'Airstriker-Genesis-v0'")
    assert "retrovec.retro.games.list_games()" in message
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("game", ["", "Zzzzzzzzzz", "../stable/Airstriker-Genesis-v0"])
def test_unknown_game_without_close_names(game: str) -> None:
    with pytest.raises(UnknownGameError, match="Unknown game"):
        validate_game(game)


def test_game_type_checked() -> None:
    with pytest.raises(TypeError, match="game id string"):
        validate_game(None)  # type: ignore[arg-type]


def test_game_in_another_integration() -> None:
    stable = set(list_games(Integrations.STABLE))
    contrib = [g for g in list_games(Integrations.ALL) if g not in stable]
    assert contrib, "stable-retro ships contrib integrations"
    with pytest.raises(UnknownGameError, match="inttype=stable_retro.data.Integrations.ALL"):
        validate_game(contrib[0], Integrations.STABLE)


def test_rom_not_imported_says_how_to_import() -> None:
    game = _not_imported("-Nes")
    with pytest.raises(RomNotImportedError) as excinfo:
        validate_game(game)
    message = str(excinfo.value)
    assert repr(game) in message
    assert "python -m stable_retro.import /path/to/your/roms" in message
    assert "ale_py" not in message
    assert isinstance(excinfo.value, FileNotFoundError)


def test_atari_rom_not_imported_mentions_ale_py() -> None:
    game = _not_imported("-Atari2600")
    with pytest.raises(RomNotImportedError) as excinfo:
        validate_game(game)
    message = str(excinfo.value)
    assert "python -m stable_retro.import /path/to/your/roms" in message
    assert "ROMs that ship with ale-py" in message
    assert "retrovec roms import" in message


@pytest.mark.parametrize(
    "state", [stable_retro.State.DEFAULT, stable_retro.State.NONE, "Level1", "Level1.state"]
)
def test_valid_states_pass_unchanged(state) -> None:
    assert validate_state(GAME, state) is state


def test_state_file_paths_become_absolute(tmp_path: Path, monkeypatch) -> None:
    with gzip.open(tmp_path / "Mine.state", "wb") as f:
        f.write(b"not really a state, but gzip")
    absolute = str(tmp_path / "Mine.state")
    monkeypatch.chdir(tmp_path)
    assert validate_state(GAME, "Mine.state") == absolute
    assert validate_state(GAME, "Mine") == absolute  # ".state" is optional, as in stable-retro
    assert validate_state(GAME, Path("Mine.state")) == absolute
    assert validate_state(GAME, absolute) == absolute


def test_unknown_state_lists_states(tmp_path: Path) -> None:
    for state in ["Level2", "level1"]:
        with pytest.raises(UnknownStateError) as excinfo:
            validate_state(GAME, state)
        message = str(excinfo.value)
        assert "['Level1']" in message
        assert "State.DEFAULT" in message
        assert isinstance(excinfo.value, InvalidGameError)
    for path in ["", str(tmp_path / "missing.state")]:  # not a name: a path, not there
        with pytest.raises(UnknownStateError, match=f"has no state {path!r}: no such file"):
            validate_state(GAME, path)


def test_state_file_must_be_gzip(tmp_path: Path) -> None:
    (tmp_path / "Raw.state").write_bytes(b"\x00" * 16)
    with pytest.raises(UnknownStateError, match="gzip"):
        validate_state(GAME, str(tmp_path / "Raw.state"))


def test_state_type_checked() -> None:
    with pytest.raises(TypeError, match="stable_retro.State"):
        validate_state(GAME, 1)  # type: ignore[arg-type]


def test_validate_data_file(tmp_path: Path, monkeypatch) -> None:
    assert validate_data_file(GAME, None, "scenario") is None
    assert validate_data_file(GAME, "scenario", "scenario") == "scenario"
    assert validate_data_file(GAME, "data", "info") == "data"
    with pytest.raises(InvalidGameError, match="has no info 'nope'"):
        validate_data_file(GAME, "nope", "info")
    with pytest.raises(InvalidGameError, match="does not exist"):
        validate_data_file(GAME, "missing.json", "scenario")
    (tmp_path / "mine.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert validate_data_file(GAME, "mine.json", "scenario") == str(tmp_path / "mine.json")


def test_custom_integration(custom_integration: str) -> None:
    game = custom_integration
    assert resolve_inttype(Integrations.DEFAULT) == Integrations.CUSTOM
    assert game in list_games(imported_only=True)
    assert game not in list_games(Integrations.STABLE)
    assert validate_game(game).endswith(os.path.join(game, "rom.md"))
    assert validate_state(game, "Level1") == "Level1"
    with pytest.raises(UnknownGameError, match="Integrations.ALL"):
        validate_game(game, Integrations.STABLE)
