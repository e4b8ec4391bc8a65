"""Several Parley apps on one PostgreSQL schema and one Redis prefix (as several processes).

What one app writes, every other enforces on its very next request; idle checks touch
no database on any of them; a send through one wakes long-polls on another; and losing
Redis (for one app or all) costs speed, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from parley.app import build
from parley.cache import redis_wire
from parley.cache.base import Watch
from parley.cache.redis_link import RedisLink
from parley.http.server import create_app
from parley.services import messages as messages_module
from parley.settings import Settings
from parley.storage.postgres import PostgresStorage
from tests.backends import Harness
from tests.conftest import unavailable
from tests.integration import services
from tests.integration.redis_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

MakeApp = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_app() -> AsyncIterator[MakeApp]:
    reason = await services.postgres_unreachable() or services.redis_unreachable()
    if reason:
        unavailable(reason)
    schema = services.new_schema()
    env = services.redis_env()
    started: list[Harness] = []

    async def make(redis_url: str | None = None, auth: str = "none") -> Harness:
        settings = Settings.from_env(
            {
                **env,
                "PARLEY_AUTH": auth,
                "PARLEY_RATE_LIMITS": "off",
                **({"PARLEY_REDIS_URL": redis_url} if redis_url else {}),
            }
        )
        parley = build(settings, PostgresStorage(services.DATABASE_URL, schema=schema))
        await parley.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(parley)), base_url="http://parley.test"
        )
        harness = Harness(parley, client)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.client.aclose()
        await harness.parley.stop()
    await services.drop_schema(schema)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    port = int(services.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    running = await TcpProxy(port).start()
    yield running
    await running.stop()


def link(app: Harness) -> RedisLink:
    assert app.parley.redis is not None
    return app.parley.redis


def db_calls(app: Harness) -> int:
    return sum(app.parley.storage.calls.values())


async def send(app: Harness, sender: str, to: str, text: str, kind: str = "private") -> Any:
    field = "receiverId" if kind == "private" else "groupId"
    return await app.client.post(
        f"/v1/messages/send?type={kind}", json={"senderId": sender, field: to, "message": text}
    )


async def check(app: Harness, user: str, after: str | None = None, **params: str) -> Any:
    query = {**params, **({"timestamp": after} if after is not None else {})}
    r = await app.client.get(f"/v1/messages/{user}", params=query)
    assert r.status_code == 200, r.text
    return r.json()


async def group_with(app: Harness, *members: str) -> str:
    r = await app.client.post("/v1/groups/create", json={"groupName": "g"})
    group = str(r.json()["groupId"])
    for member in members:
        assert (
            await app.client.post(f"/v1/groups/{group}?op=add", json={"userId": member})
        ).status_code == 200
    return group


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_block_and_removal_hold_on_the_next_request_elsewhere(make_app: MakeApp) -> None:
    a, b = await make_app(), await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await b.user("bob")
    group = await group_with(a, alice, bob)
    # b learns (and caches) the memberships and blocks
    assert (await send(b, alice, bob, "before")).status_code == 200
    assert (await send(b, bob, group, "hello", "group")).status_code == 200
    assert [m["message"] for m in (await check(b, bob))["messages"]] == ["before", "hello"]

    r = await a.client.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice})
    assert r.status_code == 200
    assert (await send(b, alice, bob, "after")).status_code == 403  # the very next request
    r = await b.client.post(f"/v1/users/{bob}?op=unblock", json={"blockedUserId": alice})
    assert r.status_code == 200
    assert (await send(a, alice, bob, "again")).status_code == 200

    r = await a.client.post(f"/v1/groups/{group}?op=remove", json={"userId": bob})
    assert r.status_code == 200
    assert (await send(b, bob, group, "still here?", "group")).status_code == 403
    assert [m["message"] for m in (await check(b, bob))["messages"]] == ["before", "again"]
    r = await b.client.get(f"/v1/users/{bob}/groups")
    assert r.json()["groups"] == []


async def test_idle_checks_touch_no_database_on_any_process(make_app: MakeApp) -> None:
    a, b = await make_app(), await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    group = await group_with(a, alice, bob)
    first = await check(b, bob)
    cursor = first["nextTimestamp"]
    await check(b, bob, cursor)  # warm b's caches
    before = db_calls(b)
    for _ in range(20):
        assert (await check(b, bob, cursor))["messages"] == []
    assert db_calls(b) == before
    assert (await send(a, alice, group, "news", "group")).status_code == 200
    page = await check(b, bob, cursor)  # a's watermark says: read
    assert [m["message"] for m in page["messages"]] == ["news"]
    after = db_calls(b)
    for _ in range(5):
        assert (await check(b, bob, page["nextTimestamp"]))["messages"] == []
    assert db_calls(b) == after
    # an idle check at a new cursor is one Redis round trip (the groups and the watermarks
    # together); the same poll again, with nothing heard since, is none (the link's own
    # poller, which may catch the namespace up at any moment, not counted)
    shared = link(b)
    original = shared.run
    poller = {shared._open, shared._seal, shared._catch_up_script}
    calls: list[object] = []

    async def counting(script: object, keys: Any, args: Any) -> Any:
        if script not in poller:
            calls.append(script)
        return await original(script, keys, args)

    shared.run = counting  # type: ignore[method-assign]
    fresh = str(int(page["nextTimestamp"]) + 1)
    assert (await check(b, bob, fresh))["messages"] == []
    assert len(calls) == 1, [str(getattr(c, "script", c)).split("\n")[1] for c in calls]
    skipped = b.parley.messages.polls_skipped
    for _ in range(5):
        assert (await check(b, bob, fresh))["messages"] == []
    shared.run = original  # type: ignore[method-assign]
    assert len(calls) == 1
    assert b.parley.messages.polls_skipped == skipped + 5


async def test_a_poll_after_a_write_elsewhere_finds_it(make_app: MakeApp) -> None:
    """Polls answered from the wake-ups (no Redis call) still see every write that was
    acknowledged through another process before they started: a message, a message to a
    group the poller was just added to, and after a lost subscription."""
    a, b = await make_app(), await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    await wait_until(lambda: b.parley.notifier.reliable)
    cursor = (await check(b, bob))["nextTimestamp"]
    for i in range(40):
        # until one is answered without a look (a look that found nothing, then the same
        # poll with the same mark: the mark moves if b's lease on Redis lapsed meanwhile)
        skipped = b.parley.messages.polls_skipped
        deadline = time.monotonic() + 5
        while b.parley.messages.polls_skipped == skipped:
            assert time.monotonic() < deadline, i
            assert (await check(b, bob, cursor))["messages"] == []
        if i % 4 == 3:  # a group made and joined through a, then a message to it
            group = await group_with(a, alice, bob)
            assert (await send(a, alice, group, f"m{i}", "group")).status_code == 200
        else:
            assert (await send(a, alice, bob, f"m{i}")).status_code == 200
        page = await check(b, bob, cursor)
        assert [m["message"] for m in page["messages"]] == [f"m{i}"], i
        cursor = page["nextTimestamp"]
    await check(b, bob, cursor)
    await _kill_subscription(b)
    await wait_until(lambda: not b.parley.notifier.reliable)
    skipped = b.parley.messages.polls_skipped
    assert (await send(a, alice, bob, "while b was deaf")).status_code == 200
    page = await check(b, bob, cursor)
    assert [m["message"] for m in page["messages"]] == ["while b was deaf"]
    assert b.parley.messages.polls_skipped == skipped


async def test_a_write_is_answered_once_every_listener_applied_it(make_app: MakeApp) -> None:
    """b answers polls from memory (it holds a listener lease); a's send is answered only
    after b acknowledged the wake-up, so b had applied it before a's client heard back."""
    a, b = await make_app(), await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    assert b.parley.wakeups is not None
    await wait_until(lambda: b.parley.notifier.settled is not None
                     and b.parley.notifier.settled())  # fmt: skip
    assert a.parley.wakeups is not None
    acks = b.parley.wakeups.acks_sent
    waited_out = a.parley.wakeups.leases_waited_out
    assert (await send(a, alice, bob, "hi")).status_code == 200
    assert b.parley.wakeups.acks_sent > acks  # before the answer, not after
    assert a.parley.wakeups.leases_waited_out == waited_out  # acknowledged, not waited out


