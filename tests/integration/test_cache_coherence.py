"""The shared cache never lies: delays, reordering and deaths between commit and cache update.

Several Parley apps on one PostgreSQL schema and one Redis prefix (as several processes).
One app's Redis traffic is delayed (a GC pause, a slow network: under the Redis timeout, so
it sees no failure), or an app dies right after its PostgreSQL commit, before it updated
Redis. Afterwards every app and PostgreSQL must agree, within the bound the mechanism gives
(the trust lease: no process trusts Redis for longer than that without having caught up
with every change committed before), and a retried write answers 409 and leaves the cache
right.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from parley.app import build
from parley.cache.redis_link import RedisLink
from parley.domain.roles import Outcome
from parley.http.server import create_app
from parley.settings import Settings
from parley.storage.postgres import PostgresStorage
from tests.backends import Harness
from tests.conftest import unavailable
from tests.integration import services

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class Died(Exception):
    """Raised where a process dies in these tests (right after a commit)."""


class Fleet:
    def __init__(self, schema: str, env: dict[str, str]) -> None:
        self.schema = schema
        self.env = env
        self.apps: list[Harness] = []
        self.dead: list[Harness] = []

    async def app(self, auth: str = "none") -> Harness:
        settings = Settings.from_env({**self.env, "PARLEY_AUTH": auth, "PARLEY_RATE_LIMITS": "off"})
        parley = build(settings, PostgresStorage(services.DATABASE_URL, schema=self.schema))
        await parley.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(parley)), base_url="http://parley.test"
        )
        harness = Harness(parley, client)
        self.apps.append(harness)
        return harness

    async def kill(self, app: Harness) -> None:
        """The process is gone: nothing of it runs any more (its poller included)."""
        self.apps.remove(app)
        self.dead.append(app)
        await app.client.aclose()
        await app.parley.stop()

    async def close(self) -> None:
        for harness in self.apps:
            await harness.client.aclose()
            await harness.parley.stop()


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    reason = await services.postgres_unreachable() or services.redis_unreachable()
    if reason:
        unavailable(reason)
    running = Fleet(services.new_schema(), services.redis_env())
    try:
        yield running
    finally:
        await running.close()
        await services.drop_schema(running.schema)


def link(app: Harness) -> RedisLink:
    assert app.parley.redis is not None
    return app.parley.redis


def bound(app: Harness) -> float:
    """How long after a commit every process answers right, even if its writer died:
    a process trusts Redis for ``lease`` after the start of a poll, and renews only once
    Redis caught up with everything committed before that start. (A little slack for the
    request in flight when the bound passes.)"""
    return link(app).lease + 0.1


async def send(app: Harness, sender: str, to: str, text: str, kind: str = "private") -> Any:
    field = "receiverId" if kind == "private" else "groupId"
    return await app.client.post(
        f"/v1/messages/send?type={kind}", json={"senderId": sender, field: to, "message": text}
    )


async def check(app: Harness, user: str, after: str | None = None) -> Any:
    params = {"timestamp": after} if after is not None else {}
    r = await app.client.get(f"/v1/messages/{user}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def op(app: Harness, path: str, body: dict[str, str]) -> int:
    return (await app.client.post(path, json=body)).status_code


async def group_with(app: Harness, *members: str) -> str:
    r = await app.client.post("/v1/groups/create", json={"groupName": "g"})
    group = str(r.json()["groupId"])
    for member in members:
        assert await op(app, f"/v1/groups/{group}?op=add", {"userId": member}) == 200
    return group


async def rows(schema: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(services.DATABASE_URL, server_settings={"search_path": schema})
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def hold_redis(app: Harness, after: asyncio.Event, until: asyncio.Event) -> None:
    """Once ``after`` is set, this app's scripts reach Redis only when ``until`` is: a
    pause of the process or of its link (a GC pause, a slow network; below the Redis
    timeout, so the app sees no failure), made long enough for another process's write to
    overtake it, whatever the machine's speed."""
    shared = link(app)
    original = shared.run

    async def late(script: Any, keys: Any, args: Any) -> Any:
        if after.is_set():
            await asyncio.wait_for(until.wait(), 10)
        return await original(script, keys, args)

    shared.run = late  # type: ignore[method-assign]


def die_instead_of_updating_redis(app: Harness) -> list[float]:
    """The app dies right after its next membership or block commit, before it touches
    Redis about it. Returns the list that receives the moment of death."""
    directory: Any = app.parley.directory
    # the script a writer runs after its commit (it forgets sets; older versions patched)
    script = getattr(directory, "_forget", None) or directory._update
    shared = link(app)
    original = shared.run
    died: list[float] = []

    async def run(called: Any, keys: Any, args: Any) -> Any:
        if called is script:
            died.append(time.monotonic())
            raise Died
        return await original(called, keys, args)

    shared.run = run  # type: ignore[method-assign]
    return died


