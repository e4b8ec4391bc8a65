"""The built-in SAMPLE bench input: illustrative figures, NOT a measurement.

``parley cost`` uses it when no ``--bench`` file is given and says so in a banner. The repository
copy ``docs/sample-bench.json`` is this document written out (a unit test keeps the two equal).
The figures are plausible orders of magnitude for one Python process; replace them with a real run.
"""

from __future__ import annotations

import json
from typing import Any, Final

from parley.cost.measured import BenchFile, parse_bench

__all__ = ["SAMPLE", "sample_bench", "sample_json"]

_CHECK_BYTES: Final = {"request_bytes": 350, "response_bytes": 1600}
_SEND_BYTES: Final = {"request_bytes": 500, "response_bytes": 350}
_IDLE_BYTES: Final = {"request_bytes": 350, "response_bytes": 330}
# The live stream: a tick writes a ~20-byte keep-alive comment on an open response, a push one
# SSE event with a message, an open the request, headers and the first (empty) page.
_TICK_BYTES: Final = {"request_bytes": 0, "response_bytes": 20}
_PUSH_BYTES: Final = {"request_bytes": 0, "response_bytes": 450}
_OPEN_BYTES: Final = {"request_bytes": 350, "response_bytes": 400}


def _stream(cpu: float, **figures: float) -> dict[str, Any]:
    """A live-stream operation: its requests_per_second is 1 / its CPU, as ``parley bench``
    writes it (these operations are sized by CPU only)."""
    return {"requests_per_second": round(1 / cpu), "cpu_seconds_per_request": cpu, **figures}


