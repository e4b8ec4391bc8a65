"""The behaviour every storage adapter must have (run once per registered backend)."""

from __future__ import annotations

import asyncio

from parley.domain.models import GroupRecord, UserRecord, new_id
from parley.domain.positions import PositionTracker
from parley.storage.base import MessageDraft, Storage
from tests.backends import MakeStorage


def draft(
    sender: str, recipient: str, text: str = "hi", kind: str = "private", key: str | None = None
) -> MessageDraft:
    return MessageDraft(new_id("m_"), kind, sender, recipient, text, key)  # type: ignore[arg-type]


async def settle(storage: Storage) -> None:
    """Let the frontier pass everything written so far (it trails the clock by 1 ms)."""
    await asyncio.sleep(0.003)


async def test_users_round_trip(storage: Storage) -> None:
    user = UserRecord(new_id("u_"), "ada", b"\x01" * 32)
    await storage.create_user(user)
    assert await storage.get_user(user.id) == user
    assert await storage.get_user("u_missing") is None
    assert await storage.get_user("../%00\u2603" * 50) is None


async def test_groups_and_conditional_membership(storage: Storage) -> None:
    group = GroupRecord(new_id("g_"), "friends")
    await storage.create_group(group, "u_a")
    assert await storage.get_group(group.id) == group
    assert await storage.group_members(group.id) == ["u_a"]
    assert await storage.add_member(group.id, "u_b") is True
    assert await storage.add_member(group.id, "u_b") is False
    assert await storage.user_groups("u_b") == [group.id]
    assert await storage.remove_member(group.id, "u_b") is True
    assert await storage.remove_member(group.id, "u_b") is False
    assert await storage.user_groups("u_b") == []
    empty = GroupRecord(new_id("g_"), "empty")
    await storage.create_group(empty, None)
    assert await storage.group_members(empty.id) == []


async def test_concurrent_adds_only_one_wins(storage: Storage) -> None:
    group = GroupRecord(new_id("g_"), "race")
    await storage.create_group(group, None)
    results = await asyncio.gather(*(storage.add_member(group.id, "u_x") for _ in range(20)))
    assert results.count(True) == 1
    assert await storage.group_members(group.id) == ["u_x"]


async def test_blocks_are_conditional(storage: Storage) -> None:
    assert await storage.add_block("u_a", "u_b") is True
    assert await storage.add_block("u_a", "u_b") is False
    assert await storage.add_block("u_a", "u_a") is True
    assert await storage.blocked_by("u_a") == sorted(["u_a", "u_b"])
    assert await storage.remove_block("u_a", "u_b") is True
    assert await storage.remove_block("u_a", "u_b") is False
    assert await storage.blocked_by("u_a") == ["u_a"]


async def test_messages_in_order_with_frontier_cursor(storage: Storage) -> None:
    sent = [(await storage.append_message(draft("u_s", "u_r", f"m{i}")))[0] for i in range(5)]
    await settle(storage)
    page = await storage.read_messages(["u_r"], None, None, 500)
    assert [m.id for m in page.messages] == [m.id for m in sent]
    assert page.has_more is False
    assert page.next_ts >= sent[-1].ts
    again = await storage.read_messages(["u_r"], None, page.next_ts, 500)
    assert again.messages == []
    assert again.next_ts >= page.next_ts


async def test_group_and_sent_streams(storage: Storage) -> None:
    await storage.append_message(draft("u_a", "g_1", "to group", "group"))
    await storage.append_message(draft("u_a", "u_b", "to b"))
    await storage.append_message(draft("u_a", "u_a", "to self"))
    await storage.append_message(draft("u_c", "u_d", "not mine"))
    await settle(storage)
    inbox = await storage.read_messages(["u_a", "g_1"], None, None, 500)
    assert [m.body for m in inbox.messages] == ["to group", "to self"]
    with_sent = await storage.read_messages(["u_a", "g_1"], "u_a", None, 500)
    assert [m.body for m in with_sent.messages] == ["to group", "to b", "to self"]


async def test_pages_never_split_a_timestamp(storage: Storage) -> None:
    for i in range(30):
        await storage.append_message(draft("u_s", "u_r", f"m{i}"))
    await settle(storage)
    everything = (await storage.read_messages(["u_r"], None, None, 1000)).messages
    assert len(everything) == 30
    seen: list[str] = []
    after: int | None = None
    for _ in range(100):
        page = await storage.read_messages(["u_r"], None, after, 4)
        seen += [m.id for m in page.messages]
        if page.messages:
            last_ts = page.messages[-1].ts
            # nothing with the same timestamp was left behind for the next page
            assert all(m.ts != last_ts for m in everything if m.id not in seen)
        after = page.next_ts
        if not page.has_more:
            break
    assert seen == [m.id for m in everything]


