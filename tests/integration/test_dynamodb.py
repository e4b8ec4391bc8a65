"""DynamoDB positions and conditional writes, across several adapter instances.

The contract suite (test_storage_contract.py) already runs on DynamoDB; these tests pin
what is specific to it. Each ``DynamoStorage`` instance has its own client, connection
pool, writer id and in-memory state, exactly like a separate Parley process; several of
them share one set of tables on the moto endpoint (``test_dynamodb_processes.py`` does the
same with real OS processes). Nothing here needs transactions.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from parley.domain.models import GroupRecord, Message, UserRecord, new_id
from parley.errors import Unavailable
from parley.settings import Settings, SettingsError
from parley.storage.base import MessageDraft
from parley.storage.dynamodb import DynamoStorage
from parley.storage.dynamodb_clock import CLOCK_KEY, ClockState, Reservation
from parley.storage.dynamodb_items import message_items
from parley.storage.dynamodb_items import n as number
from parley.storage.dynamodb_items import s as string
from tests.conftest import unavailable
from tests.integration import moto_server
from tests.integration.moto_server import Stores


def draft(
    sender: str, recipient: str, text: str = "hi", kind: str = "private", key: str | None = None
) -> MessageDraft:
    return MessageDraft(new_id("m_"), kind, sender, recipient, text, key)  # type: ignore[arg-type]


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    reason = moto_server.moto_missing()
    if reason:
        unavailable(reason)
    async with moto_server.shared_tables() as make:
        yield make


async def follow(
    reader: DynamoStorage, recipients: list[str], cursor: int | None, limit: int
) -> tuple[list[Message], int | None]:
    """Poll like a client: always with the previous answer's next_ts, until no more."""
    got: list[Message] = []
    for _ in range(10_000):
        page = await reader.read_messages(recipients, None, cursor, limit)
        for message in page.messages:
            assert cursor is None or message.ts > cursor
        assert cursor is None or page.next_ts >= cursor, "cursor went backwards"
        got += page.messages
        cursor = page.next_ts
        if not page.has_more:
            return got, cursor
    raise AssertionError("pages never ended")


def assert_exactly_once_in_order(got: list[Message], sent: set[str]) -> None:
    ids = [m.id for m in got]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert set(ids) == sent, f"missing {len(sent - set(ids))}, unexpected {len(set(ids) - sent)}"
    keys = [(m.ts, m.seq) for m in got]
    assert keys == sorted(keys), "messages out of order"


# --- the polling contract across processes ------------------------------------------------
async def test_concurrent_writers_in_separate_processes_and_a_poller(stores: Stores) -> None:
    writers = [await stores(max_inflight=2) for _ in range(4)]
    reader = await stores()
    streams = ["u_reader", "g_one", "g_two"]
    sent: set[str] = set()
    done = asyncio.Event()
    rng = random.Random(7)

    async def write(store: DynamoStorage, index: int) -> None:
        for n in range(30):
            target = streams[n % 3]
            kind = "private" if target.startswith("u_") else "group"
            message, created = await store.append_message(
                draft(f"u_w{index}", target, f"{index}-{n}", kind)
            )
            assert created
            sent.add(message.id)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() / 200)

    got: list[Message] = []
    polls = 0

    async def poll() -> None:
        nonlocal polls
        cursor: int | None = None
        while True:
            finished = done.is_set()
            page, cursor = await follow(reader, streams, cursor, 7)
            got.extend(page)
            polls += 1
            if finished:
                return

    poller = asyncio.create_task(poll())
    await asyncio.gather(*(write(store, i) for i, store in enumerate(writers)))
    done.set()
    await poller
    assert_exactly_once_in_order(got, sent)
    assert len(sent) == 120 and polls > 5
    # A writer's batches share a timestamp; different reservations never do.
    assert len({(m.ts, m.seq) for m in got}) == 120


async def test_out_of_order_finish_across_processes(stores: Stores) -> None:
    """Synapse's test_out_of_order_finish on the shared clock: reservations t1 < t2 < t3
    < t4 from three processes; the frontier stays below the oldest unfinished one."""
    a, b, c = await stores(), await stores(), await stores()
    t = [await a.clock.reserve(), await b.clock.reserve(), await c.clock.reserve()]
    t.append(await a.clock.reserve())
    assert [r.ts for r in t] == sorted({r.ts for r in t})
    state = await c.clock.read()
    assert state.frontier == t[0].ts - 1
    assert await b.clock.release(t[1])  # t2 finishes first
    assert (await c.clock.read()).frontier == t[0].ts - 1
    assert await a.clock.release(t[0])  # then t1: the frontier moves to just below t3
    assert (await c.clock.read()).frontier == t[2].ts - 1
    assert await a.clock.release(t[3])
    assert (await c.clock.read()).frontier == t[2].ts - 1
    assert await c.clock.release(t[2])
    assert (await c.clock.read()).frontier == t[3].ts


