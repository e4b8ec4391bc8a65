"""The SQLite adapter: the embedded default.

* One dedicated writer thread owns the only write connection. Writes queue up and commit in
  batches (group commit): one transaction per batch, one savepoint per operation, so a
  failing operation never takes the others down. A write is acknowledged only after its
  batch's COMMIT returned.
* Reads run on the event loop thread on a separate read-only connection (WAL mode lets
  them proceed while the writer commits). Point reads take microseconds, so running them
  inline is cheaper than any hop to a thread.
* Message timestamps are reserved from the process's :class:`PositionTracker` when the
  write is queued and released when its batch has committed; reads return only messages
  at or below the tracker's frontier.
* Positions survive a restart even if the wall clock stepped back meanwhile: the clock
  starts above both the last stored message and a persisted high-water mark, which is
  kept at or above every frontier handed out (``nextTimestamp`` can be a frontier with no
  message at it). The mark is written ahead of need, ``MARK_LEASE_MS`` beyond the
  frontier, from the background, so reads seldom wait for it; a clean close writes the
  exact highest frontier handed out, so only a crash moves the clock ahead of the wall
  clock after a restart, by at most the lease.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from parley.domain.models import Event, GroupRecord, Message, TokenRecord, UserRecord
from parley.domain.positions import PositionTracker
from parley.domain.roles import (
    GroupWrite,
    Member,
    Outcome,
    Role,
    decide_add,
    decide_remove,
    decide_role,
    in_order,
    may_rename,
)
from parley.errors import Unavailable
from parley.storage.base import (
    BulkData,
    EventDraft,
    GroupEvents,
    MessageDraft,
    Storage,
    counted,
    decode_fields,
    edited_fields,
    encode_fields,
    event_subject,
    scrubbed,
)
from parley.storage.media_sql import SQLITE_MIGRATION as MEDIA_MIGRATION
from parley.storage.media_sql import join_ids
from parley.storage.media_sqlite import SqliteMedia
from parley.storage.sqlite_accounts import INSERT_TOKEN, SqliteAccounts, token_row
from parley.storage.sqlite_accounts import MIGRATION as ACCOUNTS_MIGRATION
from parley.storage.sqlite_conversations import COLUMNS as MESSAGE_COLUMNS
from parley.storage.sqlite_conversations import MIGRATION as CONVERSATIONS_MIGRATION
from parley.storage.sqlite_conversations import (
    SqliteConversations,
    message_of,
    peer_rows,
    record_peers,
)

log = logging.getLogger("parley.storage.sqlite")

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        token_hash BLOB
    ) WITHOUT ROWID;
    CREATE TABLE groups (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE members (
        group_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        PRIMARY KEY (group_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_user ON members (user_id, group_id);
    CREATE TABLE blocks (
        blocker_id TEXT NOT NULL,
        blocked_id TEXT NOT NULL,
        PRIMARY KEY (blocker_id, blocked_id)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        recipient_id TEXT NOT NULL,
        body TEXT NOT NULL,
        ts INTEGER NOT NULL,
        send_key TEXT
    );
    CREATE INDEX messages_by_recipient ON messages (recipient_id, ts, seq);
    CREATE INDEX messages_sent_private ON messages (sender_id, ts, seq)
        WHERE type = 'private';
    CREATE UNIQUE INDEX messages_send_key ON messages (sender_id, send_key)
        WHERE send_key IS NOT NULL;
    """,
    """
    CREATE TABLE high_water (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        ts INTEGER NOT NULL
    );
    INSERT INTO high_water (id, ts) VALUES (1, 0);
    """,
    # facts about the data itself (the auth mode it is served with)
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    ACCOUNTS_MIGRATION,
    # roles (owner, admin, member) and the order members joined in; in a group stored
    # before roles, the member with the smallest id becomes its owner
    """
    ALTER TABLE members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
    ALTER TABLE members ADD COLUMN joined INTEGER NOT NULL DEFAULT 0;
    UPDATE members SET role = 'owner' WHERE (group_id, user_id) IN
        (SELECT group_id, MIN(user_id) FROM members GROUP BY group_id);
    """,
    # change events (one row each, delivered to one or more streams) and edits/deletes
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        fields TEXT NOT NULL,
        ts INTEGER NOT NULL,
        subject TEXT
    );
    CREATE INDEX events_by_subject ON events (subject) WHERE subject IS NOT NULL;
    CREATE TABLE event_streams (
        stream TEXT NOT NULL,
        ts INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (stream, ts, seq)
    ) WITHOUT ROWID;
    ALTER TABLE messages ADD COLUMN edited_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    """,
    # conversations: an index per private conversation, peers, read markers
    CONVERSATIONS_MIGRATION,
    MEDIA_MIGRATION,
)

# How far beyond the frontier the persisted high-water mark is written; it is renewed
# when the frontier comes within half of it (at most one small write per half lease).
MARK_LEASE_MS = 2_000

EVENT_COLUMNS = "e.id, e.type, e.fields, e.ts, e.seq"


class _Job:
    """A queued write: either a generic operation or a message append (``append`` set)."""

    __slots__ = ("append", "future", "op")

    def __init__(
        self, op: Op | None, future: asyncio.Future[Any], append: _Append | None = None
    ) -> None:
        self.op = op
        self.future = future
        self.append = append


class _Append:
    __slots__ = ("draft", "ts")

    def __init__(self, draft: MessageDraft, ts: int) -> None:
        self.draft = draft
        self.ts = ts


INSERT_MESSAGES = (
    "INSERT INTO messages (id, type, sender_id, recipient_id, body, ts, send_key, attachments)"
    " VALUES "
)
ROW_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?)"
MAX_ROWS = 500  # rows per INSERT statement (8 variables each, far below SQLite's limit)


def _append_all(conn: sqlite3.Connection, appends: list[_Append]) -> list[tuple[Message, bool]]:
    """Insert a run of messages with as few statements as possible.

    One multi-row INSERT per 500 messages: each statement is one trip through the
    interpreter lock, which matters when the event loop thread is busy. Rowids of one
    statement are consecutive (this connection is the only writer), giving each message
    its sequence number. A repeated idempotency key returns the stored message instead.
    """
    results: list[tuple[Message, bool] | None] = [None] * len(appends)
    fresh: list[int] = []
    keys: dict[tuple[str, str], int] = {}
    for i, item in enumerate(appends):
        d = item.draft
        if d.send_key is not None:
            key = (d.sender_id, d.send_key)
            if key in keys:  # the same key twice in one batch: answered after the insert
                continue
            row = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND send_key = ?",
                key,
            ).fetchone()
            if row is not None:
                results[i] = (message_of(row), False)
                continue
            keys[key] = i
        fresh.append(i)
    for start in range(0, len(fresh), MAX_ROWS):
        chunk = fresh[start : start + MAX_ROWS]
        params: list[Any] = []
        for i in chunk:
            d, ts = appends[i].draft, appends[i].ts
            files = join_ids(d.attachments)
            params += (d.id, d.type, d.sender_id, d.recipient_id, d.body, ts, d.send_key, files)
        cursor = conn.execute(INSERT_MESSAGES + ",".join([ROW_MARKS] * len(chunk)), params)
        first = (cursor.lastrowid or 0) - len(chunk) + 1
        for offset, i in enumerate(chunk):
            d, ts = appends[i].draft, appends[i].ts
            message = Message(
                d.id, d.type, d.sender_id, d.recipient_id, d.body, ts, first + offset,
                attachments=d.attachments,
            )  # fmt: skip
            results[i] = (message, True)
    pairs = {
        (appends[i].draft.sender_id, appends[i].draft.recipient_id)
        for i in fresh
        if appends[i].draft.type == "private"
    }
    record_peers(conn, sorted(pairs))
    for i, item in enumerate(appends):
        if results[i] is None:  # a key repeated within the batch
            d = item.draft
            original = results[keys[(d.sender_id, d.send_key or "")]]
            assert original is not None
            results[i] = (original[0], False)
    return [r for r in results if r is not None]


def _resolve(batch: list[_Job], results: list[tuple[bool, Any]]) -> None:
    for job, (ok, value) in zip(batch, results, strict=True):
        if job.future.done():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


class _Writer(threading.Thread):
    """Owns the write connection; runs queued operations in group-committed batches."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], max_batch: int) -> None:
        super().__init__(name="parley-sqlite-writer", daemon=True)
        self._connect = connect
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0

    def submit(self, op: Op | None, append: _Append | None = None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Job(op, future, append))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self.join(timeout=10)

    def run(self) -> None:
        conn = self._connect()
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    batch.append(job)
                results = self._run_batch(conn, batch)
                self.batches += 1
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(_resolve, batch, results)
        finally:
            conn.close()

    @staticmethod
    def _run_batch(conn: sqlite3.Connection, batch: list[_Job]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        appends: list[_Append] = []

        def flush_appends() -> None:
            if appends:
                results.extend((True, r) for r in _append_all(conn, appends))
                appends.clear()

        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                if job.append is not None:
                    appends.append(job.append)
                    continue
                flush_appends()
                conn.execute("SAVEPOINT op")
                try:
                    assert job.op is not None
                    value = job.op(conn)
                except Exception as exc:  # the operation's own failure, reported to it alone
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((False, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((True, value))
            flush_appends()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("sqlite batch failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = Unavailable("storage write failed", retry_after=1)
            return [(False, failure)] * len(batch)
        return results


class _Checkpointer(threading.Thread):
    """Moves the WAL into the database file in the background (PASSIVE checkpoints never
    block the writer), so commits on the request path never pay for a checkpoint."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], interval: float) -> None:
        super().__init__(name="parley-sqlite-checkpoint", daemon=True)
        self._connect = connect
        self._interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = self._connect()
        try:
            while not self._stop_event.wait(self._interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("sqlite checkpoint failed: %s", exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def _event(row: tuple[Any, ...]) -> Event:
    return Event(row[0], row[1], decode_fields(row[2]), row[3], row[4])


def _insert_event(
    conn: sqlite3.Connection, draft: EventDraft, ts: int, fields: dict[str, str] | None = None
) -> Event:
    """Insert one event and its stream rows (inside the caller's write)."""
    fields = dict(draft.fields) if fields is None else fields
    cursor = conn.execute(
        "INSERT INTO events (id, type, fields, ts, subject) VALUES (?, ?, ?, ?, ?)",
        (draft.id, draft.type, encode_fields(fields), ts, event_subject(draft)),
    )
    seq = cursor.lastrowid or 0
    conn.executemany(
        "INSERT INTO event_streams (stream, ts, seq) VALUES (?, ?, ?)",
        [(stream, ts, seq) for stream in dict.fromkeys(draft.streams)],
    )
    return Event(draft.id, draft.type, fields, ts, seq)


def _edit(
    conn: sqlite3.Connection,
    message_id: str,
    sender_id: str,
    body: str | None,
    drafts: Sequence[EventDraft],
    ts: int,
) -> tuple[Message, list[Event]] | None:
    """Change a message and store its event in one savepoint (see ``edit_message``)."""
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    current = message_of(row)
    if current.sender_id != sender_id or current.deleted:
        return None
    if body is None:
        conn.execute(
            "UPDATE messages SET body = '', deleted = 1, attachments = NULL WHERE id = ?",
            (message_id,),
        )
        conn.execute("DELETE FROM media_refs WHERE message_id = ?", (message_id,))
        edits = conn.execute(
            "SELECT seq, fields FROM events WHERE subject = ? AND type = 'message_edited'",
            (message_id,),
        ).fetchall()
        for seq, fields in edits:
            clean = encode_fields(scrubbed(decode_fields(fields)))
            conn.execute("UPDATE events SET fields = ? WHERE seq = ?", (clean, seq))
        changed = msgspec.structs.replace(current, body="", deleted=True, attachments=())
    else:
        conn.execute(
            "UPDATE messages SET body = ?, edited_at = ? WHERE id = ?", (body, ts, message_id)
        )
        changed = msgspec.structs.replace(current, body=body, edited_at=ts)
    return changed, [_insert_event(conn, d, ts, edited_fields(d, body, ts)) for d in drafts]


@counted
class SqliteStorage(SqliteConversations, SqliteMedia, SqliteAccounts, Storage):
    name = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        positions: PositionTracker | None = None,
        max_batch: int = 1024,
        mark_lease_ms: int = MARK_LEASE_MS,
    ) -> None:
        super().__init__()
        self.path = path
        self.synchronous = synchronous
        self.positions = positions or PositionTracker()
        self._max_batch = max_batch
        self._writer: _Writer | None = None
        self._checkpointer: _Checkpointer | None = None
        self._reader: sqlite3.Connection | None = None
        self._last_ts = 0
        self._mark_lease = mark_lease_ms
        self._mark = 0  # the persisted high-water mark
        self._marking: asyncio.Future[None] | None = None  # a mark write under way
        self._covered = 0  # the highest frontier known to be at or below the mark
        self._asked = 0  # the highest frontier a read set out to hand out
        self.mark_writes = 0

    # lifecycle -------------------------------------------------------------------------
    def _connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        if readonly:
            conn.execute("PRAGMA query_only=1")
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        setup = self._connect()
        try:
            self._migrate(setup)
            (last,) = setup.execute(
                "SELECT MAX((SELECT COALESCE(MAX(ts), 0) FROM messages),"
                " (SELECT COALESCE(MAX(ts), 0) FROM events))"
            ).fetchone()
            (mark,) = setup.execute("SELECT ts FROM high_water WHERE id = 1").fetchone()
        finally:
            setup.close()
        self._last_ts = int(last)
        self._asked = int(mark)
        # A frontier at or below a stored message is covered too: every restart's floor
        # lies above the stored messages as well as above the mark.
        self._mark = self._covered = max(int(mark), self._last_ts)
        # Timestamps never go back across a restart, even if the wall clock did: new ones
        # land above every stored message and every frontier a reader was given.
        self.positions.advance(max(self._last_ts, self._mark) + 1)
        self._reader = self._connect(readonly=True)
        self._writer = _Writer(self._write_connection, self._max_batch)
        self._writer.start()
        self._checkpointer = _Checkpointer(self._connect, 0.5)
        self._checkpointer.start()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
            )
            log.info("sqlite schema migrated to version %d", number)

    def _write_connection(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _Checkpointer
        conn.execute("PRAGMA secure_delete=ON")  # erased text (deletes) is overwritten
        return conn

    async def close(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            await self._write_exact_mark()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
        self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def batches(self) -> int:
        return self._writer.batches if self._writer else 0

    # the high-water mark ----------------------------------------------------------------
    async def _cover(self, frontier: int) -> None:
        """Make sure the persisted mark is at or above ``frontier`` (higher than any frontier
        covered so far) before a read hands it out; Unavailable if it cannot be written."""
        if frontier > self._asked:
            self._asked = frontier
        for _ in range(3):
            if frontier + self._mark_lease // 2 > self._mark and (
                self._marking is None or self._marking.done()
            ):
                self._marking = asyncio.ensure_future(self._renew_mark(frontier))
            if frontier <= self._mark:  # (renewed ahead of need, in the background)
                self._covered = frontier
                return
            assert self._marking is not None
            await asyncio.shield(self._marking)
        raise Unavailable("storage write failed", retry_after=1)

    async def _renew_mark(self, frontier: int) -> None:
        target = frontier + self._mark_lease
        try:
            await self._write(
                lambda c: c.execute("UPDATE high_water SET ts = MAX(ts, ?) WHERE id = 1", (target,))
            )
        except Exception as exc:  # a reader waiting for it answers Unavailable
            log.error("sqlite high-water mark not written: %s", exc)
            return
        self.mark_writes += 1
        if target > self._mark:
            self._mark = target

    async def _write_exact_mark(self) -> None:
        """At a clean close: the mark drops to the highest frontier a read may have handed
        out."""
        if self._marking is not None:
            await asyncio.shield(self._marking)
        exact = self._asked
        try:
            await self._write(
                lambda c: c.execute("UPDATE high_water SET ts = ? WHERE id = 1", (exact,))
            )
        except Exception as exc:  # the last renewed mark stays: higher, still safe
            log.error("sqlite high-water mark not written at close: %s", exc)

    # plumbing --------------------------------------------------------------------------
    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise Unavailable("storage is not open")
        return self._reader

    async def _write(self, op: Op) -> Any:
        if self._writer is None:
            raise Unavailable("storage is not open")
        return await self._writer.submit(op)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._read().execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            log.error("sqlite read failed: %s", exc)
            raise Unavailable("storage read failed") from exc

    async def ping(self) -> None:
        self._query("SELECT 1")
        if self._writer is None or not self._writer.is_alive():
            raise Unavailable("storage writer is not running")

    async def last_position(self) -> int:
        return self._last_ts

    async def bulk_load(self, data: BulkData) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO users (id, username, token_hash) VALUES (?, ?, ?)",
                [(u.id, u.username, u.token_hash) for u in data.users],
            )
            c.executemany(
                "INSERT INTO groups (id, name) VALUES (?, ?)", [(g.id, g.name) for g in data.groups]
            )
            c.executemany(
                "INSERT OR IGNORE INTO members (group_id, user_id) VALUES (?, ?)", data.members
            )
            c.executemany(
                "INSERT INTO messages (id, type, sender_id, recipient_id, body, ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(m.id, m.type, m.sender_id, m.recipient_id, m.body, m.ts) for m in data.messages],
            )
            pairs = {(m.sender_id, m.recipient_id) for m in data.messages if m.type == "private"}
            c.executemany(
                "INSERT OR IGNORE INTO peers (user_id, peer_id) VALUES (?, ?)",
                peer_rows(sorted(pairs)),
            )

        await self._write(op)
        if data.messages:
            top = max(m.ts for m in data.messages)
            self._last_ts = max(self._last_ts, top)
            self.positions.advance(top + 1)

    async def record_meta(self, key: str, value: str, *, replace: bool = False) -> str | None:
        if not replace:  # already recorded: a read (a read-only file still starts)
            rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
            if rows:
                return str(rows[0][0])

        def op(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is None or replace:
                c.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            return None if row is None else str(row[0])

        result: str | None = await self._write(op)
        return result

    # users -----------------------------------------------------------------------------
    async def create_user(self, user: UserRecord, token: TokenRecord | None = None) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO users (id, username, token_hash) VALUES (?, ?, ?)",
                (user.id, user.username, user.token_hash),
            )
            if token is not None:
                c.execute(INSERT_TOKEN, token_row(token))

        await self._write(op)

    async def get_user(self, user_id: str) -> UserRecord | None:
        rows = self._query(
            "SELECT id, username, token_hash FROM users WHERE id = ? AND status = 'active'",
            (user_id,),
        )
        return UserRecord(*rows[0]) if rows else None

    # groups ----------------------------------------------------------------------------
    async def create_group(self, group: GroupRecord, first_member: str | None) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO groups (id, name) VALUES (?, ?)", (group.id, group.name))
            if first_member is not None:
                c.execute(
                    "INSERT INTO members (group_id, user_id, role, joined)"
                    " VALUES (?, ?, 'owner', 1)",
                    (group.id, first_member),
                )

        await self._write(op)

    async def get_group(self, group_id: str) -> GroupRecord | None:
        rows = self._query("SELECT id, name FROM groups WHERE id = ?", (group_id,))
        return GroupRecord(rows[0][0], rows[0][1]) if rows else None

    @staticmethod
    def _roster(c: sqlite3.Connection, group_id: str) -> dict[str, Member] | None:
        """The group's roster as the writer sees it (None: no such group). Only the writer
        writes, so nothing changes it between this read and the op's write."""
        if c.execute("SELECT 1 FROM groups WHERE id = ?", (group_id,)).fetchone() is None:
            return None
        rows = c.execute(
            "SELECT user_id, role, joined FROM members WHERE group_id = ?", (group_id,)
        ).fetchall()
        return {u: Member(u, r, j) for u, r, j in rows}

    async def _group_write(
        self, op: Callable[[sqlite3.Connection], GroupWrite], events: GroupEvents | None
    ) -> GroupWrite:
        """Run a group write; with ``events``, store its events in the same transaction, at
        one new position (so a change that committed has its events, whatever happens)."""
        if events is None:
            result: GroupWrite = await self._write(op)
            return result

        def both(c: sqlite3.Connection) -> tuple[GroupWrite, list[tuple[Event, tuple[str, ...]]]]:
            write = op(c)
            return write, [(_insert_event(c, d, ts), d.streams) for d in events.drafts(write)]

        async with self.positions.writing() as ts:
            done: tuple[GroupWrite, list[tuple[Event, tuple[str, ...]]]] = await self._write(both)
        write, stored = done
        if stored and ts > self._last_ts:
            self._last_ts = ts
        events.stored += stored
        return write

    async def join_group(
        self,
        group_id: str,
        user_id: str,
        *,
        by: str | None,
        cap: int | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        def op(c: sqlite3.Connection) -> GroupWrite:
            roster = self._roster(c, group_id)
            if roster is None:
                return GroupWrite("no_group")
            outcome = decide_add(roster, user_id, by, cap)
            if outcome == "done":
                joined = max((m.joined for m in roster.values()), default=0) + 1
                c.execute(
                    "INSERT INTO members (group_id, user_id, role, joined)"
                    " VALUES (?, ?, 'member', ?)",
                    (group_id, user_id, joined),
                )
            return GroupWrite(outcome)

        return (await self._group_write(op, events)).outcome

    async def leave_group(
        self, group_id: str, user_id: str, *, by: str | None, events: GroupEvents | None = None
    ) -> GroupWrite:
        def op(c: sqlite3.Connection) -> GroupWrite:
            roster = self._roster(c, group_id)
            if roster is None:
                return GroupWrite("no_group")
            write = decide_remove(roster, user_id, by)
            if write.outcome == "done":
                c.execute(
                    "DELETE FROM members WHERE group_id = ? AND user_id = ?", (group_id, user_id)
                )
                if write.new_owner is not None:
                    c.execute(
                        "UPDATE members SET role = 'owner' WHERE group_id = ? AND user_id = ?",
                        (group_id, write.new_owner),
                    )
            return write

        return await self._group_write(op, events)

    async def set_role(
        self,
        group_id: str,
        user_id: str,
        role: Role,
        *,
        by: str | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        def op(c: sqlite3.Connection) -> GroupWrite:
            roster = self._roster(c, group_id)
            if roster is None:
                return GroupWrite("no_group")
            outcome = decide_role(roster, user_id, role, by)
            if outcome == "done":
                c.execute(
                    "UPDATE members SET role = ? WHERE group_id = ? AND user_id = ?",
                    (role, group_id, user_id),
                )
            return GroupWrite(outcome)

        return (await self._group_write(op, events)).outcome

    async def rename_group(
        self, group_id: str, name: str, *, by: str | None, events: GroupEvents | None = None
    ) -> Outcome:
        def op(c: sqlite3.Connection) -> GroupWrite:
            roster = self._roster(c, group_id)
            if roster is None:
                return GroupWrite("no_group")
            if not may_rename(roster, by):
                return GroupWrite("denied")
            c.execute("UPDATE groups SET name = ? WHERE id = ?", (name, group_id))
            return GroupWrite("done")

        return (await self._group_write(op, events)).outcome

    async def _changes(self, sql: str, args: tuple[str, str]) -> bool:
        changed: int = await self._write(lambda c: c.execute(sql, args).rowcount)
        return changed > 0

    async def group_roster(self, group_id: str) -> list[Member]:
        rows = self._query(
            "SELECT user_id, role, joined FROM members WHERE group_id = ?", (group_id,)
        )
        return in_order({u: Member(u, r, j) for u, r, j in rows})

    async def group_members(self, group_id: str) -> list[str]:
        rows = self._query(
            "SELECT user_id FROM members WHERE group_id = ? ORDER BY user_id", (group_id,)
        )
        return [r[0] for r in rows]

    async def user_groups(self, user_id: str) -> list[str]:
        rows = self._query(
            "SELECT group_id FROM members WHERE user_id = ? ORDER BY group_id", (user_id,)
        )
        return [r[0] for r in rows]

    # blocks ----------------------------------------------------------------------------
    async def add_block(self, blocker_id: str, blocked_id: str) -> bool:
        return await self._changes(
            "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id) VALUES (?, ?)",
            (blocker_id, blocked_id),
        )

    async def remove_block(self, blocker_id: str, blocked_id: str) -> bool:
        return await self._changes(
            "DELETE FROM blocks WHERE blocker_id = ? AND blocked_id = ?", (blocker_id, blocked_id)
        )

    async def blocked_by(self, blocker_id: str) -> list[str]:
        rows = self._query(
            "SELECT blocked_id FROM blocks WHERE blocker_id = ? ORDER BY blocked_id",
            (blocker_id,),
        )
        return [r[0] for r in rows]

    # messages --------------------------------------------------------------------------
    async def append_message(self, draft: MessageDraft) -> tuple[Message, bool]:
        if self._writer is None:
            raise Unavailable("storage is not open")
        async with self.positions.writing() as ts:
            result: tuple[Message, bool] = await self._writer.submit(None, _Append(draft, ts))
        if result[1] and ts > self._last_ts:
            self._last_ts = ts
        return result

    async def find_send(self, sender_id: str, send_key: str) -> Message | None:
        rows = self._query(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND send_key = ?",
            (sender_id, send_key),
        )
        return message_of(rows[0]) if rows else None

    @staticmethod
    def _selection(
        recipients: Sequence[str], sent_by: str | None, condition: str
    ) -> tuple[str, list[Any]]:
        marks = ",".join("?" * len(recipients))
        sql = (
            f"SELECT {MESSAGE_COLUMNS} FROM messages"
            f" WHERE recipient_id IN ({marks}) AND {condition}"
        )
        if sent_by is not None:
            sql += (
                f" UNION SELECT {MESSAGE_COLUMNS} FROM messages"
                f" WHERE sender_id = ? AND type = 'private' AND {condition}"
            )
        return sql, list(recipients)

    async def _page_rows(
        self, recipients: Sequence[str], sent_by: str | None, after: int, limit: int
    ) -> tuple[list[Message], int]:
        frontier = await self.positions.caught_up()
        if frontier > self._covered:
            try:
                await self._cover(frontier)
            except Unavailable:
                # The mark cannot move (disk full, read-only file): reads go on, handing
                # out no position above what it already covers.
                frontier = self._covered
        sql, args = self._selection(recipients, sent_by, "ts > ? AND ts <= ?")
        args += [after, frontier]
        if sent_by is not None:
            args += [sent_by, after, frontier]
        rows = self._query(sql + " ORDER BY ts, seq LIMIT ?", [*args, limit])
        return [message_of(r) for r in rows], frontier

    async def _rows_at(
        self, recipients: Sequence[str], sent_by: str | None, ts: int
    ) -> list[Message]:
        sql, args = self._selection(recipients, sent_by, "ts = ?")
        args.append(ts)
        if sent_by is not None:
            args += [sent_by, ts]
        rows = self._query(sql + " ORDER BY ts, seq", args)
        return [message_of(r) for r in rows]

    # change events ---------------------------------------------------------------------
    async def append_event(self, draft: EventDraft) -> Event:
        async with self.positions.writing() as ts:
            event: Event = await self._write(lambda c: _insert_event(c, draft, ts))
        if ts > self._last_ts:
            self._last_ts = ts
        return event

    async def get_message(self, message_id: str) -> Message | None:
        rows = self._query(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return message_of(rows[0]) if rows else None

    async def edit_message(
        self, message_id: str, sender_id: str, body: str | None, events: Sequence[EventDraft]
    ) -> tuple[Message, list[Event]] | None:
        async with self.positions.writing() as ts:
            result: tuple[Message, list[Event]] | None = await self._write(
                lambda c: _edit(c, message_id, sender_id, body, events, ts)
            )
        if result is not None and ts > self._last_ts:
            self._last_ts = ts
        return result

    async def _event_rows(
        self, streams: Sequence[str], after: int, upto: int, limit: int
    ) -> list[Event]:
        marks = ",".join("?" * len(streams))
        rows = self._query(
            f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq IN ("
            f" SELECT seq FROM event_streams WHERE stream IN ({marks}) AND ts > ? AND ts <= ?)"
            " ORDER BY e.ts, e.seq LIMIT ?",
            [*streams, after, upto, limit],
        )
        return [_event(r) for r in rows]

    async def _event_rows_at(self, streams: Sequence[str], ts: int) -> list[Event]:
        marks = ",".join("?" * len(streams))
        rows = self._query(
            f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq IN ("
            f" SELECT seq FROM event_streams WHERE stream IN ({marks}) AND ts = ?)"
            " ORDER BY e.ts, e.seq",
            [*streams, ts],
        )
        return [_event(r) for r in rows]