async def attempt(call: Awaitable[Any]) -> None:
    """A request to a process that dies while answering it: no answer (or a 500)."""
    try:
        r = await call
    except Died:
        return
    assert r.status_code == 500, r.text


async def until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def warm(apps: list[Harness], *calls: Callable[[Harness], Awaitable[Any]]) -> None:
    for app in apps:
        for call in calls:
            await call(app)


# --- reordering: an add (delayed app) races a remove; a block races an unblock ----------
async def test_a_delayed_add_cannot_undo_a_later_remove(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    group = await group_with(a, alice)
    # both processes have bob's groups and the group's members in Redis
    await warm([a, b], lambda x: x.client.get(f"/v1/users/{bob}/groups"))
    await warm([a, b], lambda x: x.client.get(f"/v1/groups/{group}"))
    committed, overtaken = asyncio.Event(), asyncio.Event()
    hold_redis(a, committed, overtaken)
    storage = a.parley.storage
    original = storage.join_group

    async def join_group(group_id: str, user_id: str, **rules: Any) -> Outcome:
        outcome = await original(group_id, user_id, **rules)
        committed.set()  # committed; a's cache update is now on its (slow) way
        return outcome

    storage.join_group = join_group  # type: ignore[method-assign]
    adding = asyncio.ensure_future(op(a, f"/v1/groups/{group}?op=add", {"userId": bob}))
    await asyncio.wait_for(committed.wait(), 10)
    assert await op(b, f"/v1/groups/{group}?op=remove", {"userId": bob}) == 200
    overtaken.set()
    assert await adding == 200

    assert await rows(fleet.schema, "SELECT 1 FROM members WHERE user_id = $1", bob) == []
    for app in (a, b):
        assert (await send(app, bob, group, "still in?", "group")).status_code == 403
        assert (await app.client.get(f"/v1/users/{bob}/groups")).json()["groups"] == []
        members = (await app.client.get(f"/v1/groups/{group}")).json()["members"]
        assert bob not in members
    assert await op(b, f"/v1/groups/{group}?op=remove", {"userId": bob}) == 409
    for app in (a, b):
        assert (await send(app, bob, group, "and now?", "group")).status_code == 403


async def test_a_delayed_block_cannot_undo_a_later_unblock(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    await warm([a, b], lambda x: x.client.get(f"/v1/users/{bob}/blocked"))
    committed, overtaken = asyncio.Event(), asyncio.Event()
    hold_redis(a, committed, overtaken)
    storage = a.parley.storage
    original = storage.add_block

    async def add_block(blocker_id: str, blocked_id: str) -> bool:
        changed = await original(blocker_id, blocked_id)
        committed.set()
        return changed

    storage.add_block = add_block  # type: ignore[method-assign]
    blocking = asyncio.ensure_future(op(a, f"/v1/users/{bob}?op=block", {"blockedUserId": alice}))
    await asyncio.wait_for(committed.wait(), 10)
    assert await op(b, f"/v1/users/{bob}?op=unblock", {"blockedUserId": alice}) == 200
    overtaken.set()
    assert await blocking == 200

    assert await rows(fleet.schema, "SELECT 1 FROM blocks WHERE blocker_id = $1", bob) == []
    for app in (a, b):
        assert (await app.client.get(f"/v1/users/{bob}/blocked")).json()["blockedUserIds"] == []
        assert (await send(app, alice, bob, "friends?")).status_code == 200
    assert await op(b, f"/v1/users/{bob}?op=unblock", {"blockedUserId": alice}) == 409
    for app in (a, b):
        assert (await send(app, alice, bob, "still friends")).status_code == 200


# --- a writer dies between its commit and its Redis update --------------------------------
async def test_a_block_whose_writer_died_holds_everywhere(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    await warm([a, b], lambda x: send(x, alice, bob, "hello"))  # bob's blocks cached
    died = die_instead_of_updating_redis(a)
    await attempt(a.client.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice}))
    assert died, "the writer did not reach its cache update"
    await fleet.kill(a)
    assert await rows(fleet.schema, "SELECT blocked_id FROM blocks") != []

    await until(died[0] + bound(b))
    c = await fleet.app()  # a process started afterwards
    for app in (b, c):
        assert (await send(app, alice, bob, "blocked?")).status_code == 403
        r = await app.client.get(f"/v1/users/{bob}/blocked")
        assert r.json()["blockedUserIds"] == [alice]
    assert await op(b, f"/v1/users/{bob}?op=block", {"blockedUserId": alice}) == 409
    assert (await send(c, alice, bob, "still blocked?")).status_code == 403


async def test_an_unblock_whose_writer_died_holds_everywhere(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    assert await op(b, f"/v1/users/{bob}?op=block", {"blockedUserId": alice}) == 200
    await warm([a, b], lambda x: send(x, alice, bob, "blocked"))
    died = die_instead_of_updating_redis(a)
    await attempt(a.client.post(f"/v1/users/{bob}?op=unblock", json={"blockedUserId": alice}))
    assert died
    await fleet.kill(a)

    await until(died[0] + bound(b))
    assert (await b.client.get(f"/v1/users/{bob}/blocked")).json()["blockedUserIds"] == []
    assert (await send(b, alice, bob, "friends")).status_code == 200
    assert await op(b, f"/v1/users/{bob}?op=unblock", {"blockedUserId": alice}) == 409


async def test_a_removal_whose_writer_died_holds_everywhere(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    group = await group_with(a, alice, bob)
    await warm([a, b], lambda x: send(x, bob, group, "hi", "group"))  # bob's groups cached
    await warm([a, b], lambda x: x.client.get(f"/v1/groups/{group}"))  # and the members
    died = die_instead_of_updating_redis(a)
    await attempt(a.client.post(f"/v1/groups/{group}?op=remove", json={"userId": bob}))
    assert died
    await fleet.kill(a)

    await until(died[0] + bound(b))
    c = await fleet.app()
    for app in (b, c):
        assert (await send(app, bob, group, "still in?", "group")).status_code == 403
        assert (await app.client.get(f"/v1/users/{bob}/groups")).json()["groups"] == []
        assert (await app.client.get(f"/v1/groups/{group}")).json()["members"] == [alice]
        assert [m["message"] for m in (await check(app, bob))["messages"]] == []
    assert await op(b, f"/v1/groups/{group}?op=remove", {"userId": bob}) == 409


async def test_an_add_whose_writer_died_holds_everywhere(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    group = await group_with(a, alice)
    await warm([a, b], lambda x: x.client.get(f"/v1/users/{bob}/groups"))
    await warm([a, b], lambda x: x.client.get(f"/v1/groups/{group}"))
    died = die_instead_of_updating_redis(a)
    await attempt(a.client.post(f"/v1/groups/{group}?op=add", json={"userId": bob}))
    assert died
    await fleet.kill(a)

    await until(died[0] + bound(b))
    assert (await b.client.get(f"/v1/users/{bob}/groups")).json()["groups"][0]["groupId"] == group
    assert sorted((await b.client.get(f"/v1/groups/{group}")).json()["members"]) == sorted(
        [alice, bob]
    )
    assert (await send(b, bob, group, "in", "group")).status_code == 200
    assert await op(b, f"/v1/groups/{group}?op=add", {"userId": bob}) == 409


async def test_a_conflict_repairs_a_cache_that_was_wrong(fleet: Fleet) -> None:
    """Whatever left a set wrong (here: edited behind Parley's back), a 409 repairs it."""
    a = await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    assert (await a.client.get(f"/v1/users/{bob}/blocked")).json()["blockedUserIds"] == []
    await rows(fleet.schema, "INSERT INTO blocks VALUES ($1, $2)", bob, alice)
    assert await op(a, f"/v1/users/{bob}?op=block", {"blockedUserId": alice}) == 409
    assert (await send(a, alice, bob, "blocked?")).status_code == 403
    group = await group_with(a, alice)
    assert (await a.client.get(f"/v1/users/{alice}/groups")).json()["groups"] != []
    await rows(fleet.schema, "DELETE FROM members WHERE user_id = $1", alice)
    assert await op(a, f"/v1/groups/{group}?op=remove", {"userId": alice}) == 409
    assert (await send(a, alice, group, "member?", "group")).status_code == 403


# --- messages: a sender dies between its commit and raising the watermarks ---------------
def die_before_marking(app: Harness) -> list[float]:
    died: list[float] = []

    async def marked(marks: Any) -> None:
        died.append(time.monotonic())
        raise Died

    app.parley.changes.marked = marked  # type: ignore[method-assign]
    return died


async def test_a_message_whose_sender_died_before_marking_is_delivered(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    cursor = (await check(b, bob))["nextTimestamp"]
    assert (await check(b, bob, cursor))["messages"] == []  # idle: answered from Redis
    died = die_before_marking(a)
    await attempt(send(a, alice, bob, "last words"))
    assert died
    await fleet.kill(a)

    await until(died[0] + bound(b))
    page = await check(b, bob, cursor)
    assert [m["message"] for m in page["messages"]] == ["last words"]


async def test_a_replayed_send_after_a_death_before_marking_is_delivered(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    cursor = (await check(b, bob))["nextTimestamp"]
    assert (await check(b, bob, cursor))["messages"] == []
    body = {"senderId": alice, "receiverId": bob, "message": "once"}
    key = {"Idempotency-Key": "k-1"}
    die_before_marking(a)
    await attempt(a.client.post("/v1/messages/send?type=private", json=body, headers=key))
    await fleet.kill(a)
    # the client retries through another process: the first answer, and now marked
    r = await b.client.post("/v1/messages/send?type=private", json=body, headers=key)
    assert r.status_code == 200
    page = await check(b, bob, cursor)  # at once: the replay marked it before answering
    assert [m["message"] for m in page["messages"]] == ["once"]
    assert page["messages"][0]["messageId"] == r.json()["messageId"]


async def test_a_replayed_send_wakes_a_long_poll(fleet: Fleet) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    cursor = (await check(b, bob))["nextTimestamp"]
    body = {"senderId": alice, "receiverId": bob, "message": "wake"}
    key = {"Idempotency-Key": "k-2"}
    die_before_marking(a)
    await attempt(a.client.post("/v1/messages/send?type=private", json=body, headers=key))
    await fleet.kill(a)
    poll = asyncio.ensure_future(
        b.client.get(f"/v1/messages/{bob}", params={"timestamp": cursor, "wait": "10"})
    )
    r = await b.client.post("/v1/messages/send?type=private", json=body, headers=key)
    assert r.status_code == 200
    page = (await asyncio.wait_for(poll, 10)).json()
    assert [m["message"] for m in page["messages"]] == ["wake"]


# --- users and token hashes ------------------------------------------------------------
async def test_users_are_found_everywhere_and_no_token_hash_is_in_redis(fleet: Fleet) -> None:
    a, b = await fleet.app(auth="token"), await fleet.app(auth="token")
    alice, alice_auth = await b.user("alice")
    bob, bob_auth = await a.user("bob")
    # a user created through b is known through a at once (and the other way round)
    r = await a.client.get(f"/v1/users/{alice}", headers=alice_auth)
    assert r.status_code == 200, r.text
    r = await b.client.post(
        "/v1/messages/send?type=private",
        json={"senderId": bob, "receiverId": alice, "message": "hi"},
        headers=bob_auth,
    )
    assert r.status_code == 200, r.text
    hashes = [bytes(row[0]) for row in await rows(fleet.schema, "SELECT hash FROM tokens")]
    assert len(hashes) == 2
    client: aioredis.Redis = aioredis.Redis.from_url(services.REDIS_URL)
    try:
        prefix = link(a).prefix
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        assert keys
        for key in keys:
            kind = await client.type(key)
            values: list[bytes] = []
            if kind == b"string":
                values = [await client.get(key) or b""]
            elif kind == b"set":
                values = list(await client.smembers(key))  # type: ignore[misc]
            for value in values:
                for token_hash in hashes:
                    assert token_hash not in value, f"a token hash is in Redis under {key!r}"
    finally:
        await client.aclose()


async def test_a_long_poll_is_woken_when_a_dead_senders_message_is_caught_up(
    fleet: Fleet,
) -> None:
    a, b = await fleet.app(), await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    cursor = (await check(b, bob))["nextTimestamp"]
    started = time.monotonic()
    poll = asyncio.ensure_future(
        b.client.get(f"/v1/messages/{bob}", params={"timestamp": cursor, "wait": "20"})
    )
    await asyncio.sleep(0.2)
    die_before_marking(a)
    await attempt(send(a, alice, bob, "are you there?"))
    await fleet.kill(a)
    page = (await asyncio.wait_for(poll, 30)).json()
    assert [m["message"] for m in page["messages"]] == ["are you there?"]
    # woken by the catch-up, not by the long-poll's own re-check every 5 s
    assert time.monotonic() - started < 5
    assert link(b).caught_up >= 1


# --- a namespace that cannot catch up is retired -----------------------------------------
async def test_a_namespace_behind_a_pruned_log_is_retired(fleet: Fleet) -> None:
    a = await fleet.app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    assert await op(a, f"/v1/users/{bob}?op=block", {"blockedUserId": alice}) == 200
    epoch = link(a).epoch
    # the log no longer holds the change, and Redis says it never applied it
    await rows(fleet.schema, "DELETE FROM cache_log")
    client: aioredis.Redis = aioredis.Redis.from_url(services.REDIS_URL)
    try:
        await client.set(link(a).key(str(epoch), ":applied"), 0)
    finally:
        await client.aclose()
    deadline = time.monotonic() + 10
    while not (link(a).epoch > epoch and link(a).usable):
        assert time.monotonic() < deadline, "the namespace was not retired"
        await asyncio.sleep(0.02)
    assert (await send(a, alice, bob, "blocked?")).status_code == 403