async def test_a_slow_write_holds_back_later_ones(stores: Stores) -> None:
    """A message committed by B after A reserved stays hidden until A has finished, and
    the poller then receives A's message before B's, each exactly once."""
    a, b, reader = await stores(), await stores(), await stores()
    gate = asyncio.Event()
    reserved = asyncio.Event()
    write_items = a._write_items

    async def slow_write(writes: object) -> None:
        reserved.set()
        await gate.wait()
        await write_items(writes)  # type: ignore[arg-type]

    a._write_items = slow_write  # type: ignore[method-assign]
    first, cursor = await follow(reader, ["u_r"], None, 100)
    assert first == []
    slow = asyncio.create_task(a.append_message(draft("u_a", "u_r", "slow")))
    await reserved.wait()
    fast, _ = await b.append_message(draft("u_b", "u_r", "fast"))
    page = await reader.read_messages(["u_r"], None, cursor, 100)
    assert page.messages == [] and page.next_ts < fast.ts
    cursor = page.next_ts
    gate.set()
    slow_message, _ = await slow
    assert slow_message.ts < fast.ts
    got, _ = await follow(reader, ["u_r"], cursor, 100)
    assert [m.body for m in got] == ["slow", "fast"]


async def test_a_crashed_writer_is_aborted_after_its_lease(stores: Stores) -> None:
    """A writer that reserved and stopped answering holds readers back only for the
    lease; once aborted, whatever it writes later is never shown and it reports failure."""
    a = await stores()
    reader = await stores(lease_ms=1000)
    gate = asyncio.Event()
    reserved = asyncio.Event()
    write_items = a._write_items

    async def hung_write(writes: object) -> None:
        reserved.set()
        await gate.wait()
        await write_items(writes)  # type: ignore[arg-type]

    a._write_items = hung_write  # type: ignore[method-assign]
    hung = asyncio.create_task(a.append_message(draft("u_a", "u_r", "too late")))
    await reserved.wait()
    held = await reader.read_messages(["u_r"], None, None, 100)
    later, _ = await reader.append_message(draft("u_b", "u_r", "after it"))
    assert (await reader.read_messages(["u_r"], None, held.next_ts, 100)).messages == []
    await asyncio.sleep(1.1)  # the lease runs out; the next reading aborts the reservation
    page = await reader.read_messages(["u_r"], None, held.next_ts, 100)
    assert [m.id for m in page.messages] == [later.id]
    gate.set()
    with pytest.raises(Unavailable):
        await hung  # its items were written, but its release finds it aborted
    everything = await reader.read_messages(["u_r"], None, None, 100)
    assert [m.body for m in everything.messages] == ["after it"]
    assert (await reader.read_messages(["u_r"], None, page.next_ts, 100)).messages == []


async def test_lost_items_of_an_aborted_write_stay_hidden_to_every_reader(stores: Stores) -> None:
    a, b = await stores(), await stores()
    reservation = await a.clock.reserve()
    message = Message(new_id("m_"), "private", "u_a", "u_r", "ghost", reservation.ts, 0)
    await a._write_items([("messages", item) for item in message_items(message)])
    await a.clock.abort(reservation)
    assert not await a.clock.release(reservation)
    for store in (a, b):
        page = await store.read_messages(["u_r"], "u_a", None, 100)
        assert page.messages == [] and page.next_ts >= reservation.ts
        assert await store._rows_at(["u_r"], "u_a", reservation.ts) == []


async def test_more_than_a_page_in_one_timestamp(stores: Stores) -> None:
    """Group commit puts a burst under one timestamp; pages never split it."""
    store = await stores(max_inflight=1)
    results = await asyncio.gather(
        *(store.append_message(draft("u_s", "u_r", f"m{i}")) for i in range(300))
    )
    stamps = [m.ts for m, _ in results]
    assert len(set(stamps)) < 10  # one batch for the first, then large ones
    got, _ = await follow(store, ["u_r"], None, 50)
    assert_exactly_once_in_order(got, {m.id for m, _ in results})


