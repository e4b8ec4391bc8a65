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
memory per connection, and measures live-stream clients (parley.bench.live):

  tick     one keep-alive interval of one idle live stream (the server sends a keep-alive
           every PARLEY_KEEPALIVE_SECONDS, 2 in the bench), over --tick-streams streams
  push     one message delivered to an open stream (sends to users holding a stream, minus
           the same sends to users without one)
  open     one stream opened by a reconnecting client (recent cursor, first keep-alive)

Their requests_per_second is not a throughput the server was pushed to: it is
1 / cpu_seconds_per_request, the rate one fully busy vCPU would sustain. Last it records the
storage each stored message takes (stored_bytes_per_message; parley.bench.stored).

--json writes everything in the format ``parley cost --bench`` reads; with --storage
sqlite,postgres one command measures both shapes into one file:

  parley bench --storage sqlite,postgres --json docs/bench-results.json

``parley bench latency`` measures delivery latency to waiting clients instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from parley.bench import live, stored, wrk
from parley.bench import tls as tls_bench
from parley.bench.dataset import Dataset, populate
from parley.bench.latency import idle_streams, open_files_for, stream_concurrency
from parley.bench.procs import Server, free_port
from parley.bench.usage import WRITES, Backends, say, storage_calls
from parley.storage.base import Storage
from parley.storage.sqlite import SqliteStorage

SCENARIOS = ("idle", "check", "private", "group", "mix")
EXTRA_SCENARIOS = ("idle-events",)  # run when asked for (--scenarios)
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
    operations.update(meta.get("live_operations") or {})
    rss = meta.get("rss_bytes")
    shape: dict[str, Any] = {
        "process_vcpus": float(meta["processes"]),
        "process_base_bytes": round(rss / meta["processes"]) if rss else None,
        "note": (
            f"{meta['processes']} Parley process(es) on {meta['storage']}, "
            f"{meta['users']:,} users, {meta['messages']:,} messages"
        ),
        "operations": operations,
    }
    per_message = (meta.get("stored") or {}).get("stored_bytes_per_message")
    if per_message is not None:  # written only when measured (older readers lack it)
        shape["stored_bytes_per_message"] = per_message
    return shape


LIVE_OPERATIONS = ("tick", "push", "open")


def _live_reads(op: str, shapes: dict[str, Any]) -> dict[str, float | None]:
    """DynamoDB calls of a live-stream operation: one call per storage-port call measured
    in the PostgreSQL run (or, where several workers hid them, the SQLite run)."""
    for name in ("postgres-redis", "sqlite-single"):
        figures = shapes.get(name, {}).get("operations", {}).get(op, {})
        if figures.get("storage_reads_per_request") is not None:
            return {
                "storage_reads_per_request": figures["storage_reads_per_request"],
                "storage_writes_per_request": figures.get("storage_writes_per_request"),
                "read_units_per_read": 1.0,
            }
    return {"storage_reads_per_request": None, "storage_writes_per_request": None}