async def test_a_delayed_listener_delays_writes_not_answers(
    make_app: MakeApp, proxy: TcpProxy
) -> None:
    """Every byte between b and Redis is late (in order, as on a slow network): a write
    through a waits for b's acknowledgement or the end of b's lease, and the next poll
    through b finds the message, however the delay falls."""
    a, b = await make_app(), await make_app(proxy.url)
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    await wait_until(lambda: b.parley.notifier.settled is not None
                     and b.parley.notifier.settled())  # fmt: skip
    cursor = (await check(b, bob))["nextTimestamp"]
    for i, delay in enumerate((0.05, 0.2, 0.4, 0.05, 0.2)):
        proxy.delay = 0.0
        await wait_until(lambda: b.parley.notifier.settled is not None
                         and b.parley.notifier.settled())  # fmt: skip
        skipped = b.parley.messages.polls_skipped
        deadline = time.monotonic() + 5
        while b.parley.messages.polls_skipped == skipped:  # b answers from memory now
            assert time.monotonic() < deadline, i
            assert (await check(b, bob, cursor))["messages"] == []
        proxy.delay = delay
        assert (await send(a, alice, bob, f"m{i}")).status_code == 200
        page = await check(b, bob, cursor)
        assert [m["message"] for m in page["messages"]] == [f"m{i}"], (i, delay)
        cursor = page["nextTimestamp"]


