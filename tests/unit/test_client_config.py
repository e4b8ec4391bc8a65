"""Where the client keeps its identity, and how it writes it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from parley.client.config import Config, ConfigError, default_path, load, save


def test_explicit_env_path_wins(tmp_path: Path) -> None:
    env = {"PARLEY_CLIENT_CONFIG": str(tmp_path / "c.json"), "XDG_CONFIG_HOME": "/xdg"}
    assert default_path(env) == tmp_path / "c.json"


def test_xdg_config_home_is_next() -> None:
    assert default_path({"XDG_CONFIG_HOME": "/xdg"}) == Path("/xdg/parley/client.json")


def test_home_config_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_path({}) == tmp_path / ".config" / "parley" / "client.json"


def test_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.json") == Config()


def test_round_trip_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "client.json"
    config = Config(server="http://h:1", user_id="u_1", username="al", token="t")
    save(path, config)
    assert load(path) == config
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert '"userId": "u_1"' in path.read_text()


def test_save_replaces_an_existing_file_and_keeps_it_private(tmp_path: Path) -> None:
    path = tmp_path / "client.json"
    path.write_text("{}")
    path.chmod(0o644)
    save(path, Config(user_id="u_2"))
    assert load(path) == Config(user_id="u_2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["client.json"]


def test_open_mode_config_omits_the_token(tmp_path: Path) -> None:
    path = tmp_path / "client.json"
    save(path, Config(server="http://h", user_id="u", username="al"))
    assert "token" not in path.read_text()


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{not json", "not valid JSON"), ("[1]", "JSON object"), ('{"token": 5}', "'token'")],
)
def test_broken_files_give_a_clear_error(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "client.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load(path)


def test_unwritable_place_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write"):
        save(blocker / "client.json", Config())