async def test_same_millisecond_never_overwrites(stores: Stores) -> None:
    """The course design's bug: second-resolution sort keys. A frozen clock still stores each."""
    a, b = await stores(max_inflight=1), await stores(max_inflight=1)
    for store in (a, b):
        store.clock.clock = lambda: 5_000_000_000_000
    sent = []
    for i in range(10):
        for store in (a, b):
            sent.append((await store.append_message(draft("u_s", "u_r", f"m{i}")))[0])
    assert len({m.ts for m in sent}) == 20  # one reservation each: the clock moves on by 1
    got, _ = await follow(a, ["u_r"], None, 500)
    assert [m.id for m in got] == [m.id for m in sent]


async def test_two_messages_forced_onto_one_key_are_both_stored(stores: Stores) -> None:
    """If two writers ever got the same timestamp (as moto's non-atomic conditional
    updates once allowed), their first messages share (recipient, ts, seq). The message id
    at the end of the sort key keeps the second from overwriting the first."""
    a, b = await stores(), await stores()
    first, _ = await a.append_message(draft("u_s", "u_r", "first"))

    async def the_same_timestamp() -> Reservation:
        key = f"{b.clock.writer}.dup"  # a real pending entry, so it releases normally
        await b.client.call(
            "update_item",
            TableName=b.tables["streams"],
            Key=CLOCK_KEY,
            UpdateExpression="SET #p.#k = :v",
            ExpressionAttributeNames={"#p": "pending", "#k": key},
            ExpressionAttributeValues={":v": number(first.ts - 1)},
        )
        return Reservation(key, first.ts)

    b.clock.reserve = the_same_timestamp  # type: ignore[method-assign]
    second, created = await b.append_message(draft("u_t", "u_r", "second"))
    assert created and (second.ts, second.seq) == (first.ts, first.seq)
    for stream in ("u_r", "sent:u_s", "sent:u_t"):
        response = await a.client.call(
            "query",
            TableName=a.tables["messages"],
            KeyConditionExpression="recipient_id = :r",
            ExpressionAttributeValues={":r": string(stream)},
            ConsistentRead=True,
        )
        expected = 2 if stream == "u_r" else 1
        assert len(response["Items"]) == expected, stream
    for reader in (a, b):
        got, _ = await follow(reader, ["u_r"], None, 1)  # one timestamp is never split
        assert sorted(m.body for m in got) == ["first", "second"]


async def test_items_written_before_the_id_tail_still_read(stores: Stores) -> None:
    """Sort keys without the id tail (``<ts>.<seq>``) sort and read as before."""
    store = await stores()
    old, _ = await store.append_message(draft("u_s", "u_r", "old layout"))
    await store.client.call(
        "delete_item",
        TableName=store.tables["messages"],
        Key={"recipient_id": string("u_r"), "sk": string(f"{old.ts:016d}.{old.seq:09d}#{old.id}")},
    )
    item = message_items(old)[0]
    await store._write_items([("messages", {**item, "sk": string(f"{old.ts:016d}.{old.seq:09d}")})])
    new, _ = await store.append_message(draft("u_s", "u_r", "new layout"))
    got, _ = await follow(store, ["u_r"], None, 1)
    assert [m.id for m in got] == [old.id, new.id]
    assert await store._rows_at(["u_r"], None, old.ts) == [old]


async def test_concurrent_clock_reservations_are_never_duplicated(stores: Stores) -> None:
    """The test endpoint must apply single-item conditional writes atomically, as
    DynamoDB does: 1,000 reservations and their 1,000 conditional releases from four
    "processes", 64 in flight. (moto's threaded server handed out duplicates here.)"""
    clocks = [(await stores()).clock for _ in range(4)]
    in_flight = asyncio.Semaphore(64)

    async def reserve_and_release(index: int) -> int:
        clock = clocks[index % len(clocks)]
        async with in_flight:
            reservation = await clock.reserve()
            assert await clock.release(reservation)
        return reservation.ts

    stamps = await asyncio.gather(*(reserve_and_release(i) for i in range(1000)))
    duplicates = len(stamps) - len(set(stamps))
    assert duplicates == 0, f"{duplicates} timestamps handed out twice"
    assert (await clocks[0].read()).pending == {}


