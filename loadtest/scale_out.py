"""Sends/s and idle checks/s: one process on SQLite versus two on PostgreSQL + Redis.

    .venv/bin/python loadtest/scale_out.py [--users 5000] [--messages 50000] [--seconds 8]

Loads the same workload into SQLite and into a fresh PostgreSQL schema (through the
storage port's bulk load), starts the servers (token mode, rate limits off) and drives
them with wrk (Debian's ``wrk``): one wrk against the SQLite process, one wrk per process
for PostgreSQL + Redis, run at the same time and summed. Idle checks poll with a cursor
newer than every message (so each is answered from the change cache: memory for SQLite,
Redis for the scale-out pair); sends are private messages to random users.

Needs PostgreSQL and Redis (PARLEY_BENCH_DATABASE_URL, PARLEY_BENCH_REDIS_URL; defaults
on 127.0.0.1). Everything it creates (schema, keys, files) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import redis

from parley.bench import wrk
from parley.bench.dataset import Dataset, populate
from parley.bench.procs import Server
from parley.storage.postgres import PostgresStorage
from parley.storage.sqlite import SqliteStorage

DATABASE_URL = os.environ.get(
    "PARLEY_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("PARLEY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def drive(
    urls: list[str], workdir: Path, data: Dataset, mode: str, seconds: float, connections: int
) -> dict[str, float]:
    """One wrk per URL, all at once; the summed rate and the worst latencies."""
    dirs = []
    for n in range(len(urls)):
        (workdir / f"wrk{n}").mkdir(exist_ok=True)
        dirs.append(workdir / f"wrk{n}")
    each = max(1, connections // len(urls))
    with ThreadPoolExecutor(len(urls)) as pool:
        runs = [
            pool.submit(
                wrk.run,
                url,
                d,
                data.users_file,
                mode,
                data.idle_after,
                seconds=seconds,
                connections=each,
            )
            for url, d in zip(urls, dirs, strict=True)
        ]
        results = [r.result() for r in runs]
    return {
        "rps": round(sum(r.rps for r in results)),
        "p50_ms": round(max(r.p50_ms for r in results), 2),
        "p99_ms": round(max(r.p99_ms for r in results), 2),
        "errors": sum(r.status_errors + r.socket_errors for r in results),
    }


def measure(
    name: str, servers: list[Server], workdir: Path, data: Dataset, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    urls = [s.url for s in servers]
    say(f"[{name}] warming up")
    drive(urls, workdir, data, "idle", 3, args.connections)
    say(f"[{name}] idle checks for {args.seconds:.0f} s")
    idle = drive(urls, workdir, data, "idle", args.seconds, args.connections)
    say(f"[{name}] sends for {args.seconds:.0f} s")
    sends = drive(urls, workdir, data, "private", args.seconds, args.connections)
    return {"idle_checks": idle, "sends": sends}


async def populate_sqlite(path: Path, args: argparse.Namespace, workdir: Path) -> Dataset:
    store = SqliteStorage(path, synchronous="FULL")
    await store.open()
    try:
        return await populate(store, args.users, args.messages, workdir, say)
    finally:
        await store.close()


async def populate_postgres(schema: str, args: argparse.Namespace, workdir: Path) -> Dataset:
    store = PostgresStorage(DATABASE_URL, schema=schema)
    await store.open()
    try:
        return await populate(store, args.users, args.messages, workdir, say)
    finally:
        await store.close()


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def forget_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if not wrk.available():
        say("needs wrk (Debian: apt-get install wrk)")
        return 2
    results: dict[str, object] = {"users": args.users, "messages": args.messages}
    with tempfile.TemporaryDirectory(prefix="parley-scale-out-") as tmp:
        workdir = Path(tmp)
        common = {"PARLEY_AUTH": "token", "PARLEY_RATE_LIMITS": "off"}

        (workdir / "sqlite").mkdir()
        data = asyncio.run(
            populate_sqlite(workdir / "sqlite" / "parley.db", args, workdir / "sqlite")
        )
        server = Server(workdir / "sqlite", PARLEY_STORAGE="sqlite", **common).start()
        try:
            results["sqlite_1_process"] = measure("sqlite", [server], workdir, data, args)
        finally:
            server.stop()

        schema = "parley_bench_" + secrets.token_hex(4)
        prefix = schema + ":"
        (workdir / "pg").mkdir()
        try:
            data = asyncio.run(populate_postgres(schema, args, workdir / "pg"))
            env = {
                **common,
                "PARLEY_STORAGE": "postgres",
                "PARLEY_DATABASE_URL": DATABASE_URL,
                "PARLEY_DATABASE_SCHEMA": schema,
                "PARLEY_REDIS_URL": REDIS_URL,
                "PARLEY_REDIS_PREFIX": prefix,
            }
            servers = [Server(workdir / "pg" / f"p{n}", **env).start() for n in range(2)]
            try:
                results["postgres_redis_2_processes"] = measure(
                    "postgres+redis", servers, workdir, data, args
                )
            finally:
                for s in servers:
                    s.stop()
        finally:
            asyncio.run(drop_schema(schema))
            forget_keys(prefix)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
