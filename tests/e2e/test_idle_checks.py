"""An idle check ("nothing new since T") touches no storage at all."""

from __future__ import annotations

import asyncio
import math
import time

from tests.backends import Harness


async def test_idle_checks_make_no_storage_calls(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    gid = (await api.client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)).json()[
        "groupId"
    ]
    await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": bob}, headers=ha)
    await api.client.post(
        "/v1/messages/send?type=group",
        json={"senderId": alice, "groupId": gid, "message": "x"},
        headers=ha,
    )
    cursor = "0"
    for _ in range(100):  # the message passes the frontier within a millisecond
        body = (await api.client.get(f"/v1/messages/{bob}?timestamp={cursor}", headers=hb)).json()
        cursor = body["nextTimestamp"]
        if body["messages"]:
            break
    assert [m["message"] for m in body["messages"]] == ["x"]
    calls = api.parley.storage.calls
    before = sum(calls.values())
    idle_before = api.parley.messages.idle_checks
    link = api.parley.redis
    covered = 0  # checks that ran wholly inside one trust lease of the shared cache
    for _ in range(200):
        if link is not None:  # Redis is trusted only under a lease (docs/scale-out.md)
            for _ in range(200):
                if link.usable:
                    break
                await asyncio.sleep(0.01)
        lease_end = link.trusted_until if link is not None else math.inf
        ahead = sum(calls.values())
        r = await api.client.get(f"/v1/messages/{bob}?timestamp={cursor}", headers=hb)
        assert r.status_code == 200
        assert r.json() == {"messages": [], "nextTimestamp": cursor, "hasMore": False}
        if time.monotonic() < lease_end:
            covered += 1
            assert sum(calls.values()) == ahead, dict(calls)
    if link is None:
        assert sum(calls.values()) == before, dict(calls)
        assert api.parley.messages.idle_checks == idle_before + 200
    # On a loaded machine a lease can lapse (the process then reads PostgreSQL, which is
    # right, only slower); most checks still run under one.
    assert covered >= 100
    assert api.parley.messages.idle_checks >= idle_before + covered

    # ...and a new message is not hidden by the cache: the next check delivers it.
    await api.client.post(
        "/v1/messages/send?type=group",
        json={"senderId": alice, "groupId": gid, "message": "y"},
        headers=ha,
    )
    got: list[str] = []
    for _ in range(100):
        r = await api.client.get(f"/v1/messages/{bob}?timestamp={cursor}", headers=hb)
        got += [m["message"] for m in r.json()["messages"]]
        cursor = r.json()["nextTimestamp"]
        if got:
            break
    assert got == ["y"]
    assert sum(calls.values()) > before


async def test_idle_check_after_restart_uses_last_position(make_harness: object) -> None:
    """A fresh process knows nothing changed after the last stored position."""
    harness: Harness = await make_harness("none")  # type: ignore[operator]
    alice, _ = await harness.user("alice")
    await harness.client.post(
        "/v1/messages/send?type=private",
        json={"senderId": alice, "receiverId": alice, "message": "x"},
    )
    last = await harness.parley.storage.last_position()
    harness.parley.messages.idle_checks = 0
    await harness.parley.changes.start(last)  # what start-up does
    before = sum(harness.parley.storage.calls.values())
    r = await harness.client.get(f"/v1/messages/{alice}?timestamp={last}")
    assert r.json()["messages"] == []
    assert harness.parley.messages.idle_checks == 1
    assert sum(harness.parley.storage.calls.values()) == before


async def test_idle_checks_with_events_make_no_storage_calls(api: Harness) -> None:
    """include=events and nothing new: no storage call. An event wakes only the checks
    that ask for events; the others stay idle."""
    _, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    r = await api.client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)
    gid = r.json()["groupId"]
    await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": bob}, headers=ha)
    cursor = "0"
    for _ in range(100):  # the membership event passes the frontier within a millisecond
        r = await api.client.get(
            f"/v1/messages/{bob}", params={"timestamp": cursor, "include": "events"}, headers=hb
        )
        cursor = r.json()["nextTimestamp"]
        if r.json()["events"]:
            break
    assert [e["type"] for e in r.json()["events"]] == ["member_added"]
    calls = api.parley.storage.calls
    link = api.parley.redis

    async def idle(include: str | None) -> int:
        """Checks inside one trust lease of the shared cache that made no storage call."""
        covered = 0
        for _ in range(50):
            if link is not None:
                for _ in range(200):
                    if link.usable:
                        break
                    await asyncio.sleep(0.01)
            lease_end = link.trusted_until if link is not None else math.inf
            ahead = sum(calls.values())
            params = {"timestamp": cursor, **({"include": include} if include else {})}
            r = await api.client.get(f"/v1/messages/{bob}", params=params, headers=hb)
            assert r.status_code == 200
            expected: dict[str, object] = {"messages": [], "nextTimestamp": cursor}
            expected["hasMore"] = False
            if include:
                expected["events"] = []
            assert r.json() == expected
            if time.monotonic() < lease_end:
                covered += 1
                assert sum(calls.values()) == ahead, dict(calls)
        return covered

    assert await idle("events") >= 25
    assert await idle("sent,events") >= 25
    # an event (a rename) arrives: checks without events stay idle and unchanged
    r = await api.client.post(f"/v1/groups/{gid}?op=rename", json={"groupName": "h"}, headers=ha)
    assert r.status_code == 200
    assert await idle(None) >= 25
    got: list[str] = []
    for _ in range(100):
        r = await api.client.get(
            f"/v1/messages/{bob}", params={"timestamp": cursor, "include": "events"}, headers=hb
        )
        got += [e["type"] for e in r.json()["events"]]
        if got:
            break
        await asyncio.sleep(0.002)
    assert got == ["group_renamed"]