async def test_concurrent_checks_share_clock_readings(stores: Stores) -> None:
    """A busy process keeps one clock reading in flight, however many checks it serves;
    each check still uses a reading that started after it arrived."""
    store = await stores()
    message, _ = await store.append_message(draft("u_s", "u_r"))
    before = store.client.usage.calls["get_item"]
    pages = await asyncio.gather(*(store.read_messages(["u_r"], None, None, 10) for _ in range(50)))
    assert all([m.id for m in page.messages] == [message.id] for page in pages)
    assert store.client.usage.calls["get_item"] - before <= 5


# --- conditional single-item writes across processes ----------------------------------
async def test_twenty_concurrent_adds_of_one_member_exactly_one_wins(stores: Stores) -> None:
    instances = [await stores() for _ in range(4)]
    group = GroupRecord(new_id("g_"), "race")
    await instances[0].create_group(group, None)
    adds = await asyncio.gather(*(instances[i % 4].add_member(group.id, "u_x") for i in range(20)))
    assert adds.count(True) == 1
    assert await instances[1].user_groups("u_x") == [group.id]
    assert await instances[2].group_members(group.id) == ["u_x"]
    removes = await asyncio.gather(
        *(instances[i % 4].remove_member(group.id, "u_x") for i in range(20))
    )
    assert removes.count(True) == 1
    assert await instances[3].user_groups("u_x") == []


async def test_concurrent_adds_of_different_members_lose_nothing(stores: Stores) -> None:
    """The course design's read-modify-write of a member list lost updates; one item each cannot."""
    instances = [await stores() for _ in range(4)]
    group = GroupRecord(new_id("g_"), "many")
    await instances[0].create_group(group, "u_owner")
    users = [f"u_{i:02d}" for i in range(40)]
    adds = await asyncio.gather(
        *(instances[i % 4].add_member(group.id, u) for i, u in enumerate(users))
    )
    assert all(adds)
    assert await instances[1].group_members(group.id) == sorted([*users, "u_owner"])


async def test_twenty_concurrent_blocks_exactly_one_wins(stores: Stores) -> None:
    instances = [await stores() for _ in range(4)]
    blocks = await asyncio.gather(*(instances[i % 4].add_block("u_a", "u_b") for i in range(20)))
    assert blocks.count(True) == 1
    others = await asyncio.gather(*(instances[i % 4].add_block("u_a", f"u_{i}") for i in range(20)))
    assert all(others)
    assert len(await instances[0].blocked_by("u_a")) == 21
    unblocks = await asyncio.gather(
        *(instances[i % 4].remove_block("u_a", "u_b") for i in range(20))
    )
    assert unblocks.count(True) == 1
    assert "u_b" not in await instances[3].blocked_by("u_a")


# --- idempotent sends across processes ----------------------------------------------------
async def test_one_key_sent_through_two_processes_stores_one(stores: Stores) -> None:
    a, b = await stores(), await stores()
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).append_message(draft("u_s", "u_r", "once", key="k"))
            for i in range(8)
        )
    )
    assert sum(created for _, created in results) == 1
    assert len({m.id for m, _ in results}) == 1
    page = await a.read_messages(["u_r"], None, None, 100)
    assert [m.id for m in page.messages] == [results[0][0].id]
    assert await b.find_send("u_s", "k") == results[0][0]


async def test_a_retry_after_an_aborted_attempt_stores_the_message(stores: Stores) -> None:
    a, b = await stores(), await stores()

    async def failing(writes: object) -> None:
        raise Unavailable("cut off")

    a._write_items = failing  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await a.append_message(draft("u_s", "u_r", "try", key="k2"))
    assert await b.find_send("u_s", "k2") is None  # the claim's reservation was aborted
    message, created = await b.append_message(draft("u_s", "u_r", "try", key="k2"))
    assert created
    assert await a.find_send("u_s", "k2") == message
    page = await b.read_messages(["u_r"], None, None, 100)
    assert [m.id for m in page.messages] == [message.id]


# --- settings, migrate, the cache epoch ---------------------------------------------------
async def test_open_without_tables_says_run_migrate(stores: Stores) -> None:
    await stores()  # the moto server is up
    store = DynamoStorage(
        table_prefix=moto_server.new_prefix(),
        endpoint=moto_server.endpoint(),
        region="us-east-1",
        create_tables=False,
    )
    with pytest.raises(Unavailable, match="migrate"):
        await store.open()


