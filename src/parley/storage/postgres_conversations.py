"""Conversations on PostgreSQL: history, unread counts, read markers (mixed into
``PostgresStorage``).

Schema (migration ``MIGRATION``):

* ``messages_by_pair``: private messages by (recipient, sender, ts, seq), so one direction
  of a private conversation is one index range; a history page reads two short ranges
  (one per direction) in one statement, whatever else the user has. A group's history is
  the group's range of ``messages_by_recipient``.
* ``peers``: (user, peer) for every pair that exchanged a private message, inserted in the
  send's own statement (``ON CONFLICT DO NOTHING``; pairs this process already wrote are
  left out, so a conversation's later messages write nothing extra).
* ``read_markers``: (user, conversation) -> ts, moved by one conditional upsert.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from parley.domain.models import Message
from parley.storage.base import Conversation
from parley.storage.media_sql import split_ids

MIGRATION = """
CREATE INDEX messages_by_pair ON messages (recipient_id, sender_id, ts, seq)
    WHERE type = 'private';
CREATE TABLE peers (
    user_id text NOT NULL,
    peer_id text NOT NULL,
    PRIMARY KEY (user_id, peer_id)
);
INSERT INTO peers (user_id, peer_id)
    SELECT sender_id, recipient_id FROM messages WHERE type = 'private'
    UNION SELECT recipient_id, sender_id FROM messages WHERE type = 'private'
    ON CONFLICT DO NOTHING;
CREATE TABLE read_markers (
    user_id text NOT NULL,
    conversation_id text NOT NULL,
    ts bigint NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);
"""

# A message row, as every PostgreSQL query reads it (``message_of`` turns it into a Message).
COLUMNS = "id, type, sender_id, recipient_id, body, ts, seq, edited_at, deleted, attachments"
KNOWN_PEERS_MAX = 100_000  # pairs remembered per process as already in ``peers``

GROUP_HISTORY = f"""
SELECT {COLUMNS} FROM messages WHERE recipient_id = $1 AND ts < $2
ORDER BY ts DESC, seq DESC LIMIT $3
"""
DIRECTION = f"""
SELECT {COLUMNS} FROM messages
WHERE type = 'private' AND recipient_id = {{r}} AND sender_id = {{s}} AND ts < $3
ORDER BY ts DESC, seq DESC LIMIT $4
"""
PRIVATE_HISTORY = f"""
SELECT * FROM (({DIRECTION.format(r="$1", s="$2")}) UNION ALL
               ({DIRECTION.format(r="$2", s="$1")})) u
ORDER BY ts DESC, seq DESC LIMIT $4
"""
SELF_HISTORY = DIRECTION.format(r="$1", s="$2")
GROUP_AT = f"SELECT {COLUMNS} FROM messages WHERE recipient_id = $1 AND ts = $2 ORDER BY seq"
PRIVATE_AT = f"""
SELECT {COLUMNS} FROM messages WHERE type = 'private' AND ts = $3
AND ((recipient_id = $1 AND sender_id = $2) OR (recipient_id = $2 AND sender_id = $1))
ORDER BY seq
"""
PRIVATE_UNREAD = """
SELECT count(*) AS n FROM (SELECT 1 FROM messages WHERE type = 'private'
    AND recipient_id = $1 AND sender_id = $2 AND ts > $3 AND NOT deleted LIMIT $4) u
"""
GROUP_UNREAD = """
SELECT count(*) AS n FROM (SELECT 1 FROM messages
    WHERE recipient_id = $1 AND ts > $3 AND sender_id <> $2 AND NOT deleted LIMIT $4) u
"""
# The conditional upsert: a row back only if it moved the marker.
MARK_READ = """
INSERT INTO read_markers (user_id, conversation_id, ts) VALUES ($1, $2, $3)
ON CONFLICT (user_id, conversation_id) DO UPDATE SET ts = excluded.ts
WHERE read_markers.ts < excluded.ts
RETURNING ts
"""


def message_of(row: Any) -> Message:
    return Message(
        row["id"], row["type"], row["sender_id"], row["recipient_id"], row["body"],
        row["ts"], row["seq"], row["edited_at"], row["deleted"], split_ids(row["attachments"]),
    )  # fmt: skip


class PostgresConversations:
    """Needs the adapter's ``_fetch``."""

    _fetch: Callable[..., Awaitable[list[Any]]]

    async def _history_frontier(self) -> int:
        # Every message at or below the clock's committed value is committed (a writer
        # moves the clock and inserts in one transaction, serialized on the clock row).
        rows = await self._fetch("SELECT ts FROM clock WHERE id")
        return int(rows[0]["ts"])

    async def _history_rows(self, conv: Conversation, below: int, limit: int) -> list[Message]:
        if conv.type == "group":
            rows = await self._fetch(GROUP_HISTORY, conv.other, below, limit)
        elif conv.other == conv.user_id:
            rows = await self._fetch(SELF_HISTORY, conv.user_id, conv.other, below, limit)
        else:
            rows = await self._fetch(PRIVATE_HISTORY, conv.user_id, conv.other, below, limit)
        return [message_of(r) for r in rows]

    async def _history_at(self, conv: Conversation, ts: int) -> list[Message]:
        if conv.type == "group":
            rows = await self._fetch(GROUP_AT, conv.other, ts)
        else:
            rows = await self._fetch(PRIVATE_AT, conv.user_id, conv.other, ts)
        return [message_of(r) for r in rows]

    async def unread_count(self, conv: Conversation, after: int, cap: int) -> int:
        if conv.type == "private":
            if conv.other == conv.user_id:
                return 0
            rows = await self._fetch(PRIVATE_UNREAD, conv.user_id, conv.other, after, cap)
        else:
            rows = await self._fetch(GROUP_UNREAD, conv.other, conv.user_id, after, cap)
        return int(rows[0]["n"])

    async def private_peers(self, user_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT peer_id FROM peers WHERE user_id = $1 ORDER BY peer_id", user_id
        )
        return [r[0] for r in rows]

    async def mark_read(self, user_id: str, conversation_id: str, ts: int) -> tuple[bool, int]:
        if await self._fetch(MARK_READ, user_id, conversation_id, ts):
            return True, ts
        # Not moved: the stored value is at least ts. A new statement (a new snapshot)
        # sees it, including one another writer committed while this one waited.
        rows = await self._fetch(
            "SELECT ts FROM read_markers WHERE user_id = $1 AND conversation_id = $2",
            user_id,
            conversation_id,
        )
        return False, int(rows[0]["ts"]) if rows else ts

    async def read_markers(self, user_id: str, conversation_ids: Sequence[str]) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT conversation_id, ts FROM read_markers"
            " WHERE user_id = $1 AND conversation_id = ANY($2::text[])",
            user_id,
            list(conversation_ids),
        )
        return {r["conversation_id"]: int(r["ts"]) for r in rows}

    async def peer_read_markers(self, user_id: str, peers: Sequence[str]) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT user_id, ts FROM read_markers"
            " WHERE conversation_id = $1 AND user_id = ANY($2::text[])",
            user_id,
            list(peers),
        )
        return {r["user_id"]: int(r["ts"]) for r in rows}