class Clock:
    """A clock the test sets (unix ms)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def tracker_of(storage: Storage) -> PositionTracker:
    tracker = storage.positions  # type: ignore[attr-defined]
    assert isinstance(tracker, PositionTracker)
    return tracker


async def test_more_than_a_page_in_one_millisecond(clocked_storage: MakeStorage) -> None:
    clock = Clock(5_000_000_000_000)  # every write lands in one millisecond
    storage = await clocked_storage(clock)
    for i in range(12):
        await storage.append_message(draft("u_s", "u_r", f"m{i}"))
    clock.now = 5_000_000_000_010
    page = await storage.read_messages(["u_r"], None, None, 5)
    assert len(page.messages) == 12 and page.has_more
    assert page.next_ts == 5_000_000_000_000
    rest = await storage.read_messages(["u_r"], None, page.next_ts, 5)
    assert rest.messages == []


async def test_out_of_order_finish_hides_later_writes(clocked_storage: MakeStorage) -> None:
    """Writes 8..11 are in flight; a finished later write stays invisible until they end."""
    base = 6_000_000_000_000
    clock = Clock(base + 8)
    storage = await clocked_storage(clock)
    tracker = tracker_of(storage)
    release = [asyncio.Event() for _ in range(4)]

    async def in_flight(go: asyncio.Event, ready: asyncio.Event) -> None:
        async with tracker.writing():  # a slow write of this adapter holding its position
            ready.set()
            await go.wait()

    writes = []
    for offset, go in zip((8, 9, 10, 11), release, strict=True):
        clock.now = base + offset
        ready = asyncio.Event()
        writes.append(asyncio.create_task(in_flight(go, ready)))
        await ready.wait()

    async def finish(i: int) -> None:
        release[i].set()
        await writes[i]

    clock.now = base + 12
    done, _ = await storage.append_message(draft("u_s", "u_r", "finished early"))
    assert done.ts == base + 12
    clock.now = base + 20
    page = await storage.read_messages(["u_r"], None, base, 500)
    assert page.messages == [] and page.next_ts == base + 7
    await finish(1)  # 9
    page = await storage.read_messages(["u_r"], None, base, 500)
    assert page.messages == [] and page.next_ts == base + 7
    await finish(0)  # 8
    assert (await storage.read_messages(["u_r"], None, base, 500)).next_ts == base + 9
    await finish(3)
    await finish(2)
    page = await storage.read_messages(["u_r"], None, base + 7, 500)
    assert [m.id for m in page.messages] == [done.id]
    assert page.next_ts == base + 19


async def test_idempotent_append(storage: Storage) -> None:
    first, created = await storage.append_message(draft("u_s", "u_r", "once", key="k1"))
    assert created
    again, created_again = await storage.append_message(draft("u_s", "u_r", "once", key="k1"))
    assert not created_again and again.id == first.id and again.ts == first.ts
    other, created_other = await storage.append_message(draft("u_t", "u_r", "x", key="k1"))
    assert created_other and other.id != first.id
    assert (await storage.find_send("u_s", "k1")) == first
    assert await storage.find_send("u_s", "nope") is None
    await settle(storage)
    page = await storage.read_messages(["u_r"], None, None, 500)
    assert [m.id for m in page.messages] == [first.id, other.id]


async def test_concurrent_idempotent_appends_store_one(storage: Storage) -> None:
    results = await asyncio.gather(
        *(storage.append_message(draft("u_s", "u_r", "dup", key="same")) for _ in range(10))
    )
    assert sum(1 for _, created in results if created) == 1
    assert len({m.id for m, _ in results}) == 1


async def test_last_position_and_ping(storage: Storage) -> None:
    await storage.ping()
    assert await storage.last_position() == 0
    message, _ = await storage.append_message(draft("u_s", "u_r"))
    assert await storage.last_position() == message.ts


async def test_calls_are_counted(storage: Storage) -> None:
    before = storage.calls["get_user"]
    await storage.get_user("u_x")
    assert storage.calls["get_user"] == before + 1
