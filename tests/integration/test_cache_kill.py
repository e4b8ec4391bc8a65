"""Two real ``parley serve`` processes; one dies right after a PostgreSQL commit.

Process 0 runs with ``PARLEY_TEST_EXIT_AFTER_COMMIT``: its worker exits the moment a
block, a removal or a send has committed, before it updated Redis (or raised the
message's watermarks). Then it is started again.
Within the trust lease after the death, every process, the restarted one included,
enforces the block and the removal and delivers the message, and the client's retry
answers 409 (or replays the send).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server, free_port
from tests.integration import services

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

LEASE = 0.3  # RedisLink's default trust lease
BOUND = LEASE + 0.2  # after a death, every process is right by then (plus slack)


class Pair:
    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        # no keep-alive: a connection to a worker that died must not be reused
        self.client = httpx.AsyncClient(
            timeout=15, limits=httpx.Limits(max_keepalive_connections=0)
        )

    async def call(self, via: int, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        return await self.client.request(
            method, self.servers[via].url + path, headers=headers, **kw
        )

    async def dies(self, via: int, method: str, path: str, token: str, **kw: Any) -> float:
        """A request that kills process ``via``'s worker; returns when it died (at the
        latest), once the process has been started again."""
        with pytest.raises(httpx.TransportError):
            await self.call(via, method, path, token, **kw)
        died = time.monotonic()
        server = self.servers[via]
        await asyncio.to_thread(server.kill)  # what is left of it (its server process)
        server.port = free_port()  # the old port may linger in TIME_WAIT
        server.url = f"http://127.0.0.1:{server.port}"
        server.env["PARLEY_PORT"] = str(server.port)
        await asyncio.to_thread(server.start)
        deadline = time.monotonic() + 30
        while True:
            r = await self.client.get(server.url + "/readyz")
            if r.status_code == 200 and r.json()["checks"]["redis"] == "ok":
                return died
            assert time.monotonic() < deadline, "the restarted process never trusted Redis"
            await asyncio.sleep(0.05)

    async def user(self, name: str) -> tuple[str, str]:
        r = await self.client.post(
            self.servers[1].url + "/v1/users/create", json={"username": name}
        )
        assert r.status_code == 200, r.text
        return r.json()["userId"], r.json()["token"]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    faults = {"PARLEY_TEST_EXIT_AFTER_COMMIT": "add_block,remove_member,send"}
    async with services.postgres_servers(tmp_path, [faults, {}]) as servers:
        running = Pair(servers)
        yield running
        await running.client.aclose()


async def test_a_process_killed_after_its_commit_leaves_no_process_wrong(pair: Pair) -> None:
    alice, alice_token = await pair.user("alice")
    bob, bob_token = await pair.user("bob")
    carol, carol_token = await pair.user("carol")

    async def send(via: int, sender: tuple[str, str], to: str, kind: str = "private") -> int:
        field = "receiverId" if kind == "private" else "groupId"
        body = {"senderId": sender[0], field: to, "message": "hi"}
        r = await pair.call(via, "POST", f"/v1/messages/send?type={kind}", sender[1], json=body)
        return r.status_code

    r = await pair.call(1, "POST", "/v1/groups/create", bob_token, json={"groupName": "g"})
    group = r.json()["groupId"]
    r = await pair.call(1, "POST", f"/v1/groups/{group}?op=add", bob_token,
                        json={"userId": alice})  # fmt: skip
    assert r.status_code == 200
    # the blocks and memberships are in Redis (a send through process 0 would kill it)
    assert await send(1, (alice, alice_token), bob) == 200
    assert await send(1, (alice, alice_token), group, "group") == 200
    for via in (0, 1):
        r = await pair.call(via, "GET", f"/v1/users/{bob}/blocked", bob_token)
        assert r.json()["blockedUserIds"] == []
        r = await pair.call(via, "GET", f"/v1/users/{alice}/groups", alice_token)
        assert [g["groupId"] for g in r.json()["groups"]] == [group]

    # a block, committed by a process that dies before it touches Redis
    died = await pair.dies(0, "POST", f"/v1/users/{bob}?op=block", bob_token,
                           json={"blockedUserId": alice})  # fmt: skip
    await asyncio.sleep(max(0.0, died + BOUND - time.monotonic()))
    for via in (0, 1):
        assert await send(via, (alice, alice_token), bob) == 403, via
        r = await pair.call(via, "GET", f"/v1/users/{bob}/blocked", bob_token)
        assert r.json()["blockedUserIds"] == [alice]
    r = await pair.call(1, "POST", f"/v1/users/{bob}?op=block", bob_token,
                        json={"blockedUserId": alice})  # fmt: skip
    assert r.status_code == 409

    # a removal, likewise
    died = await pair.dies(0, "POST", f"/v1/groups/{group}?op=remove", bob_token,
                           json={"userId": alice})  # fmt: skip
    await asyncio.sleep(max(0.0, died + BOUND - time.monotonic()))
    for via in (0, 1):
        assert await send(via, (alice, alice_token), group, "group") == 403, via
        r = await pair.call(via, "GET", f"/v1/users/{alice}/groups", alice_token)
        assert r.json()["groups"] == []
        r = await pair.call(via, "GET", f"/v1/groups/{group}", bob_token)
        assert r.json()["members"] == [bob]
    r = await pair.call(1, "POST", f"/v1/groups/{group}?op=remove", bob_token,
                        json={"userId": alice})  # fmt: skip
    assert r.status_code == 409

    # a keyed send, committed by a process that dies before raising the watermarks
    r = await pair.call(1, "GET", f"/v1/messages/{carol}", carol_token)
    cursor = r.json()["nextTimestamp"]
    r = await pair.call(1, "GET", f"/v1/messages/{carol}", carol_token,
                        params={"timestamp": cursor})  # fmt: skip
    assert r.json()["messages"] == []  # an idle check, answered from Redis
    body = {"senderId": bob, "receiverId": carol, "message": "last words"}
    key = {"Idempotency-Key": "once"}
    died = await pair.dies(0, "POST", "/v1/messages/send?type=private", bob_token,
                           json=body, headers=key)  # fmt: skip
    await asyncio.sleep(max(0.0, died + BOUND - time.monotonic()))
    for via in (0, 1):
        r = await pair.call(via, "GET", f"/v1/messages/{carol}", carol_token,
                            params={"timestamp": cursor})  # fmt: skip
        assert [m["message"] for m in r.json()["messages"]] == ["last words"], via
    r = await pair.call(1, "POST", "/v1/messages/send?type=private", bob_token,
                        json=body, headers=key)  # fmt: skip
    assert r.status_code == 200
    r2 = await pair.call(1, "GET", f"/v1/messages/{carol}", carol_token,
                         params={"timestamp": cursor})  # fmt: skip
    assert [m["messageId"] for m in r2.json()["messages"]] == [r.json()["messageId"]]


async def _first_message(response: httpx.Response) -> str:
    """The first message's text on an open live stream."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            messages = json.loads(line[5:])["messages"]
            if messages:
                return str(messages[0]["message"])
    raise AssertionError("the stream ended")


