"""A history page costs the same however many messages the user has elsewhere.

    .venv/bin/python loadtest/history_bench.py [--others 1000000] [--storage sqlite|postgres]

Loads, through the storage port's bulk load, one user ``a`` with 200 messages exchanged
with ``b`` and ``--others`` private messages from 1,000 other users (the noise), then times
history pages of the a-b conversation (newest page and a page from the middle) and the
list of a's conversations, and prints the query plan the database chose. The same pages
are timed first with no noise, for comparison. PostgreSQL uses ``PARLEY_BENCH_DATABASE_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``) in a schema of its own, dropped at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from parley.domain.models import Message, UserRecord, new_id
from parley.storage.base import BulkData, Conversation, Storage

PAIR = 200
REPEAT = 50


def dataset(others: int, start: int) -> BulkData:
    users = [UserRecord("u_a", "a"), UserRecord("u_b", "b")]
    noise_senders = [f"u_n{i:04d}" for i in range(1000)]
    users += [UserRecord(u, u) for u in noise_senders]
    messages = []
    ts = start
    for i in range(PAIR):
        sender, receiver = ("u_a", "u_b") if i % 2 else ("u_b", "u_a")
        messages.append(Message(new_id("m_"), "private", sender, receiver, f"pair {i}", ts))
        ts += 1
    for i in range(others):
        sender = noise_senders[i % len(noise_senders)]
        messages.append(Message(new_id("m_"), "private", sender, "u_a", "noise", ts + i // 10))
    return BulkData(users=users, messages=messages)


async def timed(label: str, store: Storage, conv: Conversation, before: int | None) -> float:
    samples = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        page = await store.history(conv, before, 50)
        samples.append((time.perf_counter() - started) * 1000)
        assert len(page.messages) == 50, len(page.messages)
    median = statistics.median(samples)
    print(
        f"  {label:<34} median {median:7.3f} ms  p95 {sorted(samples)[int(REPEAT * 0.95)]:7.3f} ms"
    )
    return median


async def run_one(store: Storage, others: int) -> None:
    start = 1_700_000_000_000
    began = time.perf_counter()
    await store.bulk_load(dataset(others, start))
    print(
        f"{store.name}: loaded {PAIR} a-b messages + {others:,} others to a"
        f" in {time.perf_counter() - began:.1f} s"
    )
    conv = Conversation("private", "u_a", "u_b")
    await timed("history, newest page", store, conv, None)
    await timed("history, page before the middle", store, conv, start + PAIR // 2)
    samples = []
    for _ in range(REPEAT):
        began = time.perf_counter()
        await store.unread_count(conv, start, 1000)
        samples.append((time.perf_counter() - began) * 1000)
    print(f"  {'unread count (100 unread)':<34} median {statistics.median(samples):7.3f} ms")


async def sqlite(others: int) -> None:
    from parley.storage.sqlite import SqliteStorage

    for count in (0, others):
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteStorage(Path(tmp) / "bench.db", synchronous="OFF")
            await store.open()
            try:
                await run_one(store, count)
                plan = store._query(
                    "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE type = 'private'"
                    " AND recipient_id = ? AND sender_id = ? AND ts < ?"
                    " ORDER BY ts DESC, seq DESC LIMIT 51",
                    ("u_a", "u_b", 2_000_000_000_000),
                )
                print("  plan:", "; ".join(str(row[-1]) for row in plan))
            finally:
                await store.close()


async def postgres(others: int) -> None:
    import asyncpg

    from parley.storage.postgres import PostgresStorage

    dsn = os.environ.get("PARLEY_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    for count in (0, others):
        schema = f"bench_history_{os.getpid()}_{count}"
        store = PostgresStorage(dsn, schema=schema, timeout=900.0)
        await store.open()
        try:
            await run_one(store, count)
            conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
            try:
                await conn.execute("ANALYZE messages")
                plan = await conn.fetch(
                    "EXPLAIN SELECT id FROM messages WHERE type = 'private'"
                    " AND recipient_id = 'u_a' AND sender_id = 'u_b' AND ts < 2000000000000"
                    " ORDER BY ts DESC, seq DESC LIMIT 51"
                )
                print("  plan:", " | ".join(r[0].strip() for r in plan))
            finally:
                await conn.close()
        finally:
            await store.close()
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=1_000_000)
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(sqlite(args.others) if args.storage == "sqlite" else postgres(args.others))


if __name__ == "__main__":
    main()
