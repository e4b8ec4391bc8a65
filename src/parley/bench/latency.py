"""``parley bench latency``: how fast a sent message reaches a waiting client.

A sender posts messages one at a time to a receiver that waits on a long-poll (following
``nextTimestamp``) and, separately, on the live stream (SSE). For each message the delay
from the send's acknowledgement to its arrival is recorded (negative when the message
arrived before the sender had read its own acknowledgement). Then it opens many idle
streams and reports the server's resident memory per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from parley.bench.procs import Server
from parley.http.server import FILE_RESERVE


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def create(client: httpx.AsyncClient, name: str) -> tuple[str, dict[str, str]]:
    body = (await client.post("/v1/users/create", json={"username": name})).json()
    return body["userId"], {"Authorization": f"Bearer {body['token']}"}


async def long_poll_receiver(
    client: httpx.AsyncClient,
    user: str,
    headers: dict[str, str],
    arrived: dict[str, float],
    expected: int,
) -> None:
    cursor = (await client.get(f"/v1/messages/{user}", headers=headers)).json()["nextTimestamp"]
    while len(arrived) < expected:
        r = await client.get(
            f"/v1/messages/{user}?timestamp={cursor}&wait=30", headers=headers, timeout=40
        )
        now = time.perf_counter()
        body = r.json()
        for m in body["messages"]:
            arrived.setdefault(m["messageId"], now)
        cursor = body["nextTimestamp"]


async def sse_receiver(
    client: httpx.AsyncClient,
    user: str,
    headers: dict[str, str],
    arrived: dict[str, float],
    expected: int,
    ready: asyncio.Event,
) -> None:
    async with client.stream(
        "GET", f"/v1/messages/{user}/stream", headers=headers, timeout=None
    ) as r:
        ready.set()
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                now = time.perf_counter()
                for m in json.loads(line[5:])["messages"]:
                    arrived.setdefault(m["messageId"], now)
                if len(arrived) >= expected:
                    return


async def measure(url: str, count: int, kind: str) -> dict[str, float]:
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        sender, hs = await create(client, "sender")
        receiver, hr = await create(client, "receiver")
        arrived: dict[str, float] = {}
        acked: dict[str, float] = {}
        started: dict[str, float] = {}
        if kind == "long-poll":
            task = asyncio.create_task(long_poll_receiver(client, receiver, hr, arrived, count))
            await asyncio.sleep(0.2)
        else:
            ready = asyncio.Event()
            task = asyncio.create_task(sse_receiver(client, receiver, hr, arrived, count, ready))
            await asyncio.wait_for(ready.wait(), 10)
            await asyncio.sleep(0.2)
        for i in range(count):
            t0 = time.perf_counter()
            r = await client.post(
                "/v1/messages/send?type=private",
                json={"senderId": sender, "receiverId": receiver, "message": f"m{i}"},
                headers=hs,
            )
            mid = r.json()["messageId"]
            acked[mid] = time.perf_counter()
            started[mid] = t0
            # let the receiver re-arm, as a chat would between messages
            await asyncio.sleep(0.002)
        await asyncio.wait_for(task, 60)
    from_ack = [(arrived[m] - acked[m]) * 1000 for m in acked]
    from_send = [(arrived[m] - started[m]) * 1000 for m in acked]
    return {
        "messages": len(acked),
        "from_ack_p50_ms": statistics.median(from_ack),
        "from_ack_p99_ms": pct(from_ack, 99),
        "from_send_p50_ms": statistics.median(from_send),
        "from_send_p99_ms": pct(from_send, 99),
    }


FILE_MARGIN = 2048  # open files beyond the streams: the server's reserve, storage, logs


def open_files_for(streams: int) -> int:
    """Raise this process's open-file limit (soft, and hard where allowed) so that it and
    a server it starts can each hold ``streams`` connections; the limit reached. Both
    ends of every stream are sockets: the client's here, the server's in the child, which
    inherits the limit."""
    wanted = streams + FILE_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (OSError, ValueError):
            wanted = hard  # raising the hard limit needs privilege: go as far as allowed
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft


def stream_concurrency(streams: int) -> str:
    """``PARLEY_MAX_CONCURRENCY`` for a server that holds ``streams`` open streams (each is
    a request in progress), with room for the bench's other requests."""
    return str(max(10_000, streams + 100))


