"""The live stream (Server-Sent Events) against a real server: authorization, live
delivery, and resuming after a dropped connection without losing or repeating anything."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server

pytestmark = pytest.mark.slow


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    running = Server(tmp_path / "data", PARLEY_AUTH="token").start()
    try:
        yield running
    finally:
        running.stop()


async def create(client: httpx.AsyncClient, name: str) -> tuple[str, dict[str, str]]:
    body = (await client.post("/v1/users/create", json={"username": name})).json()
    return body["userId"], {"Authorization": f"Bearer {body['token']}"}


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse an SSE response into events {"id", "event", "data"} (comments skipped)."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line}
        else:
            field, _, value = line.partition(":")
            event[field] = value.lstrip()


async def send(
    client: httpx.AsyncClient, sender: str, to: str, headers: dict[str, str], text: str
) -> str:
    r = await client.post(
        "/v1/messages/send?type=private",
        json={"senderId": sender, "receiverId": to, "message": text},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["messageId"])


async def test_stream_auth(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        alice, _ = await create(client, "alice")
        bob, hb = await create(client, "bob")
        assert (await client.get(f"/v1/messages/{alice}/stream")).status_code == 401
        r = await client.get(f"/v1/messages/{alice}/stream?ticket=u_x.1.abc")
        assert r.status_code == 401
        r = await client.post(f"/v1/messages/{alice}/ticket", headers=hb)
        assert r.status_code == 403
        ticket = (await client.post(f"/v1/messages/{bob}/ticket", headers=hb)).json()
        assert ticket["expiresIn"] == 60 and ticket["ticket"].startswith(bob + ".")
        # bob's ticket does not open alice's stream
        r = await client.get(f"/v1/messages/{alice}/stream?ticket={ticket['ticket']}")
        assert r.status_code == 403
        tampered = ticket["ticket"][:-2] + ("AA" if not ticket["ticket"].endswith("AA") else "BB")
        r = await client.get(f"/v1/messages/{bob}/stream?ticket={tampered}")
        assert r.status_code == 401


async def test_live_delivery_and_resume_without_loss(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        alice, ha = await create(client, "alice")
        bob, hb = await create(client, "bob")
        ticket = (await client.post(f"/v1/messages/{bob}/ticket", headers=hb)).json()["ticket"]
        received: list[str] = []
        last_id = ""

        async with client.stream("GET", f"/v1/messages/{bob}/stream?ticket={ticket}") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            stream = events(r)
            first = await anext(stream)  # the initial keep-alive: connected
            assert "comment" in first
            sent_live = [await send(client, alice, bob, ha, f"live {i}") for i in range(5)]
            while len(received) < 5:
                event = await asyncio.wait_for(anext(stream), 10)
                if "data" in event:
                    assert event["event"] == "messages"
                    body = json.loads(event["data"])
                    received += [m["messageId"] for m in body["messages"]]
                    last_id = event["id"]
                    assert last_id == body["nextTimestamp"]
            assert received == sent_live
        # the connection is gone; more messages arrive meanwhile
        sent_offline = [await send(client, alice, bob, ha, f"offline {i}") for i in range(7)]
        headers = {**hb, "Last-Event-ID": last_id}
        async with client.stream("GET", f"/v1/messages/{bob}/stream", headers=headers) as r:
            stream = events(r)
            while len(received) < 12:
                event = await asyncio.wait_for(anext(stream), 10)
                if "data" in event:
                    received += [m["messageId"] for m in json.loads(event["data"])["messages"]]
            sent_later = await send(client, alice, bob, ha, "after resume")
            while len(received) < 13:
                event = await asyncio.wait_for(anext(stream), 10)
                if "data" in event:
                    received += [m["messageId"] for m in json.loads(event["data"])["messages"]]
        assert received == [*sent_live, *sent_offline, sent_later]  # nothing lost or repeated


def _counter(metrics: str, name: str = "parley_idle_checks_total") -> int:
    for line in metrics.splitlines():
        if line.startswith(name):
            return int(float(line.split()[-1]))
    raise AssertionError(f"{name} not in /metrics")


async def test_an_idle_stream_looks_only_at_its_keep_alives(tmp_path: Path) -> None:
    """Between keep-alives an idle stream sleeps: no re-check, no timer of its own. Over a
    window of W seconds with keep-alives every K, each stream checks at most once per
    keep-alive: at most W / K + 1 times; a stream that re-checked every second would
    check about W times (7 or 8 here). Nothing was notified, so those checks reuse the
    stream's last look: no change-cache call (``parley_stream_looks_skipped_total``)."""
    streams, keepalive, window = 8, 2.0, 8.0
    server = Server(tmp_path / "data", PARLEY_AUTH="token", PARLEY_KEEPALIVE_SECONDS="2")
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            users = [await create(client, f"u{i}") for i in range(streams)]
            keepalives = [0] * streams

            async def hold(i: int, user: str, headers: dict[str, str]) -> None:
                url = f"/v1/messages/{user}/stream"
                async with client.stream("GET", url, headers=headers) as r:
                    assert r.status_code == 200
                    async for event in events(r):
                        if "comment" in event:
                            keepalives[i] += 1

            held = [asyncio.ensure_future(hold(i, *u)) for i, u in enumerate(users)]
            try:
                for _ in range(500):  # every stream connected (its first keep-alive came)
                    if all(keepalives):
                        break
                    await asyncio.sleep(0.02)
                assert all(keepalives)
                metrics = (await client.get("/metrics")).text
                before, seen = _counter(metrics), list(keepalives)
                skipped = _counter(metrics, "parley_stream_looks_skipped_total")
                await asyncio.sleep(window)
                metrics = (await client.get("/metrics")).text
                after = _counter(metrics)
                skipped = _counter(metrics, "parley_stream_looks_skipped_total") - skipped
                fresh = [k - s for k, s in zip(keepalives, seen, strict=True)]
            finally:
                for task in held:
                    task.cancel()
                await asyncio.gather(*held, return_exceptions=True)
    finally:
        server.stop()
    assert all(n >= 1 for n in fresh), fresh  # the streams stayed alive: keep-alives came
    assert after - before <= streams * (window / keepalive + 1), (after - before, fresh)
    # nothing was notified: the keep-alives reused the streams' last looks
    assert skipped >= streams, skipped
