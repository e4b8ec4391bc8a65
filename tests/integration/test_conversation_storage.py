"""Conversation history, unread counts, peers and read markers on every storage adapter."""

from __future__ import annotations

import asyncio
import random

from parley.domain.models import GroupRecord, Message, new_id
from parley.storage.base import Conversation, Storage
from tests.integration.test_storage_contract import draft, settle


async def send(storage: Storage, sender: str, recipient: str, kind: str = "private") -> Message:
    message, _ = await storage.append_message(draft(sender, recipient, new_id("t"), kind))
    return message


async def whole_history(storage: Storage, conv: Conversation, limit: int) -> list[list[Message]]:
    pages: list[list[Message]] = []
    before: int | None = None
    for _ in range(200):
        page = await storage.history(conv, before, limit)
        if page.messages:
            pages.append(page.messages)
            assert page.next_before == page.messages[0].ts
        if not page.has_more:
            break
        before = page.next_before
    return pages


async def test_private_history_has_both_directions_and_nothing_else(storage: Storage) -> None:
    a, b, c = "u_a" + new_id(""), "u_b" + new_id(""), "u_c" + new_id("")
    ours = []
    for i in range(7):
        ours.append(await send(storage, a, b) if i % 2 else await send(storage, b, a))
        await send(storage, c, a)  # another conversation of a's
        await send(storage, a, c)
    await settle(storage)
    pages = await whole_history(storage, Conversation("private", a, b), 3)
    flat = [m for page in reversed(pages) for m in page]
    assert [m.id for m in flat] == [m.id for m in ours]
    for page in pages:
        assert page == sorted(page, key=lambda m: (m.ts, m.seq))
    assert pages[0][-1].id == ours[-1].id  # the newest page first
    # the other side sees the same conversation
    theirs = await whole_history(storage, Conversation("private", b, a), 100)
    assert [m.id for m in theirs[0]] == [m.id for m in ours]
    assert await storage.private_peers(a) == sorted([b, c])
    assert await storage.private_peers(b) == [a]
    last = await storage.last_message(Conversation("private", a, c))
    assert last is not None and last.sender_id == a


async def test_self_conversation(storage: Storage) -> None:
    a = "u_a" + new_id("")
    mine = [await send(storage, a, a) for _ in range(3)]
    await settle(storage)
    page = await storage.history(Conversation("private", a, a), None, 10)
    assert [m.id for m in page.messages] == [m.id for m in mine]
    assert await storage.private_peers(a) == [a]
    assert await storage.unread_count(Conversation("private", a, a), 0, 100) == 0


async def test_group_history_and_unread(storage: Storage) -> None:
    group = GroupRecord(new_id("g_"), "g")
    a, b = "u_a" + new_id(""), "u_b" + new_id("")
    await storage.create_group(group, a)
    await storage.add_member(group.id, b)
    sent = []
    for i in range(6):
        sent.append(await send(storage, a if i % 3 == 0 else b, group.id, "group"))
        await send(storage, b, a)
    await settle(storage)
    pages = await whole_history(storage, Conversation("group", a, group.id), 4)
    assert [m.id for page in reversed(pages) for m in page] == [m.id for m in sent]
    conv = Conversation("group", a, group.id)
    assert await storage.unread_count(conv, 0, 100) == 4  # b's four
    later = [m for m in sent if m.ts > sent[2].ts and m.sender_id == b]
    assert await storage.unread_count(conv, sent[2].ts, 100) == len(later)
    assert await storage.unread_count(conv, 0, 3) == 3  # counted no further than the cap
    private = Conversation("private", a, b)
    assert await storage.unread_count(private, 0, 100) == 6
    assert await storage.unread_count(private, 0, 2) == 2