SAMPLE: Final[dict[str, Any]] = {
    "format": "parley-bench/1",
    "sample": True,
    "note": (
        "SAMPLE INPUT, not measured: illustrative per-request figures so that `parley cost` can "
        "show its method. Replace with a file written from a real benchmark run."
    ),
    "measured_at": None,
    "machine": None,
    "ceiling_requests_per_second": None,
    "idle_connection_bytes": 36_000,
    "workload": {
        "checks_per_user_per_minute": 1,
        "sends_per_user_per_day": 10,
        "messages_per_check": 7,
    },
    "shapes": {
        "sqlite-single": {
            "process_vcpus": 1.0,
            "process_base_bytes": 150_000_000,
            "note": "one process, SQLite file, in-process caches",
            "operations": {
                "check": {
                    "requests_per_second": 4000,
                    "cpu_seconds_per_request": 0.00025,
                    "storage_reads_per_request": 1,
                    "storage_writes_per_request": 0,
                    **_CHECK_BYTES,
                },
                "idle": {
                    "requests_per_second": 20000,
                    "cpu_seconds_per_request": 0.00005,
                    "storage_reads_per_request": 0,
                    "storage_writes_per_request": 0,
                    **_IDLE_BYTES,
                },
                "send": {
                    "requests_per_second": 1500,
                    "cpu_seconds_per_request": 0.00066,
                    "storage_reads_per_request": 2,
                    "storage_writes_per_request": 1,
                    **_SEND_BYTES,
                },
                "tick": _stream(
                    0.00004,
                    storage_reads_per_request=0,
                    storage_writes_per_request=0,
                    **_TICK_BYTES,
                ),
                "push": _stream(
                    0.00015,
                    storage_reads_per_request=1,
                    storage_writes_per_request=0,
                    **_PUSH_BYTES,
                ),
                "open": _stream(
                    0.0004, storage_reads_per_request=2, storage_writes_per_request=0, **_OPEN_BYTES
                ),
            },
        },
        "postgres-redis": {
            "process_vcpus": 1.0,
            "process_base_bytes": 150_000_000,
            "note": "stateless processes on PostgreSQL, Redis as shared cache and wake-up channel",
            "operations": {
                "check": {
                    "requests_per_second": 2500,
                    "cpu_seconds_per_request": 0.0004,
                    "storage_reads_per_request": 1,
                    "storage_writes_per_request": 0,
                    "storage_cpu_seconds_per_request": 0.00005,
                    "cache_ops_per_request": 2,
                    "cache_cpu_seconds_per_request": 0.000005,
                    **_CHECK_BYTES,
                },
                "idle": {
                    "requests_per_second": 8000,
                    "cpu_seconds_per_request": 0.00012,
                    "storage_reads_per_request": 0,
                    "storage_writes_per_request": 0,
                    "storage_cpu_seconds_per_request": 0,
                    "cache_ops_per_request": 1,
                    "cache_cpu_seconds_per_request": 0.000003,
                    **_IDLE_BYTES,
                },
                "send": {
                    "requests_per_second": 900,
                    "cpu_seconds_per_request": 0.0011,
                    "storage_reads_per_request": 2,
                    "storage_writes_per_request": 2,
                    "storage_cpu_seconds_per_request": 0.0004,
                    "cache_ops_per_request": 3,
                    "cache_cpu_seconds_per_request": 0.00001,
                    **_SEND_BYTES,
                },
                "tick": _stream(
                    0.00005,
                    storage_reads_per_request=0,
                    storage_writes_per_request=0,
                    storage_cpu_seconds_per_request=0,
                    cache_ops_per_request=1,
                    cache_cpu_seconds_per_request=0.000002,
                    **_TICK_BYTES,
                ),
                "push": _stream(
                    0.0002,
                    storage_reads_per_request=1,
                    storage_writes_per_request=0,
                    storage_cpu_seconds_per_request=0.00004,
                    cache_ops_per_request=2,
                    cache_cpu_seconds_per_request=0.000004,
                    **_PUSH_BYTES,
                ),
                "open": _stream(
                    0.0006,
                    storage_reads_per_request=2,
                    storage_writes_per_request=0,
                    storage_cpu_seconds_per_request=0.0001,
                    cache_ops_per_request=4,
                    cache_cpu_seconds_per_request=0.000008,
                    **_OPEN_BYTES,
                ),
            },
        },
        "dynamodb-fargate": {
            "process_vcpus": 1.0,
            "process_base_bytes": 150_000_000,
            "note": "DynamoDB tables, conditional and transactional writes, ElastiCache Redis",
            "operations": {
                "check": {
                    "requests_per_second": 1800,
                    "cpu_seconds_per_request": 0.0005,
                    "storage_reads_per_request": 1.2,
                    "storage_writes_per_request": 0,
                    "read_units_per_read": 0.5,
                    "cache_ops_per_request": 2,
                    "cache_cpu_seconds_per_request": 0.000005,
                    **_CHECK_BYTES,
                },
                "idle": {
                    "requests_per_second": 8000,
                    "cpu_seconds_per_request": 0.00012,
                    "storage_reads_per_request": 0,
                    "storage_writes_per_request": 0,
                    "cache_ops_per_request": 1,
                    "cache_cpu_seconds_per_request": 0.000003,
                    **_IDLE_BYTES,
                },
                "send": {
                    "requests_per_second": 600,
                    "cpu_seconds_per_request": 0.0015,
                    "storage_reads_per_request": 2,
                    "storage_writes_per_request": 3,
                    "read_units_per_read": 0.5,
                    "write_units_per_write": 2,
                    "cache_ops_per_request": 3,
                    "cache_cpu_seconds_per_request": 0.00001,
                    **_SEND_BYTES,
                },
                "tick": _stream(
                    0.00005,
                    storage_reads_per_request=0,
                    storage_writes_per_request=0,
                    cache_ops_per_request=1,
                    cache_cpu_seconds_per_request=0.000002,
                    **_TICK_BYTES,
                ),
                "push": _stream(
                    0.00025,
                    storage_reads_per_request=1,
                    storage_writes_per_request=0,
                    read_units_per_read=1,
                    cache_ops_per_request=2,
                    cache_cpu_seconds_per_request=0.000004,
                    **_PUSH_BYTES,
                ),
                "open": _stream(
                    0.0007,
                    storage_reads_per_request=2,
                    storage_writes_per_request=0,
                    read_units_per_read=1,
                    cache_ops_per_request=4,
                    cache_cpu_seconds_per_request=0.000008,
                    **_OPEN_BYTES,
                ),
            },
        },
    },
}


def sample_json() -> str:
    """The sample as the text of ``docs/sample-bench.json``."""
    return json.dumps(SAMPLE, indent=2) + "\n"


def sample_bench() -> BenchFile:
    return parse_bench(sample_json(), "built-in sample")