async def create_many(
    url: str, count: int, prefix: str, verify: ssl.SSLContext | bool = True
) -> list[tuple[str, str]]:
    """``count`` users, created 256 at a time; their ids and tokens."""
    users: list[tuple[str, str]] = []
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, verify=verify) as client:
        for start in range(0, count, 256):
            batch = range(start, min(count, start + 256))
            made = await asyncio.gather(*(create(client, f"{prefix}{i}") for i in batch))
            users += [(user, headers["Authorization"][7:]) for user, headers in made]
    return users


Held = tuple[asyncio.StreamReader, asyncio.StreamWriter]
OPEN_BATCH = 50  # streams opened at once (each open checks a token the server may not hold)


async def hold_stream(
    port: int, user: str, token: str, query: str = "", tls: ssl.SSLContext | None = None
) -> Held:
    """One live stream on its own connection, open once its answer's head has arrived
    (plain sockets: an HTTP client's pool slows down with tens of thousands of them).
    ``query``: the URL's query, e.g. ``?timestamp=...``; ``tls``: connect with TLS."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(
        f"GET /v1/messages/{user}/stream{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        body = await asyncio.wait_for(reader.read(300), 2)
        writer.close()
        raise RuntimeError(f"stream refused: {head.splitlines()[0].decode()} {body.decode()!r}")
    return reader, writer


async def idle_streams(
    server: Server, count: int, tls: ssl.SSLContext | None = None
) -> dict[str, float]:
    """Memory per idle live stream: the server's resident memory before and after
    ``count`` streams are opened on its stream port (``tls``: with TLS)."""
    users = await create_many(server.url, count, "idle", tls or True)
    await asyncio.sleep(1)
    before = server.rss_bytes()
    opened: list[Held] = []
    try:
        for start in range(0, count, OPEN_BATCH):
            batch = users[start : start + OPEN_BATCH]
            # a client that has been connected before: a recent cursor, nothing to replay
            cursor = f"?timestamp={int(time.time() * 1000)}"
            opened += await asyncio.gather(
                *(hold_stream(server.stream_port, u, t, cursor, tls) for u, t in batch)
            )
        await asyncio.sleep(2)
        after = server.rss_bytes()
        async with httpx.AsyncClient(base_url=server.url, timeout=60, verify=tls or True) as c:
            alive = (await c.get("/healthz")).status_code == 200
    finally:
        for _, writer in opened:
            writer.close()
    return {
        "connections": count,
        "rss_before_mib": before / 2**20,
        "rss_after_mib": after / 2**20,
        "kib_per_connection": (after - before) / count / 1024,
        "server_answers_meanwhile": float(alive),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley bench latency", description=__doc__)
    parser.add_argument(
        "--messages", type=int, default=2000, help="messages to time, one at a time (2000)"
    )
    parser.add_argument(
        "--idle-streams", type=int, default=2000, help="idle streams to open for memory (2000)"
    )
    parser.add_argument(
        "--storage",
        default="sqlite",
        choices=("sqlite", "memory"),
        help="storage of the server under test (sqlite)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    limit = open_files_for(args.idle_streams)
    if limit < args.idle_streams + FILE_MARGIN:
        print(
            f"note: the open-file limit ({limit}, ulimit -n) is below {args.idle_streams} "
            f"streams + {FILE_MARGIN}: the server may refuse some (it keeps {FILE_RESERVE} "
            "files for itself)"
        )
    with tempfile.TemporaryDirectory(prefix="parley-latency-") as tmp:
        server = Server(
            Path(tmp) / "data",
            PARLEY_AUTH="token",
            PARLEY_STORAGE=args.storage,
            PARLEY_MAX_CONCURRENCY=stream_concurrency(args.idle_streams),
        ).start()
        try:
            results = {
                "long-poll": asyncio.run(measure(server.url, args.messages, "long-poll")),
                "sse": asyncio.run(measure(server.url, args.messages, "sse")),
                "idle-streams": asyncio.run(idle_streams(server, args.idle_streams)),
            }
        finally:
            server.stop()
    for kind in ("long-poll", "sse"):
        r = results[kind]
        print(
            f"{kind:<9} {r['messages']:.0f} messages: ack->received p50 "
            f"{r['from_ack_p50_ms']:.2f} ms, p99 {r['from_ack_p99_ms']:.2f} ms; send->received "
            f"p50 {r['from_send_p50_ms']:.2f} ms, p99 {r['from_send_p99_ms']:.2f} ms"
        )
    idle = results["idle-streams"]
    print(
        f"idle SSE connections: {idle['connections']:.0f} held, server RSS "
        f"{idle['rss_before_mib']:.0f} -> {idle['rss_after_mib']:.0f} MiB, "
        f"{idle['kib_per_connection']:.1f} KiB per connection"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.flush()
    return 0