async def test_pages_never_split_a_millisecond(clocked_storage) -> None:  # type: ignore[no-untyped-def]
    now = [1_000_000]
    storage = await clocked_storage(lambda: now[0])
    a, b = "u_a" + new_id(""), "u_b" + new_id("")
    first = [await send(storage, a, b) for _ in range(2)]
    now[0] += 5
    run = [await send(storage, b, a) for _ in range(5)]  # one millisecond
    now[0] += 5
    last = [await send(storage, a, b) for _ in range(2)]
    now[0] += 5
    await send(storage, a, "u_other")
    assert len({m.ts for m in run}) == 1
    conv = Conversation("private", a, b)
    page = await storage.history(conv, None, 3)
    assert [m.id for m in page.messages] == [m.id for m in last]  # not cut into the run
    assert page.has_more
    page = await storage.history(conv, page.next_before, 3)
    assert [m.id for m in page.messages] == [m.id for m in run]  # longer than limit: whole
    assert page.has_more
    page = await storage.history(conv, page.next_before, 3)
    assert [m.id for m in page.messages] == [m.id for m in first]
    assert not page.has_more


async def test_read_markers_move_forward_only(storage: Storage) -> None:
    a, b = "u_a" + new_id(""), "u_b" + new_id("")
    assert await storage.read_markers(a, [b]) == {}
    assert await storage.mark_read(a, b, 100) == (True, 100)
    assert await storage.mark_read(a, b, 50) == (False, 100)
    assert await storage.mark_read(a, b, 100) == (False, 100)
    assert await storage.mark_read(a, b, 150) == (True, 150)
    assert await storage.read_markers(a, [b, "g_none"]) == {b: 150}
    assert await storage.peer_read_markers(b, [a]) == {a: 150}
    assert await storage.peer_read_markers(a, [b]) == {}


async def test_concurrent_marks_end_at_the_largest(storage: Storage) -> None:
    a, b = "u_a" + new_id(""), "u_b" + new_id("")
    values = list(range(1, 41))
    random.Random(7).shuffle(values)
    results = await asyncio.gather(*(storage.mark_read(a, b, v) for v in values))
    assert await storage.read_markers(a, [b]) == {b: 40}
    assert all(stored >= v for v, (_, stored) in zip(values, results, strict=True))
    assert sum(moved for moved, _ in results) >= 1
    # the write that set 40 is the one that says it moved to 40
    assert [v for v, (moved, _) in zip(values, results, strict=True) if moved and v == 40] == [40]


async def test_unread_matches_a_model_under_random_interleavings(storage: Storage) -> None:
    rng = random.Random(13)
    group = GroupRecord(new_id("g_"), "g")
    users = ["u_" + new_id("") for _ in range(3)]
    await storage.create_group(group, users[0])
    for u in users[1:]:
        await storage.add_member(group.id, u)
    convs = {
        (u, c): Conversation("group" if c == group.id else "private", u, c)
        for u in users
        for c in [group.id, *[p for p in users if p != u]]
    }
    sent: list[Message] = []
    for _ in range(60):
        if rng.random() < 0.7:
            sender = rng.choice(users)
            to = rng.choice([group.id, *[p for p in users if p != sender]])
            sent.append(await send(storage, sender, to, "group" if to == group.id else "private"))
        else:
            u, c = rng.choice(list(convs))
            await settle(storage)
            seen = (await storage.history(convs[(u, c)], None, 1000)).messages
            upto = rng.choice([m.ts for m in seen]) if seen else 0
            await storage.mark_read(u, c, upto)
    await settle(storage)
    for (u, c), conv in convs.items():
        marker = (await storage.read_markers(u, [c])).get(c, 0)
        if c == group.id:
            expected = [m for m in sent if m.recipient_id == c and m.sender_id != u]
        else:
            expected = [m for m in sent if m.recipient_id == u and m.sender_id == c]
        want = sum(1 for m in expected if m.ts > marker)
        assert await storage.unread_count(conv, marker, 1000) == want, (u, c)


