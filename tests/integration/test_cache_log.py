"""PostgreSQL's cache log, and several processes on one database without Redis.

Every change to a rule the shared cache holds takes the next cache-log position in the
same transaction and logs the keys it makes stale; a write that changes nothing logs
nothing. ``PARLEY_CACHE=none`` keeps no rule in memory, so processes without Redis agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from parley.app import build
from parley.cache.uncached import UncachedDirectory
from parley.domain.models import GroupRecord, new_id
from parley.http.server import create_app
from parley.settings import Settings, SettingsError
from parley.storage.base import MessageDraft
from parley.storage.postgres import PostgresStorage
from tests.backends import Harness
from tests.conftest import unavailable
from tests.integration import services

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def store() -> AsyncIterator[PostgresStorage]:
    reason = await services.postgres_unreachable()
    if reason:
        unavailable(reason)
    storage = services.TestPostgres()
    await storage.open()
    yield storage
    await storage.close()


async def test_every_rule_change_is_logged_with_its_keys(store: PostgresStorage) -> None:
    _, _, start = await store.cache_clock()
    assert await store.add_block("u_a", "u_b")
    assert not await store.add_block("u_a", "u_b")  # no change, no position
    group = GroupRecord(new_id("g_"), "g")
    await store.create_group(group, "u_a")
    assert await store.add_member(group.id, "u_b")
    assert await store.remove_member(group.id, "u_b")
    assert not await store.remove_member(group.id, "u_b")
    assert await store.remove_block("u_a", "u_b")
    empty = GroupRecord(new_id("g_"), "nobody")
    await store.create_group(empty, None)  # no member: nothing cached changes
    _, _, end = await store.cache_clock()
    assert end - start == 5
    logged = await store.cache_log(start, end)
    assert logged == {
        "b:u_a": start + 5,
        "m:" + group.id: start + 4,
        "g:u_a": start + 2,
        "g:u_b": start + 4,
    }
    assert await store.cache_log(start, start + 1) == {"b:u_a": start + 1}
    assert await store.cache_log(end, end) == {}


async def test_concurrent_changes_take_distinct_positions(store: PostgresStorage) -> None:
    _, _, start = await store.cache_clock()
    changed = await asyncio.gather(*(store.add_block("u_x", f"u_{i}") for i in range(20)))
    assert all(changed)
    _, _, end = await store.cache_clock()
    assert end == start + 20
    assert await store.cache_log(start, end) == {"b:u_x": end}


async def test_a_read_reports_the_position_it_reflects(store: PostgresStorage) -> None:
    assert await store.add_block("u_r", "u_s")
    values, position = await store.read_cached("b:u_r")
    assert values == ["u_s"]
    assert position == (await store.cache_clock())[2]


async def test_a_pruned_log_cannot_vouch_for_its_range(store: PostgresStorage) -> None:
    _, _, start = await store.cache_clock()
    await store.add_block("u_p", "u_q")
    await store.add_block("u_p", "u_r")
    await store.prune_cache_log(0)  # everything is older than now
    assert await store.cache_log(start, start + 2) is None


async def test_stream_tops_are_the_newest_position_of_each_stream(store: PostgresStorage) -> None:
    before = await store.last_position()
    m1, _ = await store.append_message(MessageDraft(new_id("m_"), "private", "u_s", "u_r", "1"))
    m2, _ = await store.append_message(MessageDraft(new_id("m_"), "group", "u_s", "g_1", "2"))
    m3, _ = await store.append_message(MessageDraft(new_id("m_"), "private", "u_s", "u_r", "3"))
    tops = await store.stream_tops(before, m3.ts, 100)
    assert tops == ({"u_r": m3.ts, "g_1": m2.ts}, {"u_s": m3.ts})
    assert await store.stream_tops(before, m3.ts, 3) is None  # too many: start afresh
    assert await store.stream_tops(m3.ts, m3.ts, 100) == ({}, {})
    assert m1.ts < m2.ts < m3.ts


# --- PARLEY_CACHE=none: several processes on PostgreSQL without Redis -------------------
def test_cache_none_excludes_redis() -> None:
    settings = Settings.from_env({"PARLEY_CACHE": "none"})
    assert settings.cache == "none"
    assert Settings.from_env({}).cache == "auto"
    with pytest.raises(SettingsError, match="PARLEY_CACHE"):
        Settings.from_env({"PARLEY_CACHE": "none", "PARLEY_REDIS_URL": "redis://x:6379/0"})
    with pytest.raises(SettingsError, match="PARLEY_CACHE"):
        Settings.from_env({"PARLEY_CACHE": "memory"})


async def test_processes_without_redis_agree_with_cache_none() -> None:
    reason = await services.postgres_unreachable()
    if reason:
        unavailable(reason)
    schema = services.new_schema()
    settings = Settings.from_env(
        {"PARLEY_AUTH": "none", "PARLEY_RATE_LIMITS": "off", "PARLEY_CACHE": "none"}
    )
    apps: list[Harness] = []
    try:
        for _ in range(2):
            parley = build(settings, PostgresStorage(services.DATABASE_URL, schema=schema))
            await parley.start()
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(parley)),
                base_url="http://parley.test",
            )
            apps.append(Harness(parley, client))
        a, b = apps
        assert isinstance(a.parley.directory, UncachedDirectory)
        alice, _ = await a.user("alice")
        bob, _ = await b.user("bob")

        async def send(app: Harness, to: str, kind: str = "private") -> int:
            field = "receiverId" if kind == "private" else "groupId"
            body = {"senderId": alice, field: to, "message": "hi"}
            r = await app.client.post(f"/v1/messages/send?type={kind}", json=body)
            return r.status_code

        r = await b.client.get(f"/v1/messages/{bob}")
        cursor = r.json()["nextTimestamp"]
        assert await send(a, bob) == 200 and await send(b, bob) == 200  # both had a look
        # a message sent through a is seen by a check through b (no change cache to miss it)
        r = await b.client.get(f"/v1/messages/{bob}", params={"timestamp": cursor})
        assert len(r.json()["messages"]) == 2
        r = await a.client.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice})
        assert r.status_code == 200
        assert await send(b, bob) == 403  # the very next request through the other one
        r = await b.client.post(f"/v1/users/{bob}?op=unblock", json={"blockedUserId": alice})
        assert r.status_code == 200
        assert await send(a, bob) == 200

        r = await a.client.post("/v1/groups/create", json={"groupName": "g"})
        group = r.json()["groupId"]
        r = await a.client.post(f"/v1/groups/{group}?op=add", json={"userId": alice})
        assert await send(b, group, "group") == 200
        r = await b.client.post(f"/v1/groups/{group}?op=remove", json={"userId": alice})
        assert r.status_code == 200
        assert await send(a, group, "group") == 403
    finally:
        for app in apps:
            await app.client.aclose()
            await app.parley.stop()
        await services.drop_schema(schema)
