"""What each API call costs in DynamoDB requests, measured by the adapter's own counters.

Every operation runs through the HTTP API in open mode (the course design's API), once in a fresh
process whose directory cache is empty ("cold") and once in a process that has every user,
group, membership and block list in memory ("warm", the steady state). The counts are
pinned here and reported in ``docs/dynamodb.md``; run this module as a script to print
the table: ``.venv/bin/python -m tests.integration.test_dynamodb_costs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from parley.app import Parley, build
from parley.http.server import create_app
from parley.settings import Settings
from tests.conftest import unavailable
from tests.integration import moto_server
from tests.integration.moto_server import Stores

World = dict[str, Any]
Op = Callable[[httpx.AsyncClient, World, int], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Cost:
    calls: dict[str, int]
    read_units: float
    write_units: float

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def describe(self) -> str:
        short = {
            "get_item": "GetItem",
            "query": "Query",
            "put_item": "PutItem",
            "update_item": "UpdateItem",
            "delete_item": "DeleteItem",
            "batch_write_item": "BatchWriteItem",
        }
        parts = [f"{n} {short.get(op, op)}" for op, n in sorted(self.calls.items()) if n]
        return ", ".join(parts) or "none"


def post(path: str, body: dict[str, Any], **headers: str) -> Op:
    async def run(client: httpx.AsyncClient, world: World, variant: int) -> httpx.Response:
        filled = {k: v.format(**world, v=variant) for k, v in body.items()}
        sent = {k: v.format(v=variant) for k, v in headers.items()}
        return await client.post(path.format(**world, v=variant), json=filled, headers=sent)

    return run


def check(timestamp: str | None, events: bool = False) -> Op:
    async def run(client: httpx.AsyncClient, world: World, variant: int) -> httpx.Response:
        query = "" if timestamp is None else f"?timestamp={world[timestamp]}"
        if events:
            query += ("&" if query else "?") + "include=events"
        return await client.get(f"/v1/messages/{world['b']}{query}")

    return run


def get(path: str) -> Op:
    async def run(client: httpx.AsyncClient, world: World, variant: int) -> httpx.Response:
        return await client.get(path.format(**world, v=variant))

    return run


PRIVATE = {"senderId": "{a}", "receiverId": "{b}", "message": "hi"}
GROUP = {"senderId": "{a}", "groupId": "{g1}", "message": "hi all"}

KEYED = post("/v1/messages/send?type=private", PRIVATE, **{"Idempotency-Key": "k{v}"})
RETRIED = post("/v1/messages/send?type=private", PRIVATE, **{"Idempotency-Key": "r{v}"})
CHECK = "1 get + (1 + x) gets, x = 2 groups"

# name, the course design's claim, operation, what runs first unmeasured (variant 0 cold, 1 warm)
OPERATIONS: list[tuple[str, str, Op, Op | None]] = [
    ("create user", "1 write", post("/v1/users/create", {"username": "n{v}"}), None),
    ("create group", "1 write", post("/v1/groups/create", {"groupName": "g{v}"}), None),
    ("block", "2 gets + 1 write", post("/v1/users/{b}?op=block", {"blockedUserId": "{c}"}), None),
    (
        "unblock",
        "2 gets + 1 write",
        post("/v1/users/{b}?op=unblock", {"blockedUserId": "{c}"}),
        None,
    ),
    ("add member", "2 gets + 2 writes", post("/v1/groups/{g1}?op=add", {"userId": "{c}"}), None),
    (
        "remove member",
        "2 gets + 2 writes",
        post("/v1/groups/{g1}?op=remove", {"userId": "{c}"}),
        None,
    ),
    ("send private", "2 gets + 1 write", post("/v1/messages/send?type=private", PRIVATE), None),
    ("send private with Idempotency-Key", "-", KEYED, None),
    ("retry of a keyed send (replayed)", "-", RETRIED, RETRIED),
    ("send group", "2 gets + 1 write", post("/v1/messages/send?type=group", GROUP), None),
    ("check with new messages", CHECK, check("t0"), None),
    ("check, nothing new (idle)", CHECK, check("now"), None),
    ("check without timestamp", CHECK, check(None), None),
    ("check with new messages and events", "-", check("t0", events=True), None),
    ("check, nothing new, with events (idle)", "-", check("now", events=True), None),
    ("edit a private message", "-", post("/v1/messages/{m}?op=edit", {"message": "fixed"}), None),
    ("delete an edited private message", "-", post("/v1/messages/{m}?op=delete", {}), None),
    ("delete a group message", "-", post("/v1/messages/{d}?op=delete", {}), None),
    ("history page, private", "-", get("/v1/users/{b}/conversations/{a}/messages"), None),
    ("history page, group", "-", get("/v1/users/{b}/conversations/{g1}/messages"), None),
    ("list conversations (1 private, 2 groups)", "-", get("/v1/users/{b}/conversations"), None),
    (
        "mark read, private",
        "-",
        post("/v1/users/{b}/read", {"conversationId": "{a}", "timestamp": "{mt}"}),
        None,
    ),
]


async def _parley(prefix: str) -> tuple[Parley, httpx.AsyncClient]:
    settings = Settings.from_env({"PARLEY_AUTH": "none", "PARLEY_RATE_LIMITS": "off"})
    parley = build(settings, moto_server.TestDynamo(prefix, owner=False))
    await parley.start()
    transport = httpx.ASGITransport(app=create_app(parley))
    return parley, httpx.AsyncClient(transport=transport, base_url="http://parley.test")


async def _world(client: httpx.AsyncClient) -> World:
    async def user(name: str) -> str:
        r = await client.post("/v1/users/create", json={"username": name})
        return str(r.json()["userId"])

    world: World = {name: await user(name) for name in ("a", "b")}
    for v in (0, 1):  # the users blocked and added: one per variant
        world[f"c{v}"] = await user(f"c{v}")
    for g in ("g1", "g2"):
        r = await client.post("/v1/groups/create", json={"groupName": g})
        world[g] = r.json()["groupId"]
        for member in (world["a"], world["b"]):
            await client.post(f"/v1/groups/{world[g]}?op=add", json={"userId": member})
    r = await client.get(f"/v1/messages/{world['b']}")
    world["t0"] = r.json()["nextTimestamp"]
    for _ in range(3):
        await client.post("/v1/messages/send?type=private", json=_fill(PRIVATE, world))
        await client.post("/v1/messages/send?type=group", json=_fill(GROUP, world))
    for v in (0, 1):  # a private and a group message to edit and delete, one per variant
        r = await client.post("/v1/messages/send?type=private", json=_fill(PRIVATE, world))
        world[f"m{v}"] = r.json()["messageId"]
        world[f"mt{v}"] = r.json()["timestamp"]
        r = await client.post("/v1/messages/send?type=group", json=_fill(GROUP, world))
        world[f"d{v}"] = r.json()["messageId"]
    return world


def _fill(body: dict[str, str], world: World) -> dict[str, str]:
    return {k: v.format(**world) for k, v in body.items()}


async def _warm(parley: Parley, world: World) -> None:
    directory = parley.directory
    for key, value in world.items():
        if key in ("a", "b", "c0", "c1"):
            await directory.user(value)
            await directory.groups_of(value)
            await directory.blocked_by(value)
        if key in ("g1", "g2"):
            await directory.group(value)
            await directory.members_of(value)


async def measure(stores: Stores) -> list[tuple[str, str, Cost, Cost]]:
    owner = await stores()
    parley, client = await _parley(owner.table_prefix)
    world = await _world(client)
    await client.aclose()
    await parley.stop()
    rows = []
    for name, claim, op, first in OPERATIONS:
        costs = []
        for variant in (0, 1):
            parley, client = await _parley(owner.table_prefix)
            try:
                if variant:
                    await _warm(parley, world)
                ids = {**world, **{k: world[f"{k}{variant}"] for k in ("c", "m", "d", "mt")}}
                if first is not None:
                    assert (await first(client, ids, variant)).status_code == 200
                ids["now"] = str(await parley.storage.last_position())  # what start-up read
                usage = parley.storage.client.usage  # type: ignore[attr-defined]
                before = usage.snapshot()
                response = await op(client, ids, variant)
                assert response.status_code == 200, (name, response.text)
                costs.append(_diff(before, usage.snapshot()))
            finally:
                await client.aclose()
                await parley.stop()
        rows.append((name, claim, costs[0], costs[1]))
    return rows


def _diff(
    before: tuple[dict[str, int], float, float], after: tuple[dict[str, int], float, float]
) -> Cost:
    calls = {op: n - before[0].get(op, 0) for op, n in after[0].items()}
    return Cost({op: n for op, n in calls.items() if n}, after[1] - before[1], after[2] - before[2])


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    reason = moto_server.moto_missing()
    if reason:
        unavailable(reason)
    async with moto_server.shared_tables() as make:
        yield make


# Pinned: DynamoDB calls per API call, (cold process, warm process).
EXPECTED_CALLS: dict[str, tuple[int, int]] = {
    "create user": (1, 1),
    "create group": (1, 1),
    "block": (3, 1),
    "unblock": (3, 1),
    # a group change: reserve, one transaction (the change, its event, the pending record),
    # release, delete the pending record (docs/dynamodb.md)
    "add member": (6, 4),
    "remove member": (7, 5),  # reads the group (roles, owner hand-over) before the write
    "send private": (6, 3),
    "send private with Idempotency-Key": (8, 5),
    "retry of a keyed send (replayed)": (2, 2),
    "send group": (6, 3),
    "check with new messages": (6, 4),
    "check, nothing new (idle)": (2, 0),
    "check without timestamp": (6, 4),
    "check with new messages and events": (9, 7),  # + one Query per stream's events
    "check, nothing new, with events (idle)": (2, 0),
    "edit a private message": (9, 9),
    "delete an edited private message": (11, 11),  # + the earlier edit's two events
    "delete a group message": (8, 8),
    # conversations: the clock (the frontier), then the conversation's index ranges
    "history page, private": (5, 3),  # one Query per direction (by_pair)
    "history page, group": (5, 2),  # the group's stream
    # the polling cursor (clock + an empty stream's Query); per conversation its newest
    # message and unread count; the peers; the markers in 2 batches
    "list conversations (1 private, 2 groups)": (19, 16),
    # the newest message (2 Query), the marker (1 UpdateItem), read + receipt events (2 x 3)
    "mark read, private": (13, 10),
}


async def test_calls_per_api_call(stores: Stores) -> None:
    rows = await measure(stores)
    got = {name: (cold.total, warm.total) for name, _, cold, warm in rows}
    assert got == EXPECTED_CALLS


async def burst(stores: Stores, sends: int = 200) -> dict[str, float]:
    """DynamoDB calls per send when ``sends`` private sends arrive at once at one warm
    process: group commit shares each reservation among the sends queued behind a batch."""
    owner = await stores()
    parley, client = await _parley(owner.table_prefix)
    try:
        world = await _world(client)
        await _warm(parley, world)
        usage = parley.storage.client.usage  # type: ignore[attr-defined]
        before = usage.snapshot()
        responses = await asyncio.gather(
            *(
                client.post("/v1/messages/send?type=private", json=_fill(PRIVATE, world))
                for _ in range(sends)
            )
        )
        assert all(r.status_code == 200 for r in responses)
        total = _diff(before, usage.snapshot())
    finally:
        await client.aclose()
        await parley.stop()
    return {op: n / sends for op, n in total.calls.items()}


async def test_group_commit_shares_reservations_in_a_burst(stores: Stores) -> None:
    per_send = await burst(stores)
    assert per_send["update_item"] <= 0.5  # two per batch: reserve and release
    assert per_send["batch_write_item"] <= 0.5  # 25 items per call


def table(rows: list[tuple[str, str, Cost, Cost]]) -> str:
    lines = [
        "| API call | course design's claim | cold process: calls | RCU / WCU (moto) "
        "| warm process: calls | RCU / WCU (moto) |",
        "|---|---|---|---|---|---|",
    ]
    for name, claim, cold, warm in rows:
        lines.append(
            f"| {name} | {claim} | {cold.total}: {cold.describe()} "
            f"| {cold.read_units:g} / {cold.write_units:g} "
            f"| {warm.total}: {warm.describe()} | {warm.read_units:g} / {warm.write_units:g} |"
        )
    return "\n".join(lines)


async def _main() -> None:
    async with moto_server.shared_tables() as make:
        print(table(await measure(make)))
        per_send = await burst(make)
        print(f"\n200 concurrent private sends, calls per send: {per_send}")
    moto_server.stop()


if __name__ == "__main__":
    asyncio.run(_main())
