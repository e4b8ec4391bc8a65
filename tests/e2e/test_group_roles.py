"""Groups as people run them, over HTTP: roles, rename, the member cap, blocks (token
mode), and the original rules in open mode."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.backends import Harness, MakeHarness


def code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


class Group:
    def __init__(self, api: Harness, group_id: str) -> None:
        self.api = api
        self.id = group_id

    async def op(self, op: str, headers: dict[str, str], **body: Any) -> httpx.Response:
        return await self.api.client.post(
            f"/v1/groups/{self.id}?op={op}", json=body, headers=headers
        )

    async def roles(self, headers: dict[str, str]) -> dict[str, str]:
        r = await self.api.client.get(f"/v1/groups/{self.id}", headers=headers)
        assert r.status_code == 200, r.text
        assert sorted(r.json()["roles"]) == r.json()["members"]
        return dict(r.json()["roles"])


async def new_group(api: Harness, headers: dict[str, str], name: str = "team") -> Group:
    r = await api.client.post("/v1/groups/create", json={"groupName": name}, headers=headers)
    assert r.status_code == 200, r.text
    return Group(api, r.json()["groupId"])


async def test_owner_admins_and_members(api: Harness) -> None:
    owner, ho = await api.user("olga")
    admin, ha = await api.user("adam")
    member, hm = await api.user("mia")
    other, _ = await api.user("otto")
    g = await new_group(api, ho)
    assert await g.roles(ho) == {owner: "owner"}
    for user in (admin, member):
        assert (await g.op("add", ho, userId=user)).status_code == 200
    r = await g.op("promote", ho, userId=admin)
    assert r.status_code == 200
    assert r.json() == {"groupId": g.id, "userId": admin, "member": True, "role": "admin"}
    assert await g.roles(hm) == {owner: "owner", admin: "admin", member: "member"}

    # a member may not add, remove others, promote or rename
    r = await g.op("add", hm, userId=other)
    assert r.status_code == 403 and code(r) == "not_allowed"
    r = await g.op("remove", hm, userId=admin)
    assert r.status_code == 403 and code(r) == "not_allowed"
    r = await g.op("promote", hm, userId=member)
    assert r.status_code == 403 and code(r) == "not_allowed"
    r = await g.op("rename", hm, groupName="mine")
    assert r.status_code == 403 and code(r) == "not_allowed"
    # an admin adds, renames and removes members, but neither promotes nor removes the owner
    assert (await g.op("add", ha, userId=other)).status_code == 200
    r = await g.op("rename", ha, groupName="  crew ")
    assert r.status_code == 200 and r.json() == {"groupId": g.id, "groupName": "crew"}
    r = await api.client.get(f"/v1/groups/{g.id}", headers=hm)
    assert r.json()["groupName"] == "crew"
    r = await api.client.get(f"/v1/users/{member}/groups", headers=hm)
    assert r.json()["groups"] == [{"groupId": g.id, "groupName": "crew"}]
    r = await g.op("promote", ha, userId=other)
    assert r.status_code == 403 and code(r) == "not_allowed"
    r = await g.op("remove", ha, userId=owner)
    assert r.status_code == 403 and code(r) == "not_allowed"
    assert (await g.op("remove", ha, userId=other)).status_code == 200
    # the owner's own mistakes are conflicts; bad input is 400
    r = await g.op("promote", ho, userId=admin)
    assert r.status_code == 409 and code(r) == "already_admin"
    r = await g.op("demote", ho, userId=member)
    assert r.status_code == 409 and code(r) == "already_member"
    r = await g.op("demote", ho, userId=owner)
    assert r.status_code == 409 and code(r) == "is_owner"
    r = await g.op("promote", ho, userId=other)
    assert r.status_code == 409 and code(r) == "not_in_group"
    r = await g.op("rename", ho, groupName=" ")
    assert r.status_code == 400
    r = await g.op("rename", ho)
    assert r.status_code == 400
    r = await g.op("promote", ho)
    assert r.status_code == 400
    # the owner leaves: the admin owns the group
    assert (await g.op("remove", ho, userId=owner)).status_code == 200
    assert await g.roles(ha) == {admin: "owner", member: "member"}
    r = await g.op("demote", ha, userId=member)
    assert r.status_code == 409
    r = await g.op("demote", ho, userId=member)
    assert r.status_code == 403 and code(r) == "not_a_member"


async def test_the_member_cap(make_harness: MakeHarness) -> None:
    api = await make_harness("token", PARLEY_MAX_GROUP_MEMBERS="3")
    owner, ho = await api.user("olga")
    users = [(await api.user(f"u{i}"))[0] for i in range(3)]
    g = await new_group(api, ho)
    assert (await g.op("add", ho, userId=users[0])).status_code == 200
    assert (await g.op("add", ho, userId=users[1])).status_code == 200
    r = await g.op("add", ho, userId=users[2])
    assert r.status_code == 409 and code(r) == "group_full"
    assert (await g.op("remove", ho, userId=users[0])).status_code == 200
    assert (await g.op("add", ho, userId=users[2])).status_code == 200
    assert sorted(await g.roles(ho)) == sorted([owner, users[1], users[2]])


async def test_concurrent_adds_over_http_stop_at_the_cap(make_harness: MakeHarness) -> None:
    api = await make_harness("token", PARLEY_MAX_GROUP_MEMBERS="10")
    _, ho = await api.user("olga")
    users = [(await api.user(f"u{i}"))[0] for i in range(40)]
    g = await new_group(api, ho)
    answers = await asyncio.gather(*(g.op("add", ho, userId=u) for u in users))
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 9 and statuses.count(409) == 31
    assert all(code(r) == "group_full" for r in answers if r.status_code == 409)
    assert len(await g.roles(ho)) == 10


async def test_a_user_cannot_be_added_by_someone_they_blocked(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    r = await api.client.post(
        f"/v1/users/{bob}?op=block", json={"blockedUserId": alice}, headers=hb
    )
    assert r.status_code == 200
    g = await new_group(api, ha)
    r = await g.op("add", ha, userId=bob)
    assert r.status_code == 403 and code(r) == "blocked"
    assert await g.roles(ha) == {alice: "owner"}
    r = await api.client.get(f"/v1/users/{bob}/groups", headers=hb)
    assert r.json()["groups"] == []
    # a block is one-way: bob may still add alice to his own group
    mine = await new_group(api, hb)
    assert (await mine.op("add", hb, userId=alice)).status_code == 200
    r = await api.client.post(
        f"/v1/users/{bob}?op=unblock", json={"blockedUserId": alice}, headers=hb
    )
    assert r.status_code == 200
    assert (await g.op("add", ha, userId=bob)).status_code == 200


async def test_exactly_one_owner_after_parallel_requests(api: Harness) -> None:
    owner, ho = await api.user("olga")
    people = [await api.user(f"u{i}") for i in range(12)]
    g = await new_group(api, ho)
    for user, _ in people:
        assert (await g.op("add", ho, userId=user)).status_code == 200
    for user, _ in people[:6]:
        assert (await g.op("promote", ho, userId=user)).status_code == 200
    calls = [g.op("remove", ho, userId=owner)]
    calls += [g.op("remove", h, userId=u) for u, h in people[:3]]  # three admins leave
    calls += [g.op("demote", ho, userId=u) for u, _ in people[:6]]
    calls += [g.op("promote", ho, userId=u) for u, _ in people[6:]]
    answers = await asyncio.gather(*calls)
    assert all(r.status_code in (200, 403, 409) for r in answers), [r.text for r in answers]
    roles = await g.roles(people[-1][1])
    assert list(roles.values()).count("owner") == 1, roles


async def test_open_mode_keeps_the_original_rules(open_api: Harness) -> None:
    alice, _ = await open_api.user("alice")
    bob, _ = await open_api.user("bob")
    g = await new_group(open_api, {})
    assert await g.roles({}) == {}
    for user in (alice, bob):
        assert (await g.op("add", {}, userId=user)).status_code == 200
    assert await g.roles({}) == {alice: "member", bob: "member"}
    assert (await g.op("promote", {}, userId=bob)).status_code == 200
    assert (await g.op("rename", {}, groupName="renamed")).status_code == 200
    assert (await g.op("remove", {}, userId=alice)).status_code == 200
    assert await g.roles({}) == {bob: "admin"}