async def test_parley_migrate_creates_the_tables(stores: Stores) -> None:
    from parley.cli import _migrate

    await stores()
    prefix = moto_server.new_prefix()
    settings = Settings.from_env(
        {
            "PARLEY_STORAGE": "dynamodb",
            "PARLEY_DYNAMODB_ENDPOINT": moto_server.endpoint(),
            "PARLEY_DYNAMODB_TABLE_PREFIX": prefix,
        }
    )
    for _ in range(2):  # a second run finds everything in place
        await _migrate(settings)
    store = moto_server.TestDynamo(prefix, create_tables=False)
    await store.open()
    try:
        user = UserRecord(new_id("u_"), "ada")
        await store.create_user(user)
        assert await store.get_user(user.id) == user
    finally:
        await store.close()


def test_settings_select_and_check_dynamodb() -> None:
    from parley.app import make_storage

    settings = Settings.from_env(
        {
            "PARLEY_STORAGE": "dynamodb",
            "PARLEY_DYNAMODB_ENDPOINT": "http://127.0.0.1:8000",
            "PARLEY_DYNAMODB_TABLE_PREFIX": "p1-",
        }
    )
    store = make_storage(settings)
    assert isinstance(store, DynamoStorage)
    assert store.tables["messages"] == "p1-messages" and store.create_missing
    aws = make_storage(Settings.from_env({"PARLEY_STORAGE": "dynamodb"}))
    assert isinstance(aws, DynamoStorage) and not aws.create_missing
    with pytest.raises(SettingsError, match="ENDPOINT"):
        Settings.from_env({"PARLEY_DYNAMODB_ENDPOINT": "localhost:8000"})
    with pytest.raises(SettingsError, match="PREFIX"):
        Settings.from_env({"PARLEY_DYNAMODB_TABLE_PREFIX": "bad prefix/"})


async def test_cache_epoch_and_frontier_come_from_the_clock_item(stores: Stores) -> None:
    a, b = await stores(), await stores()
    epoch, frontier = await a.cache_state()
    assert (epoch, frontier) == (1, 0)
    assert await b.bump_cache_epoch() == 2
    message, _ = await b.append_message(draft("u_s", "u_r"))
    assert await a.cache_state() == (2, message.ts)


def test_clock_state_frontier() -> None:
    state = ClockState(ts=120, pending={"a.1": 99, "b.7": 110}, aborted=frozenset(), epoch=1)
    assert state.frontier == 99 and state.is_pending(100) and not state.is_pending(120)
    assert ClockState(ts=120, pending={}, aborted=frozenset(), epoch=1).frontier == 120


async def test_a_repeated_delete_finishes_erasing_what_a_crash_left(stores: Stores) -> None:
    """A delete that died after its first write (the inbox item) left the text in the
    sender's sent: copy and in an edit event: repeating the delete erases both."""
    from parley.storage.base import EventDraft
    from parley.storage.dynamodb_items import LOCATOR_PREFIX

    store = await stores()
    message, _ = await store.append_message(draft("u_a", "u_b", "first words"))
    edit = EventDraft(new_id("e_"), "message_edited", ("u_a", "u_b"),
                      {"messageId": message.id, "conversationId": "u_b",
                       "message": "second words"})  # fmt: skip
    assert await store.edit_message(message.id, "u_a", "second words", [edit]) is not None
    # the first write of a delete, and nothing after it
    locator = await store._get(
        "messages", {"recipient_id": string(LOCATOR_PREFIX + message.id), "sk": string("id")}
    )
    assert locator is not None
    await store.client.call(
        "update_item",
        TableName=store.tables["messages"],
        Key={"recipient_id": locator["to"], "sk": locator["msk"]},
        UpdateExpression="SET body = :b, deleted = :d",
        ExpressionAttributeValues={":b": string(""), ":d": {"BOOL": True}},
    )

    async def raw() -> str:
        r = await store.client.call("scan", TableName=store.tables["messages"])
        return repr(r.get("Items", []))

    assert "second words" in await raw()  # what the crash left
    gone = EventDraft(new_id("e_"), "message_deleted", ("u_a", "u_b"),
                      {"messageId": message.id, "conversationId": "u_b"})  # fmt: skip
    assert await store.edit_message(message.id, "u_a", None, [gone]) is None  # already deleted
    assert "second words" not in await raw() and "first words" not in await raw()
    sent = await store.read_messages([], "u_a", None, 10)
    assert [(m.id, m.body, m.deleted) for m in sent.messages] == [(message.id, "", True)]
