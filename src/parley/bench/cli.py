"""``parley bench``: load a data set, drive load with wrk, print figures beside the raw ceiling.

Runs, in one go on this machine: the raw ASGI ceiling (a hello-world on granian), then one
Parley server process on that data, through the scenarios below. Each figure is also
printed as a ratio to the ceiling measured in the same run.

  idle     checks with nothing new (answered from the change cache)
  idle-events  the same with include=events (not in the default set)
  check    checks returning ~7 messages (5 private + 2 group)
  private  private sends (durable: acknowledged after COMMIT)
  group    sends to a 1,000-member group
  mix      the workload model: 1 check a minute and 10 sends a day per user

Per scenario it records, per request: server CPU (the server processes' /proc times),
PostgreSQL CPU (the backends serving the server's connections, /proc times), Redis CPU
(INFO cpu) and commands (INFO stats), storage calls (/metrics), request and response bytes
(the script's requests, wrk's bytes read). A figure it cannot measure is written as null and
printed as "unknown". Then it holds --idle-streams live streams open and records the server's
memory per connection. --json writes everything in the format ``parley cost --bench`` reads;
with --storage sqlite,postgres one command measures both shapes into one file:

  parley bench --storage sqlite,postgres --json docs/bench-results.json

``parley bench latency`` measures delivery latency to waiting clients instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from parley.bench import resources, wrk
from parley.bench.dataset import Dataset, populate
from parley.bench.latency import idle_streams
from parley.bench.procs import Server
from parley.storage.base import Storage
from parley.storage.sqlite import SqliteStorage

SCENARIOS = ("idle", "check", "private", "group", "mix")
EXTRA_SCENARIOS = ("idle-events",)  # run when asked for (--scenarios)
WRITES = {
    "create_user",
    "create_group",
    "add_member",
    "remove_member",
    "join_group",
    "leave_group",
    "set_role",
    "rename_group",
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
    # None: not measured here (printed "unknown", written as null)
    postgres_cpu_ms_per_request: float | None = None
    redis_cpu_ms_per_request: float | None = None
    redis_commands_per_request: float | None = None
    request_bytes: float | None = None
    response_bytes: float | None = None


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def storage_calls(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    calls = {}
    for match in re.finditer(r'parley_storage_calls_total\{operation="(\w+)"\} (\S+)', text):
        calls[match.group(1)] = float(match.group(2))
    return calls


class Backends:
    """CPU of what serves the Parley server: PostgreSQL backends and Redis (when used)."""

    def __init__(self, server: Server | None, args: argparse.Namespace) -> None:
        self.server = server
        self.postgres = server is not None and args.storage == "postgres"
        self.redis_url: str | None = args.redis_url if self.postgres else None
        self.database_url: str = args.database_url
        self.pids: set[int] = set()

    async def _backend_pids(self) -> set[int]:
        if not self.postgres or self.server is None:
            return set()
        try:
            found = await resources.postgres_backend_pids(self.database_url, self.server.pids())
        except (OSError, ImportError) as exc:
            say(f"PostgreSQL backends not found ({exc}): PostgreSQL CPU unknown")
            return set()
        return set(found)

    async def snapshot(self) -> tuple[dict[int, float], tuple[float, float] | None]:
        self.pids |= await self._backend_pids()
        per_pid = {pid: resources.cpu_seconds([pid]) for pid in self.pids}
        redis = resources.redis_figures(self.redis_url) if self.redis_url else None
        return per_pid, redis

    def postgres_cpu(self, before: dict[int, float], after: dict[int, float]) -> float | None:
        """Backend CPU over the window (a backend that appeared in it counts from zero)."""
        if not self.postgres or not after:
            return None
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def measure(
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
    backends = Backends(server, args)
    before_calls = storage_calls(url) if counted else {}
    before_pg, before_redis = await backends.snapshot()
    before_cpu = server.cpu_seconds() if server else 0.0
    result = await asyncio.to_thread(
        wrk.run, url, workdir, users_file, mode, cursor, extra, args.seconds, connections
    )
    cpu = (server.cpu_seconds() - before_cpu) if server else 0.0
    after_pg, after_redis = await backends.snapshot()
    after_calls = storage_calls(url) if counted else {}
    delta = {k: v - before_calls.get(k, 0.0) for k, v in after_calls.items()}
    n = max(result.requests, 1)
    unknown = float("nan") if mode != "hello" and not counted else 0.0
    reads = sum(v for k, v in delta.items() if k not in WRITES) or unknown * n
    writes = sum(v for k, v in delta.items() if k in WRITES) or unknown * n
    pg_cpu = backends.postgres_cpu(before_pg, after_pg)
    redis_cpu = redis_ops = None
    if before_redis is not None and after_redis is not None:
        redis_cpu = (after_redis[0] - before_redis[0]) * 1000 / n
        # minus the two INFO commands of the snapshot itself
        redis_ops = max(0.0, after_redis[1] - before_redis[1] - 2) / n
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
        postgres_cpu_ms_per_request=None if pg_cpu is None else pg_cpu * 1000 / n,
        redis_cpu_ms_per_request=redis_cpu,
        redis_commands_per_request=redis_ops,
        request_bytes=result.request_bytes,
        response_bytes=result.response_bytes,
    )


def _fmt(value: float | None, width: int, digits: int = 3) -> str:
    if value is None or value != value:  # None or NaN: not measured
        return "unknown".rjust(width)
    return f"{value:>{width}.{digits}f}"


def table(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<9} {'req/s':>9} {'x ceil':>8} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6} {'reads/req':>9} {'writes/req':>10} {'CPU ms/req':>10} "
        f"{'PG ms/req':>9} {'Redis ms/req':>12} {'Redis cmd/req':>13} {'req B':>7} {'resp B':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.scenario:<9} {r.rps:>9,.0f} {r.ratio:>8.2f} {r.p50_ms:>7.2f} {r.p95_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.errors:>6} {_fmt(r.storage_reads_per_request, 9)} "
            f"{_fmt(r.storage_writes_per_request, 10)} {_fmt(r.cpu_ms_per_request, 10)} "
            f"{_fmt(r.postgres_cpu_ms_per_request, 9)} {_fmt(r.redis_cpu_ms_per_request, 12)} "
            f"{_fmt(r.redis_commands_per_request, 13, 2)} {_fmt(r.request_bytes, 7, 0)} "
            f"{_fmt(r.response_bytes, 7, 0)}"
        )
    return "\n".join(lines)


# DynamoDB API calls per request of a warm process and the request units each costs on AWS
# (docs/dynamodb.md, "What each API call costs", counted by the adapter's counters in
# tests/integration/test_dynamodb_costs.py): a check that finds messages for a user in 2 groups
# is 1 GetItem + 3 Query at 1 RRU each; an idle check is answered by the change cache (0 calls);
# a private send is 2 UpdateItem + 1 BatchWriteItem, 4 WRU.
DYNAMODB_CALLS: dict[str, dict[str, float]] = {
    "check": {"storage_reads_per_request": 4, "read_units_per_read": 1.0},
    "idle": {"storage_reads_per_request": 0},
    # a private send: the clock twice, the inbox item and its by_pair index entry, the sent
    # copy, the locator (docs/dynamodb.md)
    "send": {"storage_writes_per_request": 3, "write_units_per_write": 6 / 3},
}
OPERATION_ROWS = {"check": "check", "idle": "idle", "send": "private"}


def _known(value: float | None, scale: float = 1.0, digits: int = 9) -> float | None:
    if value is None or value != value:  # NaN: not measured
        return None
    return round(value * scale, digits)


def operation_figures(row: Row, storage: str) -> dict[str, float | None]:
    """One operation's per-request figures; None where this run could not measure them."""
    separate = storage == "postgres"  # SQLite runs inside the server: its CPU is the server's
    return {
        "requests_per_second": round(row.rps, 1),
        "cpu_seconds_per_request": row.cpu_ms_per_request / 1000,
        "storage_reads_per_request": _known(row.storage_reads_per_request, digits=4),
        "storage_writes_per_request": _known(row.storage_writes_per_request, digits=4),
        "storage_cpu_seconds_per_request": (
            _known(row.postgres_cpu_ms_per_request, 1e-3) if separate else 0.0
        ),
        "cache_ops_per_request": _known(row.redis_commands_per_request, digits=4)
        if separate
        else 0.0,
        "cache_cpu_seconds_per_request": (
            _known(row.redis_cpu_ms_per_request, 1e-3) if separate else 0.0
        ),
        "request_bytes": _known(row.request_bytes, digits=1),
        "response_bytes": _known(row.response_bytes, digits=1),
    }