# A history page reads the conversation's index, whatever else the user has -------------
PAIR_QUERY = (
    "SELECT id FROM messages WHERE type = 'private' AND recipient_id = {a} AND sender_id = {b}"
    " AND ts < {t} ORDER BY ts DESC, seq DESC LIMIT 51"
)
NOISE = 3000


async def test_a_history_page_touches_only_its_conversation(storage: Storage) -> None:
    """With many messages from others to ``a``, a page of the a-b conversation reads that
    conversation's index range: the plan (SQLite, PostgreSQL) names the per-pair index, and
    DynamoDB scans no more items than the page holds (plus one per direction)."""
    from parley.storage.base import BulkData

    a, b = "u_a" + new_id(""), "u_b" + new_id("")
    start = 1_600_000_000_000
    pair = [
        Message(new_id("m_"), "private", *((a, b) if i % 2 else (b, a)), f"p{i}", start + i)
        for i in range(30)
    ]
    noise = [
        Message(new_id("m_"), "private", f"u_n{i % 50}", a, "noise", start + 100 + i)
        for i in range(NOISE)
    ]
    await storage.bulk_load(BulkData(messages=pair + noise))
    await settle(storage)
    conv = Conversation("private", a, b)
    scanned: list[int] = []
    if storage.name == "dynamodb":
        client = storage.client  # type: ignore[attr-defined]
        original = client.call

        async def counting(operation: str, **kwargs: object) -> dict[str, object]:
            response: dict[str, object] = await original(operation, **kwargs)
            if operation == "query":
                scanned.append(int(response.get("ScannedCount", 0)))  # type: ignore[call-overload]
            return response

        client.call = counting
    page = await storage.history(conv, None, 10)
    kept = len(page.messages)  # 10, or more when one millisecond holds more (memory)
    assert kept >= 10 and [m.id for m in page.messages] == [m.id for m in pair[-kept:]]
    if storage.name == "dynamodb":
        assert len(scanned) == 2  # one Query per direction
        assert sum(scanned) <= 2 * 11, scanned  # the page (limit + 1), never the noise
    elif storage.name == "sqlite":
        sql = PAIR_QUERY.format(a="?", b="?", t="?")
        plan = storage._query("EXPLAIN QUERY PLAN " + sql, (a, b, start + 10_000))  # type: ignore[attr-defined]
        assert "USING INDEX messages_by_pair" in str(plan), plan
        unread = storage._query(  # type: ignore[attr-defined]
            "EXPLAIN QUERY PLAN SELECT 1 FROM messages WHERE type = 'private'"
            " AND recipient_id = ? AND sender_id = ? AND ts > ? LIMIT 5",
            (a, b, 0),
        )
        assert "messages_by_pair" in str(unread), unread
    elif storage.name == "postgres":
        await storage._fetch("ANALYZE messages")  # type: ignore[attr-defined]
        sql = PAIR_QUERY.format(a="$1", b="$2", t="$3")
        plan = await storage._fetch("EXPLAIN " + sql, a, b, start + 10_000)  # type: ignore[attr-defined]
        text = " ".join(r[0] for r in plan)
        assert "messages_by_pair" in text and "Seq Scan" not in text, text


async def test_a_deleted_message_is_not_unread(storage: Storage) -> None:
    a, b = "u_a" + new_id(""), "u_b" + new_id("")
    group = GroupRecord(new_id("g_"), "g")
    await storage.create_group(group, a)
    await storage.add_member(group.id, b)
    private = [await send(storage, b, a) for _ in range(3)]
    public = [await send(storage, b, group.id, "group") for _ in range(3)]
    await settle(storage)
    assert await storage.edit_message(private[1].id, b, None, []) is not None
    assert await storage.edit_message(public[0].id, b, None, []) is not None
    await settle(storage)
    assert await storage.unread_count(Conversation("private", a, b), 0, 100) == 2
    assert await storage.unread_count(Conversation("group", a, group.id), 0, 100) == 2
    page = await storage.history(Conversation("private", a, b), None, 10)
    assert [m.deleted for m in page.messages] == [False, True, False]
