"""Typing notices: ephemeral, per conversation, never stored, never shown to a user who
blocked the typer; across processes through Redis pub/sub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.cache.base import Watch
from tests.backends import Harness
from tests.e2e.server import Server
from tests.integration import services


async def group_of(api: Harness, owner: dict[str, str], *members: str) -> str:
    r = await api.client.post("/v1/groups/create", json={"groupName": "g"}, headers=owner)
    group = str(r.json()["groupId"])
    for member in members:
        r = await api.client.post(f"/v1/groups/{group}?op=add", json={"userId": member},
                                  headers=owner)  # fmt: skip
        assert r.status_code == 200, r.text
    return group


async def test_typing_reaches_the_others_but_not_who_blocked_the_typer(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    carol, hc = await api.user("carol")
    group = await group_of(api, ha, bob, carol)
    watches = {user: Watch(typing=True) for user in (alice, bob, carol)}
    for user, watch in watches.items():
        api.parley.messages.listen(user, watch)

    r = await api.client.post(f"/v1/users/{alice}/typing", json={"conversationId": bob},
                              headers=ha)  # fmt: skip
    assert r.status_code == 200, r.text
    expires = int(r.json()["expiresAt"])
    (notice,) = watches[bob].take_signals()
    assert notice["type"] == "typing" and notice["userId"] == alice
    assert notice["conversationId"] == alice  # bob sees the conversation under alice's id
    assert int(notice["expiresAt"]) == expires and expires - int(notice["timestamp"]) == 5000
    assert watches[alice].signals == [] and watches[carol].signals == []

    r = await api.client.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice},
                              headers=hb)  # fmt: skip
    assert r.status_code == 200
    for conversation in (bob, group):
        r = await api.client.post(f"/v1/users/{alice}/typing",
                                  json={"conversationId": conversation}, headers=ha)  # fmt: skip
        assert r.status_code == 200, r.text
    assert watches[bob].signals == [] and not watches[bob].poked  # blocked: never shown
    (in_group,) = watches[carol].take_signals()
    assert in_group["conversationId"] == group and in_group["userId"] == alice

    # refusals: someone else's typing, a stranger's group, an unknown conversation
    r = await api.client.post(f"/v1/users/{alice}/typing", json={"conversationId": bob},
                              headers=hc)  # fmt: skip
    assert r.status_code == 403
    stranger, hs = await api.user("stranger")
    r = await api.client.post(f"/v1/users/{stranger}/typing", json={"conversationId": group},
                              headers=hs)  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_member"
    r = await api.client.post(f"/v1/users/{alice}/typing", json={"conversationId": "u_nobody"},
                              headers=ha)  # fmt: skip
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"

    # never stored: nothing of it comes through the cursor
    r = await api.client.get(f"/v1/messages/{carol}", params={"include": "events"}, headers=hc)
    assert all(e["type"] != "typing" for e in r.json()["events"])
    if api.parley.storage.name == "memory":
        assert "typing" not in repr(vars(api.parley.storage))


async def test_a_long_poll_with_events_answers_early_with_typing(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    r = await api.client.get(f"/v1/messages/{bob}", params={"include": "events"}, headers=hb)
    cursor = r.json()["nextTimestamp"]
    params = {"include": "sent,events", "timestamp": cursor, "wait": "20"}
    poll = asyncio.create_task(api.client.get(f"/v1/messages/{bob}", params=params, headers=hb))
    notifier = api.parley.notifier
    for _ in range(500):  # until the long-poll listens (bounded; no timing assumed)
        if notifier._listeners.get(bob):
            break
        await asyncio.sleep(0.01)
    assert notifier._listeners.get(bob), "the long-poll never listened"
    r = await api.client.post(f"/v1/users/{alice}/typing", json={"conversationId": bob},
                              headers=ha)  # fmt: skip
    assert r.status_code == 200
    answer = (await asyncio.wait_for(poll, 15)).json()
    assert answer["messages"] == [] and answer["nextTimestamp"] == cursor
    assert [(e["type"], e["userId"]) for e in answer["events"]] == [("typing", alice)]
    assert not notifier._listeners.get(bob)  # it stopped listening when it answered


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The data of each Server-Sent Event."""
    data = ""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
        elif not line and data:
            yield json.loads(data)
            data = ""


@pytest.fixture
async def two_processes(tmp_path: Path) -> AsyncIterator[list[Server]]:
    async with services.postgres_servers(tmp_path, [{}, {}]) as servers:
        yield servers


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
async def test_typing_crosses_processes_and_skips_who_blocked(two_processes: list[Server]) -> None:
    """Bob's live stream is on process 1; alice and carol type through process 0. Bob
    blocked alice: the first notice his stream shows is carol's, sent after alice's."""
    first, second = (httpx.AsyncClient(base_url=s.url, timeout=20) for s in two_processes)
    try:
        users = {}
        for name in ("alice", "bob", "carol"):
            body = (await first.post("/v1/users/create", json={"username": name})).json()
            users[name] = (body["userId"], {"Authorization": f"Bearer {body['token']}"})
        (alice, ha), (bob, hb), (carol, hc) = users["alice"], users["bob"], users["carol"]
        r = await first.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice},
                             headers=hb)  # fmt: skip
        assert r.status_code == 200
        url = f"/v1/messages/{bob}/stream?include=events"
        async with second.stream("GET", url, headers=hb) as stream:
            assert stream.status_code == 200
            chunks = sse(stream)

            async def typing() -> None:
                await asyncio.sleep(0.5)  # the stream is listening by then (a hint only:
                for _ in range(20):  # the notices repeat until the stream shows one)
                    for who, headers in ((alice, ha), (carol, hc)):
                        body = {"conversationId": bob}
                        r = await first.post(f"/v1/users/{who}/typing", json=body,
                                             headers=headers)  # fmt: skip
                        assert r.status_code == 200
                    await asyncio.sleep(0.25)

            task = asyncio.create_task(typing())
            try:
                async with asyncio.timeout(15):
                    async for page in chunks:
                        if page.get("events"):
                            break
            finally:
                task.cancel()
            shown = page["events"]
            assert shown and all(e["type"] == "typing" for e in shown)
            assert {e["userId"] for e in shown} == {carol}, shown
            assert shown[0]["conversationId"] == carol
    finally:
        await first.aclose()
        await second.aclose()
