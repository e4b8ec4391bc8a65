"""Change events through the storage port: the same clock and frontier as messages
(run once per registered backend)."""

from __future__ import annotations

import asyncio

from parley.domain.models import Event, GroupRecord, Message, UserRecord, new_id
from parley.domain.roles import GroupWrite
from parley.storage.base import EventDraft, GroupEvents, Storage
from parley.storage.dynamodb import DynamoStorage
from parley.storage.dynamodb_pending import transact
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


async def raw_store(storage: Storage) -> str:
    """Everything the backend stores about messages and events, as text (to look for
    erased words in)."""
    if storage.name == "memory":
        return repr(vars(storage))
    if storage.name == "sqlite":
        import sqlite3

        conn = sqlite3.connect(storage.path)  # type: ignore[attr-defined]
        try:
            rows = conn.execute("SELECT * FROM messages").fetchall()
            rows += conn.execute("SELECT * FROM events").fetchall()
        finally:
            conn.close()
        return repr(rows)
    if storage.name == "postgres":
        rows = await storage._fetch(  # type: ignore[attr-defined]
            "SELECT m::text AS t FROM messages m UNION ALL SELECT e::text FROM events e"
        )
        return repr([r["t"] for r in rows])
    assert storage.name == "dynamodb"
    items: list[object] = []
    for table in ("messages", "sends"):
        response = await storage.client.call(  # type: ignore[attr-defined]
            "scan",
            TableName=storage.tables[table],  # type: ignore[attr-defined]
        )
        items += response.get("Items", [])
    return repr(items)


def edit_event(kind: str, message: Message, *streams: str, text: str | None = None) -> EventDraft:
    fields = {"messageId": message.id, "conversationId": message.recipient_id}
    if text is not None:
        fields["message"] = text
    return EventDraft(new_id("e_"), kind, streams, fields)


async def test_edit_and_delete_keep_id_and_timestamp(storage: Storage) -> None:
    sent, _ = await storage.append_message(draft("u_a", "u_b", "first words", key="k-edit"))
    group, _ = await storage.append_message(draft("u_a", "g_1", "to the group", "group"))
    assert await storage.get_message(sent.id) == sent
    assert await storage.get_message("m_missing") is None
    # only the sender
    other = edit_event("message_edited", sent, "u_a", "u_b", text="x")
    assert await storage.edit_message(sent.id, "u_b", "x", [other]) is None
    assert await storage.edit_message("m_missing", "u_a", "x", [other]) is None
    edit = edit_event("message_edited", sent, "u_a", text="second words")
    edit_b = edit_event("message_edited", sent, "u_b", text="second words")
    result = await storage.edit_message(sent.id, "u_a", "second words", [edit, edit_b])
    assert result is not None
    edited, (stored, stored_b) = result
    assert stored_b.ts == stored.ts and stored_b.seq > stored.seq
    assert (edited.id, edited.ts, edited.body) == (sent.id, sent.ts, "second words")
    assert edited.edited_at == stored.ts > 0 and stored.ts >= sent.ts
    assert stored.fields["editedAt"] == str(stored.ts)
    assert stored.fields["message"] == "second words"
    assert await storage.get_message(sent.id) == edited
    await settle(storage)
    inbox = await storage.read_messages(["u_b"], None, None, 500, ["u_b"])
    assert [(m.id, m.body, m.edited_at) for m in inbox.messages] == [
        (sent.id, "second words", stored.ts)
    ]
    assert [e.id for e in inbox.events] == [edit_b.id]
    outbox = await storage.read_messages(["u_a"], "u_a", None, 500)
    assert [m.body for m in outbox.messages] == ["second words"]  # the sent copy too

    gone = edit_event("message_deleted", sent, "u_a", "u_b")
    result = await storage.edit_message(sent.id, "u_a", None, [gone])
    assert result is not None and result[0].deleted and result[0].body == ""
    assert (result[0].id, result[0].ts) == (sent.id, sent.ts)
    again = edit_event("message_deleted", sent, "u_a", "u_b")
    assert await storage.edit_message(sent.id, "u_a", None, [again]) is None  # once
    assert await storage.edit_message(sent.id, "u_a", "back", [edit_event("x", sent)]) is None
    g_edit = edit_event("message_edited", group, "g_1", text="group words")
    assert await storage.edit_message(group.id, "u_a", "group words", [g_edit]) is not None
    await settle(storage)
    page = await storage.read_messages(["u_b", "g_1"], "u_b", None, 500, ["u_b", "g_1"])
    shown = {m.id: m for m in page.messages}
    assert shown[sent.id].deleted and shown[sent.id].body == ""
    assert shown[group.id].body == "group words"
    assert [e.type for e in page.events] == ["message_edited", "message_deleted", "message_edited"]
    assert "message" not in page.events[0].fields  # the deleted message's edit lost its text
    raw = await raw_store(storage)
    assert "first words" not in raw and "second words" not in raw
    assert "group words" in raw


