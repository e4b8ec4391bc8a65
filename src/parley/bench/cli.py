"""``parley bench``: load a data set, drive load with wrk, print figures beside the raw ceiling.

Runs, in one go on this machine: the raw ASGI ceiling (a hello-world on granian), then one
Parley server process on that data, through the scenarios below. Each figure is also
printed as a ratio to the ceiling measured in the same run.

  idle     checks with nothing new (answered from the change cache)
  check    checks returning ~7 messages (5 private + 2 group)
  private  private sends (durable: acknowledged after COMMIT)
  group    sends to a 1,000-member group
  mix      the workload model: 1 check a minute and 10 sends a day per user

``parley bench latency`` measures delivery latency to waiting clients instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from parley.bench import wrk
from parley.bench.dataset import Dataset, populate
from parley.bench.procs import Server
from parley.storage.base import Storage
from parley.storage.sqlite import SqliteStorage

SCENARIOS = ("idle", "check", "private", "group", "mix")
WRITES = {
    "create_user",
    "create_group",
    "add_member",
    "remove_member",
    "add_block",
    "remove_block",
    "append_message",
    "bulk_load",
}
TARGETS = {  # one process, token auth, the full data set
    "idle": "≥ 20,000 req/s, p99 ≤ 10 ms, ≥ 0.4 of the ceiling",
    "check": "≥ 8,000 req/s",
    "private": "≥ 5,000 req/s durable",
    "group": "p99 ≤ 5 ms",
}


@dataclass
class Row:
    scenario: str
    rps: float
    ratio: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    requests: int
    storage_reads_per_request: float
    storage_writes_per_request: float
    cpu_ms_per_request: float


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def storage_calls(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    calls = {}
    for match in re.finditer(r'parley_storage_calls_total\{operation="(\w+)"\} (\S+)', text):
        calls[match.group(1)] = float(match.group(2))
    return calls


def measure(
    server: Server | None,
    url: str,
    scenario: str,
    args: argparse.Namespace,
    data: Dataset,
    workdir: Path,
    ceiling: float,
) -> Row:
    cursor = data.recent_after if scenario == "check" else data.idle_after
    users_file = data.users_file
    extra = ""
    connections = args.connections
    if scenario == "group":
        users_file = workdir / "big1000.txt"
        extra = data.big_groups[1000]
        connections = args.group_connections
    mode = "hello" if server is None else scenario
    # Each worker counts its own storage calls and a scrape reaches one of them at random, so
    # per-request storage figures are only known for a single process (NaN otherwise).
    counted = mode != "hello" and not (args.storage == "postgres" and args.workers > 1)
    before_calls = storage_calls(url) if counted else {}
    before_cpu = server.cpu_seconds() if server else 0.0
    result = wrk.run(url, workdir, users_file, mode, cursor, extra, args.seconds, connections)
    cpu = (server.cpu_seconds() - before_cpu) if server else 0.0
    after_calls = storage_calls(url) if counted else {}
    delta = {k: v - before_calls.get(k, 0.0) for k, v in after_calls.items()}
    n = max(result.requests, 1)
    unknown = float("nan") if mode != "hello" and not counted else 0.0
    reads = sum(v for k, v in delta.items() if k not in WRITES) or unknown * n
    writes = sum(v for k, v in delta.items() if k in WRITES) or unknown * n
    return Row(
        scenario=scenario,
        rps=result.rps,
        ratio=result.rps / ceiling if ceiling else 1.0,
        p50_ms=result.p50_ms,
        p95_ms=result.p95_ms,
        p99_ms=result.p99_ms,
        errors=result.status_errors + result.socket_errors,
        requests=result.requests,
        storage_reads_per_request=reads / n,
        storage_writes_per_request=writes / n,
        cpu_ms_per_request=cpu * 1000 / n,
    )


def table(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<9} {'req/s':>9} {'x ceil':>8} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6} {'reads/req':>9} {'writes/req':>10} {'CPU ms/req':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.scenario:<9} {r.rps:>9,.0f} {r.ratio:>8.2f} {r.p50_ms:>7.2f} {r.p95_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.errors:>6} {r.storage_reads_per_request:>9.3f} "
            f"{r.storage_writes_per_request:>10.3f} {r.cpu_ms_per_request:>10.3f}"
        )
    return "\n".join(lines)


def cost_input(rows: dict[str, Row], ceiling: float, meta: dict[str, Any]) -> dict[str, Any]:
    """The figures ``parley cost --bench`` reads (format parley-bench/1)."""

    def op(row: Row) -> dict[str, float]:
        figures = {
            "requests_per_second": round(row.rps, 1),
            "cpu_seconds_per_request": row.cpu_ms_per_request / 1000,
        }
        if not math.isnan(row.storage_reads_per_request):
            figures["storage_reads_per_request"] = round(row.storage_reads_per_request, 4)
            figures["storage_writes_per_request"] = round(row.storage_writes_per_request, 4)
        return figures

    operations = {}
    if "check" in rows:
        operations["check"] = op(rows["check"])
    if "private" in rows:
        operations["send"] = op(rows["private"])
    return {
        "format": "parley-bench/1",
        "sample": False,
        "measured_at": meta["measured_at"],
        "machine": meta["machine"],
        "ceiling_requests_per_second": round(ceiling, 1),
        "workload": {
            "checks_per_user_per_minute": 1,
            "sends_per_user_per_day": 10,
            "messages_per_check": 7,
        },
        "shapes": {
            "postgres-redis" if meta["storage"] == "postgres" else "sqlite-single": {
                "process_vcpus": float(meta["processes"]),
                "note": (
                    f"{meta['processes']} Parley process(es) on {meta['storage']}, "
                    f"{meta['users']:,} users, {meta['messages']:,} messages"
                ),
                "operations": operations,
            }
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[2:] if argv is None else argv)
    if argv[:1] == ["latency"]:
        from parley.bench.latency import main as latency_main

        return latency_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="parley bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10,000 users, 100,000 messages, 4 s runs (under 2 minutes)",
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--group-connections",
        type=int,
        default=4,
        help="senders to the 1,000-member group (its target is a latency)",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--storage",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="postgres: PostgreSQL + Redis, --workers processes",
    )
    parser.add_argument("--workers", type=int, default=2, help="server processes (postgres)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up (default: by users)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PARLEY_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("PARLEY_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep data here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.messages, args.seconds = 10_000, 100_000, 4.0
    if not wrk.available():
        print("parley bench needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args, scenarios, workdir))


def _store(args: argparse.Namespace, data_dir: Path, schema: str) -> tuple[Storage, dict[str, str]]:
    """The store to fill and the server settings that serve it."""
    if args.storage == "postgres":
        from parley.storage.postgres import PostgresStorage

        env = {
            "PARLEY_STORAGE": "postgres",
            "PARLEY_DATABASE_URL": args.database_url,
            "PARLEY_DATABASE_SCHEMA": schema,
            "PARLEY_REDIS_URL": args.redis_url,
            "PARLEY_REDIS_PREFIX": f"{schema}:",
            "PARLEY_WORKERS": str(args.workers),
        }
        return PostgresStorage(args.database_url, schema=schema), env
    if (data_dir / "parley.db").exists():
        (data_dir / "parley.db").unlink()
    return SqliteStorage(data_dir / "parley.db", synchronous="NORMAL"), {"PARLEY_STORAGE": "sqlite"}


async def _drop_schema(args: argparse.Namespace, schema: str) -> None:
    if args.storage == "postgres":
        import asyncpg

        conn = await asyncpg.connect(args.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def run(args: argparse.Namespace, scenarios: list[str], workdir: Path) -> int:
    schema = f"parley_bench_{os.getpid()}"
    try:
        return await _run(args, scenarios, workdir, schema)
    finally:
        await _drop_schema(args, schema)


async def _run(args: argparse.Namespace, scenarios: list[str], workdir: Path, schema: str) -> int:
    data_dir = workdir / "data"
    store, server_env = _store(args, data_dir, schema)
    await store.open()
    started = time.monotonic()
    data = await populate(store, args.users, args.messages, workdir, say)
    await store.close()
    say(f"data set loaded in {time.monotonic() - started:.1f} s")

    warm = max(2.0, args.seconds / 3)
    say("measuring the ceiling: raw ASGI hello-world on granian")
    hello = Server(
        workdir,
        command=[
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "parley.bench.hello:app",
        ],
        health="/",
    ).start()
    try:
        wrk.run(hello.url, workdir, data.users_file, "hello", seconds=warm)
        ceiling_row = measure(None, hello.url, "ceiling", args, data, workdir, 0.0)
    finally:
        hello.stop()
    ceiling = ceiling_row.rps
    rows: dict[str, Row] = {"ceiling": ceiling_row}

    server = Server(data_dir, PARLEY_AUTH="token")
    server.env.update(server_env)
    server.start()
    try:
        # Warm the caches: every user seen by every process (the script walks the user list in
        # order; the rates are below what a cold pass reaches here on each storage).
        processes = args.workers if args.storage == "postgres" else 1
        cold_rate = 1_500 if args.storage == "postgres" else 8_000
        warm_users = args.warmup or max(warm, data.users * processes / cold_rate + 2)
        say(f"warming up for {warm_users:.0f} s (every user seen once)")
        wrk.run(server.url, workdir, data.users_file, "idle", data.idle_after, seconds=warm_users)
        for scenario in scenarios:
            say(f"running {scenario} for {args.seconds:.0f} s")
            rows[scenario] = measure(server, server.url, scenario, args, data, workdir, ceiling)
        rss = server.rss_bytes()
    finally:
        server.stop()

    print(table(list(rows.values())))
    print(
        f"\nserver resident memory after the runs: {rss / 2**20:,.0f} MiB "
        f"({data.users:,} users, {data.messages:,} messages)"
    )
    for name, target in TARGETS.items():
        if name in rows:
            print(f"target {name:<8} {target}")
    meta = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "storage": args.storage,
        "processes": args.workers if args.storage == "postgres" else 1,
        "users": data.users,
        "messages": data.messages,
    }
    if args.json:
        report = cost_input(rows, ceiling, meta)
        report["details"] = {
            "runs": {
                name: {k: None if v != v else v for k, v in asdict(row).items()}  # NaN: unknown
                for name, row in rows.items()
            },
            "server_rss_bytes": rss,
            "connections": args.connections,
            "seconds": args.seconds,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0
