"""Conversations on SQLite: history, unread counts, read markers (mixed into ``SqliteStorage``).

Schema (the conversations migration):

* ``messages_by_pair``: private messages by (recipient, sender, ts, seq) — one direction
  of one private conversation is one index range, so a history page reads two short
  ranges (one per direction) whatever else the user has; a group's history is the group's
  range of ``messages_by_recipient``.
* ``peers``: (user, peer) for every pair that exchanged a private message, written with
  ``INSERT OR IGNORE`` in the send's own transaction (a no-op after the first message).
* ``read_markers``: (user, conversation) -> ts, moved with one conditional upsert.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from parley.domain.models import Message
from parley.domain.positions import PositionTracker
from parley.storage.base import Conversation
from parley.storage.media_sql import split_ids

MIGRATION = """
CREATE INDEX messages_by_pair ON messages (recipient_id, sender_id, ts, seq)
    WHERE type = 'private';
CREATE TABLE peers (
    user_id TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    PRIMARY KEY (user_id, peer_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO peers (user_id, peer_id)
    SELECT sender_id, recipient_id FROM messages WHERE type = 'private';
INSERT OR IGNORE INTO peers (user_id, peer_id)
    SELECT recipient_id, sender_id FROM messages WHERE type = 'private';
CREATE TABLE read_markers (
    user_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
) WITHOUT ROWID;
"""

# A message row, as every SQLite query reads it (``message_of`` turns it into a Message).
COLUMNS = "id, type, sender_id, recipient_id, body, ts, seq, edited_at, deleted, attachments"
INSERT_PEERS = "INSERT OR IGNORE INTO peers (user_id, peer_id) VALUES (?, ?)"
MARK_READ = """
INSERT INTO read_markers (user_id, conversation_id, ts) VALUES (?, ?, ?)
ON CONFLICT (user_id, conversation_id) DO UPDATE SET ts = excluded.ts
WHERE excluded.ts > read_markers.ts
"""


def peer_rows(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``peers`` rows of private messages given as (sender, recipient)."""
    rows = {(a, b) for a, b in pairs} | {(b, a) for a, b in pairs}
    return sorted(rows)


def record_peers(conn: sqlite3.Connection, pairs: Sequence[tuple[str, str]]) -> None:
    if pairs:
        conn.executemany(INSERT_PEERS, peer_rows(pairs))


def message_of(r: Sequence[Any]) -> Message:
    return Message(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), split_ids(r[9]))


def _directions(conv: Conversation) -> list[tuple[str, str]]:
    """(recipient, sender) of each direction of a private conversation."""
    return list(dict.fromkeys([(conv.user_id, conv.other), (conv.other, conv.user_id)]))


class SqliteConversations:
    """Needs the adapter's ``_write``, ``_query`` and ``positions``."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Any]
    _query: Callable[..., list[Any]]
    positions: PositionTracker

    async def _history_frontier(self) -> int:
        return await self.positions.caught_up()

    async def _history_rows(self, conv: Conversation, below: int, limit: int) -> list[Message]:
        rows: list[Any] = []
        if conv.type == "group":
            rows = self._query(
                f"SELECT {COLUMNS} FROM messages WHERE recipient_id = ? AND ts < ?"
                " ORDER BY ts DESC, seq DESC LIMIT ?",
                (conv.other, below, limit),
            )
        else:
            for recipient, sender in _directions(conv):
                rows += self._query(
                    f"SELECT {COLUMNS} FROM messages WHERE type = 'private' AND recipient_id = ?"
                    " AND sender_id = ? AND ts < ? ORDER BY ts DESC, seq DESC LIMIT ?",
                    (recipient, sender, below, limit),
                )
            rows.sort(key=lambda r: (r[5], r[6]), reverse=True)
        return [message_of(r) for r in rows[:limit]]

    async def _history_at(self, conv: Conversation, ts: int) -> list[Message]:
        keys: list[tuple[str, ...]]
        if conv.type == "group":
            keys = [(conv.other,)]
            sql = f"SELECT {COLUMNS} FROM messages WHERE recipient_id = ? AND ts = ?"
        else:
            keys = list(_directions(conv))
            sql = (
                f"SELECT {COLUMNS} FROM messages WHERE type = 'private' AND recipient_id = ?"
                " AND sender_id = ? AND ts = ?"
            )
        rows = [r for key in keys for r in self._query(sql, (*key, ts))]
        return sorted((message_of(r) for r in rows), key=lambda m: m.seq)

    async def unread_count(self, conv: Conversation, after: int, cap: int) -> int:
        if conv.type == "private":
            if conv.other == conv.user_id:
                return 0
            sql = (
                "SELECT count(*) FROM (SELECT 1 FROM messages WHERE type = 'private'"
                " AND recipient_id = ? AND sender_id = ? AND ts > ? AND deleted = 0 LIMIT ?)"
            )
            rows = self._query(sql, (conv.user_id, conv.other, after, cap))
        else:
            sql = (
                "SELECT count(*) FROM (SELECT 1 FROM messages WHERE recipient_id = ?"
                " AND ts > ? AND sender_id != ? AND deleted = 0 LIMIT ?)"
            )
            rows = self._query(sql, (conv.other, after, conv.user_id, cap))
        return int(rows[0][0])

    async def private_peers(self, user_id: str) -> list[str]:
        rows = self._query("SELECT peer_id FROM peers WHERE user_id = ? ORDER BY 1", (user_id,))
        return [r[0] for r in rows]

    async def mark_read(self, user_id: str, conversation_id: str, ts: int) -> tuple[bool, int]:
        def op(c: sqlite3.Connection) -> tuple[bool, int]:
            moved = c.execute(MARK_READ, (user_id, conversation_id, ts)).rowcount > 0
            (stored,) = c.execute(
                "SELECT ts FROM read_markers WHERE user_id = ? AND conversation_id = ?",
                (user_id, conversation_id),
            ).fetchone()
            return moved, int(stored)

        result: tuple[bool, int] = await self._write(op)
        return result

    async def read_markers(self, user_id: str, conversation_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(conversation_ids), 500):
            chunk = list(conversation_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                "SELECT conversation_id, ts FROM read_markers"
                f" WHERE user_id = ? AND conversation_id IN ({marks})",
                (user_id, *chunk),
            )
            found.update((c, int(ts)) for c, ts in rows)
        return found

    async def peer_read_markers(self, user_id: str, peers: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for peer in peers:
            rows = self._query(
                "SELECT ts FROM read_markers WHERE user_id = ? AND conversation_id = ?",
                (peer, user_id),
            )
            if rows:
                found[peer] = int(rows[0][0])
        return found
