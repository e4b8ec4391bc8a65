"""Shared fixtures: storage adapters by name, and Parley apps driven in-process over ASGI.

Every backend registers a factory in ``STORAGES``; the contract suite and the HTTP suite
run once per registered backend. Backends that need a service (PostgreSQL, Redis, a
DynamoDB endpoint) skip with a reason when it is unreachable, except under ``CI=true``,
where they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from parley.app import Parley, build
from parley.http.server import create_app
from parley.settings import Settings
from parley.storage.base import Storage
from parley.storage.memory import MemoryStorage
from parley.storage.sqlite import SqliteStorage

IN_CI = os.environ.get("CI", "").lower() == "true"

StorageFactory = Callable[[Path], Awaitable[Storage]]


async def _memory(tmp: Path) -> Storage:
    return MemoryStorage()


async def _sqlite(tmp: Path) -> Storage:
    return SqliteStorage(tmp / "parley.db")


STORAGES: dict[str, StorageFactory] = {"memory": _memory, "sqlite": _sqlite}


def unavailable(reason: str) -> None:
    """Skip a test that needs a missing service, or fail under CI where it must run."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {reason}")
    pytest.skip(reason)


# --- scale-out backends: PostgreSQL, and PostgreSQL + Redis ---------------------------
# (helpers in tests/integration/services.py: one schema per store, one key prefix per app)
from tests.integration import services as scale_out  # noqa: E402


async def _postgres(tmp: Path) -> Storage:
    reason = await scale_out.postgres_unreachable()
    if reason:
        unavailable(reason)
    return scale_out.TestPostgres()


async def _postgres_redis(tmp: Path) -> Storage:
    reason = await scale_out.postgres_unreachable() or scale_out.redis_unreachable()
    if reason:
        unavailable(reason)
    return scale_out.TestPostgres()


STORAGES.update({"postgres": _postgres, "postgres+redis": _postgres_redis})
# Settings a backend's harness adds (its own Redis URL and key prefix).
HARNESS_ENV: dict[str, Callable[[], dict[str, str]]] = {"postgres+redis": scale_out.redis_env}
# --- end of scale-out backends ---------------------------------------------------------


# --- DynamoDB backend: moto's server on loopback, tables of its own per store ------------
async def _dynamodb(tmp: Path) -> Storage:
    from tests.integration import moto_server

    reason = moto_server.moto_missing()
    if reason:
        unavailable(reason)
    return moto_server.TestDynamo()


STORAGES["dynamodb"] = _dynamodb
# --- end of DynamoDB backend -----------------------------------------------------------


@pytest.fixture(params=sorted(STORAGES))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def storage(backend: str, tmp_path: Path) -> AsyncIterator[Storage]:
    store = await STORAGES[backend](tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class Harness:
    """A Parley app and an HTTP client speaking to it in-process."""

    def __init__(self, parley: Parley, client: httpx.AsyncClient) -> None:
        self.parley = parley
        self.client = client

    async def user(self, name: str = "user") -> tuple[str, dict[str, str]]:
        """Create a user; return its id and the headers that authenticate as it."""
        r = await self.client.post("/v1/users/create", json={"username": name})
        assert r.status_code == 200, r.text
        body = r.json()
        token = body.get("token")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return body["userId"], headers


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(backend: str, tmp_path: Path) -> AsyncIterator[MakeHarness]:
    started: list[Harness] = []

    async def make(auth: str = "token", **env: str) -> Harness:
        extra = HARNESS_ENV.get(backend, dict)()  # scale-out: Redis for postgres+redis
        settings = Settings.from_env(
            {"PARLEY_AUTH": auth, "PARLEY_RATE_LIMITS": "off", **extra, **env}
        )
        store = await STORAGES[backend](tmp_path / f"h{len(started)}")
        parley = build(settings, store)
        await parley.start()
        app = create_app(parley)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://parley.test"
        )
        harness = Harness(parley, client)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.client.aclose()
        await harness.parley.stop()


@pytest.fixture
async def api(make_harness: MakeHarness) -> Harness:
    """Token mode, rate limits off."""
    return await make_harness("token")


@pytest.fixture
async def open_api(make_harness: MakeHarness) -> Harness:
    """Open mode: the original API without tokens."""
    return await make_harness("none")
