"""Settings are read from PARLEY_* variables, with clear errors for bad values."""

from __future__ import annotations

import pytest

from parley.app import make_storage
from parley.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.auth, settings.storage) == (
        "127.0.0.1",
        8080,
        "token",
        "sqlite",
    )
    assert settings.rate_limits.enabled and settings.limits.message_max == 4096


def test_postgres_settings_reach_the_storage() -> None:
    pytest.importorskip("asyncpg")  # the postgres extra
    settings = Settings.from_env(
        {
            "PARLEY_STORAGE": "postgres",
            "PARLEY_DATABASE_URL": "postgresql://parley@127.0.0.1/test",
            "PARLEY_DATABASE_POOL": "4",
            "PARLEY_DATABASE_TIMEOUT": "3",
        }
    )
    storage = make_storage(settings)
    assert (storage.pool_size, storage.timeout) == (4, 3.0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PARLEY_PORT", "eighty", "whole number"),
        ("PARLEY_PORT", "70000", "between"),
        ("PARLEY_AUTH", "maybe", "one of"),
        ("PARLEY_RATE_LIMITS", "sometimes", "on or off"),
        ("PARLEY_DATABASE_TIMEOUT", "0", "between"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value) and words in str(caught.value)


def test_postgres_needs_a_url() -> None:
    with pytest.raises(SettingsError, match="PARLEY_DATABASE_URL"):
        Settings.from_env({"PARLEY_STORAGE": "postgres"})
