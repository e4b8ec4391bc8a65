"""Change events through the storage port: the same clock and frontier as messages
(run once per registered backend)."""

from __future__ import annotations

import asyncio

from parley.domain.models import Event, Message, new_id
from parley.storage.base import EventDraft, Storage
from tests.backends import MakeStorage
from tests.integration.test_storage_contract import Clock, draft, settle, tracker_of


def event(kind: str, *streams: str, **fields: str) -> EventDraft:
    return EventDraft(new_id("e_"), kind, streams, fields)


async def test_events_merge_with_messages_in_one_order(storage: Storage) -> None:
    m1, _ = await storage.append_message(draft("u_a", "u_b", "one"))
    e1 = await storage.append_event(event("read", "u_b", conversationId="u_a", timestamp="1"))
    m2, _ = await storage.append_message(draft("u_a", "g_1", "two", "group"))
    e2 = await storage.append_event(event("group_renamed", "g_1", groupId="g_1", groupName="n"))
    both = await storage.append_event(event("message_edited", "u_a", "u_b", messageId=m1.id))
    await storage.append_event(event("read", "u_other", conversationId="x", timestamp="1"))
    await settle(storage)
    page = await storage.read_messages(["u_b", "g_1"], None, None, 500, ["u_b", "g_1"])
    assert [m.id for m in page.messages] == [m1.id, m2.id]
    assert [e.id for e in page.events] == [e1.id, e2.id, both.id]  # each once
    assert page.events[0].fields == {"conversationId": "u_a", "timestamp": "1"}
    assert page.events[0].type == "read"
    assert e1.ts >= m1.ts and m2.ts >= e1.ts and both.ts >= e2.ts
    # without events: exactly the page it always was
    plain = await storage.read_messages(["u_b", "g_1"], None, None, 500)
    assert plain.messages == page.messages and plain.events == []
    assert plain.next_ts <= page.next_ts or plain.has_more is False
    # events after the cursor only
    later = await storage.read_messages(["u_b", "g_1"], None, e2.ts, 500, ["u_b", "g_1"])
    assert later.events == [e for e in page.events if e.ts > e2.ts]
    again = await storage.read_messages(["u_b"], None, page.next_ts, 500, ["u_b"])
    assert again.events == [] and again.messages == []
    assert await storage.last_position() >= both.ts


def _key(item: Message | Event) -> tuple[int, int, int]:
    return (item.ts, 0 if isinstance(item, Message) else 1, item.seq)


async def test_mixed_pages_never_split_a_millisecond(storage: Storage) -> None:
    written: list[str] = []
    for i in range(24):
        if i % 3 == 1:
            written.append((await storage.append_event(event("read", "u_r", n=str(i)))).id)
        else:
            written.append((await storage.append_message(draft("u_s", "u_r", f"m{i}")))[0].id)
    await settle(storage)
    full = await storage.read_messages(["u_r"], None, None, 1000, ["u_r"])
    everything: list[Message | Event] = sorted([*full.messages, *full.events], key=_key)
    assert sorted(x.id for x in everything) == sorted(written)
    seen: list[str] = []
    after: int | None = None
    for _ in range(100):
        page = await storage.read_messages(["u_r"], None, after, 4, ["u_r"])
        items = sorted([*page.messages, *page.events], key=_key)
        assert len(items) <= 4 or len({x.ts for x in items}) == 1
        seen += [x.id for x in items]
        if items:
            last_ts = items[-1].ts
            assert all(x.ts != last_ts for x in everything if x.id not in seen)
        after = page.next_ts
        if not page.has_more:
            break
    assert seen == [x.id for x in everything]  # each once, in order


async def test_more_than_a_page_of_events_in_one_millisecond(
    clocked_storage: MakeStorage,
) -> None:
    clock = Clock(5_000_000_000_000)
    storage = await clocked_storage(clock)
    for i in range(4):
        await storage.append_message(draft("u_s", "u_r", f"m{i}"))
        await storage.append_event(event("read", "u_r", n=str(i)))
    clock.now = 5_000_000_000_010
    page = await storage.read_messages(["u_r"], None, None, 3, ["u_r"])
    assert len(page.messages) == 4 and len(page.events) == 4 and page.has_more
    assert page.next_ts == 5_000_000_000_000
    rest = await storage.read_messages(["u_r"], None, page.next_ts, 3, ["u_r"])
    assert rest.messages == [] and rest.events == []


async def test_out_of_order_finish_hides_later_events(clocked_storage: MakeStorage) -> None:
    """A write is in flight at 8; an event stored at 12 stays invisible until it ends."""
    base = 6_000_000_000_000
    clock = Clock(base + 8)
    storage = await clocked_storage(clock)
    tracker = tracker_of(storage)
    go, ready = asyncio.Event(), asyncio.Event()

    async def in_flight() -> None:
        async with tracker.writing():
            ready.set()
            await go.wait()

    slow = asyncio.create_task(in_flight())
    await ready.wait()
    clock.now = base + 12
    done = await storage.append_event(event("read", "u_r", n="1"))
    assert done.ts == base + 12
    clock.now = base + 20
    page = await storage.read_messages(["u_r"], None, base, 500, ["u_r"])
    assert page.events == [] and page.next_ts == base + 7
    go.set()
    await slow
    page = await storage.read_messages(["u_r"], None, base + 7, 500, ["u_r"])
    assert [e.id for e in page.events] == [done.id]
    assert page.next_ts == base + 19
