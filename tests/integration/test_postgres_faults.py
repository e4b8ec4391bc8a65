"""PostgreSQL faults against a real ``parley serve``: kill -9 mid-burst, and a database outage.

1. SIGKILL during a burst of sends: every acknowledged message survives exactly once, and
   retries with the same Idempotency-Key store nothing twice (as tests/e2e/test_crash.py,
   on PostgreSQL in a schema of its own).
2. The database behind a TCP proxy that is cut (refusing, then hanging) and restored under
   load: requests fail fast with 503 + Retry-After, nothing else 5xx, service recovers
   without a restart, and no acknowledged send is lost. The storage timeout is short
   (``TIMEOUT``) and the last hang lasts several timeouts, so sends queue up behind a hung
   batch: every request, measured one by one, must still answer within ``TIMEOUT`` plus
   ``SLACK`` — the storage bounds each call from its start, waiting in the send queue
   included (``PostgresStorage.append_message``).
3. In-process, the mechanism: sends that queue behind a batch hung on a dead connection
   each answer Unavailable within the storage timeout of their own call.
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

from parley.domain.models import Message, new_id
from parley.errors import Unavailable
from parley.storage.base import MessageDraft
from parley.storage.postgres import PostgresStorage
from tests.conftest import unavailable
from tests.e2e.crash import SEND, fetch_all, kill_during_burst_and_check
from tests.e2e.server import Server
from tests.integration import services
from tests.integration.redis_proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TIMEOUT = 2  # seconds: PARLEY_DATABASE_TIMEOUT of the server under test
# What a request may take beyond TIMEOUT: the HTTP round trip, the server's own work and
# event-loop scheduling on a busy machine. The storage part itself is at most TIMEOUT.
SLACK = 1.0
RECOVERY_ALLOWED = 15.0  # seconds from restoring the database to a successful send
OUTAGE = 1.5  # seconds the first two cuts last
LONG_HANG = 2.5 * TIMEOUT  # sends queue behind hung batches: each must still fail fast
TRICKLE = 0.25  # seconds between the extra sends started during each cut


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
    env["PARLEY_DATABASE_TIMEOUT"] = str(TIMEOUT)
    server = Server(tmp_path / "data", **env)
    calls: list[Call] = []
    acked: dict[str, str] = {}
    attempted: dict[str, dict[str, str]] = {}  # keyed sends
    unkeyed: set[str] = set()  # texts of sends without a key (retrying could duplicate them)
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

            async def send(key: str, keyed: bool = True) -> None:
                body = {"senderId": alice, "receiverId": bob, "message": key}
                if keyed:
                    attempted[key] = body
                else:
                    unkeyed.add(key)
                headers = {"Idempotency-Key": key} if keyed else {}
                r = await timed("POST", SEND, json=body, headers=headers)
                if r is not None and r.status_code == 200:
                    acked[key] = r.json()["messageId"]

            async def worker(w: int) -> None:
                for n in range(5_000):  # bounded; normally ends on `stop`
                    if stop.is_set():
                        return
                    await send(f"w{w}-{n}")
                    await timed("GET", f"/v1/messages/{bob}", params={"limit": "20"})
                    await asyncio.sleep(0.02)  # moderate load

            async def trickle(cut: int, seconds: float) -> None:
                """Sends starting one by one while the database is cut, none waiting for
                another. Without a key a send skips the idempotency lookup and goes
                straight to the send queue, where it waits behind a hung batch."""
                sends = []
                for n in range(int(seconds / TRICKLE)):
                    sends.append(asyncio.create_task(send(f"t{cut}-{n}", keyed=False)))
                    await asyncio.sleep(TRICKLE)
                await asyncio.gather(*sends)

            workers = [asyncio.create_task(worker(w)) for w in range(4)]
            trickles = []
            try:
                await asyncio.sleep(1.5)  # healthy warm-up
                cut_plan = (("refuse", OUTAGE), ("hang", OUTAGE), ("hang", LONG_HANG))
                for cut, (mode, seconds) in enumerate(cut_plan):
                    cut_at = time.monotonic()
                    proxy.cut(mode)  # type: ignore[arg-type]
                    trickles.append(asyncio.create_task(trickle(cut, seconds)))
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
                await asyncio.wait_for(asyncio.gather(*workers, *trickles), 60)

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
            assert len(keys) == len(set(keys))
            assert set(keys) - unkeyed == set(attempted)  # unkeyed ones: stored or not
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
    too_slow = [c for c in calls if c.seconds > TIMEOUT + SLACK]
    assert not too_slow, "over TIMEOUT + SLACK: " + ", ".join(
        f"{c.what} -> {c.status} in {c.seconds:.2f}s" for c in too_slow[:5]
    )
    for mode, count, recovery in recoveries:
        assert count > 0, f"cut {mode}: no request answered 503"
        assert recovery <= RECOVERY_ALLOWED, f"cut {mode}: recovered after {recovery:.2f}s"


STORE_TIMEOUT = 1.0  # seconds: the in-process store's timeout
# A send's wait ends on a timer at its deadline; the timer runs late only while the event
# loop is not running (on a busy machine, the process not scheduled). The test measures that
# lateness and allows it, plus this much for the work after the timer fires.
STORE_SLACK = 0.2


async def loop_lateness(samples: list[float]) -> None:
    """Record how late each 10 ms sleep wakes up (until cancelled)."""
    loop = asyncio.get_running_loop()
    while True:
        asleep = loop.time()
        await asyncio.sleep(0.01)
        samples.append(loop.time() - asleep - 0.01)


async def test_sends_queued_behind_a_hung_batch_answer_within_the_timeout(schema: str) -> None:
    """Sends start 0.1 s apart while the database hangs: the first batch hangs for the
    whole timeout and the others queue behind it. Each send, timed from its own call,
    answers Unavailable within the timeout (each may or may not be stored, none twice), and
    the store works again once the database is back."""
    target = urlsplit(services.DATABASE_URL)
    proxy = await TcpProxy(target.port or 5432, target.hostname or "127.0.0.1").start()
    store = PostgresStorage(
        via_proxy(services.DATABASE_URL, proxy.port), schema=schema, timeout=STORE_TIMEOUT
    )
    await store.open()
    loop = asyncio.get_running_loop()

    def draft(text: str) -> MessageDraft:
        return MessageDraft(new_id("m_"), "private", "u_a", "u_b", text)

    async def timed_send(n: int) -> tuple[float, Message | None]:
        await asyncio.sleep(n * 0.1)
        started = loop.time()
        try:
            message, _ = await store.append_message(draft(f"during {n}"))
        except Unavailable:
            return loop.time() - started, None
        return loop.time() - started, message

    lateness: list[float] = []
    watch = asyncio.create_task(loop_lateness(lateness))
    try:
        await store.append_message(draft("before"))
        lateness.clear()
        proxy.cut("hang")
        results = await asyncio.gather(*(timed_send(n) for n in range(15)))
        proxy.restore()
        allowed = STORE_TIMEOUT + STORE_SLACK + max(lateness, default=0.0)
        waits = [round(seconds, 2) for seconds, _ in results]
        print(f"\nsends during a hang answered after {waits}s (allowed {allowed:.2f}s)")
        assert max(waits) <= allowed, waits
        assert all(message is None for _, message in results)
        assert store._queue == []  # the callers that gave up took their sends out
        after: Message | None = None
        for _ in range(20):  # bounded: the pool replaces the connections the cut broke
            try:
                after, _ = await store.append_message(draft("after"))
                break
            except Unavailable:
                await asyncio.sleep(0.1)
        assert after is not None, "the store did not recover"
        page = await store.read_messages(["u_b"], None, None, 100)
        bodies = [m.body for m in page.messages]
        assert bodies[0] == "before" and bodies[-1] == "after"
        # A send that timed out in a batch already being written may have been stored.
        assert all(body.startswith("during ") for body in bodies[1:-1])
        assert len(bodies) == len(set(bodies))
    finally:
        watch.cancel()
        await store.close()
        await proxy.stop()
