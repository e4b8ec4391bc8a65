"""``parley bench``: parsing what wrk, /proc and Redis report, and the bench file it writes."""

from __future__ import annotations

import json
import math

import pytest

from parley.bench import resources, wrk
from parley.bench.cli import DYNAMODB_CALLS, Row, cost_input, operation_figures
from parley.cost.measured import parse_bench

RESULT = (
    'RESULT {"requests":1000,"duration_us":2000000,"status_errors":0,"socket_errors":0,'
    '"p50_us":900,"p95_us":1500,"p99_us":2100,"max_us":5000,"bytes_read":327000,'
    '"request_bytes":225900,"requests_made":1004}'
)


def test_wrk_result_gives_bytes_per_request_and_response() -> None:
    result = wrk.parse_result("Running 2s test\n" + RESULT + "\n")
    assert result.rps == pytest.approx(500)
    assert result.response_bytes == pytest.approx(327)  # bytes read / completed requests
    assert result.request_bytes == pytest.approx(225)  # bytes built / requests built
    assert result.p99_ms == pytest.approx(2.1)


def test_an_older_wrk_result_has_unknown_bytes() -> None:
    old = RESULT.split(',"bytes_read"')[0] + "}"
    result = wrk.parse_result(old)
    assert result.response_bytes is None and result.request_bytes is None
    with pytest.raises(RuntimeError, match="no result"):
        wrk.parse_result("wrk crashed")


def test_the_lua_script_counts_request_bytes_per_thread() -> None:
    assert "request_bytes = request_bytes + #r" in wrk.COMMON
    assert 'thread:get("request_bytes")' in wrk.COMMON
    assert "summary.bytes" in wrk.COMMON


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 1111 1
   1: 0100007F:D431 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 2222 1
   2: 0100007F:D432 0100007F:18EB 01 00000000:00000000 00:00000000 00000000  1000        0 3333 1
"""


def test_proc_net_tcp_rows_give_local_and_remote_ports() -> None:
    rows = resources.parse_proc_net_tcp(PROC_NET_TCP)
    assert rows[1111] == (5432, 0)  # the listening PostgreSQL socket
    assert rows[2222] == (0xD431, 5432)  # a client connection to it
    assert rows[3333] == (0xD432, 6379)  # a connection to Redis


def test_redis_info_fields() -> None:
    text = (
        "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\n\r\n"
        "# Stats\r\ntotal_commands_processed:4321\r\n"
    )
    info = resources.parse_redis_info(text)
    assert float(info["used_cpu_sys"]) + float(info["used_cpu_user"]) == pytest.approx(3.75)
    assert info["total_commands_processed"] == "4321"


def test_an_unreachable_redis_is_unknown_not_zero() -> None:
    assert resources.redis_figures("redis://127.0.0.1:9/0") is None


def _row(scenario: str, **changes: float | None) -> Row:
    row = Row(
        scenario=scenario,
        rps=1000.0,
        ratio=0.5,
        p50_ms=1.0,
        p95_ms=2.0,
        p99_ms=3.0,
        errors=0,
        requests=10_000,
        storage_reads_per_request=1.0,
        storage_writes_per_request=0.0,
        cpu_ms_per_request=0.2,
        request_bytes=225.0,
        response_bytes=327.0,
    )
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def test_unmeasured_figures_are_written_as_null() -> None:
    # several PostgreSQL workers: storage calls cannot be summed (NaN); no backends found
    row = _row("idle", storage_reads_per_request=math.nan, storage_writes_per_request=math.nan)
    figures = operation_figures(row, "postgres")
    assert figures["storage_reads_per_request"] is None
    assert figures["storage_cpu_seconds_per_request"] is None
    assert figures["cache_cpu_seconds_per_request"] is None
    measured = operation_figures(
        _row("idle", postgres_cpu_ms_per_request=0.05, redis_cpu_ms_per_request=0.01), "postgres"
    )
    assert measured["storage_cpu_seconds_per_request"] == pytest.approx(0.00005)
    assert measured["cache_cpu_seconds_per_request"] == pytest.approx(0.00001)
    # SQLite runs inside the server process: no separate database or cache to pay for
    sqlite = operation_figures(row, "sqlite")
    assert sqlite["storage_cpu_seconds_per_request"] == 0.0
    assert sqlite["cache_cpu_seconds_per_request"] == 0.0


def test_the_bench_file_has_every_shape_and_parley_cost_reads_it() -> None:
    rows = {name: _row(name) for name in ("ceiling", "idle", "check", "private")}
    meta = {
        "processes": 1,
        "storage": "sqlite",
        "users": 1000,
        "messages": 10_000,
        "rss_bytes": 80e6,
    }
    pg_rows = {
        name: _row(name, postgres_cpu_ms_per_request=0.1, redis_cpu_ms_per_request=0.02)
        for name in rows
    }
    runs = {
        "sqlite": (rows, meta),
        "postgres": (pg_rows, {**meta, "storage": "postgres", "processes": 2}),
    }
    doc = cost_input(runs, 60_000.0, {"measured_at": "now", "machine": "test"}, 36_659)
    bench = parse_bench(json.dumps(doc), "written")
    assert set(bench.shapes) == {"sqlite-single", "postgres-redis", "dynamodb-fargate"}
    assert bench.idle_connection_bytes == 36_659
    pg = bench.shapes["postgres-redis"]
    assert set(pg.operations) == {"check", "idle", "send"}
    assert pg.process_base_bytes == 40_000_000  # resident memory / processes
    assert pg.operations["idle"].storage_cpu_seconds_per_request == pytest.approx(0.0001)
    dynamo = bench.shapes["dynamodb-fargate"]
    check = dynamo.operations["check"]
    assert check.storage_reads_per_request == DYNAMODB_CALLS["check"]["storage_reads_per_request"]
    assert (
        dynamo.operations["send"].write_units_per_write
        == DYNAMODB_CALLS["send"]["write_units_per_write"]
    )
    assert dynamo.operations["idle"].storage_reads_per_request == 0
    assert check.cpu_seconds_per_request == pg.operations["check"].cpu_seconds_per_request


def test_an_older_bench_file_still_reads_with_unknown_figures() -> None:
    old = {
        "format": "parley-bench/1",
        "sample": False,
        "workload": {
            "checks_per_user_per_minute": 1,
            "sends_per_user_per_day": 10,
            "messages_per_check": 7,
        },
        "shapes": {
            "postgres-redis": {
                "process_vcpus": 2.0,
                "operations": {
                    "check": {"requests_per_second": 3176.3, "cpu_seconds_per_request": 0.0003},
                    "send": {"requests_per_second": 3011.3, "cpu_seconds_per_request": 0.0004},
                },
            }
        },
    }
    bench = parse_bench(json.dumps(old))
    check = bench.shapes["postgres-redis"].operations["check"]
    assert check.storage_cpu_seconds_per_request is None
    assert check.response_bytes is None
    assert bench.idle_connection_bytes is None
    assert bench.workload.group_send_share == 0.5  # new workload fields take their defaults