async def test_a_silent_listener_holds_writes_one_lease_at_most(
    make_app: MakeApp, proxy: TcpProxy
) -> None:
    """b's subscription hangs (a stalled or partitioned connection that could not leave
    the listeners) while the rest of its link to Redis works: a's writes wait for b's
    lease to run out, once, then go on at full speed; b, its lease over, answers polls
    through Redis, not from what it remembers."""
    a, b = await make_app(), await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    assert b.parley.wakeups is not None
    b.parley.wakeups.subscription_url = proxy.url
    await _kill_subscription(b)  # it comes back through the proxy
    await wait_until(lambda: proxy.connections > 0 and b.parley.notifier.settled is not None
                     and b.parley.notifier.settled())  # fmt: skip
    cursor = (await check(b, bob))["nextTimestamp"]
    skipped = b.parley.messages.polls_skipped
    deadline = time.monotonic() + 5
    while b.parley.messages.polls_skipped == skipped:  # b answers from memory now
        assert time.monotonic() < deadline
        assert (await check(b, bob, cursor))["messages"] == []
    assert a.parley.wakeups is not None
    waited_out = a.parley.wakeups.leases_waited_out
    proxy.cut("hang")
    assert (await send(a, alice, bob, "one")).status_code == 200
    assert a.parley.wakeups.leases_waited_out == waited_out + 1  # b never acknowledged
    assert (await send(a, alice, bob, "two")).status_code == 200
    assert a.parley.wakeups.leases_waited_out == waited_out + 1  # b's lease is over
    page = await check(b, bob, cursor)  # its subscription still hangs
    assert [m["message"] for m in page["messages"]] == ["one", "two"]
    assert b.parley.redis is not None and b.parley.redis.usable  # Redis itself was fine
    proxy.restore()
    await wait_until(lambda: b.parley.notifier.settled is not None
                     and b.parley.notifier.settled())  # fmt: skip
    page = await check(b, bob, "0")
    assert [m["message"] for m in page["messages"]] == ["one", "two"]


