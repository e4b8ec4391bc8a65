"""Three real ``parley serve`` processes on one PostgreSQL and one Redis.

Concurrent senders spread over all three; pollers follow nextTimestamp through all three
in turn and must receive every message exactly once, in order. One process reaches Redis
through a proxy that the test cuts mid-run: no wrong answer, no 5xx, and it recovers.
Blocks and removals made through one process hold on the very next request to the others,
also while that process is cut off from Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server
from tests.integration import services
from tests.integration.redis_proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

SENDERS = 6
PER_SENDER = 30
DEADLINE = 60.0  # seconds any phase may take


class Fleet:
    def __init__(self, servers: list[Server], proxy: TcpProxy) -> None:
        self.servers = servers
        self.proxy = proxy
        self.client = httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=64))
        self.statuses: Counter[int] = Counter()
        self._turn = itertools.count()

    def url(self, index: int | None = None) -> str:
        if index is None:
            index = next(self._turn) % len(self.servers)
        return self.servers[index].url

    async def call(
        self, method: str, path: str, token: str | None = None, via: int | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.client.request(method, self.url(via) + path, headers=headers, **kw)
        self.statuses[r.status_code] += 1
        return r

    async def user(self, name: str) -> tuple[str, str]:
        r = await self.call("POST", "/v1/users/create", json={"username": name})
        assert r.status_code == 200, r.text
        return r.json()["userId"], r.json()["token"]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    port = int(services.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = await TcpProxy(port).start()
    try:
        # the third process reaches Redis through a proxy the tests can cut
        envs = [{}, {}, {"PARLEY_REDIS_URL": proxy.url}]
        async with services.postgres_servers(tmp_path, envs) as servers:
            running = Fleet(servers, proxy)
            yield running
            await running.client.aclose()
    finally:
        await proxy.stop()


async def ready(fleet: Fleet, index: int) -> dict[str, Any]:
    r = await fleet.call("GET", "/readyz", via=index)
    assert r.status_code == 200, r.text  # Redis down is degraded, never unready
    body: dict[str, Any] = r.json()
    return body


async def metric(fleet: Fleet, index: int, name: str) -> float:
    r = await fleet.call("GET", "/metrics", via=index)
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


async def wait_for(fleet: Fleet, index: int, status: str) -> None:
    deadline = time.monotonic() + 15
    while (await ready(fleet, index))["status"] != status:
        assert time.monotonic() < deadline, f"process {index} never became {status}"
        await asyncio.sleep(0.1)


async def test_three_processes_keep_every_guarantee(fleet: Fleet) -> None:
    # users and a group, made through different processes
    receivers = [await fleet.user(f"r{i}") for i in range(3)]
    senders = [await fleet.user(f"s{i}") for i in range(SENDERS)]
    _, owner_token = senders[0]
    r = await fleet.call("POST", "/v1/groups/create", owner_token, json={"groupName": "all"})
    group = r.json()["groupId"]
    for user_id, _ in receivers + senders[1:]:
        r = await fleet.call(
            "POST", f"/v1/groups/{group}?op=add", owner_token, json={"userId": user_id}
        )
        assert r.status_code == 200, r.text

    # phase 1: concurrent sends and round-robin pollers; Redis is cut for process 2 mid-run
    expected: dict[str, set[str]] = {user_id: set() for user_id, _ in receivers}
    received: dict[str, list[dict[str, Any]]] = {user_id: [] for user_id, _ in receivers}
    sending_done = asyncio.Event()

    async def sender(n: int) -> None:
        user_id, token = senders[n]
        for i in range(PER_SENDER):
            if i % 3 == 0:
                body = {"senderId": user_id, "groupId": group, "message": f"{n}/{i}"}
                r = await fleet.call("POST", "/v1/messages/send?type=group", token, json=body)
                targets = list(expected)
            else:
                to = receivers[(n + i) % len(receivers)][0]
                body = {"senderId": user_id, "receiverId": to, "message": f"{n}/{i}"}
                r = await fleet.call("POST", "/v1/messages/send?type=private", token, json=body)
                targets = [to]
            assert r.status_code == 200, r.text
            for target in targets:
                expected[target].add(r.json()["messageId"])

    async def poller(user_id: str, token: str) -> None:
        cursor: str | None = None
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            finished = sending_done.is_set()
            params = {"timestamp": cursor, "limit": "50"} if cursor else {"limit": "50"}
            if cursor and not finished:
                params["wait"] = "1"
            r = await fleet.call("GET", f"/v1/messages/{user_id}", token, params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            received[user_id] += page["messages"]
            cursor = page["nextTimestamp"]
            if (
                finished
                and not page["hasMore"]
                and len(received[user_id]) >= len(expected[user_id])
            ):
                return

    async def outage() -> None:
        await asyncio.sleep(0.5)
        fleet.proxy.cut("hang")
        await asyncio.sleep(1.0)
        fleet.proxy.cut("refuse")
        await asyncio.sleep(1.0)
        fleet.proxy.restore()

    pollers = [asyncio.create_task(poller(u, t)) for u, t in receivers]
    await asyncio.gather(*(sender(n) for n in range(SENDERS)), outage())
    sending_done.set()
    await asyncio.wait_for(asyncio.gather(*pollers), DEADLINE + 5)

    for user_id, messages in received.items():
        ids = [m["messageId"] for m in messages]
        assert len(ids) == len(set(ids)), "a message was delivered twice"
        assert set(ids) == expected[user_id], "a message was lost or is not the user's"
        stamps = [int(m["timestamp"]) for m in messages]
        assert stamps == sorted(stamps), "messages out of order"
    assert sum(n for status, n in fleet.statuses.items() if status >= 500) == 0
    assert await metric(fleet, 2, "parley_redis_failures_total") > 0  # the cut was felt
    await wait_for(fleet, 2, "ok")

    # phase 2: blocks and removals hold on the very next request elsewhere
    alice, alice_token = senders[1]
    bob, bob_token = receivers[0]
    carol, carol_token = receivers[1]
    for via in range(3):
        r = await fleet.call("POST", f"/v1/users/{bob}?op=block", bob_token, via=via,
                             json={"blockedUserId": alice})  # fmt: skip
        assert r.status_code == 200, r.text
        for other in range(3):
            body = {"senderId": alice, "receiverId": bob, "message": "blocked?"}
            r = await fleet.call("POST", "/v1/messages/send?type=private", alice_token,
                                 via=other, json=body)  # fmt: skip
            assert r.status_code == 403, (via, other, r.text)
        r = await fleet.call("POST", f"/v1/users/{bob}?op=unblock", bob_token, via=via,
                             json={"blockedUserId": alice})  # fmt: skip
        assert r.status_code == 200
        for other in range(3):
            body = {"senderId": alice, "receiverId": bob, "message": "friends"}
            r = await fleet.call("POST", "/v1/messages/send?type=private", alice_token,
                                 via=other, json=body)  # fmt: skip
            assert r.status_code == 200, (via, other, r.text)

    # a removal through the process that is cut off from Redis
    fleet.proxy.cut("hang")
    r = await fleet.call("POST", f"/v1/groups/{group}?op=remove", carol_token, via=2,
                         json={"userId": carol})  # fmt: skip
    assert r.status_code == 200, r.text
    for other in range(3):
        body = {"senderId": carol, "groupId": group, "message": "still in?"}
        r = await fleet.call("POST", "/v1/messages/send?type=group", carol_token, via=other,
                             json=body)  # fmt: skip
        assert r.status_code == 403, (other, r.text)
        r = await fleet.call("GET", f"/v1/users/{carol}/groups", carol_token, via=other)
        assert r.json()["groups"] == []
        r = await fleet.call("GET", f"/v1/messages/{carol}", carol_token, via=other)
        assert all(m["type"] == "private" for m in r.json()["messages"])
    assert (await ready(fleet, 2))["status"] == "degraded"
    fleet.proxy.restore()
    await wait_for(fleet, 2, "ok")
    r = await fleet.call("POST", f"/v1/groups/{group}?op=add", owner_token, via=2,
                         json={"userId": carol})  # fmt: skip
    assert r.status_code == 200
    body = {"senderId": carol, "groupId": group, "message": "back"}
    r = await fleet.call("POST", "/v1/messages/send?type=group", carol_token, via=0, json=body)
    assert r.status_code == 200
    assert sum(n for status, n in fleet.statuses.items() if status >= 500) == 0


async def test_a_write_through_one_process_is_seen_by_the_next_poll_anywhere(
    fleet: Fleet,
) -> None:
    """Idle polls are answered from the wake-ups a process heard (no Redis call), yet a
    message acknowledged through one process is in the very next poll through another."""
    alice, alice_token = await fleet.user("alice")
    bob, bob_token = await fleet.user("bob")
    r = await fleet.call("GET", f"/v1/messages/{bob}", bob_token, via=0)
    cursor = r.json()["nextTimestamp"]
    name = "parley_poll_looks_skipped_total"
    before = [await metric(fleet, i, name) for i in (0, 1)]
    for i in range(60):
        writer, reader = i % 2, 1 - i % 2
        for _ in range(3):
            r = await fleet.call("GET", f"/v1/messages/{bob}", bob_token, via=reader,
                                 params={"timestamp": cursor})  # fmt: skip
            assert r.status_code == 200 and r.json()["messages"] == [], r.text
        body = {"senderId": alice, "receiverId": bob, "message": f"m{i}"}
        r = await fleet.call("POST", "/v1/messages/send?type=private", alice_token,
                             via=writer, json=body)  # fmt: skip
        assert r.status_code == 200, r.text
        r = await fleet.call("GET", f"/v1/messages/{bob}", bob_token, via=reader,
                             params={"timestamp": cursor})  # fmt: skip
        page = r.json()
        assert [m["message"] for m in page["messages"]] == [f"m{i}"], (i, page)
        cursor = page["nextTimestamp"]
    after = [await metric(fleet, i, name) for i in (0, 1)]
    assert sum(after) > sum(before)  # the polls between the writes needed no look
    for i in (0, 1):  # each acknowledged the other's wake-ups
        assert await metric(fleet, i, "parley_wakeup_acks_sent_total") > 0
        assert await metric(fleet, i, "parley_listener_lease") in (0, 1)


KINDS = {"edit": "message_edited", "delete": "message_deleted"}


async def test_messages_and_events_through_one_cursor(fleet: Fleet) -> None:
    """Two processes: concurrent sends, edits, deletes and renames; pollers with
    include=events alternate between the processes and receive every message and every
    event that concerns them exactly once, in cursor order."""
    receivers = [await fleet.user(f"r{i}") for i in range(2)]
    senders = [await fleet.user(f"s{i}") for i in range(4)]
    _, owner_token = senders[0]
    r = await fleet.call("POST", "/v1/groups/create", owner_token, via=0, json={"groupName": "g"})
    group = r.json()["groupId"]
    for user_id, _ in receivers + senders[1:]:
        r = await fleet.call("POST", f"/v1/groups/{group}?op=add", owner_token, via=1,
                             json={"userId": user_id})  # fmt: skip
        assert r.status_code == 200, r.text
    starts = {}
    for user_id, token in receivers:
        r = await fleet.call("GET", f"/v1/messages/{user_id}", token, via=0,
                             params={"include": "events"})  # fmt: skip
        starts[user_id] = r.json()["nextTimestamp"]

    messages: dict[str, set[str]] = {u: set() for u, _ in receivers}
    events: dict[str, Counter[str]] = {u: Counter() for u, _ in receivers}  # type -> count
    received: dict[str, list[list[dict[str, Any]]]] = {u: [] for u, _ in receivers}
    done = asyncio.Event()
    rounds = 12

    async def sender(n: int) -> None:
        user_id, token = senders[n]
        for i in range(rounds):
            via = (n + i) % 2
            if i % 2 == 0:
                body = {"senderId": user_id, "groupId": group, "message": f"{n}/{i}"}
                r = await fleet.call("POST", "/v1/messages/send?type=group", token, via=via,
                                     json=body)  # fmt: skip
                targets = list(messages)
            else:
                to = receivers[(n + i) % 2][0]
                body = {"senderId": user_id, "receiverId": to, "message": f"{n}/{i}"}
                r = await fleet.call("POST", "/v1/messages/send?type=private", token, via=via,
                                     json=body)  # fmt: skip
                targets = [to]
            assert r.status_code == 200, r.text
            mid = r.json()["messageId"]
            for target in targets:
                messages[target].add(mid)
            op = ("edit", "delete", None)[i % 3]
            if op is not None:
                r = await fleet.call("POST", f"/v1/messages/{mid}?op={op}", token, via=1 - via,
                                     json={"message": f"{n}/{i} again"})  # fmt: skip
                assert r.status_code == 200, r.text
                for target in targets:
                    events[target][KINDS[op]] += 1
            if n == 0 and i % 4 == 0:
                r = await fleet.call("POST", f"/v1/groups/{group}?op=rename", token, via=via,
                                     json={"groupName": f"g{i}"})  # fmt: skip
                assert r.status_code == 200, r.text
                for target in messages:
                    events[target]["group_renamed"] += 1

    async def poller(user_id: str, token: str) -> None:
        cursor = starts[user_id]
        deadline = time.monotonic() + DEADLINE
        turn = 0
        want = 0
        while time.monotonic() < deadline:
            finished = done.is_set()
            params = {"timestamp": cursor, "limit": "7", "include": "events"}
            if not finished:
                params["wait"] = "1"
            turn += 1
            r = await fleet.call("GET", f"/v1/messages/{user_id}", token, via=turn % 2,
                                 params=params)  # fmt: skip
            assert r.status_code == 200, r.text
            page = r.json()
            if page["messages"] or page["events"]:
                received[user_id].append(page["messages"] + page["events"])
            cursor = page["nextTimestamp"]
            got = sum(len(p) for p in received[user_id])
            want = len(messages[user_id]) + sum(events[user_id].values())
            if finished and not page["hasMore"] and got >= want:
                return

    pollers = [asyncio.create_task(poller(u, t)) for u, t in receivers]
    await asyncio.gather(*(sender(n) for n in range(len(senders))))
    done.set()
    await asyncio.wait_for(asyncio.gather(*pollers), DEADLINE + 5)

    for user_id, pages in received.items():
        items = [item for page in pages for item in page]
        got_messages = [i["messageId"] for i in items if "eventId" not in i]
        got_events = [i for i in items if "eventId" in i]
        assert len(got_messages) == len(set(got_messages)), "a message was delivered twice"
        assert set(got_messages) == messages[user_id], "a message was lost"
        ids = [e["eventId"] for e in got_events]
        assert len(ids) == len(set(ids)), "an event was delivered twice"
        assert Counter(e["type"] for e in got_events) == events[user_id], "an event was lost"
        for earlier, later in itertools.pairwise(pages):  # pages never overlap in time
            assert max(int(i["timestamp"]) for i in earlier) < min(
                int(i["timestamp"]) for i in later
            ), "out of order"
        for page in pages:
            for kind in (
                [i for i in page if "eventId" not in i],
                [i for i in page if "eventId" in i],
            ):
                stamps = [int(i["timestamp"]) for i in kind]
                assert stamps == sorted(stamps), "out of order within a page"
    assert sum(n for status, n in fleet.statuses.items() if status >= 500) == 0