async def test_erasing_an_account_erases_the_texts_its_edits_kept(storage: Storage) -> None:
    """Account deletion erases a user's messages, and with them the earlier texts their
    edit events carry (a retry of the erase changes nothing more)."""
    for user in ("u_a", "u_b"):
        await storage.create_user(UserRecord(user, user))
    private, _ = await storage.append_message(draft("u_a", "u_b", "private words"))
    group, _ = await storage.append_message(draft("u_a", "g_1", "group words", "group"))
    kept, _ = await storage.append_message(draft("u_b", "u_a", "words of bob"))
    for message, streams in ((private, ("u_a", "u_b")), (group, ("g_1",))):
        edit = edit_event("message_edited", message, *streams, text="edited words")
        assert await storage.edit_message(message.id, "u_a", "edited words", [edit]) is not None
    assert await storage.begin_deletion("u_a")
    for _ in range(2):  # idempotent
        await storage.erase_account("u_a")
    raw = await raw_store(storage)
    for words in ("private words", "group words", "edited words"):
        assert words not in raw
    assert "words of bob" in raw
    await settle(storage)
    page = await storage.read_messages(["u_b", "g_1"], None, None, 500, ["u_b", "g_1"])
    assert {m.id: m.body for m in page.messages} == {private.id: "", group.id: ""}
    assert all("message" not in e.fields for e in page.events)
    assert kept.body == "words of bob"


def _added(group: str, user: str) -> EventDraft:
    return event("member_added", group, groupId=group, userId=user, by="")


async def test_group_changes_store_their_events_with_them(storage: Storage) -> None:
    """Each of the four group writes stores its events itself; a refused one stores none."""
    await storage.create_group(GroupRecord("g_ev", "g"), "u_a")
    added = GroupEvents(lambda write: [_added("g_ev", "u_b")])
    assert await storage.join_group("g_ev", "u_b", by="u_a", cap=None, events=added) == "done"
    again = GroupEvents(lambda write: [_added("g_ev", "u_b")])
    assert await storage.join_group("g_ev", "u_b", by="u_a", cap=None, events=again) == (
        "unchanged"
    )
    assert again.stored == []
    role = GroupEvents(lambda w: [event("role_changed", "g_ev", userId="u_b", role="admin")])
    assert await storage.set_role("g_ev", "u_b", "admin", by="u_a", events=role) == "done"
    name = GroupEvents(lambda w: [event("group_renamed", "g_ev", groupName="h")])
    assert await storage.rename_group("g_ev", "h", by="u_b", events=name) == "done"

    def left(write: GroupWrite) -> list[EventDraft]:
        heir = [event("role_changed", "g_ev", userId=write.new_owner, role="owner")]
        return [event("member_removed", "g_ev", "u_a", userId="u_a"), *heir]

    gone = GroupEvents(left)
    assert (await storage.leave_group("g_ev", "u_a", by="u_a", events=gone)).new_owner == "u_b"
    stored = [*added.stored, *role.stored, *name.stored, *gone.stored]
    assert [streams for _, streams in stored] == [("g_ev",)] * 3 + [("g_ev", "u_a"), ("g_ev",)]
    await settle(storage)
    page = await storage.read_messages(["g_ev"], None, None, 500, ["g_ev"])
    assert [e.id for e in page.events] == [e.id for e, _ in stored]  # each once, in order
    assert [e.type for e in page.events][-2:] == ["member_removed", "role_changed"]
    mine = await storage.read_messages(["u_a"], None, None, 500, ["u_a"])
    assert [e.type for e in mine.events] == ["member_removed"]
    assert await storage.finish_group_events() == []  # nothing was left pending
    page = await storage.read_messages(["g_ev"], None, None, 500, ["g_ev"])
    assert len(page.events) == 5


async def test_pending_group_events_are_stored_exactly_once(storage: Storage) -> None:
    """The states a process can die in between a change's commit and its events: only
    DynamoDB has any (the others store both in one transaction, so nothing is pending)."""
    await storage.create_group(GroupRecord("g_pe", "g"), "u_a")
    if not isinstance(storage, DynamoStorage):
        assert await storage.finish_group_events() == []
        return
    clock, pending = storage.clock, storage.pending

    async def written(draft: EventDraft, *, release: bool) -> int:
        """The change's transaction committed; then the process died (before the release:
        a reader aborts the position when the lease ends; or after it)."""
        reservation = await clock.reserve()
        items, _ = pending.writes("g_pe", reservation.ts, [draft])
        assert await transact(storage.client, items)
        await (clock.release(reservation) if release else clock.abort(reservation))
        return reservation.ts

    async def events() -> list[Event]:
        await settle(storage)
        return (await storage.read_messages(["g_pe"], None, None, 500, ["g_pe"])).events

    # died before releasing: the items are hidden; finishing stores them again, once
    first = _added("g_pe", "u_b")
    aborted = await written(first, release=False)
    assert await events() == []
    [(again, streams)] = await storage.finish_group_events()
    assert again.id == first.id and again.ts > aborted and streams == ("g_pe",)
    assert [e.id for e in await events()] == [first.id]
    assert await storage.finish_group_events() == []
    # died after releasing: visible already; finishing only clears the record
    second = _added("g_pe", "u_c")
    released = await written(second, release=True)
    [(same, _)] = await storage.finish_group_events()
    assert same.ts == released
    assert [e.id for e in await events()] == [first.id, second.id]
    assert await storage.finish_group_events() == []
    # the group's next change finishes the pending events before it commits
    third = _added("g_pe", "u_d")
    await written(third, release=False)
    after = GroupEvents(lambda write: [_added("g_pe", "u_e")])
    assert await storage.join_group("g_pe", "u_e", by="u_a", cap=None, events=after) == "done"
    assert len(after.stored) == 2 and after.stored[0][0].id == third.id
    ids = [e.id for e in await events()]
    assert ids[:3] == [first.id, second.id, third.id] and len(ids) == 4
    assert await storage.finish_group_events() == []