def dynamodb_shape(
    postgres: dict[str, Any],
    shapes: dict[str, Any] | None = None,
    stored_bytes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The DynamoDB shape: request units per call from the adapter's counters, everything the
    app process spends (CPU, Redis, bytes, memory) from the PostgreSQL + Redis run. Live-stream
    operations count one DynamoDB call per storage-port call measured (``_live_reads``);
    ``stored_bytes``: ``stored.dynamodb_stored_bytes``."""
    operations = {}
    for op, figures in postgres["operations"].items():
        own = dict(figures)
        own.update(
            storage_reads_per_request=0,
            storage_writes_per_request=0,
            storage_cpu_seconds_per_request=0.0,  # billed per request unit, no server to size
        )
        own.update(DYNAMODB_CALLS.get(op, {}))
        if op in LIVE_OPERATIONS:
            own.update(_live_reads(op, shapes or {"postgres-redis": postgres}))
        operations[op] = own
    shape = {
        "process_vcpus": postgres["process_vcpus"],
        "process_base_bytes": postgres["process_base_bytes"],
        "note": (
            "DynamoDB calls and request units per request from docs/dynamodb.md (warm process); "
            "app CPU, Redis, bytes and memory from the postgres-redis run (the same stateless "
            "process and Redis cache; DynamoDB itself is not benched: moto is not AWS)"
        ),
        "operations": operations,
    }
    if stored_bytes and stored_bytes.get("stored_bytes_per_message") is not None:
        shape["stored_bytes_per_message"] = stored_bytes["stored_bytes_per_message"]
    return shape


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
    dynamo_stored: dict[str, Any] | None = None
    if "postgres-redis" in shapes:
        pg_stored = runs["postgres"][1].get("stored") or {}
        if pg_stored.get("mean_body_chars") is not None:  # sized with the run's bodies
            dynamo_stored = stored.dynamodb_stored_bytes(pg_stored["mean_body_chars"])
        shapes["dynamodb-fargate"] = dynamodb_shape(shapes["postgres-redis"], shapes, dynamo_stored)
    details: dict[str, Any] = {
        storage: {
            "runs": {
                name: {k: _known(v) if isinstance(v, float) else v for k, v in asdict(row).items()}
                for name, row in rows.items()
            },
            **{k: v for k, v in run_meta.items() if k not in ("measured_at", "machine")},
        }
        for storage, (rows, run_meta) in runs.items()
    }
    if dynamo_stored is not None:
        details["dynamodb"] = {"stored": dynamo_stored}
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
            "group_send_share": stored.GROUP_SEND_SHARE,
        },
        "shapes": shapes,
        "details": details,
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
        "--tls-handshakes",
        type=int,
        default=2000,
        help="connections to time TLS handshakes with (--json only; 0: skip)",
    )
    parser.add_argument(
        "--idle-streams",
        type=int,
        default=2000,
        help="live streams held open after the runs to measure memory per connection (0: skip)",
    )
    parser.add_argument(
        "--streams-on",
        choices=("stream-port", "main-port"),
        default="stream-port",
        help="where live streams are held: the server's stream port (PARLEY_STREAM_PORT, "
        "the default) or its main HTTP port",
    )
    parser.add_argument(
        "--tick-streams",
        type=int,
        default=2000,
        help="idle live streams read to measure a keep-alive tick (0: skip tick, push, open)",
    )
    parser.add_argument(
        "--push-streams", type=int, default=500, help="users holding a stream for push (500)"
    )
    parser.add_argument(
        "--push-messages", type=int, default=2000, help="messages pushed to them (2000)"
    )
    parser.add_argument(
        "--stream-seconds",
        type=float,
        help="length of the tick and open windows (default: the larger of 10 and --seconds)",
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
    # before any server starts: each inherits the limit, and holds one end of every stream
    open_files_for(max(args.idle_streams, args.tick_streams))
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
        if args.tls_handshakes > 0:
            say(f"TLS: {args.tls_handshakes:,} connections with and without a handshake")
            idle_tls = args.idle_streams if args.streams_on == "stream-port" else 0
            with tempfile.TemporaryDirectory(prefix="parley-bench-tls-") as tmp:
                try:
                    tls = asyncio.run(
                        tls_bench.measure_handshakes(Path(tmp), args.tls_handshakes, idle_tls)
                    )
                except (RuntimeError, OSError) as exc:
                    tls = {"tls_handshake_cpu_seconds": None, "why": str(exc)}
            report["tls_handshake_cpu_seconds"] = tls["tls_handshake_cpu_seconds"]
            report["details"]["tls"] = tls
            if tls.get("idle_stream_tls_bytes") is not None:
                # the deployment priced terminates TLS in Parley: its held streams carry it
                report["idle_connection_plain_bytes"] = report["idle_connection_bytes"]
                report["idle_connection_bytes"] = tls["idle_stream_tls_bytes"]
                say(f"idle live stream over TLS: {tls['idle_stream_tls_bytes'] / 1024:.1f} KiB")
            handshake = tls["tls_handshake_cpu_seconds"]
            say(
                "TLS handshake: "
                + ("unknown" if handshake is None else f"{handshake * 1000:.3f} ms of server CPU")
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

    # keep-alives every 2 s, so that a tick window holds many (only live streams send them)
    server = Server(
        data_dir,
        PARLEY_AUTH="token",
        PARLEY_KEEPALIVE_SECONDS=str(live.KEEPALIVE_SECONDS),
        # every held stream is a request in progress
        PARLEY_MAX_CONCURRENCY=stream_concurrency(max(args.idle_streams, args.tick_streams)),
    )
    server.env.update(server_env)
    if args.streams_on == "stream-port":
        server.stream_port = free_port()
        server.env["PARLEY_STREAM_PORT"] = str(server.stream_port)
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
        live_ops, live_details = await _live(server, args, data)
    finally:
        server.stop()
    stored_bytes = await _stored(args, data_dir, schema)

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
    if live_ops:
        print(live_table(live_ops))
    if stored_bytes.get("stored_bytes_per_message") is not None:
        print(
            f"stored bytes per message: {stored_bytes['stored_bytes_per_message']:,.0f} "
            f"({stored_bytes['method']}; bodies of {stored_bytes['mean_body_chars']} chars)"
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
        "streams_on": args.streams_on,
        "live_operations": live_ops,
        "live": live_details,
        "stored": stored_bytes,
        "message_text": (
            'data set: "hello <k>" private and "group <k>" group messages (7-9 characters); '
            'the bench\'s sends: "bench message" (13); stored.mean_body_chars: the mean stored'
        ),
    }
    return rows, meta


async def _live(
    server: Server, args: argparse.Namespace, data: Dataset
) -> tuple[dict[str, dict[str, float | None]], dict[str, Any]]:
    """The tick, push and open figures (none when --tick-streams is 0 or they fail)."""
    if args.tick_streams <= 0:
        return {}, {}
    counted = not (args.storage == "postgres" and args.workers > 1)
    seconds = args.stream_seconds or max(10.0, args.seconds)
    try:
        return await live.measure_live(
            server,
            Backends(server, args),
            counted,
            data.users_file,
            args.tick_streams,
            args.push_streams,
            args.push_messages,
            seconds,
            separate=args.storage == "postgres",
        )
    except (RuntimeError, OSError, TimeoutError) as exc:  # the runs' figures still count
        say(f"live streams not measured: {exc}")
        return {}, {"error": str(exc)}


async def _stored(args: argparse.Namespace, data_dir: Path, schema: str) -> dict[str, Any]:
    """Storage per stored message (``parley.bench.stored``); empty if it cannot be read."""
    try:
        if args.storage == "postgres":
            return await stored.postgres_stored_bytes(args.database_url, schema)
        return stored.sqlite_stored_bytes(data_dir / "parley.db")
    except Exception as exc:  # the runs' figures still count
        say(f"stored bytes per message not measured: {exc}")
        return {"error": str(exc)}


def live_table(operations: dict[str, dict[str, float | None]]) -> str:
    """The live-stream operations, one line each (unknown where not measured)."""

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    head = (
        f"{'live op':<9} {'per vCPU/s':>10} {'CPU ms':>8} {'reads':>7} {'writes':>7} "
        f"{'PG ms':>8} {'Redis cmd':>9} {'Redis ms':>8} {'req B':>7} {'resp B':>7}"
    )
    lines = [head, "-" * len(head)]
    for op, f in operations.items():
        lines.append(
            f"{op:<9} {_fmt(f['requests_per_second'], 10, 0)} "
            f"{_fmt(ms(f['cpu_seconds_per_request']), 8, 4)} "
            f"{_fmt(f['storage_reads_per_request'], 7)} "
            f"{_fmt(f['storage_writes_per_request'], 7)} "
            f"{_fmt(ms(f['storage_cpu_seconds_per_request']), 8, 4)} "
            f"{_fmt(f['cache_ops_per_request'], 9, 2)} "
            f"{_fmt(ms(f['cache_cpu_seconds_per_request']), 8, 4)} "
            f"{_fmt(f['request_bytes'], 7, 0)} {_fmt(f['response_bytes'], 7, 0)}"
        )
    lines.append("(per operation; per vCPU/s = 1 / CPU seconds, not a measured throughput)")
    return "\n".join(lines)
