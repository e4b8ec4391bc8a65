"""Measured figures: what one Parley process achieved per operation, per deployment shape.

``parley bench --json FILE`` writes this file (the "bench file") and ``parley cost --bench FILE``
reads it.

Format ``parley-bench/1`` (JSON; every number is per request of that operation)::

    {
      "format": "parley-bench/1",
      "sample": false,                      # true only for illustrative, unmeasured figures
      "note": "...", "measured_at": "2026-...", "machine": "...",
      "ceiling_requests_per_second": 41000, # optional: tools/ceiling.sh on the same machine
      "idle_connection_bytes": 27300,       # optional: memory per idle live-stream connection
                                            # as deployed (stream port, TLS in Parley)
      "idle_connection_plain_bytes": 9700,  # optional: the same without TLS
      "workload": {"checks_per_user_per_minute": 1, "sends_per_user_per_day": 10,
                   "messages_per_check": 7, "group_send_share": 0.5, "group_members": 5},
      "shapes": {
        "<shape>": {                        # sqlite-single | postgres-redis | dynamodb-fargate
          "process_vcpus": 1.0,             # vCPUs the measured process(es) could use
          "process_base_bytes": 150000000,  # optional: resident memory of one process
          "operations": {
            "check": {...}, "send": {...},  # both required; fields below
            "idle": {...}                   # optional: a check that finds nothing new
          }
        }
      }
    }

Operation fields: ``requests_per_second`` (required), ``cpu_seconds_per_request`` (the server
processes, required), ``storage_reads_per_request`` / ``storage_writes_per_request`` (storage
calls or DynamoDB API calls), ``read_units_per_read`` / ``write_units_per_write`` (DynamoDB
request units per call), ``storage_cpu_seconds_per_request`` (CPU spent by the database server),
``cache_ops_per_request`` and ``cache_cpu_seconds_per_request`` (Redis commands and Redis server
CPU), ``request_bytes`` / ``response_bytes`` (on the wire). Every optional figure may be
``null`` (or absent): *not measured*. The model prints it as unknown and never prices it as
zero; a line item that depends on it has no figure.

The live-stream operations (``tick``, ``push``, ``open``) are not run to saturation: ``parley
bench`` writes their ``requests_per_second`` as ``1 / cpu_seconds_per_request``, and the model
sizes them by CPU only. A shape without them cannot price the ``stream`` workload (unknown, with
the missing operations named).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final

import msgspec

__all__ = [
    "FORMAT",
    "OPERATIONS",
    "OPTIONAL_OPERATIONS",
    "SHAPES",
    "STREAM_OPERATIONS",
    "WORKLOADS",
    "BenchError",
    "BenchFile",
    "OperationProfile",
    "ShapeBench",
    "Workload",
    "load_bench",
    "parse_bench",
]

FORMAT: Final = "parley-bench/1"
OPERATIONS: Final = ("check", "send")  # required in every shape
# A live stream's operations: one keep-alive interval of an idle stream, one message pushed on
# an open stream, one stream opened. Sized by CPU only (their requests_per_second is written as
# 1 / cpu_seconds_per_request, not a measured saturation).
STREAM_OPERATIONS: Final = ("tick", "push", "open")
OPTIONAL_OPERATIONS: Final = ("idle", *STREAM_OPERATIONS)  # idle: a check that finds nothing new
# original and realistic poll once a minute; stream holds a live stream per online user.
WORKLOADS: Final = ("original", "realistic", "stream")
SHAPES: Final = ("sqlite-single", "postgres-redis", "dynamodb-fargate")


class BenchError(ValueError):
    """The bench file is missing, not JSON, or not of the ``parley-bench/1`` shape."""


class Workload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The usage model (SPEC section 6); the bench ran polls against this mix.

    ``messages_per_check`` is the original course design's figure (7: 5 private + 2 group on
    every check): the *original workload*. The *realistic workload* derives it from what users
    send: a message reaches ``recipients_per_send`` users and each user checks
    ``checks_per_user_per_minute x 1,440`` times a day, so a check finds on average
    ``sends_per_user_per_day x recipients_per_send / checks per day`` messages.
    """

    checks_per_user_per_minute: float = 1.0
    sends_per_user_per_day: float = 10.0
    messages_per_check: float = 7.0
    group_send_share: float = 0.5  # share of sends addressed to a group
    group_members: float = 5.0  # members of a group a message is sent to (the bench's groups)

    def rates(self, users: float) -> dict[str, float]:
        """Average requests per second of each operation for ``users`` users."""
        return {
            "check": users * self.checks_per_user_per_minute / 60,
            "send": users * self.sends_per_user_per_day / 86_400,
        }

    @property
    def recipients_per_send(self) -> float:
        """Users a sent message reaches: 1 for a private message, members - 1 for a group."""
        share = min(1.0, self.group_send_share)
        return (1 - share) + share * max(0.0, self.group_members - 1)

    @property
    def realistic_messages_per_check(self) -> float:
        checks_per_day = self.checks_per_user_per_minute * 1_440
        if checks_per_day == 0:
            return 0.0
        return self.sends_per_user_per_day * self.recipients_per_send / checks_per_day

    def scenario(self, name: str) -> Workload:
        """This workload as the named scenario (``original``, ``realistic`` or ``stream``).

        ``stream`` keeps the realistic messages per check for reference; its rates come from
        sends, recipients and the live-stream inputs (``parley.cost.model``), not from checks.
        """
        if name == "original":
            return self
        if name in ("realistic", "stream"):
            return msgspec.structs.replace(
                self, messages_per_check=self.realistic_messages_per_check
            )
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")


class OperationProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Measured cost of one request of one operation, served by one process."""

    requests_per_second: float
    cpu_seconds_per_request: float
    # None: not measured (printed as unknown, never priced as zero)
    storage_reads_per_request: float | None = None
    storage_writes_per_request: float | None = None
    read_units_per_read: float = 1.0
    write_units_per_write: float = 1.0
    storage_cpu_seconds_per_request: float | None = None
    cache_ops_per_request: float | None = None
    cache_cpu_seconds_per_request: float | None = None
    request_bytes: float | None = None
    response_bytes: float | None = None


class ShapeBench(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    operations: dict[str, OperationProfile]
    process_vcpus: float = 1.0
    process_base_bytes: float | None = None  # resident memory of one process, no connections
    # Measured storage per stored message (row or items, keys and indexes); None: not measured,
    # the model uses its ``stored_bytes_per_message`` input instead and says so.
    stored_bytes_per_message: float | None = None
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
    # memory per idle live-stream connection, as the priced deployment holds it (the
    # bench: on the stream port, with TLS when it measured TLS); the plain figure beside
    idle_connection_bytes: float | None = None
    idle_connection_plain_bytes: float | None = None
    # the server's CPU per TLS handshake it terminates (PARLEY_TLS_CERT), seconds
    tls_handshake_cpu_seconds: float | None = None
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
    for name in w.__struct_fields__:
        _check_number(f"{source}: $.workload.{name}", getattr(w, name))
    for name in (
        "ceiling_requests_per_second",
        "idle_connection_bytes",
        "idle_connection_plain_bytes",
        "tls_handshake_cpu_seconds",
    ):
        value = getattr(bench, name)
        if value is not None:
            _check_number(f"{source}: $.{name}", value)
    for shape, sb in bench.shapes.items():
        if shape not in SHAPES:
            raise BenchError(f"{source}: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        _check_number(f"{source}: $.shapes.{shape}.process_vcpus", sb.process_vcpus, positive=True)
        for name in ("process_base_bytes", "stored_bytes_per_message"):
            value = getattr(sb, name)
            if value is not None:
                _check_number(f"{source}: $.shapes.{shape}.{name}", value)
        missing = [op for op in OPERATIONS if op not in sb.operations]
        extra = [op for op in sb.operations if op not in (*OPERATIONS, *OPTIONAL_OPERATIONS)]
        if missing or extra:
            raise BenchError(
                f"{source}: $.shapes.{shape}.operations needs {', '.join(OPERATIONS)} "
                f"(and optionally {', '.join(OPTIONAL_OPERATIONS)})"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else "")
            )
        for op, prof in sb.operations.items():
            where = f"{source}: $.shapes.{shape}.operations.{op}"
            for field in prof.__struct_fields__:
                value = getattr(prof, field)
                if value is not None:
                    _check_number(
                        f"{where}.{field}", value, positive=field == "requests_per_second"
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
