"""PostgreSQL faults against a real ``parley serve``: kill -9 mid-burst, and a database outage.

1. SIGKILL during a burst of sends: every acknowledged message survives exactly once, and
   retries with the same Idempotency-Key store nothing twice (as tests/e2e/test_crash.py,
   on PostgreSQL in a schema of its own).
2. The database behind a TCP proxy that is cut (refusing, then hanging) and restored under
   load: requests fail fast with 503 + Retry-After, nothing else 5xx, service recovers
   without a restart, and no acknowledged send is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.conftest import unavailable
from tests.e2e.crash import SEND, fetch_all, kill_during_burst_and_check
from tests.e2e.server import Server
from tests.integration import services
from tests.integration.redis_proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SLOWEST_ALLOWED = 12.0  # seconds any request may take, outage or not
RECOVERY_ALLOWED = 15.0  # seconds from restoring the database to a successful send
OUTAGE = 3.0  # seconds each cut lasts
LONG_HANG = 13.0  # a hang longer than PostgresStorage.timeout (10 s): must still fail fast


def postgres_env(schema: str, database_url: str = services.DATABASE_URL) -> dict[str, str]:
    return {
        "PARLEY_STORAGE": "postgres",
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_DATABASE_SCHEMA": schema,
        "PARLEY_REDIS_URL": "",  # no Redis: PostgreSQL alone
        "PARLEY_AUTH": "none",
    }


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    reason = await services.postgres_unreachable()
    if reason:
        unavailable(reason)
    name = services.new_schema()
    try:
        yield name
    finally:
        await services.drop_schema(name)


async def two_users(client: httpx.AsyncClient) -> tuple[str, str]:
    users = []
    for name in ("a", "b"):
        r = await client.post("/v1/users/create", json={"username": name})
        assert r.status_code == 200, r.text
        users.append(r.json()["userId"])
    return users[0], users[1]


async def test_kill_9_loses_no_acknowledged_send_on_postgres(tmp_path: Path, schema: str) -> None:
    env = postgres_env(schema)
    env.pop("PARLEY_AUTH")
    acked, attempted = await kill_during_burst_and_check(tmp_path / "data", env)
    print(f"\nkill -9 on postgres: {acked} acknowledged, {attempted} attempted")


@dataclass
class Call:
    started: float  # monotonic
    seconds: float
    status: int  # 0: no HTTP answer at all
    retry_after: bool
    error: str = ""
    what: str = ""


def via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    netloc[-1] = host
    return urlunsplit(parts._replace(netloc="@".join(netloc)))


async def test_postgres_outage_fails_fast_and_recovers(tmp_path: Path, schema: str) -> None:
    target = urlsplit(services.DATABASE_URL)
    proxy = await TcpProxy(target.port or 5432, target.hostname or "127.0.0.1").start()
    env = postgres_env(schema, via_proxy(services.DATABASE_URL, proxy.port))
    server = Server(tmp_path / "data", **env)
    calls: list[Call] = []
    acked: dict[str, str] = {}
    attempted: dict[str, dict[str, str]] = {}
    cuts: list[tuple[str, float, float]] = []  # mode, cut at, restored at
    stop = asyncio.Event()
    try:
        await asyncio.to_thread(server.start)  # in a thread: the proxy lives on this loop
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=32)
        ) as client:
            alice, bob = await two_users(client)

            async def timed(method: str, path: str, **kw: object) -> httpx.Response | None:
                started = time.monotonic()
                try:
                    r = await client.request(method, path, **kw)  # type: ignore[arg-type]
                except httpx.HTTPError as exc:
                    calls.append(Call(started, time.monotonic() - started, 0, False, repr(exc)))
                    return None
                retry = "retry-after" in r.headers
                seconds = time.monotonic() - started
                calls.append(Call(started, seconds, r.status_code, retry, what=f"{method} {path}"))
                return r

            async def worker(w: int) -> None:
                for n in range(5_000):  # bounded; normally ends on `stop`
                    if stop.is_set():
                        return
                    key = f"w{w}-{n}"
                    body = {"senderId": alice, "receiverId": bob, "message": key}
                    attempted[key] = body
                    r = await timed("POST", SEND, json=body, headers={"Idempotency-Key": key})
                    if r is not None and r.status_code == 200:
                        acked[key] = r.json()["messageId"]
                    await timed("GET", f"/v1/messages/{bob}", params={"limit": "20"})
                    await asyncio.sleep(0.02)  # moderate load

            workers = [asyncio.create_task(worker(w)) for w in range(4)]
            try:
                await asyncio.sleep(1.5)  # healthy warm-up
                for mode, seconds in (("refuse", OUTAGE), ("hang", OUTAGE), ("hang", LONG_HANG)):
                    cut_at = time.monotonic()
                    proxy.cut(mode)  # type: ignore[arg-type]
                    await asyncio.sleep(seconds)
                    proxy.restore()
                    restored_at = time.monotonic()
                    cuts.append((mode, cut_at, restored_at))
                    # Wait (bounded) for the first send that starts after restoring and works.
                    deadline = restored_at + RECOVERY_ALLOWED + 5
                    while time.monotonic() < deadline and not any(
                        c.status == 200 and c.started >= restored_at for c in calls
                    ):
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(1.5)  # healthy again for a while
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), 60)

            # Every acknowledged send survived, and retries store each key once.
            stored = await fetch_all(client, bob)
            ids = [m["messageId"] for m in stored]
            assert len(ids) == len(set(ids)), "a message is stored twice"
            missing = set(acked.values()) - set(ids)
            assert not missing, f"{len(missing)} acknowledged messages lost"
            for key, body in attempted.items():
                r = await client.post(SEND, json=body, headers={"Idempotency-Key": key})
                assert r.status_code == 200, r.text
                if key in acked:
                    assert r.json()["messageId"] == acked[key]
            keys = [m["message"] for m in await fetch_all(client, bob)]
            assert len(keys) == len(set(keys)) == len(attempted)
    finally:
        await asyncio.to_thread(server.stop)
        await proxy.stop()

    statuses = Counter(c.status for c in calls)
    longest = max(c.seconds for c in calls)
    slowest = max(calls, key=lambda c: c.seconds)
    print(f"\nslowest request: {slowest.what} -> {slowest.status} in {slowest.seconds:.2f}s")
    print(f"\npostgres outage: {len(calls)} requests, statuses {dict(statuses)}")
    print(f"  longest request {longest:.2f}s, acked sends {len(acked)}/{len(attempted)}")
    recoveries = []
    for mode, cut_at, restored_at in cuts:
        # requests that overlapped the cut (hung ones may have started just before it)
        during = [
            c
            for c in calls
            if c.started < restored_at <= c.started + c.seconds + 0.5
            or cut_at <= c.started < restored_at
        ]
        unavailable_ = [c for c in during if c.status == 503]
        slowest = max((c.seconds for c in during), default=0.0)
        ok_after = [c for c in calls if c.status == 200 and c.started >= restored_at]
        first_ok = min((c.started + c.seconds for c in ok_after), default=float("inf"))
        recovery = first_ok - restored_at
        recoveries.append((mode, len(unavailable_), recovery))
        print(
            f"  cut {mode} {restored_at - cut_at:.1f}s: {len(during)} requests, "
            f"{len(unavailable_)} answered 503, "
            f"slowest {slowest:.2f}s, recovered {recovery:.2f}s after restore"
        )
    errors = [c.error for c in calls if c.status == 0]
    assert not errors, f"{len(errors)} requests got no HTTP answer: {errors[:3]}"
    assert set(statuses) <= {200, 503}, f"unexpected statuses {dict(statuses)}"
    assert all(c.retry_after for c in calls if c.status == 503), "503 without Retry-After"
    assert longest <= SLOWEST_ALLOWED, f"a request took {longest:.2f}s"
    for mode, count, recovery in recoveries:
        assert count > 0, f"cut {mode}: no request answered 503"
        assert recovery <= RECOVERY_ALLOWED, f"cut {mode}: recovered after {recovery:.2f}s"