async def test_a_redis_without_resp3_still_carries_wake_ups(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis before 6 refuses HELLO: b falls back to redis-py's pub/sub, wakes as
    before, and is no listener (its polls always ask Redis)."""

    async def refused(self: redis_wire.Subscription, timeout: float) -> None:
        raise ResponseError("ERR unknown command 'HELLO', with args beginning with: '3'")

    a = await make_app()
    monkeypatch.setattr(redis_wire.Subscription, "open", refused)
    b = await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    await wait_until(lambda: b.parley.notifier.reliable)
    assert b.parley.wakeups is not None and not b.parley.wakeups.own_subscription
    assert b.parley.notifier.settled is None  # no listener: every poll looks
    cursor = (await check(b, bob))["nextTimestamp"]
    poll = asyncio.ensure_future(check(b, bob, cursor, wait="10"))
    await asyncio.sleep(0.3)
    assert (await send(a, alice, bob, "still woken")).status_code == 200
    page = await asyncio.wait_for(poll, 5)
    assert [m["message"] for m in page["messages"]] == ["still woken"]


async def test_remembered_polls_are_bounded(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound the longest-remembered polls are forgotten (they look again)."""
    monkeypatch.setattr(messages_module, "POLL_RESUMES_MAX", 10)
    b = await make_app()
    await wait_until(lambda: b.parley.notifier.reliable)
    users = [(await b.user(f"u{i}"))[0] for i in range(25)]
    for user in users:
        cursor = (await check(b, user))["nextTimestamp"]
        await check(b, user, cursor)
    remembered = b.parley.messages._polls
    assert 0 < len(remembered) <= 10
    assert users[-1] in remembered and users[0] not in remembered


async def test_long_poll_is_woken_by_a_send_through_another_process(make_app: MakeApp) -> None:
    a, b = await make_app(), await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    cursor = (await check(b, bob))["nextTimestamp"]
    started = time.monotonic()
    poll = asyncio.ensure_future(check(b, bob, cursor, wait="10"))
    await asyncio.sleep(0.3)
    assert not poll.done()
    assert (await send(a, alice, bob, "wake up")).status_code == 200
    page = await asyncio.wait_for(poll, 5)
    assert [m["message"] for m in page["messages"]] == ["wake up"]
    assert time.monotonic() - started < 2
    assert b.parley.wakeups is not None and b.parley.wakeups.received >= 1


async def test_a_process_cut_off_from_redis_stays_right_for_everyone(
    make_app: MakeApp, proxy: TcpProxy
) -> None:
    a = await make_app(redis_url=proxy.url)  # a reaches Redis through the proxy
    b = await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    group = await group_with(a, alice, bob)
    cursor = (await check(b, bob))["nextTimestamp"]
    await check(b, bob, cursor)
    assert link(b).usable
    epoch = link(b).epoch

    proxy.cut("hang")
    # a blocks and removes; b (whose Redis is fine) must enforce both at once
    r = await a.client.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice})
    assert r.status_code == 200
    assert (await send(b, alice, bob, "blocked?")).status_code == 403
    r = await a.client.post(f"/v1/groups/{group}?op=remove", json={"userId": bob})
    assert r.status_code == 200
    assert (await send(b, bob, group, "member?", "group")).status_code == 403
    assert link(a).bumps >= 1 and link(a).epoch > epoch
    # a message stored through a reaches b's poller although no watermark was raised
    await a.client.post(f"/v1/groups/{group}?op=add", json={"userId": bob})
    assert (await send(a, alice, group, "through a", "group")).status_code == 200
    await wait_until(lambda: link(b).epoch == link(a).epoch and link(b).usable)
    page = await check(b, bob, cursor)
    assert [m["message"] for m in page["messages"]] == ["through a"]
    # a answers from PostgreSQL meanwhile, and says it is degraded
    assert (await check(a, bob, cursor))["messages"][0]["message"] == "through a"
    ready = (await a.client.get("/readyz")).json()
    assert ready["status"] == "degraded" and ready["checks"]["redis"] == "degraded"

    proxy.restore()
    await wait_until(lambda: link(a).usable, 10)
    assert (await a.client.get("/readyz")).json()["status"] == "ok"
    r = await b.client.post(f"/v1/users/{bob}?op=unblock", json={"blockedUserId": alice})
    assert r.status_code == 200
    assert (await send(a, alice, bob, "friends again")).status_code == 200


