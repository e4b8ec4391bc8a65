"""Start-up checks in one process: the data directory lock, the server secret, worker
counts, the recorded auth mode and the open-mode warning. (Real processes:
``tests/e2e/test_startup_processes.py``.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from parley.app import build
from parley.settings import Settings, SettingsError
from parley.startup import (
    SECRET_FILE,
    DataDirLock,
    StartupRefused,
    check_auth_mode,
    check_processes,
    open_mode_warning,
    server_secret,
)
from parley.storage.memory import MemoryStorage
from parley.storage.sqlite import SqliteStorage

KEY = "s" * 48


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def test_a_second_lock_on_a_data_directory_is_refused_with_the_holders_pid(
    tmp_path: Path,
) -> None:
    first = DataDirLock(tmp_path / "data").acquire()
    try:
        with pytest.raises(StartupRefused, match=rf"in use .*\(pid {os.getpid()}\)"):
            DataDirLock(tmp_path / "data").acquire()
        DataDirLock(tmp_path / "other").acquire().release()  # another directory is free
    finally:
        first.release()
    DataDirLock(tmp_path / "data").acquire().release()  # released: free again


def test_sqlite_secret_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    s = settings(PARLEY_DATA_DIR=str(tmp_path / "data"))
    key = server_secret(s)
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32 and server_secret(s) == key
    assert [p.name for p in path.parent.iterdir()] == [SECRET_FILE]  # no temporary left
    path.chmod(0o644)
    with pytest.raises(StartupRefused, match="chmod 600"):
        server_secret(s)


def test_the_environment_secret_wins_and_is_never_shown(tmp_path: Path) -> None:
    s = settings(PARLEY_DATA_DIR=str(tmp_path / "data"), PARLEY_SECRET_KEY=KEY)
    assert server_secret(s) == KEY.encode()
    assert not (tmp_path / "data").exists()
    assert KEY not in repr(s)
    with pytest.raises(SettingsError, match="at least 32") as caught:
        settings(PARLEY_SECRET_KEY="short-secret")
    assert "short-secret" not in str(caught.value)


@pytest.mark.parametrize("storage", ["postgres", "dynamodb"])
def test_scale_out_storage_requires_the_secret_from_the_environment(storage: str) -> None:
    env = {"PARLEY_STORAGE": storage, "PARLEY_DATABASE_URL": "postgresql://x@127.0.0.1/x"}
    with pytest.raises(StartupRefused, match="PARLEY_SECRET_KEY is required"):
        server_secret(settings(**env))
    assert server_secret(settings(**env, PARLEY_SECRET_KEY=KEY)) == KEY.encode()


def test_memory_storage_gets_a_key_of_its_own() -> None:
    s = settings(PARLEY_STORAGE="memory")
    assert len(server_secret(s)) >= 32 and server_secret(s) != server_secret(s)


PG = {"PARLEY_STORAGE": "postgres", "PARLEY_DATABASE_URL": "postgresql://x@127.0.0.1/x"}


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({"PARLEY_WORKERS": "2"}, "SQLite serves one process"),
        ({"PARLEY_WORKERS": "2", "PARLEY_STORAGE": "memory"}, "memory storage"),
        ({**PG, "PARLEY_WORKERS": "2"}, "needs a shared cache"),
        ({**PG, "PARLEY_WORKERS": "2", "PARLEY_STORAGE": "dynamodb"}, "needs a shared cache"),
        ({**PG, "PARLEY_WORKERS": "2", "PARLEY_REDIS_URL": "redis://127.0.0.1"}, None),
        ({**PG, "PARLEY_WORKERS": "2", "PARLEY_CACHE": "none"}, None),
        ({**PG, "PARLEY_WORKERS": "1"}, None),
        ({}, None),
    ],
)
def test_worker_counts_the_set_up_cannot_serve_are_refused(
    env: dict[str, str], refused: str | None
) -> None:
    if refused is None:
        check_processes(settings(**env))
    else:
        with pytest.raises(StartupRefused, match=refused):
            check_processes(settings(**env))


def test_cache_setting_takes_auto_or_none() -> None:
    assert settings().cache == "auto" and settings(PARLEY_CACHE="none").cache == "none"
    with pytest.raises(SettingsError, match="PARLEY_CACHE"):
        settings(PARLEY_CACHE="redis")


@pytest.mark.parametrize(
    ("host", "warned"),
    [("127.0.0.1", False), ("::1", False), ("localhost", False), ("127.0.0.2", False),
     ("0.0.0.0", True), ("::", True), ("10.1.2.3", True), ("example.org", True)],
)  # fmt: skip
def test_open_mode_beyond_loopback_is_warned_about(host: str, warned: bool) -> None:
    assert (open_mode_warning(settings(PARLEY_AUTH="none", PARLEY_HOST=host)) is not None) is warned
    assert open_mode_warning(settings(PARLEY_AUTH="token", PARLEY_HOST=host)) is None


async def test_auth_mode_is_recorded_and_a_switch_refused(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "parley.db")
    await store.open()
    try:
        await check_auth_mode(store, settings(PARLEY_AUTH="token"))
        await check_auth_mode(store, settings(PARLEY_AUTH="token"))
        with pytest.raises(StartupRefused, match=r"served with --auth token.*allow-auth-change"):
            await check_auth_mode(store, settings(PARLEY_AUTH="none"))
        await check_auth_mode(store, settings(PARLEY_AUTH="none", PARLEY_ALLOW_AUTH_CHANGE="1"))
        await check_auth_mode(store, settings(PARLEY_AUTH="none"))  # the new mode is recorded
        with pytest.raises(StartupRefused, match="served with --auth none"):
            await check_auth_mode(store, settings(PARLEY_AUTH="token"))
    finally:
        await store.close()


async def test_parley_refuses_to_start_on_data_of_the_other_mode(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    first = build(settings(PARLEY_AUTH="token"), SqliteStorage(path))
    await first.start()
    await first.users.create("alice")
    await first.stop()
    second = build(settings(PARLEY_AUTH="none"), SqliteStorage(path))
    with pytest.raises(StartupRefused, match="--auth token"):
        await second.start()
    # the store was closed again: the same data opens for the recorded mode
    third = build(settings(PARLEY_AUTH="token"), SqliteStorage(path))
    await third.start()
    await third.stop()


async def test_memory_storage_records_in_the_process() -> None:
    store = MemoryStorage()
    assert await store.record_meta("auth_mode", "token") is None
    assert await store.record_meta("auth_mode", "none") == "token"
    assert await store.record_meta("auth_mode", "none", replace=True) == "token"
    assert await store.record_meta("auth_mode", "token") == "none"
