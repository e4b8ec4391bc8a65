"""PostgreSQL and Redis for tests: where they are, whether they answer, and isolation.

Every PostgreSQL store a test makes lives in a schema of its own (``parley_test_<random>``,
dropped when the store closes) and every Redis user gets a key prefix of its own, so test
runs, and tests within a run, never see each other's data.

    PARLEY_TEST_DATABASE_URL   default postgresql://postgres@127.0.0.1:5432/test
    PARLEY_TEST_REDIS_URL      default redis://127.0.0.1:6379/0

When the database the URL names does not exist yet, the first check creates it (connected
to the server's ``postgres`` database), so a fresh server needs no set-up.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

from parley.storage.postgres import PostgresStorage
from tests.conftest import unavailable
from tests.e2e.server import Server

DATABASE_URL = os.environ.get(
    "PARLEY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("PARLEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_checked: dict[str, str | None] = {}
_prefixes: list[str] = []


async def postgres_unreachable() -> str | None:
    """None when PostgreSQL answers, else why not (checked once per run). A missing test
    database is created."""
    if "postgres" not in _checked:
        try:
            try:
                conn = await asyncpg.connect(DATABASE_URL, timeout=3)
            except asyncpg.InvalidCatalogNameError:
                await create_database(DATABASE_URL)
                conn = await asyncpg.connect(DATABASE_URL, timeout=3)
            await conn.close()
            _checked["postgres"] = None
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            _checked["postgres"] = f"PostgreSQL unreachable at {DATABASE_URL}: {exc}"
    return _checked["postgres"]


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or (urlsplit(url).username or "postgres")


async def create_database(url: str) -> None:
    """Create the database ``url`` names, connected to the same server's ``postgres``."""
    parts = urlsplit(url)
    name = database_name(url)
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")), timeout=3)
    try:
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # another run was first
            await admin.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
    finally:
        await admin.close()


def redis_unreachable() -> str | None:
    """None when Redis answers PING, else why not (checked once per run)."""
    if "redis" not in _checked:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
            _checked["redis"] = None
        except redis.RedisError as exc:
            _checked["redis"] = f"Redis unreachable at {REDIS_URL}: {exc}"
        finally:
            client.close()
    return _checked["redis"]


def new_schema() -> str:
    return "parley_test_" + secrets.token_hex(6)


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(DATABASE_URL, timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class TestPostgres(PostgresStorage):
    """A PostgreSQL store in a schema of its own, dropped when the store closes."""

    def __init__(self, schema: str | None = None, **options: int) -> None:
        super().__init__(DATABASE_URL, schema=schema or new_schema(), **options)

    async def close(self) -> None:
        await super().close()
        await drop_schema(self.schema)


def new_prefix() -> str:
    prefix = f"parley_test_{secrets.token_hex(6)}:"
    _prefixes.append(prefix)
    return prefix


def redis_env() -> dict[str, str]:
    """Settings that give a Parley its own corner of the test Redis."""
    return {"PARLEY_REDIS_URL": REDIS_URL, "PARLEY_REDIS_PREFIX": new_prefix()}


@atexit.register
def _forget_prefixes() -> None:
    """Delete the keys this run left in Redis (most expire anyway)."""
    if not _prefixes or _checked.get("redis", "") is not None:
        return
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        for prefix in _prefixes:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
    except redis.RedisError:
        pass
    finally:
        client.close()


@contextlib.asynccontextmanager
async def postgres_servers(
    folder: Path, envs: Sequence[dict[str, str]], *, redis: bool = True
) -> AsyncIterator[list[Server]]:
    """Real ``parley serve --storage postgres`` processes, one per entry of ``envs`` (each
    entry's variables on top of a fresh schema, token mode and no rate limits; with
    ``redis``, a Redis namespace of their own unless the entry names one). Unavailable
    (skipped, or failed under CI) when a service is unreachable. Stopped, and the schema
    dropped, on the way out."""
    reason = await postgres_unreachable() or (redis_unreachable() if redis else None)
    if reason:
        unavailable(reason)
    schema = new_schema()
    common = {
        "PARLEY_DATABASE_URL": DATABASE_URL,
        "PARLEY_DATABASE_SCHEMA": schema,
        **(redis_env() if redis else {}),
        "PARLEY_AUTH": "token",
        "PARLEY_RATE_LIMITS": "off",
    }
    command = [sys.executable, "-m", "parley", "serve", "--storage", "postgres"]
    servers = [
        Server(folder / f"p{i}", command=command, **{**common, **env}) for i, env in enumerate(envs)
    ]
    started: list[Server] = []
    try:
        for server in servers:  # in a thread: proxies may live on this event loop
            await asyncio.to_thread(server.start)
            started.append(server)
        yield servers
    finally:
        for server in started:
            await asyncio.to_thread(server.stop)
        await drop_schema(schema)