async def test_redis_down_for_everyone_then_back(make_app: MakeApp, proxy: TcpProxy) -> None:
    a, b = await make_app(redis_url=proxy.url), await make_app(redis_url=proxy.url)
    alice, _ = await a.user("alice")
    bob, _ = await b.user("bob")
    cursor = (await check(b, bob))["nextTimestamp"]
    proxy.cut("refuse")
    assert (await send(a, alice, bob, "during")).status_code == 200
    page = await check(b, bob, cursor)
    assert [m["message"] for m in page["messages"]] == ["during"]
    assert (
        await a.client.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice})
    ).status_code == 200
    assert (await send(b, alice, bob, "no")).status_code == 403
    proxy.restore()
    await wait_until(lambda: link(a).usable and link(b).usable, 10)
    assert (await send(b, alice, bob, "still no")).status_code == 403
    next_page = await check(a, bob, page["nextTimestamp"])
    assert next_page["messages"] == []


async def test_redis_that_lost_its_data_is_not_trusted(make_app: MakeApp) -> None:
    a, b = await make_app(), await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    cursor = (await check(b, bob))["nextTimestamp"]
    assert (await send(a, alice, bob, "kept in PostgreSQL")).status_code == 200
    # Redis restarts empty: every key of this deployment is gone
    client: aioredis.Redis = aioredis.Redis.from_url(services.REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=link(a).prefix + "*")]
        await client.delete(*keys)
    finally:
        await client.aclose()
    page = await check(b, bob, cursor)  # no watermark now, but an older cursor is "maybe"
    assert [m["message"] for m in page["messages"]] == ["kept in PostgreSQL"]
    await wait_until(lambda: link(b).usable)
    r = await a.client.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice})
    assert r.status_code == 200
    assert (await send(b, alice, bob, "blocked")).status_code == 403


async def test_redis_restored_from_an_old_snapshot_gets_a_new_epoch(make_app: MakeApp) -> None:
    a = await make_app()
    epoch = link(a).epoch
    client: aioredis.Redis = aioredis.Redis.from_url(services.REDIS_URL)
    try:  # what a restart from a snapshot looks like: the namespace is there, the server new
        await client.set(link(a).key(str(epoch), ":boot"), "another-server")
    finally:
        await client.aclose()
    await wait_until(lambda: link(a).epoch > epoch and link(a).usable)


async def test_a_fill_that_raced_a_write_is_refused(make_app: MakeApp) -> None:
    a, b = await make_app(), await make_app()
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    group = await group_with(a, alice)
    directory = b.parley.directory
    # Forget bob's cached groups so that b must fill them from PostgreSQL.
    client: aioredis.Redis = aioredis.Redis.from_url(services.REDIS_URL)
    try:
        await client.delete(link(b).key(str(link(b).epoch), ":s:g:", bob))
    finally:
        await client.aclose()
    storage = b.parley.storage
    original = storage.user_groups
    gate = asyncio.Event()

    async def slow_user_groups(user_id: str) -> list[str]:
        groups = await original(user_id)  # read before a's write commits...
        await gate.wait()  # ...and filled only after it
        return groups

    storage.user_groups = slow_user_groups  # type: ignore[method-assign]
    reading = asyncio.ensure_future(directory.groups_of(bob))
    await asyncio.sleep(0.05)
    r = await a.client.post(f"/v1/groups/{group}?op=add", json={"userId": bob})
    assert r.status_code == 200
    gate.set()
    assert await reading == set()  # the stale answer of a read that began first
    storage.user_groups = original  # type: ignore[method-assign]
    assert await directory.groups_of(bob) == {group}  # but it was not cached


