"""What a server and the services behind it spend over a window of a benchmark run.

A :class:`Usage` is a reading of running totals (the server processes' CPU, the
PostgreSQL backends' CPU, Redis's CPU and commands, the server's storage calls); two
readings subtract to what one window cost. A figure that cannot be read is None (and stays
None through arithmetic): it is written as null, never as zero.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass

import httpx

from parley.bench import resources
from parley.bench.procs import Server

__all__ = ["WRITES", "Backends", "Usage", "read_usage", "say", "storage_calls"]

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
        self.readings = 0  # Redis readings made (each sends INFO commands of its own)

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


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _times(a: float | None, factor: float) -> float | None:
    return None if a is None else a * factor


@dataclass(frozen=True)
class Usage:
    """Running totals at one moment, or (after subtraction) what one window spent."""

    cpu: float  # server processes, seconds
    storage_cpu: float | None = None  # PostgreSQL backends serving the server, seconds
    cache_cpu: float | None = None  # Redis, seconds
    cache_ops: float | None = None  # Redis commands
    reads: float | None = None  # storage calls that read (/metrics)
    writes: float | None = None  # storage calls that write

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            cpu=self.cpu - other.cpu,
            storage_cpu=_minus(self.storage_cpu, other.storage_cpu),
            cache_cpu=_minus(self.cache_cpu, other.cache_cpu),
            cache_ops=_minus(self.cache_ops, other.cache_ops),
            reads=_minus(self.reads, other.reads),
            writes=_minus(self.writes, other.writes),
        )

    def floored(self) -> Usage:
        """Every figure at least 0 (a window less its background can dip below)."""
        return Usage(
            cpu=max(0.0, self.cpu),
            storage_cpu=None if self.storage_cpu is None else max(0.0, self.storage_cpu),
            cache_cpu=None if self.cache_cpu is None else max(0.0, self.cache_cpu),
            cache_ops=None if self.cache_ops is None else max(0.0, self.cache_ops),
            reads=None if self.reads is None else max(0.0, self.reads),
            writes=None if self.writes is None else max(0.0, self.writes),
        )

    def scaled(self, factor: float) -> Usage:
        return Usage(
            cpu=self.cpu * factor,
            storage_cpu=_times(self.storage_cpu, factor),
            cache_cpu=_times(self.cache_cpu, factor),
            cache_ops=_times(self.cache_ops, factor),
            reads=_times(self.reads, factor),
            writes=_times(self.writes, factor),
        )


REDIS_INFO_COMMANDS = 2  # each reading sends INFO cpu and INFO stats


async def read_usage(server: Server, backends: Backends, counted: bool) -> Usage:
    """The totals now. ``counted``: the server's storage calls can be read (one process:
    a scrape of /metrics reaches one worker of several at random)."""
    per_pid, redis = await backends.snapshot()
    own = REDIS_INFO_COMMANDS * backends.readings  # the earlier readings' INFO commands
    backends.readings += 1
    calls = storage_calls(server.url) if counted else None
    return Usage(
        cpu=server.cpu_seconds(),
        storage_cpu=sum(per_pid.values()) if backends.postgres and per_pid else None,
        cache_cpu=None if redis is None else redis[0],
        cache_ops=None if redis is None else redis[1] - own,
        reads=None if calls is None else sum(v for k, v in calls.items() if k not in WRITES),
        writes=None if calls is None else sum(v for k, v in calls.items() if k in WRITES),
    )