async def test_a_sender_that_dies_before_its_wake_ups_still_wakes_a_sleeping_stream(
    tmp_path: Path,
) -> None:
    """Process 0 dies after a send raised its watermarks and before it published the
    wake-ups. Bob's live stream on process 1 sleeps until its keep-alive (30 s) and looks
    at nothing in between; the catch-up that confirms the message (any process's poll,
    within a trust lease) publishes its wake-up before confirming it, so the stream gets
    the message long before its keep-alive."""
    faults = {"PARLEY_TEST_EXIT_AFTER_COMMIT": "send_marked"}
    quiet = {"PARLEY_KEEPALIVE_SECONDS": "30"}
    async with services.postgres_servers(tmp_path, [faults, quiet]) as servers:
        pair = Pair(servers)
        try:
            alice, alice_token = await pair.user("alice")
            bob, bob_token = await pair.user("bob")
            url = servers[1].url + f"/v1/messages/{bob}/stream?timestamp=1"
            headers = {"Authorization": f"Bearer {bob_token}"}
            async with pair.client.stream("GET", url, headers=headers, timeout=60) as r:
                assert r.status_code == 200
                first = asyncio.ensure_future(_first_message(r))
                await asyncio.sleep(1.0)  # the stream has looked and sleeps
                assert not first.done()
                body = {"senderId": alice, "receiverId": bob, "message": "from the dead"}
                with pytest.raises(httpx.TransportError):
                    await pair.call(0, "POST", "/v1/messages/send?type=private", alice_token,
                                    json=body)  # fmt: skip
                died = time.monotonic()
                assert await asyncio.wait_for(first, 20) == "from the dead"
                assert time.monotonic() - died < 20  # not at the 30-second keep-alive
        finally:
            await pair.client.aclose()
