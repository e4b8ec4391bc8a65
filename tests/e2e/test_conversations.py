"""Conversations, read markers, receipts and history over HTTP, on every backend."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from parley.domain.models import Event
from tests.backends import Harness


async def send(
    api: Harness, headers: dict[str, str], sender: str, to: str, text: str = "hi"
) -> Any:
    kind = "group" if to.startswith("g_") else "private"
    field = "groupId" if kind == "group" else "receiverId"
    r = await api.client.post(
        f"/v1/messages/send?type={kind}",
        json={"senderId": sender, field: to, "message": text},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


async def settle() -> None:
    await asyncio.sleep(0.005)  # the frontier trails the clock by a millisecond


async def conversations(api: Harness, user: str, headers: dict[str, str], **q: Any) -> Any:
    r = await api.client.get(f"/v1/users/{user}/conversations", params=q, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def read(api: Harness, user: str, headers: dict[str, str], conv: str, ts: Any) -> Any:
    r = await api.client.post(
        f"/v1/users/{user}/read", json={"conversationId": conv, "timestamp": ts}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()


async def events_of(api: Harness, user: str) -> list[Event]:
    page = await api.parley.messages.check(None, user, None, 1000, include_events=True)
    return page.events


async def group(api: Harness, headers: dict[str, str], *members: str) -> str:
    r = await api.client.post("/v1/groups/create", json={"groupName": "team"}, headers=headers)
    gid = str(r.json()["groupId"])
    for m in members:
        r = await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": m}, headers=headers)
        assert r.status_code == 200, r.text
    return gid


async def test_history_pages_back_through_one_conversation(api: Harness) -> None:
    a, ha = await api.user("a")
    b, hb = await api.user("b")
    c, hc = await api.user("c")
    ours = []
    for i in range(9):
        ours.append(await send(api, ha, a, b, f"ab{i}") if i % 2 else await send(api, hb, b, a))
        await send(api, hc, c, a, "noise")
    await settle()
    seen: list[Any] = []
    before = None
    for _ in range(10):
        q = {"limit": 4, **({"before": before} if before else {})}
        r = await api.client.get(f"/v1/users/{a}/conversations/{b}/messages", params=q, headers=ha)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"messages", "hasMore", "nextBefore"}
        page = body["messages"]
        assert [int(m["timestamp"]) for m in page] == sorted(int(m["timestamp"]) for m in page)
        seen = page + seen
        assert body["nextBefore"] == page[0]["timestamp"]
        if not body["hasMore"]:
            break
        before = body["nextBefore"]
    assert [m["messageId"] for m in seen] == [m["messageId"] for m in ours]
    # the other side, and nobody else's token
    r = await api.client.get(f"/v1/users/{b}/conversations/{a}/messages", headers=hb)
    assert [m["messageId"] for m in r.json()["messages"]] == [m["messageId"] for m in ours]
    r = await api.client.get(f"/v1/users/{a}/conversations/{b}/messages", headers=hc)
    assert r.status_code == 403
    r = await api.client.get(f"/v1/users/{a}/conversations/u_nobody/messages", headers=ha)
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
    r = await api.client.get(f"/v1/users/{a}/conversations/{b}/messages?limit=0", headers=ha)
    assert r.status_code == 400


async def test_group_history_follows_membership(api: Harness) -> None:
    a, ha = await api.user("a")
    b, hb = await api.user("b")
    gid = await group(api, ha, b)
    sent = [await send(api, ha if i % 2 else hb, a if i % 2 else b, gid, f"g{i}") for i in range(5)]
    await settle()
    r = await api.client.get(f"/v1/users/{b}/conversations/{gid}/messages", headers=hb)
    assert [m["messageId"] for m in r.json()["messages"]] == [m["messageId"] for m in sent]
    assert r.json()["hasMore"] is False
    r = await api.client.post(f"/v1/groups/{gid}?op=remove", json={"userId": b}, headers=ha)
    assert r.status_code == 200
    r = await api.client.get(f"/v1/users/{b}/conversations/{gid}/messages", headers=hb)
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_member"


async def test_list_unread_read_markers_and_receipts(api: Harness) -> None:
    a, ha = await api.user("alice")
    b, hb = await api.user("bob")
    c, hc = await api.user("carol")
    gid = await group(api, ha, b, c)
    m1 = await send(api, hb, b, a, "one")
    await send(api, hb, b, a, "two")
    await send(api, hc, c, gid, "to the group")
    await send(api, ha, a, gid, "mine")
    await settle()
    body = await conversations(api, a, ha)
    assert body["hasMore"] is False
    convs = {c["conversationId"]: c for c in body["conversations"]}
    assert [c["conversationId"] for c in body["conversations"]] == [gid, b]
    assert convs[b] == {
        "conversationId": b,
        "type": "private",
        "name": "bob",
        "lastMessage": convs[b]["lastMessage"],
        "unreadCount": 2,
        "unreadCapped": False,
        "readUpTo": "0",
        "peerReadUpTo": "0",
    }
    assert convs[b]["lastMessage"]["message"] == "two"
    assert convs[gid]["unreadCount"] == 1 and convs[gid]["name"] == "team"
    assert "peerReadUpTo" not in convs[gid]
    # alice reads bob's first message: one unread left; bob sees the receipt
    assert await read(api, a, ha, b, m1["timestamp"]) == {
        "conversationId": b,
        "readUpTo": m1["timestamp"],
    }
    convs = {c["conversationId"]: c for c in (await conversations(api, a, ha))["conversations"]}
    assert convs[b]["readUpTo"] == m1["timestamp"]
    expected_unread = 1 if convs[b]["lastMessage"]["timestamp"] != m1["timestamp"] else 0
    assert convs[b]["unreadCount"] == expected_unread
    theirs = {c["conversationId"]: c for c in (await conversations(api, b, hb))["conversations"]}
    assert theirs[a]["peerReadUpTo"] == m1["timestamp"]
    assert theirs[a]["unreadCount"] == 0
    # an older marker is accepted and changes nothing; no event for it
    before = len(await events_of(api, a))
    assert (await read(api, a, ha, b, "1"))["readUpTo"] == m1["timestamp"]
    assert len(await events_of(api, a)) == before
    # a marker past the newest message stops at it
    last = convs[b]["lastMessage"]["timestamp"]
    assert (await read(api, a, ha, b, str(10**15)))["readUpTo"] == last
    await settle()
    mine = [e for e in await events_of(api, a) if e.type == "read"]
    moves = list(dict.fromkeys([m1["timestamp"], last]))  # one move if one millisecond
    assert [e.fields for e in mine] == [{"conversationId": b, "readUpTo": t} for t in moves]
    receipts = [e for e in await events_of(api, b) if e.type == "receipt"]
    assert [e.fields for e in receipts][-1] == {
        "conversationId": a,
        "userId": a,
        "readUpTo": last,
    }
    # group read: a read event for alice's devices, no receipt for anyone
    await read(api, a, ha, gid, convs[gid]["lastMessage"]["timestamp"])
    await settle()
    assert not [e for e in await events_of(api, c) if e.type in ("receipt", "read")]
    assert [e.type for e in await events_of(api, b)].count("receipt") == len(moves)
    convs = {c["conversationId"]: c for c in (await conversations(api, a, ha))["conversations"]}
    assert convs[gid]["unreadCount"] == 0


async def test_no_receipt_to_a_user_the_reader_blocks(api: Harness) -> None:
    a, ha = await api.user("a")
    b, hb = await api.user("b")
    m = await send(api, hb, b, a)
    r = await api.client.post(f"/v1/users/{a}?op=block", json={"blockedUserId": b}, headers=ha)
    assert r.status_code == 200
    await settle()
    await read(api, a, ha, b, m["timestamp"])
    await settle()
    assert [e.type for e in await events_of(api, a)] == ["read"]
    assert [e for e in await events_of(api, b) if e.type == "receipt"] == []


async def test_two_devices_marking_at_once_end_at_the_larger(api: Harness) -> None:
    a, ha = await api.user("a")
    b, hb = await api.user("b")
    sent = [await send(api, hb, b, a, f"m{i}") for i in range(12)]
    await settle()
    stamps = [m["timestamp"] for m in sent]
    rng = random.Random(5)
    marks = [rng.choice(stamps) for _ in range(16)]
    await asyncio.gather(*(read(api, a, ha, b, t) for t in marks))
    top = max(marks, key=int)
    convs = {c["conversationId"]: c for c in (await conversations(api, a, ha))["conversations"]}
    assert convs[b]["readUpTo"] == top
    assert convs[b]["unreadCount"] == sum(1 for t in stamps if int(t) > int(top))
    await settle()
    reads = [int(e.fields["readUpTo"]) for e in await events_of(api, a) if e.type == "read"]
    assert max(reads) == int(top)  # the marker's final value reached the other devices
    assert len(reads) == len(set(reads))  # a value is announced once


async def test_unread_counts_follow_a_model(api: Harness) -> None:
    rng = random.Random(11)
    people = [await api.user(f"p{i}") for i in range(3)]
    ids = [p for p, _ in people]
    heads = dict(people)
    gid = await group(api, heads[ids[0]], *ids[1:])
    sent: list[Any] = []
    marker: dict[tuple[str, str], int] = {}
    for _ in range(50):
        if rng.random() < 0.65:
            sender = rng.choice(ids)
            to = rng.choice([gid, *[p for p in ids if p != sender]])
            sent.append(await send(api, heads[sender], sender, to))
        else:
            user = rng.choice(ids)
            conv = rng.choice([gid, *[p for p in ids if p != user]])
            await settle()
            r = await api.client.get(
                f"/v1/users/{user}/conversations/{conv}/messages", headers=heads[user]
            )
            page = r.json()["messages"]
            if page:
                ts = int(rng.choice(page)["timestamp"])
                await read(api, user, heads[user], conv, str(ts))
                marker[(user, conv)] = max(marker.get((user, conv), 0), ts)
    await settle()
    for user in ids:
        listed = (await conversations(api, user, heads[user]))["conversations"]
        for c in listed:
            conv = c["conversationId"]
            if conv == gid:
                theirs = [m for m in sent if m["recipientId"] == gid and m["senderId"] != user]
            else:
                theirs = [m for m in sent if m["recipientId"] == user and m["senderId"] == conv]
            mark = marker.get((user, conv), 0)
            assert c["readUpTo"] == str(mark)
            assert c["unreadCount"] == sum(1 for m in theirs if int(m["timestamp"]) > mark)


async def test_list_pages_by_activity(api: Harness) -> None:
    a, ha = await api.user("a")
    peers = [await api.user(f"p{i}") for i in range(5)]
    for p, hp in peers:
        await send(api, hp, p, a)
        await asyncio.sleep(0.003)  # distinct milliseconds
    await settle()
    first = await conversations(api, a, ha, limit=2)
    assert first["hasMore"] is True
    names = [c["name"] for c in first["conversations"]]
    assert names == ["p4", "p3"]
    oldest = first["conversations"][-1]["lastMessage"]["timestamp"]
    rest = await conversations(api, a, ha, limit=10, before=oldest)
    assert [c["name"] for c in rest["conversations"]] == ["p2", "p1", "p0"]
    assert rest["hasMore"] is False


async def test_open_mode_reads_for_anyone(open_api: Harness) -> None:
    a, _ = await open_api.user("a")
    b, _ = await open_api.user("b")
    m = await send(open_api, {}, b, a)
    await settle()
    assert (await read(open_api, a, {}, b, int(m["timestamp"])))["readUpTo"] == m["timestamp"]
    r = await open_api.client.post(f"/v1/users/{a}/read", json={"conversationId": b})
    assert r.status_code == 400
    r = await open_api.client.post(
        f"/v1/users/{a}/read", json={"conversationId": b, "timestamp": "-1"}
    )
    assert r.status_code == 400


async def test_the_list_gives_a_cursor_for_what_comes_after_it(api: Harness) -> None:
    a, ha = await api.user("a")
    b, hb = await api.user("b")
    old = await send(api, hb, b, a, "before the list")
    await settle()
    listed = await conversations(api, a, ha)
    assert listed["conversations"][0]["lastMessage"]["messageId"] == old["messageId"]
    cursor = listed["nextTimestamp"]
    assert int(cursor) >= int(old["timestamp"])
    new = await send(api, hb, b, a, "after the list")
    await settle()
    r = await api.client.get(f"/v1/messages/{a}", params={"timestamp": cursor}, headers=ha)
    assert [m["messageId"] for m in r.json()["messages"]] == [new["messageId"]]
