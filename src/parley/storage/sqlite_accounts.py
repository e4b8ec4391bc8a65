"""Devices, passwords and account deletion on SQLite (mixed into ``SqliteStorage``).

Schema (migration 3): ``tokens`` (one row per signed-in device, the secret's SHA-256 only),
and on ``users`` a ``status`` (``active`` / ``deleting`` / ``deleted``) and a
``password_hash`` (argon2id, see ``services.passwords``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, cast

from parley.domain.models import TokenRecord
from parley.domain.roles import Member, decide_remove
from parley.storage.base import AccountState, decode_fields, encode_fields, scrubbed

MIGRATION = """
ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE users ADD COLUMN password_hash TEXT;
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    hash BLOB NOT NULL,
    device_name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_by_user ON tokens (user_id, created_at);
INSERT INTO tokens (id, user_id, hash, device_name, created_at, last_used_at)
    SELECT 't_' || lower(hex(randomblob(16))), id, token_hash, 'first device', 0, 0
    FROM users WHERE token_hash IS NOT NULL;
"""

TOKEN_COLUMNS = "id, user_id, hash, device_name, created_at, last_used_at"
INSERT_TOKEN = f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"


def token_row(token: TokenRecord) -> tuple[Any, ...]:
    return (
        token.id,
        token.user_id,
        token.hash,
        token.device_name,
        token.created_at,
        token.last_used_at,
    )


def _hand_over(c: sqlite3.Connection, user_id: str) -> None:
    """Before a deleted user's memberships go: each group it owns passes to its successor
    (``parley.domain.roles``), in the same write."""
    groups = c.execute("SELECT group_id FROM members WHERE user_id = ?", (user_id,)).fetchall()
    for (group_id,) in groups:
        rows = c.execute(
            "SELECT user_id, role, joined FROM members WHERE group_id = ?", (group_id,)
        ).fetchall()
        heir = decide_remove({u: Member(u, r, j) for u, r, j in rows}, user_id, None).new_owner
        if heir is not None:
            c.execute(
                "UPDATE members SET role = 'owner' WHERE group_id = ? AND user_id = ?",
                (group_id, heir),
            )


def _erase(c: sqlite3.Connection, user_id: str) -> None:
    if c.execute("SELECT 1 FROM users WHERE id = ? AND status = 'deleting'", (user_id,)).fetchone():
        c.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
        c.execute(
            "UPDATE users SET password_hash = NULL, token_hash = NULL, username = '' WHERE id = ?",
            (user_id,),
        )
        _hand_over(c, user_id)
        c.execute("DELETE FROM members WHERE user_id = ?", (user_id,))
        c.execute("DELETE FROM blocks WHERE blocker_id = ?", (user_id,))
        c.execute("DELETE FROM blocks WHERE blocked_id = ?", (user_id,))
        # Earlier texts kept by the edit events of its messages go too.
        edits = c.execute(
            "SELECT e.seq, e.fields FROM events e JOIN messages m ON e.subject = m.id"
            " WHERE m.sender_id = ? AND e.type = 'message_edited'",
            (user_id,),
        ).fetchall()
        for seq, fields in edits:
            kept = decode_fields(fields)
            if "message" in kept:
                clean = encode_fields(scrubbed(kept))
                c.execute("UPDATE events SET fields = ? WHERE seq = ?", (clean, seq))
        # Private messages through their index; group ones by a scan (deletions are rare,
        # and an index on every message's sender would cost every send).
        c.execute(
            "UPDATE messages SET body = '' WHERE sender_id = ? AND type = 'private' AND body != ''",
            (user_id,),
        )
        c.execute(
            "UPDATE messages SET body = '' WHERE sender_id = ? AND type = 'group' AND body != ''",
            (user_id,),
        )


class SqliteAccounts:
    """Needs the adapter's ``_write`` (the writer thread) and ``_query`` (the reader)."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Any]
    _query: Callable[..., list[Any]]

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        return self._query(sql, args)

    async def add_token(self, token: TokenRecord) -> None:
        await self._write(lambda c: c.execute(INSERT_TOKEN, token_row(token)))

    async def user_tokens(self, user_id: str) -> list[TokenRecord]:
        rows = self._rows(
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_id = ? ORDER BY created_at, id",
            (user_id,),
        )
        return [TokenRecord(*row) for row in rows]

    async def delete_token(self, user_id: str, token_id: str) -> bool:
        changed: int = await self._write(
            lambda c: (
                c.execute(
                    "DELETE FROM tokens WHERE user_id = ? AND id = ?", (user_id, token_id)
                ).rowcount
            )
        )
        return changed > 0

    async def touch_token(self, user_id: str, token_id: str, at: int) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE tokens SET last_used_at = ? WHERE user_id = ? AND id = ?"
                " AND last_used_at < ?",
                (at, user_id, token_id, at),
            )
        )

    async def get_password(self, user_id: str) -> str | None:
        rows = self._rows(
            "SELECT password_hash FROM users WHERE id = ? AND status = 'active'", (user_id,)
        )
        return cast(str | None, rows[0][0]) if rows else None

    async def set_password(self, user_id: str, password_hash: str) -> bool:
        changed: int = await self._write(
            lambda c: (
                c.execute(
                    "UPDATE users SET password_hash = ? WHERE id = ? AND status = 'active'",
                    (password_hash, user_id),
                ).rowcount
            )
        )
        return changed > 0

    async def account_state(self, user_id: str) -> AccountState | None:
        rows = self._rows("SELECT status FROM users WHERE id = ?", (user_id,))
        return cast(AccountState, rows[0][0]) if rows else None

    async def begin_deletion(self, user_id: str) -> bool:
        changed: int = await self._write(
            lambda c: (
                c.execute(
                    "UPDATE users SET status = 'deleting' WHERE id = ? AND status != 'deleted'",
                    (user_id,),
                ).rowcount
            )
        )
        return changed > 0

    async def erase_account(self, user_id: str) -> None:
        await self._write(lambda c: _erase(c, user_id))

    async def finish_deletion(self, user_id: str) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE users SET status = 'deleted' WHERE id = ? AND status = 'deleting'",
                (user_id,),
            )
        )

    async def deleting_users(self) -> list[str]:
        # No index: a scan of users, made at start-up and by the rare sweep.
        rows = self._rows("SELECT id FROM users WHERE status = 'deleting' ORDER BY id", ())
        return [row[0] for row in rows]
