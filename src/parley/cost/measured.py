"""Measured figures: what one Parley process achieved per operation, per deployment shape.

``parley bench --json FILE`` writes this file (the "bench file") and ``parley cost --bench FILE``
reads it.

Format ``parley-bench/1`` (JSON; every number is per request of that operation)::

    {
      "format": "parley-bench/1",
      "sample": false,                      # true only for illustrative, unmeasured figures
      "note": "...", "measured_at": "2026-...", "machine": "...",
      "ceiling_requests_per_second": 41000, # optional: tools/ceiling.sh on the same machine
      "workload": {"checks_per_user_per_minute": 1, "sends_per_user_per_day": 10,
                   "messages_per_check": 7},
      "shapes": {
        "<shape>": {                        # sqlite-single | postgres-redis | dynamodb-fargate
          "process_vcpus": 1.0,             # vCPUs the measured process could use
          "operations": {
            "check": {...}, "send": {...}   # both required; fields below
          }
        }
      }
    }

Operation fields: ``requests_per_second`` (one process, required), ``cpu_seconds_per_request``
(that process, required), ``storage_reads_per_request`` / ``storage_writes_per_request`` (SQL
statements or DynamoDB API calls), ``read_units_per_read`` / ``write_units_per_write`` (DynamoDB
request units per call, from ``ReturnConsumedCapacity``), ``storage_cpu_seconds_per_request`` (CPU
spent by the database server), ``cache_ops_per_request`` and ``cache_cpu_seconds_per_request``
(Redis commands and Redis server CPU), ``request_bytes`` / ``response_bytes`` (on the wire).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final

import msgspec

__all__ = [
    "FORMAT",
    "OPERATIONS",
    "SHAPES",
    "BenchError",
    "BenchFile",
    "OperationProfile",
    "ShapeBench",
    "Workload",
    "load_bench",
    "parse_bench",
]

FORMAT: Final = "parley-bench/1"
OPERATIONS: Final = ("check", "send")
SHAPES: Final = ("sqlite-single", "postgres-redis", "dynamodb-fargate")


class BenchError(ValueError):
    """The bench file is missing, not JSON, or not of the ``parley-bench/1`` shape."""


class Workload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The course design's usage model (SPEC section 6); the bench ran polls against this mix."""

    checks_per_user_per_minute: float = 1.0
    sends_per_user_per_day: float = 10.0
    messages_per_check: float = 7.0

    def rates(self, users: float) -> dict[str, float]:
        """Average requests per second of each operation for ``users`` users."""
        return {
            "check": users * self.checks_per_user_per_minute / 60,
            "send": users * self.sends_per_user_per_day / 86_400,
        }


class OperationProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Measured cost of one request of one operation, served by one process."""

    requests_per_second: float
    cpu_seconds_per_request: float
    storage_reads_per_request: float = 0.0
    storage_writes_per_request: float = 0.0
    read_units_per_read: float = 1.0
    write_units_per_write: float = 1.0
    storage_cpu_seconds_per_request: float = 0.0
    cache_ops_per_request: float = 0.0
    cache_cpu_seconds_per_request: float = 0.0
    request_bytes: float = 0.0
    response_bytes: float = 0.0


class ShapeBench(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    operations: dict[str, OperationProfile]
    process_vcpus: float = 1.0
    note: str = ""


class BenchFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: str
    sample: bool
    shapes: dict[str, ShapeBench]
    workload: Workload = Workload()
    note: str = ""
    measured_at: str | None = None
    machine: str | None = None
    ceiling_requests_per_second: float | None = None
    # Everything else a benchmark run recorded (per-scenario figures, memory, settings);
    # kept with the file, not used by the model.
    details: dict[str, Any] = {}


def _check_number(where: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise BenchError(f"{where}: must be a finite number {need}, got {value!r}")


def _validate(bench: BenchFile, source: str) -> BenchFile:
    if bench.format != FORMAT:
        raise BenchError(f"{source}: format must be {FORMAT!r}, got {bench.format!r}")
    if not bench.shapes:
        raise BenchError(f"{source}: shapes is empty; give at least one of {', '.join(SHAPES)}")
    w = bench.workload
    for name in ("checks_per_user_per_minute", "sends_per_user_per_day", "messages_per_check"):
        _check_number(f"{source}: $.workload.{name}", getattr(w, name))
    if bench.ceiling_requests_per_second is not None:
        _check_number(f"{source}: $.ceiling_requests_per_second", bench.ceiling_requests_per_second)
    for shape, sb in bench.shapes.items():
        if shape not in SHAPES:
            raise BenchError(f"{source}: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        _check_number(f"{source}: $.shapes.{shape}.process_vcpus", sb.process_vcpus, positive=True)
        missing = [op for op in OPERATIONS if op not in sb.operations]
        extra = [op for op in sb.operations if op not in OPERATIONS]
        if missing or extra:
            raise BenchError(
                f"{source}: $.shapes.{shape}.operations needs exactly {', '.join(OPERATIONS)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else "")
            )
        for op, prof in sb.operations.items():
            where = f"{source}: $.shapes.{shape}.operations.{op}"
            for field in prof.__struct_fields__:
                _check_number(
                    f"{where}.{field}",
                    getattr(prof, field),
                    positive=field == "requests_per_second",
                )
    return bench


def parse_bench(data: bytes | str, source: str = "bench") -> BenchFile:
    """Decode and validate a bench document; errors name the offending JSON path."""
    try:
        bench = msgspec.json.decode(data, type=BenchFile)
    except msgspec.ValidationError as exc:
        raise BenchError(f"{source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BenchError(f"{source}: not valid JSON ({exc})") from None
    return _validate(bench, source)


def load_bench(path: Path) -> BenchFile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"cannot read bench file {str(path)!r}: {exc.strerror}") from None
    return parse_bench(data, str(path))
