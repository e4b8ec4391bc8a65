"""The polling contract (SPEC §3): a client following nextTimestamp receives every message
that becomes visible to it exactly once, in order, under concurrent senders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.domain.positions import wall_clock_ms
from tests.backends import Harness
from tests.e2e.server import Server

SENDERS = 6
PER_SENDER = 40


class Poller:
    """A client that always polls with the previous answer's nextTimestamp."""

    def __init__(self, client: httpx.AsyncClient, user: str, headers: dict[str, str]) -> None:
        self.client = client
        self.user = user
        self.headers = headers
        self.next: str | None = None
        self.received: list[dict[str, Any]] = []
        self.polls = 0

    async def poll(self, limit: int | None = None) -> dict[str, Any]:
        params: dict[str, str] = {}
        if self.next is not None:
            params["timestamp"] = self.next
        if limit is not None:
            params["limit"] = str(limit)
        r = await self.client.get(f"/v1/messages/{self.user}", params=params, headers=self.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        self.polls += 1
        if self.next is not None:
            assert int(body["nextTimestamp"]) >= int(self.next), "cursor went backwards"
        for m in body["messages"]:
            assert self.next is None or int(m["timestamp"]) > int(self.next)
        self.received += body["messages"]
        self.next = body["nextTimestamp"]
        return body

    async def drain(self, limit: int | None = None, rounds: int = 1000) -> None:
        for _ in range(rounds):
            if not (await self.poll(limit))["hasMore"]:
                return
        raise AssertionError("pages never ended")


def assert_exactly_once_in_order(received: list[dict[str, Any]], sent: set[str]) -> None:
    ids = [m["messageId"] for m in received]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert set(ids) == sent, f"missing {len(sent - set(ids))}, unexpected {len(set(ids) - sent)}"
    stamps = [int(m["timestamp"]) for m in received]
    assert stamps == sorted(stamps), "messages out of order"


async def run_contract(client: httpx.AsyncClient, token_mode: bool) -> tuple[int, int]:
    async def create(name: str) -> tuple[str, dict[str, str]]:
        body = (await client.post("/v1/users/create", json={"username": name})).json()
        return body["userId"], ({"Authorization": f"Bearer {body['token']}"} if token_mode else {})

    reader, rh = await create("reader")
    senders = [await create(f"s{i}") for i in range(SENDERS)]
    # In token mode the reader creates each group and so is its first member.
    members = [uid for uid, _ in senders] + ([] if token_mode else [reader])
    groups = []
    for g in range(3):
        r = await client.post("/v1/groups/create", json={"groupName": f"g{g}"}, headers=rh)
        gid = r.json()["groupId"]
        for uid in members:
            r = await client.post(f"/v1/groups/{gid}?op=add", json={"userId": uid}, headers=rh)
            assert r.status_code == 200, r.text
        assert reader in (await client.get(f"/v1/groups/{gid}", headers=rh)).json()["members"]
        groups.append(gid)

    poller = Poller(client, reader, rh)
    await poller.poll()  # start without timestamp
    sent: set[str] = set()
    done = asyncio.Event()

    async def sender(index: int) -> None:
        uid, headers = senders[index]
        for n in range(PER_SENDER):
            target = n % 4
            if target == 0:
                url, body = "/v1/messages/send?type=private", {"receiverId": reader}
            else:
                url, body = "/v1/messages/send?type=group", {"groupId": groups[target - 1]}
            r = await client.post(
                url, json={"senderId": uid, "message": f"{index}-{n}", **body}, headers=headers
            )
            assert r.status_code == 200, r.text
            sent.add(r.json()["messageId"])

    async def polling() -> None:
        while not done.is_set():
            await poller.drain(limit=7)
            await asyncio.sleep(0)

    poll_task = asyncio.create_task(polling())
    await asyncio.gather(*(sender(i) for i in range(SENDERS)))
    done.set()
    await poll_task
    await asyncio.sleep(0.01)  # let the frontier pass the last write
    await poller.drain(limit=7)
    assert_exactly_once_in_order(poller.received, sent)
    return len(sent), poller.polls


async def test_concurrent_senders_in_process(make_harness: Any) -> None:
    harness: Harness = await make_harness("token")
    count, polls = await run_contract(harness.client, token_mode=True)
    assert count == SENDERS * PER_SENDER
    assert polls > 10  # the poller really interleaved with the senders


@pytest.fixture
async def live_server(tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(tmp_path / "data", PARLEY_AUTH="none").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
async def test_concurrent_senders_real_server(live_server: Server) -> None:
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=live_server.url, limits=limits, timeout=10) as client:
        count, polls = await run_contract(client, token_mode=False)
    assert count == SENDERS * PER_SENDER and polls > 10


class StoppableClock:
    """The wall clock (unix ms) until the test sets ``frozen``."""

    def __init__(self) -> None:
        self.frozen: int | None = None

    def __call__(self) -> int:
        return wall_clock_ms() if self.frozen is None else self.frozen


async def test_hundreds_of_messages_in_one_millisecond(make_harness: Any) -> None:
    clock = StoppableClock()  # (skips where positions come from the database)
    harness: Harness = await make_harness("none", clock=clock)
    alice, _ = await harness.user("alice")
    bob, _ = await harness.user("bob")
    poller = Poller(harness.client, bob, {})
    await poller.poll()
    frozen = clock.frozen = wall_clock_ms() + 1000  # every send below lands in this ms
    results = await asyncio.gather(
        *(
            harness.client.post(
                "/v1/messages/send?type=private",
                json={"senderId": alice, "receiverId": bob, "message": f"m{i}"},
            )
            for i in range(300)
        )
    )
    sent = {r.json()["messageId"] for r in results}
    assert {r.json()["timestamp"] for r in results} == {str(frozen)}
    clock.frozen = frozen + 5
    await poller.drain(limit=100)  # pages smaller than the millisecond's messages
    assert_exactly_once_in_order(poller.received, sent)
    assert len(poller.received) == 300
