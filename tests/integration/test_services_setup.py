"""The test set-up creates the PostgreSQL database it is pointed at when it is missing."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.conftest import unavailable
from tests.integration import services


async def test_a_missing_test_database_is_created(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = await services.postgres_unreachable()
    if reason:
        unavailable(reason)
    name = f"parley_test_db_{secrets.token_hex(6)}"
    parts = urlsplit(services.DATABASE_URL)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(url, timeout=3)
    monkeypatch.setattr(services, "DATABASE_URL", url)
    monkeypatch.setattr(services, "_checked", {})
    try:
        assert await services.postgres_unreachable() is None
        conn = await asyncpg.connect(url, timeout=3)
        assert await conn.fetchval("SELECT current_database()") == name
        await conn.close()
        await services.create_database(url)  # a second creation (another run) is harmless
    finally:
        admin = await asyncpg.connect(admin_url, timeout=3)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await admin.close()
