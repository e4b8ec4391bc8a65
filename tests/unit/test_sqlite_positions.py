"""SQLite positions across restarts: no message lands at or below a cursor handed out
before, even when the wall clock stepped back while Parley was down.

Each store gets an injected clock (unix ms) for its position tracker; a "restart" closes
the store (or abandons it, as a crash would) and opens a new one on the same file with a
clock set back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parley.domain.models import new_id
from parley.domain.positions import PositionTracker
from parley.storage.base import MessageDraft
from parley.storage.sqlite import MIGRATIONS, SqliteStorage

T0 = 1_800_000_000_000


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def draft(text: str) -> MessageDraft:
    return MessageDraft(new_id("m_"), "private", "u_s", "u_r", text, None)


async def opened(path: Path, clock: Clock) -> SqliteStorage:
    store = SqliteStorage(path, positions=PositionTracker(clock))
    await store.open()
    return store


@pytest.mark.parametrize("stop", ["close", "crash"])
async def test_a_cursor_stays_below_new_messages_after_a_clock_step_back(
    tmp_path: Path, stop: str
) -> None:
    path = tmp_path / "parley.db"
    clock = Clock(T0)
    store = await opened(path, clock)
    first, _ = await store.append_message(draft("before"))
    clock.now = T0 + 5_000  # five quiet seconds: the frontier moves on without messages
    page = await store.read_messages(["u_r"], None, None, 100)
    assert [m.id for m in page.messages] == [first.id]
    cursor = page.next_ts
    assert cursor > first.ts
    if stop == "close":
        await store.close()
    # else the process died: nothing runs at shutdown, only what was committed counts (the
    # old store stays open, idle, until the end of the test)

    back = Clock(T0 + 1_000)  # restarted with the wall clock four seconds behind the cursor
    again = await opened(path, back)
    try:
        sent, _ = await again.append_message(draft("after"))
        assert sent.ts > cursor
        page = await again.read_messages(["u_r"], None, cursor, 100)
        assert [m.id for m in page.messages] == [sent.id]
        assert page.next_ts >= sent.ts
    finally:
        await again.close()
        if stop == "crash":
            await store.close()


async def test_the_mark_is_written_ahead_of_need_not_per_read(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = SqliteStorage(
        tmp_path / "parley.db", positions=PositionTracker(clock), mark_lease_ms=2_000
    )
    await store.open()
    try:
        await store.append_message(draft("one"))
        for _ in range(10_000):  # ten seconds of reads, one per millisecond
            clock.now += 1
            await store.read_messages(["u_r"], None, None, 10)
        await store.close()  # waits for a renewal under way
        # one write per half lease, give or take the first one
        assert 1 <= store.mark_writes <= 10_000 // 1_000 + 1
    finally:
        await store.close()


async def test_a_database_from_before_the_mark_opens_with_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version=1;\nCOMMIT;")
    conn.execute(
        "INSERT INTO messages (id, type, sender_id, recipient_id, body, ts)"
        " VALUES ('m_old', 'private', 'u_s', 'u_r', 'old', ?)",
        (T0 + 9_000,),
    )
    conn.close()
    store = await opened(path, Clock(T0))  # the wall clock is behind the stored message
    try:
        sent, _ = await store.append_message(draft("new"))
        assert sent.ts > T0 + 9_000
        page = await store.read_messages(["u_r"], None, None, 10)
        assert [m.body for m in page.messages] == ["old", "new"]
    finally:
        await store.close()


async def test_a_read_that_cannot_raise_the_mark_hands_out_nothing_above_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "parley.db"
    clock = Clock(T0)
    store = await opened(path, clock)
    try:
        first = await store.read_messages(["u_r"], None, None, 10)
        (mark,) = sqlite3.connect(path).execute("SELECT ts FROM high_water").fetchone()
        clock.now = mark + 5_000  # well past the mark
        sent, _ = await store.append_message(draft("one"))
        # The mark's row cannot be written (as with a disk fault); messages still can.
        outside = sqlite3.connect(path, isolation_level=None)
        outside.execute(
            "CREATE TRIGGER no_mark BEFORE UPDATE ON high_water"
            " BEGIN SELECT RAISE(FAIL, 'injected fault'); END"
        )
        stuck = await store.read_messages(["u_r"], None, first.next_ts, 10)
        assert stuck.messages == [] and first.next_ts <= stuck.next_ts <= mark
        outside.execute("DROP TRIGGER no_mark")
        outside.close()
        page = await store.read_messages(["u_r"], None, stuck.next_ts, 10)
        assert [m.id for m in page.messages] == [sent.id]
        (mark,) = sqlite3.connect(path).execute("SELECT ts FROM high_water").fetchone()
        assert mark >= page.next_ts
    finally:
        await store.close()