async def _kill_subscription(app: Harness) -> None:
    """Drop this app's pub/sub connection in Redis, as a network fault would."""
    wakeups = app.parley.wakeups
    assert wakeups is not None
    direct = aioredis.Redis.from_url(services.REDIS_URL, decode_responses=True)
    try:
        name = f"parley-wake-{wakeups.origin}"
        ids = [c["id"] for c in await direct.client_list() if c.get("name") == name]
        assert ids, f"no connection named {name}"
        for client_id in ids:
            await direct.client_kill_filter(_id=client_id)
    finally:
        await direct.aclose()


async def test_a_patient_waiter_misses_no_wake_up_across_a_lost_subscription(
    make_app: MakeApp,
) -> None:
    """A live stream sleeps until it is woken or its keep-alive is due (``patient``): no
    re-check of its own while the wake-ups are reliable. When b's subscription is lost,
    a wake-up published meanwhile never reaches b; b pokes every waiter when it loses the
    subscription and again when it has it back, so the waiter finds the message then,
    not at its 30-second deadline."""
    a, b = await make_app(), await make_app()
    assert b.parley.wakeups is not None
    b.parley.wakeups.resubscribe_after = 2.0  # a gap long enough to send through a in it
    alice, _ = await a.user("alice")
    bob, _ = await a.user("bob")
    await wait_until(lambda: b.parley.notifier.reliable)
    subscribed = b.parley.wakeups.subscriptions
    cursor = int((await check(b, bob))["nextTimestamp"])
    waiter = asyncio.ensure_future(
        b.parley.messages.check(None, bob, cursor, wait=30, patient=True)
    )
    await asyncio.sleep(0.3)
    assert not waiter.done()
    started = time.monotonic()
    await _kill_subscription(b)
    await wait_until(lambda: not b.parley.notifier.reliable)
    assert (await send(a, alice, bob, "sent while b was deaf")).status_code == 200
    assert not b.parley.notifier.reliable  # the wake-up was published into the gap
    page = await asyncio.wait_for(waiter, 25)
    assert [m.body for m in page.messages] == ["sent while b was deaf"]
    assert time.monotonic() - started < 25
    await wait_until(lambda: b.parley.wakeups is not None
                     and b.parley.wakeups.subscriptions > subscribed)  # fmt: skip
    assert b.parley.notifier.reliable


async def test_a_revocation_pokes_a_patient_waiter_on_another_process(make_app: MakeApp) -> None:
    """Revoking a token signals the user's waiters in every process: a live stream
    sleeping until a keep-alive far away ends at once."""
    a, b = await make_app(auth="token"), await make_app(auth="token")
    alice, headers = await a.user("alice")
    r = await a.client.post(f"/v1/users/{alice}/tokens", json={"deviceName": "laptop"},
                            headers=headers)  # fmt: skip
    assert r.status_code == 200, r.text
    laptop = r.json()
    await wait_until(lambda: b.parley.notifier.reliable)
    watch = Watch()
    b.parley.messages.listen(alice, watch)
    r = await b.client.get(
        f"/v1/messages/{alice}", headers={"Authorization": f"Bearer {laptop['token']}"}
    )
    assert r.status_code == 200, r.text
    cursor = int(r.json()["nextTimestamp"])
    waiter = asyncio.ensure_future(
        b.parley.messages.check(alice, alice, cursor, wait=30, watch=watch, patient=True)
    )
    await asyncio.sleep(0.3)
    assert not waiter.done()
    r = await a.client.delete(f"/v1/users/{alice}/tokens/{laptop['tokenId']}", headers=headers)
    assert r.status_code == 200
    page = await asyncio.wait_for(waiter, 10)
    assert page.messages == [] and watch.poked
    assert not await b.parley.accounts.still_signed_in(alice, laptop["tokenId"])
    b.parley.messages.unlisten(alice, watch)