def shape_figures(rows: dict[str, Row], meta: dict[str, Any]) -> dict[str, Any]:
    operations = {
        op: operation_figures(rows[row], meta["storage"])
        for op, row in OPERATION_ROWS.items()
        if row in rows
    }
    rss = meta.get("rss_bytes")
    return {
        "process_vcpus": float(meta["processes"]),
        "process_base_bytes": round(rss / meta["processes"]) if rss else None,
        "note": (
            f"{meta['processes']} Parley process(es) on {meta['storage']}, "
            f"{meta['users']:,} users, {meta['messages']:,} messages"
        ),
        "operations": operations,
    }


def dynamodb_shape(postgres: dict[str, Any]) -> dict[str, Any]:
    """The DynamoDB shape: request units per call from the adapter's counters, everything the
    app process spends (CPU, Redis, bytes, memory) from the PostgreSQL + Redis run."""
    operations = {}
    for op, figures in postgres["operations"].items():
        own = dict(figures)
        own.update(
            storage_reads_per_request=0,
            storage_writes_per_request=0,
            storage_cpu_seconds_per_request=0.0,  # billed per request unit, no server to size
        )
        own.update(DYNAMODB_CALLS.get(op, {}))
        operations[op] = own
    return {
        "process_vcpus": postgres["process_vcpus"],
        "process_base_bytes": postgres["process_base_bytes"],
        "note": (
            "DynamoDB calls and request units per request from docs/dynamodb.md (warm process); "
            "app CPU, Redis, bytes and memory from the postgres-redis run (the same stateless "
            "process and Redis cache; DynamoDB itself is not benched: moto is not AWS)"
        ),
        "operations": operations,
    }


