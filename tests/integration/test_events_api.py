"""Change events over HTTP on every backend: edits and deletes, group changes, the
include parameter, and answers without events unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.backends import Harness


async def send(api: Harness, headers: dict[str, str], sender: str, to: str, text: str) -> Any:
    kind = "group" if to.startswith("g_") else "private"
    field = "groupId" if kind == "group" else "receiverId"
    r = await api.client.post(
        f"/v1/messages/send?type={kind}",
        json={"senderId": sender, field: to, "message": text},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


async def check(
    api: Harness, user: str, headers: dict[str, str], after: str | None = None, **query: str
) -> Any:
    params = dict(query)
    if after is not None:
        params["timestamp"] = after
    r = await api.client.get(f"/v1/messages/{user}", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def poll_all(
    api: Harness, user: str, headers: dict[str, str], cursor: str, **query: str
) -> tuple[list[Any], list[Any], str]:
    """Everything after ``cursor`` (pages until none is left)."""
    messages: list[Any] = []
    events: list[Any] = []
    await asyncio.sleep(0.003)  # the frontier trails the clock by a millisecond
    for _ in range(50):
        body = await check(api, user, headers, cursor, include="events", **query)
        messages += body["messages"]
        events += body["events"]
        cursor = body["nextTimestamp"]
        if not body["hasMore"]:
            break
    return messages, events, cursor


async def test_edit_and_delete_reach_both_users(api: Harness) -> None:
    a, ha = await api.user("ann")
    b, hb = await api.user("bob")
    start_a = (await check(api, a, ha))["nextTimestamp"]
    start_b = (await check(api, b, hb))["nextTimestamp"]
    sent = await send(api, ha, a, b, "helo")
    mid = sent["messageId"]
    # only the sender; someone who cannot see it gets 404
    _, hc = await api.user("cy")
    r = await api.client.post(f"/v1/messages/{mid}?op=edit", json={"message": "x"}, headers=hb)
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_sender"
    r = await api.client.post(f"/v1/messages/{mid}?op=edit", json={"message": "x"}, headers=hc)
    assert r.status_code == 404 and r.json()["error"]["code"] == "message_not_found"
    r = await api.client.post("/v1/messages/m_nothing?op=delete", headers=ha)
    assert r.status_code == 404
    r = await api.client.post(f"/v1/messages/{mid}?op=paint", headers=ha)
    assert r.status_code == 400
    r = await api.client.post(f"/v1/messages/{mid}?op=edit", json={}, headers=ha)
    assert r.status_code == 400

    r = await api.client.post(f"/v1/messages/{mid}?op=edit", json={"message": "hello"}, headers=ha)
    assert r.status_code == 200, r.text
    edited = r.json()
    assert edited["messageId"] == mid and edited["timestamp"] == sent["timestamp"]
    assert edited["message"] == "hello" and int(edited["editedAt"]) >= int(sent["timestamp"])
    full = await check(api, b, hb)
    assert [(m["message"], m.get("editedAt")) for m in full["messages"]] == [
        ("hello", edited["editedAt"])
    ]
    messages, events, _ = await poll_all(api, b, hb, start_b)
    assert [m["messageId"] for m in messages] == [mid]
    assert [(e["type"], e["messageId"], e["conversationId"]) for e in events] == [
        ("message_edited", mid, a)
    ]
    assert events[0]["message"] == "hello" and events[0]["editedAt"] == edited["editedAt"]
    _, events_a, _ = await poll_all(api, a, ha, start_a)  # own devices too
    assert [(e["type"], e["conversationId"]) for e in events_a] == [("message_edited", b)]

    r = await api.client.post(f"/v1/messages/{mid}?op=delete", headers=ha)
    assert r.status_code == 200, r.text
    gone = r.json()
    assert gone["deleted"] is True and "message" not in gone
    assert gone["timestamp"] == sent["timestamp"]
    r = await api.client.post(f"/v1/messages/{mid}?op=delete", headers=ha)
    assert r.status_code == 200  # twice: nothing more
    r = await api.client.post(f"/v1/messages/{mid}?op=edit", json={"message": "x"}, headers=ha)
    assert r.status_code == 409 and r.json()["error"]["code"] == "message_deleted"
    full = await check(api, b, hb)
    assert full["messages"][0]["deleted"] is True and "message" not in full["messages"][0]
    _, events, _ = await poll_all(api, b, hb, start_b)
    assert [e["type"] for e in events] == ["message_edited", "message_deleted"]
    assert "message" not in events[0]  # the edit's text went with the message


async def test_answers_without_events_are_unchanged(api: Harness) -> None:
    a, ha = await api.user("ann")
    b, hb = await api.user("bob")
    start = (await check(api, b, hb))["nextTimestamp"]
    await send(api, ha, a, b, "one")
    await asyncio.sleep(0.003)
    plain = await api.client.get(f"/v1/messages/{b}?timestamp={start}", headers=hb)
    assert b'"events"' not in plain.content
    assert set(plain.json()) == {"messages", "nextTimestamp", "hasMore"}
    assert set(plain.json()["messages"][0]) == {
        "messageId", "type", "senderId", "recipientId", "message", "timestamp",
    }  # fmt: skip
    both = await check(api, b, hb, start, include="sent,events")
    assert both["events"] == [] and len(both["messages"]) == 1
    assert (await check(api, b, hb, start, include="events,sent"))["events"] == []
    r = await api.client.get(f"/v1/messages/{b}?include=everything", headers=hb)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_include"


async def test_group_changes_reach_every_member_once(api: Harness) -> None:
    owner, ho = await api.user("owner")
    b, hb = await api.user("bee")
    c, hc = await api.user("cee")
    r = await api.client.post("/v1/groups/create", json={"groupName": "team"}, headers=ho)
    group = r.json()["groupId"]
    start = {
        u: (await check(api, u, h))["nextTimestamp"] for u, h in ((owner, ho), (b, hb), (c, hc))
    }
    for user in (b, c):
        r = await api.client.post(f"/v1/groups/{group}?op=add", json={"userId": user}, headers=ho)
        assert r.status_code == 200, r.text
    r = await api.client.post(f"/v1/groups/{group}?op=promote", json={"userId": b}, headers=ho)
    assert r.status_code == 200, r.text
    r = await api.client.post(
        f"/v1/groups/{group}?op=rename", json={"groupName": "crew"}, headers=hb
    )
    assert r.status_code == 200, r.text
    msg = await send(api, hc, c, group, "group words")
    r = await api.client.post(f"/v1/groups/{group}?op=remove", json={"userId": c}, headers=hb)
    assert r.status_code == 200, r.text

    _, seen_owner, _ = await poll_all(api, owner, ho, start[owner])
    kinds = [(e["type"], e.get("userId")) for e in seen_owner]
    assert kinds == [
        ("member_added", b),
        ("member_added", c),
        ("role_changed", b),
        ("group_renamed", None),
        ("member_removed", c),
    ]
    assert seen_owner[2]["role"] == "admin" and seen_owner[3]["groupName"] == "crew"
    assert seen_owner[4]["by"] == b and seen_owner[4]["groupId"] == group
    assert len({e["eventId"] for e in seen_owner}) == 5
    messages_b, seen_b, _ = await poll_all(api, b, hb, start[b])
    assert [e["eventId"] for e in seen_b] == [e["eventId"] for e in seen_owner]
    assert [m["messageId"] for m in messages_b] == [msg["messageId"]]
    # the removed user learns of its removal once, and no longer sees the group
    messages_c, seen_c, _ = await poll_all(api, c, hc, start[c])
    assert [e["type"] for e in seen_c].count("member_removed") == 1
    assert seen_c[-1]["type"] == "member_removed" and seen_c[-1]["userId"] == c
    assert messages_c == []
    # edits of group messages go to the group: c is gone, so c cannot edit nor see it
    r = await api.client.post(
        f"/v1/messages/{msg['messageId']}?op=edit", json={"message": "x"}, headers=hc
    )
    assert r.status_code == 404


async def test_open_mode_edits(open_api: Harness) -> None:
    a, _ = await open_api.user("ann")
    b, _ = await open_api.user("bob")
    sent = await send(open_api, {}, a, b, "first")
    mid = sent["messageId"]
    r = await open_api.client.post(
        f"/v1/messages/{mid}?op=edit", json={"message": "x", "senderId": b}
    )
    assert r.status_code == 403
    r = await open_api.client.post(
        f"/v1/messages/{mid}?op=edit", json={"message": "second", "senderId": a}
    )
    assert r.status_code == 200 and r.json()["message"] == "second"
    r = await open_api.client.post(f"/v1/messages/{mid}?op=delete")
    assert r.status_code == 200 and r.json()["deleted"] is True
