"""PostgreSQL positions: the clock row, out-of-order commits, group commit, migrations.

The contract suite (test_storage_contract.py) already runs on PostgreSQL; these tests pin
what is specific to it: positions come from the database, several writers commit in any
order, and a reader never hands out a frontier that a later commit lands at or under.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from parley.domain.models import Message, new_id
from parley.storage.base import MessageDraft
from parley.storage.postgres import APPEND_SQL, MIGRATIONS, PostgresStorage, _Append
from tests.conftest import unavailable
from tests.integration import services

pytestmark = pytest.mark.postgres


def draft(sender: str, recipient: str, text: str = "hi", key: str | None = None) -> MessageDraft:
    return MessageDraft(new_id("m_"), "private", sender, recipient, text, key)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    reason = await services.postgres_unreachable()
    if reason:
        unavailable(reason)
    name = services.new_schema()
    yield name
    await services.drop_schema(name)


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresStorage]:
    storage = PostgresStorage(services.DATABASE_URL, schema=schema)
    await storage.open()
    yield storage
    await storage.close()


async def connect(schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(services.DATABASE_URL, server_settings={"search_path": schema})


async def begin_append(conn: asyncpg.Connection, *drafts: MessageDraft) -> int:
    """Start a writer transaction the way the adapter writes a batch; leave it open."""
    await conn.execute("BEGIN")
    rows = await conn.fetch(
        APPEND_SQL, *PostgresStorage._columns([_Append(d, asyncio.Future()) for d in drafts])
    )
    return int(rows[0]["clock"])


async def test_out_of_order_commits_never_land_under_a_handed_out_frontier(
    store: PostgresStorage, schema: str
) -> None:
    first, second = await connect(schema), await connect(schema)
    try:
        before = (await store.read_messages(["u_r"], None, None, 500)).next_ts
        ts1 = await begin_append(first, draft("u_a", "u_r", "one"))  # holds the clock lock
        page = await store.read_messages(["u_r"], None, before, 500)
        assert page.messages == [] and page.next_ts == before  # uncommitted: invisible

        # The second writer queues on the clock row's lock while the first is open.
        second_ts = asyncio.ensure_future(begin_append(second, draft("u_b", "u_r", "two")))
        await asyncio.sleep(0.05)
        assert not second_ts.done()
        frontiers = [(await store.read_messages(["u_r"], None, before, 500)).next_ts]

        await first.execute("COMMIT")
        ts2 = await asyncio.wait_for(second_ts, 5)
        assert ts2 > ts1  # it read the clock only after the first commit
        page = await store.read_messages(["u_r"], None, before, 500)
        assert [m.body for m in page.messages] == ["one"] and page.next_ts == ts1
        frontiers.append(page.next_ts)

        await second.execute("COMMIT")
        page = await store.read_messages(["u_r"], None, ts1, 500)
        assert [m.body for m in page.messages] == ["two"]
        # Every commit landed strictly above every frontier handed out before it.
        assert all(f < ts1 for f in frontiers[:1]) and all(f < ts2 for f in frontiers)
    finally:
        await first.close()
        await second.close()


async def test_rolled_back_writer_leaves_no_gap_in_positions(
    store: PostgresStorage, schema: str
) -> None:
    conn = await connect(schema)
    try:
        await begin_append(conn, draft("u_a", "u_r", "never"))
        await conn.execute("ROLLBACK")
    finally:
        await conn.close()
    message, _ = await store.append_message(draft("u_a", "u_r", "kept"))
    page = await store.read_messages(["u_r"], None, None, 500)
    assert [m.body for m in page.messages] == ["kept"] and page.next_ts == message.ts


async def test_random_commit_order_exactly_once_in_order(
    store: PostgresStorage, schema: str
) -> None:
    """Writers on separate connections hold their transactions open for random times."""
    writers = [await connect(schema) for _ in range(6)]
    sent: list[str] = []
    received: list[Message] = []
    frontiers: list[int] = []
    done = asyncio.Event()
    rng = random.Random(7)

    async def writer(conn: asyncpg.Connection, n: int) -> None:
        for i in range(15):
            d = draft(f"u_{n}", "u_r", f"{n}-{i}")
            await begin_append(conn, d)
            await asyncio.sleep(rng.random() * 0.01)
            await conn.execute("COMMIT")
            sent.append(d.id)

    async def reader() -> None:
        cursor: int | None = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            finished = done.is_set()
            page = await store.read_messages(["u_r"], None, cursor, 7)
            received.extend(page.messages)
            frontiers.append(page.next_ts)
            cursor = page.next_ts
            if finished and not page.has_more and not page.messages:
                return
            await asyncio.sleep(0.001)

    try:
        polling = asyncio.create_task(reader())
        await asyncio.gather(*(writer(conn, n) for n, conn in enumerate(writers)))
        done.set()
        await asyncio.wait_for(polling, 30)
    finally:
        for conn in writers:
            await conn.close()
    ids = [m.id for m in received]
    assert len(ids) == len(set(ids)) == 90
    assert set(ids) == set(sent)
    assert [(m.ts, m.seq) for m in received] == sorted((m.ts, m.seq) for m in received)
    assert frontiers == sorted(frontiers)


async def test_group_commit_shares_one_timestamp_and_pages_keep_it_whole(
    store: PostgresStorage,
) -> None:
    loop = asyncio.get_running_loop()
    jobs = [_Append(draft("u_a", "u_r", f"m{i}"), loop.create_future()) for i in range(12)]
    await store._write_batch(jobs)
    stamps = {job.future.result()[0].ts for job in jobs}
    assert len(stamps) == 1
    page = await store.read_messages(["u_r"], None, None, 5)
    assert len(page.messages) == 12 and page.has_more and page.next_ts == stamps.pop()
    assert [m.body for m in page.messages] == [f"m{i}" for i in range(12)]
    rest = await store.read_messages(["u_r"], None, page.next_ts, 5)
    assert rest.messages == [] and not rest.has_more


async def test_concurrent_sends_are_batched(store: PostgresStorage) -> None:
    before = store.batches
    results = await asyncio.gather(
        *(store.append_message(draft("u_a", "u_r", f"m{i}")) for i in range(200))
    )
    assert all(created for _, created in results)
    assert store.batches - before < 50
    page = await store.read_messages(["u_r"], None, None, 1000)
    assert len(page.messages) == 200


async def test_timestamps_follow_the_database_clock_with_backpressure(
    store: PostgresStorage, schema: str
) -> None:
    conn = await connect(schema)
    try:
        now = await conn.fetchval("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        message, _ = await store.append_message(draft("u_a", "u_r"))
        assert abs(message.ts - now) < 5_000
        # Pretend a burst pushed the clock 300 ms ahead: the next batches wait it out.
        await conn.execute("UPDATE clock SET ts = $1", message.ts + 300)
    finally:
        await conn.close()
    started = time.monotonic()
    first, _ = await store.append_message(draft("u_a", "u_r"))
    second, _ = await store.append_message(draft("u_a", "u_r"))
    assert first.ts == message.ts + 301 and second.ts > first.ts
    assert time.monotonic() - started >= 0.2  # waited for the clock to lead by <= 50 ms


async def test_idempotent_sends_across_processes(schema: str) -> None:
    stores = [PostgresStorage(services.DATABASE_URL, schema=schema) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        results = await asyncio.gather(
            *(s.append_message(draft("u_s", "u_r", "once", key="k")) for s in stores * 4)
        )
    finally:
        for s in stores:
            await s.close()
    assert sum(1 for _, created in results if created) == 1
    assert len({m.id for m, _ in results}) == 1


async def test_migrations_are_idempotent_and_safe_at_once(schema: str) -> None:
    stores = [PostgresStorage(services.DATABASE_URL, schema=schema) for _ in range(4)]
    versions = await asyncio.gather(*(s.migrate() for s in stores))
    latest = len(MIGRATIONS)
    assert set(versions) == {latest}
    assert await stores[0].migrate() == latest
    conn = await connect(schema)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == latest
        indexes = {
            r[0]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema
            )
        }
    finally:
        await conn.close()
    assert {
        "messages_by_recipient",
        "messages_sent_private",
        "messages_send_key",
        "messages_by_ts",
        "cache_log_at",
    } <= indexes
