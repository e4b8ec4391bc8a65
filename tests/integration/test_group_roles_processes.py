"""Two real ``parley serve`` processes on one PostgreSQL database: requests racing through
both keep a group's owner unique and its member cap exact (the group row's lock serializes
them across processes, not just within one)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server
from tests.integration import services

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CAP = 100
PEOPLE = 300


class Pair:
    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64))

    async def call(self, method: str, path: str, token: str, via: int, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return await self.client.request(
            method, self.servers[via].url + path, headers=headers, **kw
        )

    async def user(self, name: str) -> tuple[str, str]:
        r = await self.client.post(
            self.servers[0].url + "/v1/users/create", json={"username": name}
        )
        assert r.status_code == 200, r.text
        return r.json()["userId"], r.json()["token"]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    env = {"PARLEY_CACHE": "none", "PARLEY_MAX_GROUP_MEMBERS": str(CAP)}
    async with services.postgres_servers(tmp_path, [env, env], redis=False) as servers:
        running = Pair(servers)
        yield running
        await running.client.aclose()


async def test_one_owner_and_an_exact_cap_across_two_processes(pair: Pair) -> None:
    rng = random.Random(11)
    owner, owner_token = await pair.user("olga")
    people = list(await asyncio.gather(*(pair.user(f"u{i}") for i in range(PEOPLE))))
    r = await pair.call("POST", "/v1/groups/create", owner_token, 0, json={"groupName": "g"})
    group = r.json()["groupId"]
    path = f"/v1/groups/{group}"

    # the cap: every add at once, through both processes
    adds = [
        pair.call("POST", path + "?op=add", owner_token, i % 2, json={"userId": u})
        for i, (u, _) in enumerate(people)
    ]
    statuses = [r.status_code for r in await asyncio.gather(*adds)]
    assert statuses.count(200) == CAP - 1 and statuses.count(409) == len(people) - CAP + 1
    r = await pair.call("GET", path, owner_token, 1)
    assert len(r.json()["members"]) == CAP

    # the owner: rounds of leaves, promotions and demotions racing through both processes
    tokens = dict(people) | {owner: owner_token}
    current = owner
    for _ in range(6):
        roles = (await pair.call("GET", path, tokens[current], 0)).json()["roles"]
        assert roles[current] == "owner"
        admins = [u for u, role in roles.items() if role == "admin"]
        members = [u for u, role in roles.items() if role == "member"]
        by = tokens[current]
        calls = [pair.call("POST", path + "?op=remove", by, 0, json={"userId": current})]
        for u in rng.sample(admins, min(4, len(admins))):
            calls.append(pair.call("POST", path + "?op=remove", tokens[u], 1, json={"userId": u}))
        for i, u in enumerate(admins):
            calls.append(pair.call("POST", path + "?op=demote", by, i % 2, json={"userId": u}))
        for i, u in enumerate(rng.sample(members, min(20, len(members)))):
            calls.append(pair.call("POST", path + "?op=promote", by, i % 2, json={"userId": u}))
        rng.shuffle(calls)
        answers = await asyncio.gather(*calls)
        assert all(r.status_code in (200, 403, 409) for r in answers), [r.text for r in answers]
        # members leave nobody out this round: any of them sees the outcome
        roles = (await pair.call("GET", path, tokens[members[0]], 1)).json()["roles"]
        owners = [u for u, role in roles.items() if role == "owner"]
        assert len(owners) == 1, roles
        assert current not in roles
        current = owners[0]
