"""Live-stream clients: what one keep-alive tick, one pushed message and one stream opening
cost a server (``parley bench`` runs these after its request scenarios).

- ``tick``: one keep-alive interval of one idle live stream (it wakes, may re-check, writes
  ``: keep-alive``). N idle streams are held while the server sends a keep-alive every
  ``PARLEY_KEEPALIVE_SECONDS`` (the bench starts it with 2); over a window every stream is
  read and the keep-alive comments are counted; per tick = the window's usage / comments.
- ``push``: one message delivered to an open stream. The same private sends are made twice
  from the same client: to users without a stream (the sends' own cost), then to users
  holding one; per push = (second window - first window - the ticks seen in the second
  window x the cost of a tick) / messages delivered. A figure that comes out negative (noise)
  is clamped to 0 and named in ``clamped``.
- ``open``: one stream opened by a client reconnecting with a recent cursor, read until its
  first keep-alive and closed, in a loop from a few concurrent clients.

None of these is a throughput the server was pushed to: their ``requests_per_second`` is
1 / CPU seconds per operation, the rate one fully busy vCPU would sustain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from parley.bench.latency import FILE_MARGIN, Held, hold_stream, open_files_for
from parley.bench.procs import Server
from parley.bench.usage import Backends, Usage, read_usage, say

__all__ = [
    "KEEPALIVE",
    "KEEPALIVE_SECONDS",
    "Tap",
    "per_operation",
    "push_usage",
    "read_users",
]

KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_SECONDS = 2  # PARLEY_KEEPALIVE_SECONDS of the bench's server
MESSAGE = b'"messageId"'
BACKGROUND_SECONDS = 5.0  # a quiet window first: what the server spends with no load
SETTLE_SECONDS = 3.0  # after opening streams: their first chunks and wake-ups pass
ARRIVAL_TIMEOUT = 30.0  # at most this long for pushed messages to arrive
TICK_EXTRA_SECONDS = 20.0  # at most this much longer when keep-alives come slower
OPEN_TIMEOUT = 10.0  # one opening, head to first keep-alive
SEND_CONCURRENCY = 8  # sends in flight at once
OPEN_CONCURRENCY = 4  # clients opening streams at once
OPENS_MAX = 5000  # streams opened at most (each leaves a client port in TIME_WAIT for a minute)
OPEN_FAILURES_MAX = 50  # give up opening after this many failures
TAP_KEEP = 1 << 20  # bytes at most kept per stream (the rest is only counted)


@dataclass
class Totals:
    """What every stream read so far, together."""

    bytes: int = 0
    keepalives: int = 0
    messages: int = 0

    def copy(self) -> Totals:
        return Totals(self.bytes, self.keepalives, self.messages)


@dataclass
class Tap:
    """Counts one stream's bytes, keep-alive comments and message ids into shared totals
    (a pattern split across two reads is still counted once)."""

    totals: Totals
    tail: bytes = b""
    kept: bytearray = field(default_factory=bytearray)
    keepalive_times: list[float] = field(default_factory=list)  # the last few

    def feed(self, data: bytes, now: float = 0.0) -> None:
        seen = self.tail + data
        self.totals.bytes += len(data)
        keepalives = seen.count(KEEPALIVE)
        self.totals.keepalives += keepalives
        if keepalives:
            self.keepalive_times = [*self.keepalive_times[-3:], now]
        self.totals.messages += seen.count(MESSAGE)
        width = max(len(KEEPALIVE), len(MESSAGE)) - 1
        self.tail = seen[-width:]
        if len(self.kept) < TAP_KEEP:
            self.kept += data[: TAP_KEEP - len(self.kept)]


async def _drain(reader: asyncio.StreamReader, tap: Tap) -> None:
    while True:
        data = await reader.read(65536)
        if not data:
            return
        tap.feed(data, time.monotonic())


def keepalive_interval(taps: list[Tap]) -> float | None:
    """The median gap between a stream's last two keep-alives (None before any has two)."""
    gaps = sorted(
        t.keepalive_times[-1] - t.keepalive_times[-2] for t in taps if len(t.keepalive_times) >= 2
    )
    return gaps[len(gaps) // 2] if gaps else None


def read_users(users_file: Path) -> list[tuple[str, str]]:
    """The data set's users (id, token), in the file's order."""
    users = []
    for line in users_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            users.append((parts[0], parts[1]))
    return users


def _div(value: float | None, by: float, digits: int = 9) -> float | None:
    if value is None or by <= 0:
        return None
    return round(value / by, digits)


def per_operation(
    used: Usage,
    count: float,
    separate: bool,
    request_bytes: float | None,
    response_bytes: float | None,
) -> dict[str, float | None]:
    """Per-operation figures in the bench file's fields from a window's usage over
    ``count`` operations. ``separate``: storage and cache are their own servers (PostgreSQL
    and Redis); otherwise (SQLite) they run inside the server and cost it nothing more.
    ``requests_per_second``: 1 / CPU seconds per operation (None when the CPU is 0)."""
    cpu = _div(used.cpu, count)
    return {
        "requests_per_second": round(1 / cpu, 1) if cpu else None,
        "cpu_seconds_per_request": cpu,
        "storage_reads_per_request": _div(used.reads, count, 4),
        "storage_writes_per_request": _div(used.writes, count, 4),
        "storage_cpu_seconds_per_request": _div(used.storage_cpu, count) if separate else 0.0,
        "cache_ops_per_request": _div(used.cache_ops, count, 4) if separate else 0.0,
        "cache_cpu_seconds_per_request": _div(used.cache_cpu, count) if separate else 0.0,
        "request_bytes": _div(request_bytes, count, 1),
        "response_bytes": _div(response_bytes, count, 1),
    }


def _clamp(value: float | None, name: str, clamped: list[str]) -> float | None:
    if value is not None and value < 0:
        clamped.append(name)
        return 0.0
    return value


def push_usage(
    pushed: Usage,
    sent: Usage,
    sends: float,
    base_sends: float,
    stream_seconds: float,
    idle: Usage,
) -> tuple[Usage, list[str]]:
    """What the pushes alone cost: the window with streams (``pushed``, ``sends`` sends)
    minus the same sends' own cost (``sent``, measured over ``base_sends`` sends to users
    without a stream) minus what the streams cost idle meanwhile (``stream_seconds``
    stream-seconds at ``idle`` each: keep-alives and wake-ups). Negative figures are clamped
    to 0 and named."""
    rest = pushed - sent.scaled(sends / base_sends if base_sends else 0.0)
    if stream_seconds:
        rest = rest - idle.scaled(stream_seconds)
    clamped: list[str] = []
    return (
        Usage(
            cpu=_clamp(rest.cpu, "cpu", clamped) or 0.0,
            storage_cpu=_clamp(rest.storage_cpu, "storage_cpu", clamped),
            cache_cpu=_clamp(rest.cache_cpu, "cache_cpu", clamped),
            cache_ops=_clamp(rest.cache_ops, "cache_ops", clamped),
            reads=_clamp(rest.reads, "reads", clamped),
            writes=_clamp(rest.writes, "writes", clamped),
        ),
        clamped,
    )


class Streams:
    """Streams held open on one server, each read by its own task into shared totals."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.totals = Totals()
        self.held: list[Held] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.taps: list[Tap] = []

    async def open(self, users: list[tuple[str, str]], query: str) -> None:
        for start in range(0, len(users), 200):
            batch = users[start : start + 200]
            opened = await asyncio.gather(
                *(hold_stream(self.server.stream_port, u, t, query) for u, t in batch)
            )
            for reader, writer in opened:
                self.held.append((reader, writer))
                tap = Tap(self.totals)
                self.taps.append(tap)
                self.tasks.append(asyncio.create_task(_drain(reader, tap)))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for _, writer in self.held:
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.held, self.tasks = [], []


def stream_count(wanted: int, users: int) -> int:
    """How many streams this machine can hold: at most one per user, within the open-file
    limit (both ends of each are here)."""
    limit = open_files_for(wanted)
    room = max(0, (limit - FILE_MARGIN) // 2) if limit < 2 * wanted + FILE_MARGIN else wanted
    return max(0, min(wanted, users, room))


def _now_cursor() -> str:
    return f"?timestamp={time.time_ns() // 1_000_000}"


async def measure_ticks(
    server: Server,
    backends: Backends,
    counted: bool,
    users: list[tuple[str, str]],
    streams: int,
    seconds: float,
) -> tuple[Usage, dict[str, Any]]:
    """Hold ``streams`` idle streams and read them for ``seconds``: the window's usage and
    what was read (the keep-alive comments are the ticks)."""
    # The processes' own background work (each polls the cache epoch ten times a second)
    # goes on whatever the load: measured alone first and taken out of the window.
    await asyncio.sleep(SETTLE_SECONDS)  # connections of an earlier phase are closed
    quiet = await read_usage(server, backends, counted)
    await asyncio.sleep(BACKGROUND_SECONDS)
    background = (await read_usage(server, backends, counted) - quiet).scaled(
        1 / BACKGROUND_SECONDS
    )
    held = Streams(server)
    try:
        await held.open(users[:streams], _now_cursor())
        await asyncio.sleep(SETTLE_SECONDS)
        before, start = await read_usage(server, backends, counted), held.totals.copy()
        began = time.monotonic()
        await asyncio.sleep(seconds)
        # A server that keeps a longer interval than asked (one without the setting sends
        # one every 15 s): go on until most streams have sent two, within a bound.
        deadline = began + seconds + TICK_EXTRA_SECONDS
        while time.monotonic() < deadline and _paired(held.taps) < len(held.taps) // 2:
            await asyncio.sleep(0.25)
        after, end = await read_usage(server, backends, counted), held.totals.copy()
        elapsed = time.monotonic() - began
        interval = keepalive_interval(held.taps)
    finally:
        await held.close()
    keepalives = end.keepalives - start.keepalives
    used = (after - before - background.scaled(elapsed)).floored()
    return used, {
        "background_per_second": {
            "server_cpu": round(background.cpu, 6),
            "storage_cpu": background.storage_cpu,
            "cache_cpu": background.cache_cpu,
            "cache_ops": background.cache_ops,
            "note": "subtracted from the window: the processes' own polls, not the streams'",
        },
        "streams": len(held.held) or streams,
        "seconds": round(elapsed, 2),
        "bytes": end.bytes - start.bytes,
        "keepalives": keepalives,
        "messages": end.messages - start.messages,
        "expected_ticks": round(streams * elapsed / KEEPALIVE_SECONDS, 1),
        "interval_seconds": None if interval is None else round(interval, 3),
        "ticks": round(streams * elapsed / interval, 1) if interval else 0,
    }


def _paired(taps: list[Tap]) -> int:
    return sum(1 for t in taps if len(t.keepalive_times) >= 2)


async def _send_all(
    url: str, pairs: list[tuple[tuple[str, str], str]], text: str
) -> tuple[int, int]:
    """Private sends (sender, receiver id), ``SEND_CONCURRENCY`` at a time: (ok, failed)."""
    done = [0, 0]
    queue = iter(pairs)
    limits = httpx.Limits(max_connections=SEND_CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for (sender, token), receiver in queue:
                r = await client.post(
                    "/v1/messages/send?type=private",
                    json={"senderId": sender, "receiverId": receiver, "message": text},
                    headers={"Authorization": f"Bearer {token}"},
                )
                done[0 if r.status_code == 200 else 1] += 1

        await asyncio.gather(*(worker() for _ in range(SEND_CONCURRENCY)))
    return done[0], done[1]


def _pairs(
    senders: list[tuple[str, str]], receivers: list[tuple[str, str]], count: int
) -> list[tuple[tuple[str, str], str]]:
    return [(senders[i % len(senders)], receivers[i % len(receivers)][0]) for i in range(count)]


async def measure_pushes(
    server: Server,
    backends: Backends,
    counted: bool,
    users: list[tuple[str, str]],
    streams: int,
    messages: int,
    text: str,
) -> dict[str, Any]:
    """Sends to users without a stream, then the same number to users holding one."""
    with_stream, without = users[:streams], users[streams : 2 * streams]
    senders = users[2 * streams :]
    before = await read_usage(server, backends, counted)
    base_ok, base_failed = await _send_all(server.url, _pairs(senders, without, messages), text)
    sent = await read_usage(server, backends, counted) - before
    held = Streams(server)
    try:
        await held.open(with_stream, _now_cursor())
        await asyncio.sleep(SETTLE_SECONDS)
        before, start = await read_usage(server, backends, counted), held.totals.copy()
        began = time.monotonic()
        ok, failed = await _send_all(server.url, _pairs(senders, with_stream, messages), text)
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while held.totals.messages - start.messages < ok and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after, end = await read_usage(server, backends, counted), held.totals.copy()
        elapsed = time.monotonic() - began
    finally:
        await held.close()
    return {
        "sent": sent,
        "pushed": after - before,
        "streams": streams,
        "base_sends": base_ok,
        "base_failed": base_failed,
        "sends": ok,
        "failed": failed,
        "delivered": end.messages - start.messages,
        "bytes": end.bytes - start.bytes,
        "keepalives": end.keepalives - start.keepalives,
        "seconds": round(elapsed, 2),
    }


async def _open_once(port: int, user: str, token: str, cursor: str) -> tuple[int, int]:
    """Open one stream, read until its first keep-alive, close: (bytes sent, bytes read)."""
    request = (
        f"GET /v1/messages/{user}/stream{cursor} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        writer.write(request)
        async with asyncio.timeout(OPEN_TIMEOUT):
            while KEEPALIVE not in got:
                data = await reader.read(65536)
                if not data:
                    break
                got += data
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not got.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(
            f"stream refused: {got.splitlines()[0].decode() if got else 'no answer'}"
        )
    return len(request), len(got)


async def measure_opens(
    server: Server,
    backends: Backends,
    counted: bool,
    users: list[tuple[str, str]],
    seconds: float,
) -> tuple[Usage, dict[str, Any]]:
    """Open and close streams for ``seconds`` from ``OPEN_CONCURRENCY`` clients."""
    cursor = _now_cursor()
    made = {"opens": 0, "sent": 0, "read": 0, "failed": 0}
    turn = iter(range(10**9))
    before = await read_usage(server, backends, counted)
    stop = time.monotonic() + seconds

    async def client() -> None:
        while (
            time.monotonic() < stop
            and made["opens"] < OPENS_MAX
            and made["failed"] < OPEN_FAILURES_MAX
        ):
            user, token = users[next(turn) % len(users)]
            try:
                sent, read = await _open_once(server.stream_port, user, token, cursor)
            except (OSError, RuntimeError, TimeoutError):
                made["failed"] += 1
                continue
            made["opens"] += 1
            made["sent"] += sent
            made["read"] += read

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(OPEN_CONCURRENCY)))
    await asyncio.sleep(1.0)  # the server notices the last closes
    after = await read_usage(server, backends, counted)
    return after - before, {**made, "seconds": round(time.monotonic() - began, 2)}


async def measure_live(
    server: Server,
    backends: Backends,
    counted: bool,
    users_file: Path,
    tick_streams: int,
    push_streams: int,
    push_messages: int,
    seconds: float,
    separate: bool,
) -> tuple[dict[str, dict[str, float | None]], dict[str, Any]]:
    """The tick, push and open operations' figures and how they were measured."""
    users = read_users(users_file)
    operations: dict[str, dict[str, float | None]] = {}
    details: dict[str, Any] = {
        "keepalive_seconds": KEEPALIVE_SECONDS,
        "requests_per_second": "1 / cpu_seconds_per_request: the rate one busy vCPU sustains",
    }
    n = stream_count(tick_streams, len(users))
    say(f"tick: {n:,} idle live streams read for {seconds:.0f} s")
    tick_used, tick = await measure_ticks(server, backends, counted, users, n, seconds)
    ticks = tick["ticks"]  # no interval seen: the figures are unknown
    wire = tick["bytes"] / tick["keepalives"] if tick["keepalives"] else None
    operations["tick"] = per_operation(tick_used, ticks, separate, 0.0, None)
    operations["tick"]["response_bytes"] = None if wire is None else round(wire, 1)
    details["tick"] = {
        **tick,
        "method": (
            "window usage / ticks, ticks = streams x window / interval_seconds (the median "
            "gap between a stream's keep-alives); response bytes: bytes read / keep-alives"
        ),
    }
    none = Usage(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # no tick measured: none subtracted
    stream_seconds = tick["streams"] * tick["seconds"]
    idle = tick_used.scaled(1 / stream_seconds) if ticks and stream_seconds else none

    k = max(1, min(push_streams, len(users) // 4))
    say(f"push: {push_messages:,} sends without streams, then to {k:,} users with streams")
    push = await measure_pushes(server, backends, counted, users, k, push_messages, "bench message")
    sent, pushed = push.pop("sent"), push.pop("pushed")
    ka_wire = wire or 0.0
    used, clamped = push_usage(
        pushed, sent, push["sends"], push["base_sends"], k * push["seconds"], idle
    )
    event_bytes = max(0.0, push["bytes"] - push["keepalives"] * ka_wire)
    delivered = push["delivered"]
    operations["push"] = per_operation(used, delivered, separate, 0.0, event_bytes)
    details["push"] = {
        **push,
        "event_bytes": round(event_bytes, 1),
        "keepalive_wire_bytes": round(ka_wire, 1),
        "clamped": clamped,
        "method": (
            "(window with streams - the same sends to users without one - the streams' idle "
            "cost per second from the tick window x streams x seconds) / messages delivered; "
            "response bytes: stream bytes minus keep-alives, per message"
        ),
    }

    for op, figures in list(operations.items()):
        if figures["cpu_seconds_per_request"] is None:  # nothing counted: not measured
            del operations[op]
            details[op]["not_measured"] = "no keep-alives or messages read in the window"

    say(f"open: opening and closing streams for {seconds:.0f} s")
    open_used, opened = await measure_opens(server, backends, counted, users, seconds)
    operations["open"] = per_operation(
        open_used, opened["opens"], separate, opened["sent"], opened["read"]
    )
    details["open"] = {
        **opened,
        "method": "window usage / streams opened (recent cursor, read to first keep-alive)",
    }
    if not opened["opens"]:
        del operations["open"]
    return operations, details