def cost_input(
    runs: dict[str, tuple[dict[str, Row], dict[str, Any]]],
    ceiling: float,
    meta: dict[str, Any],
    idle_connection_bytes: float | None,
) -> dict[str, Any]:
    """The figures ``parley cost --bench`` reads (format parley-bench/1), one shape per storage
    run (plus the DynamoDB shape derived from the PostgreSQL one)."""
    shapes: dict[str, Any] = {}
    for storage, (rows, run_meta) in runs.items():
        name = "postgres-redis" if storage == "postgres" else "sqlite-single"
        shapes[name] = shape_figures(rows, run_meta)
    if "postgres-redis" in shapes:
        shapes["dynamodb-fargate"] = dynamodb_shape(shapes["postgres-redis"])
    return {
        "format": "parley-bench/1",
        "sample": False,
        "measured_at": meta["measured_at"],
        "machine": meta["machine"],
        "ceiling_requests_per_second": round(ceiling, 1),
        "idle_connection_bytes": idle_connection_bytes,
        "workload": {
            "checks_per_user_per_minute": 1,
            "sends_per_user_per_day": 10,
            "messages_per_check": 7,
        },
        "shapes": shapes,
        "details": {
            storage: {
                "runs": {
                    name: {
                        k: _known(v) if isinstance(v, float) else v for k, v in asdict(row).items()
                    }
                    for name, row in rows.items()
                },
                **{k: v for k, v in run_meta.items() if k not in ("measured_at", "machine")},
            }
            for storage, (rows, run_meta) in runs.items()
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
    parser.add_argument("--users", type=int, default=100_000, help="users to seed (100,000)")
    parser.add_argument(
        "--messages", type=int, default=1_000_000, help="messages to seed (1,000,000)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument(
        "--connections", type=int, default=64, help="concurrent connections of each run (64)"
    )
    parser.add_argument(
        "--group-connections",
        type=int,
        default=4,
        help="senders to the 1,000-member group (its target is a latency)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated runs to make (default: all of {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--storage",
        default="sqlite",
        help="sqlite, postgres (PostgreSQL + Redis, --workers processes), or both: "
        "sqlite,postgres (one file with every shape)",
    )
    parser.add_argument(
        "--idle-streams",
        type=int,
        default=2000,
        help="live streams held open after the runs to measure memory per connection (0: skip)",
    )
    parser.add_argument("--workers", type=int, default=2, help="server processes (postgres)")
    parser.add_argument(
        "--devices", type=int, default=1, help="signed-in devices (tokens) per user (1)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help=f"at most this many seconds of warm-up (default {WARM_MAX:.0f}; it stops "
        "earlier once every user is in every process's caches)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PARLEY_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL for --storage postgres (PARLEY_DATABASE_URL, else a local test database)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("PARLEY_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for --storage postgres (PARLEY_REDIS_URL, else redis://127.0.0.1:6379/0)",
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
    unknown = set(scenarios) - set(SCENARIOS) - set(EXTRA_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    storages = [s for s in args.storage.split(",") if s]
    bad = set(storages) - {"sqlite", "postgres"}
    if bad or not storages:
        parser.error(f"--storage takes sqlite, postgres or sqlite,postgres, not {args.storage!r}")
    runs: dict[str, tuple[dict[str, Row], dict[str, Any]]] = {}
    ceilings: list[float] = []
    idle_bytes: list[float] = []
    for storage in storages:
        one = argparse.Namespace(**{**vars(args), "storage": storage})
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
            workdir = (args.workdir / storage) if args.workdir else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            rows, meta = asyncio.run(run(one, scenarios, workdir))
        runs[storage] = (rows, meta)
        ceilings.append(rows["ceiling"].rps)
        if meta.get("kib_per_idle_stream") is not None:
            idle_bytes.append(meta["kib_per_idle_stream"] * 1024)
    if args.json:
        meta = {
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        }
        report = cost_input(
            runs, max(ceilings), meta, round(max(idle_bytes)) if idle_bytes else None
        )
        report["note"] = f"parley bench {' '.join(argv)}"
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0


WARM_CHUNK = 3.0  # seconds per warm-up run
WARM_VISITS = 4  # requests per user and process (round-robin over processes is random)
WARM_MAX = 600.0  # give up warming after this many seconds (and say so)


async def warm_up(
    server: Server, args: argparse.Namespace, data: Dataset, workdir: Path, processes: int
) -> dict[str, Any]:
    """Idle checks until every user is in every process's caches.

    A cold check reads the user, its tokens and its groups from storage; a warm one reads
    none. With one process, warm-up runs until a run makes (almost) no storage reads. With
    several, a scrape of ``/metrics`` reaches one of them at random, so it runs until each
    user was checked ``WARM_VISITS`` times per process. Either way it stops after ``--warmup``
    seconds if given, or ``WARM_MAX``, and says so (the figures then include cold checks).
    """
    started = time.monotonic()
    limit = args.warmup or WARM_MAX
    needed = data.users * processes * (2 if processes == 1 else WARM_VISITS)
    made = 0
    reads: float | None = None
    say(f"warming up: every user seen by every process (up to {limit:.0f} s)")
    while True:
        left = limit - (time.monotonic() - started)
        if left <= 0:
            say(f"warm-up stopped after {limit:.0f} s: caches may not be warm")
            break
        before = storage_calls(server.url) if processes == 1 else {}
        chunk = max(1.0, min(WARM_CHUNK, left))
        result = await asyncio.to_thread(
            wrk.run,
            server.url,
            workdir,
            data.users_file,
            "idle",
            data.idle_after,
            "",
            chunk,
            args.connections,
        )
        made += result.requests
        if processes == 1:
            after = storage_calls(server.url)
            delta = sum(v - before.get(k, 0.0) for k, v in after.items() if k not in WRITES)
            reads = delta / max(result.requests, 1)
            if made >= needed and reads < 0.001:
                break
        elif made >= needed:
            break
    seconds = time.monotonic() - started
    say(f"warmed up in {seconds:.0f} s ({made:,} checks)")
    return {"seconds": round(seconds, 1), "checks": made, "last_reads_per_check": reads}


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


async def run(
    args: argparse.Namespace, scenarios: list[str], workdir: Path
) -> tuple[dict[str, Row], dict[str, Any]]:
    schema = f"parley_bench_{os.getpid()}"
    try:
        return await _run(args, scenarios, workdir, schema)
    finally:
        await _drop_schema(args, schema)


async def _run(
    args: argparse.Namespace, scenarios: list[str], workdir: Path, schema: str
) -> tuple[dict[str, Row], dict[str, Any]]:
    data_dir = workdir / "data"
    store, server_env = _store(args, data_dir, schema)
    await store.open()
    started = time.monotonic()
    data = await populate(store, args.users, args.messages, workdir, say, devices=args.devices)
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
        ceiling_row = await measure(None, hello.url, "ceiling", args, data, workdir, 0.0)
    finally:
        hello.stop()
    ceiling = ceiling_row.rps
    rows: dict[str, Row] = {"ceiling": ceiling_row}

    server = Server(data_dir, PARLEY_AUTH="token")
    server.env.update(server_env)
    server.start()
    try:
        processes = args.workers if args.storage == "postgres" else 1
        warmed = await warm_up(server, args, data, workdir, processes)
        for scenario in scenarios:
            say(f"running {scenario} for {args.seconds:.0f} s")
            rows[scenario] = await measure(
                server, server.url, scenario, args, data, workdir, ceiling
            )
        rss = server.rss_bytes()
        streams: dict[str, float] = {}
        if args.idle_streams > 0:
            say(f"holding {args.idle_streams:,} idle live streams")
            try:
                streams = await idle_streams(server, args.idle_streams)
            except (RuntimeError, OSError) as exc:  # the runs' figures still count
                say(f"idle streams not measured: {exc}")
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
    per_stream = streams.get("kib_per_connection")
    if per_stream is not None:
        print(
            f"idle live streams: {streams['connections']:,.0f} held, "
            f"{per_stream:.1f} KiB per connection"
        )
    meta: dict[str, Any] = {
        "storage": args.storage,
        "processes": args.workers if args.storage == "postgres" else 1,
        "users": data.users,
        "messages": data.messages,
        "rss_bytes": rss,
        "connections": args.connections,
        "seconds": args.seconds,
        "idle_streams": streams.get("connections"),
        "warmup": warmed,
        "postgres_cpu_source": (
            "/proc/<pid>/stat of the backends serving the server (pg_stat_activity.client_port)"
            if args.storage == "postgres"
            else None
        ),
        "redis_cpu_source": "INFO cpu, whole server" if args.storage == "postgres" else None,
        "kib_per_idle_stream": per_stream,
    }
    return rows, meta
