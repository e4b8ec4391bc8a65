"""kill -9 during a burst of sends, then restart: the procedure every backend's crash test
runs (SQLite in tests/e2e/test_crash.py, PostgreSQL in test_postgres_faults.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.e2e.server import Server

SEND = "/v1/messages/send?type=private"


async def fetch_all(client: httpx.AsyncClient, user: str) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    params: dict[str, str] = {"limit": "1000"}
    for _ in range(1000):
        body = (await client.get(f"/v1/messages/{user}", params=params)).json()
        messages += body["messages"]
        params["timestamp"] = body["nextTimestamp"]
        if not body["hasMore"]:
            return messages
    raise AssertionError("pages never ended")


async def kill_during_burst_and_check(data: Path, env: dict[str, str]) -> tuple[int, int]:
    """Send from 32 workers with Idempotency-Keys, SIGKILL the server's process group after at
    least 300 acknowledgements, restart it on the same data and check that every acknowledged
    message is stored exactly once; then retry every attempted send with its key and check
    that each key is stored exactly once. Returns (acknowledged, attempted)."""
    server = await asyncio.to_thread(Server(data, PARLEY_AUTH="none", **env).start)
    acked: dict[str, str] = {}  # idempotency key -> message id
    attempted: list[tuple[str, dict[str, str]]] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            alice = (await client.post("/v1/users/create", json={"username": "a"})).json()["userId"]
            bob = (await client.post("/v1/users/create", json={"username": "b"})).json()["userId"]

            async def sender(worker: int) -> None:
                for n in range(10_000):
                    key = f"w{worker}-{n}"
                    body = {"senderId": alice, "receiverId": bob, "message": key}
                    attempted.append((key, body))
                    try:
                        r = await client.post(SEND, json=body, headers={"Idempotency-Key": key})
                    except httpx.HTTPError:
                        return  # the server died under us
                    if r.status_code != 200:
                        return
                    acked[key] = r.json()["messageId"]

            tasks = [asyncio.create_task(sender(w)) for w in range(32)]
            deadline = time.monotonic() + 30
            while len(acked) < 300 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(server.kill)  # SIGKILL to the process group, mid-burst
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        await asyncio.to_thread(server.kill)

    assert len(acked) >= 300
    server = await asyncio.to_thread(Server(data, PARLEY_AUTH="none", **env).start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            stored = await fetch_all(client, bob)
            ids = [m["messageId"] for m in stored]
            assert len(ids) == len(set(ids)), "a message is stored twice"
            missing = set(acked.values()) - set(ids)
            assert not missing, f"{len(missing)} acknowledged messages lost"

            # Retry every send that was attempted, as a client would after an error.
            for key, body in attempted:
                r = await client.post(SEND, json=body, headers={"Idempotency-Key": key})
                assert r.status_code == 200, r.text
                if key in acked:
                    assert r.json()["messageId"] == acked[key]
            after = await fetch_all(client, bob)
            keys = [m["message"] for m in after]
            assert len(keys) == len(set(keys)) == len({k for k, _ in attempted})
    finally:
        await asyncio.to_thread(server.stop)
    return len(acked), len(attempted)
