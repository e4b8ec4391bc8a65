"""Storage adapters by name, and Parley apps driven in-process over ASGI.

Every backend registers a factory in ``STORAGES``; the contract suite and the HTTP suite
run once per registered backend. Backends that need a service (PostgreSQL, Redis, a
DynamoDB endpoint) skip with a reason when it is unreachable, except under ``CI=true``,
where they fail.

Only ``tests/integration`` and ``tests/e2e`` load this module (their ``conftest.py``
imports its fixtures): it pulls in asyncpg, redis and, on first use, aiobotocore and moto,
which the unit tests must not need.

A factory takes the test's temporary folder and, optionally, a clock (a function returning
unix ms) for the process's position tracker. Backends whose positions come from the
database (PostgreSQL, DynamoDB) cannot take one and skip the tests that pass it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from parley.app import Parley, build
from parley.domain.positions import PositionTracker
from parley.http.server import create_app
from parley.settings import Settings
from parley.storage.base import Storage
from parley.storage.memory import MemoryStorage
from parley.storage.sqlite import SqliteStorage
from tests.conftest import unavailable
from tests.integration import services as scale_out

Clock = Callable[[], int]
StorageFactory = Callable[[Path, Clock | None], Awaitable[Storage]]

DATABASE_POSITIONS = "positions come from the database; no process clock to set"


def _tracker(clock: Clock | None) -> PositionTracker | None:
    return PositionTracker(clock) if clock is not None else None


async def _memory(tmp: Path, clock: Clock | None) -> Storage:
    return MemoryStorage(positions=_tracker(clock))


async def _sqlite(tmp: Path, clock: Clock | None) -> Storage:
    return SqliteStorage(tmp / "parley.db", positions=_tracker(clock))


# --- scale-out backends: PostgreSQL, and PostgreSQL + Redis ---------------------------
# (helpers in tests/integration/services.py: one schema per store, one key prefix per app)
async def _postgres(tmp: Path, clock: Clock | None) -> Storage:
    if clock is not None:
        pytest.skip(DATABASE_POSITIONS)
    reason = await scale_out.postgres_unreachable()
    if reason:
        unavailable(reason)
    return scale_out.TestPostgres()


async def _postgres_redis(tmp: Path, clock: Clock | None) -> Storage:
    if clock is not None:
        pytest.skip(DATABASE_POSITIONS)
    reason = await scale_out.postgres_unreachable() or scale_out.redis_unreachable()
    if reason:
        unavailable(reason)
    return scale_out.TestPostgres()


# --- DynamoDB backend: moto's server on loopback, tables of its own per store ------------
async def _dynamodb(tmp: Path, clock: Clock | None) -> Storage:
    if clock is not None:
        pytest.skip(DATABASE_POSITIONS)
    from tests.integration import moto_server

    reason = moto_server.moto_missing()
    if reason:
        unavailable(reason)
    return moto_server.TestDynamo()


STORAGES: dict[str, StorageFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
    "postgres+redis": _postgres_redis,
    "dynamodb": _dynamodb,
}
# Settings a backend's harness adds (its own Redis URL and key prefix).
HARNESS_ENV: dict[str, Callable[[], dict[str, str]]] = {"postgres+redis": scale_out.redis_env}


@pytest.fixture(params=sorted(STORAGES))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def storage(backend: str, tmp_path: Path) -> AsyncIterator[Storage]:
    store = await STORAGES[backend](tmp_path, None)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


MakeStorage = Callable[[Clock], Awaitable[Storage]]


@pytest.fixture
async def clocked_storage(backend: str, tmp_path: Path) -> AsyncIterator[MakeStorage]:
    """``await clocked_storage(clock)``: an open store whose positions follow ``clock``
    (skips on backends whose positions come from the database)."""
    opened: list[Storage] = []

    async def make(clock: Clock) -> Storage:
        store = await STORAGES[backend](tmp_path / f"c{len(opened)}", clock)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
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
    """``await make_harness(auth, clock=None, **env)``: a started app on this backend."""
    started: list[Harness] = []

    async def make(auth: str = "token", clock: Clock | None = None, **env: str) -> Harness:
        extra = HARNESS_ENV.get(backend, dict)()  # scale-out: Redis for postgres+redis
        data = str(tmp_path / f"h{len(started)}")  # uploaded files go under it
        settings = Settings.from_env(
            {"PARLEY_AUTH": auth, "PARLEY_RATE_LIMITS": "off", "PARLEY_DATA_DIR": data}
            | extra
            | env
        )
        store = await STORAGES[backend](tmp_path / f"h{len(started)}", clock)
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
