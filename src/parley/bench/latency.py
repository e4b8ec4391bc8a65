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
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from parley.bench.procs import Server


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


async def idle_streams(server: Server, count: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        users = [await create(client, f"idle{i}") for i in range(count)]
        await asyncio.sleep(1)
        before = server.rss_bytes()
        opened: list[Any] = []
        for user, headers in users:
            context = client.stream(
                "GET", f"/v1/messages/{user}/stream", headers=headers, timeout=None
            )
            response = await context.__aenter__()
            assert response.status_code == 200
            opened.append(context)
        await asyncio.sleep(2)
        after = server.rss_bytes()
        alive = (await client.get("/healthz")).status_code == 200
        for context in opened:
            await context.__aexit__(None, None, None)
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
    with tempfile.TemporaryDirectory(prefix="parley-latency-") as tmp:
        server = Server(
            Path(tmp) / "data", PARLEY_AUTH="token", PARLEY_STORAGE=args.storage
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
