"""Devices, passwords and account deletion on PostgreSQL (mixed into ``PostgresStorage``).

Schema (migration ``MIGRATION``): ``tokens`` (one row per signed-in device, the secret's
SHA-256 only), and on ``users`` a ``status`` (``active`` / ``deleting`` / ``deleted``) and a
``password_hash`` (argon2id, see ``services.passwords``). Erasing an account is one
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg

from parley.domain.models import TokenRecord
from parley.domain.roles import Member, decide_remove
from parley.errors import Unavailable
from parley.storage.base import AccountState, decode_fields, encode_fields, scrubbed

log = logging.getLogger("parley.storage.postgres")

MIGRATION = """
ALTER TABLE users ADD COLUMN status text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'deleting', 'deleted'));
ALTER TABLE users ADD COLUMN password_hash text;
CREATE TABLE tokens (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    hash bytea NOT NULL,
    device_name text NOT NULL,
    created_at bigint NOT NULL,
    last_used_at bigint NOT NULL
);
CREATE INDEX tokens_by_user ON tokens (user_id, created_at);
INSERT INTO tokens (id, user_id, hash, device_name, created_at, last_used_at)
    SELECT 't_' || md5(random()::text || id), id, token_hash, 'first device', 0, 0
    FROM users WHERE token_hash IS NOT NULL;
"""

TOKEN_COLUMNS = "id, user_id, hash, device_name, created_at, last_used_at"
INSERT_TOKEN = f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"

ERASE = (
    "DELETE FROM tokens WHERE user_id = $1",
    "UPDATE users SET password_hash = NULL, token_hash = NULL, username = '' WHERE id = $1",
    "DELETE FROM blocks WHERE blocker_id = $1",
    # Private messages through their index; group ones by a scan (deletions are rare, and
    # an index on every message's sender would cost every send).
    "UPDATE messages SET body = '' WHERE sender_id = $1 AND type = 'private' AND body <> ''",
    "UPDATE messages SET body = '' WHERE sender_id = $1 AND type = 'group' AND body <> ''",
)

FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def token_args(token: TokenRecord) -> tuple[Any, ...]:
    return (
        token.id,
        token.user_id,
        token.hash,
        token.device_name,
        token.created_at,
        token.last_used_at,
    )


async def _hand_over(conn: asyncpg.Connection, user_id: str) -> None:
    """Before a deleted user's memberships go: each group it owns passes to its successor
    (``parley.domain.roles``), under the group row's lock as every role change is."""
    groups = await conn.fetch(
        "SELECT group_id FROM members WHERE user_id = $1 ORDER BY group_id", user_id
    )
    for (group_id,) in groups:
        await conn.execute("SELECT 1 FROM groups WHERE id = $1 FOR UPDATE", group_id)
        rows = await conn.fetch(
            "SELECT user_id, role, joined FROM members WHERE group_id = $1", group_id
        )
        roster = {r[0]: Member(r[0], r[1], int(r[2])) for r in rows}
        heir = decide_remove(roster, user_id, None).new_owner
        if heir is not None:
            await conn.execute(
                "UPDATE members SET role = 'owner' WHERE group_id = $1 AND user_id = $2",
                group_id,
                heir,
            )


class PostgresAccounts:
    """Needs the adapter's ``_fetch``, ``_execute``, ``_ready`` and ``_bounded``."""

    _fetch: Callable[..., Awaitable[list[Any]]]
    _execute: Callable[..., Awaitable[str]]
    _ready: Callable[[], asyncpg.Pool]
    _bounded: Callable[[Awaitable[Any]], Awaitable[Any]]

    async def _changed(self, sql: str, *args: Any) -> bool:
        status = await self._execute(sql, *args)
        return not status.endswith(" 0")

    async def _in_transaction(self, work: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
        async def run() -> None:
            async with self._ready().acquire() as conn, conn.transaction():
                await work(conn)

        try:
            await self._bounded(run())
        except FAILURES as exc:
            log.error("postgres write failed: %s", exc)
            raise Unavailable("storage unavailable") from exc

    async def add_token(self, token: TokenRecord) -> None:
        await self._execute(INSERT_TOKEN, *token_args(token))

    async def user_tokens(self, user_id: str) -> list[TokenRecord]:
        rows = await self._fetch(
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_id = $1 ORDER BY created_at, id",
            user_id,
        )
        return [TokenRecord(*row) for row in rows]

    # A revocation and a deletion mark retire the cache epoch in their own transaction, so
    # even if their process dies right after the commit, no process keeps trusting a copy
    # of the token or the user for longer than one trust lease (parley.cache.redis).
    retires_cache_epoch = True

    async def delete_token(self, user_id: str, token_id: str) -> bool:
        rows = await self._fetch(
            "WITH d AS (DELETE FROM tokens WHERE user_id = $1 AND id = $2 RETURNING 1),"
            " e AS (UPDATE cache_epoch SET epoch = epoch + 1"
            "       WHERE id AND EXISTS (SELECT 1 FROM d) RETURNING 1)"
            " SELECT count(*) AS n FROM d",
            user_id,
            token_id,
        )
        return bool(rows[0]["n"])

    async def touch_token(self, user_id: str, token_id: str, at: int) -> None:
        await self._execute(
            "UPDATE tokens SET last_used_at = $3 WHERE user_id = $1 AND id = $2"
            " AND last_used_at < $3",
            user_id,
            token_id,
            at,
        )

    async def get_password(self, user_id: str) -> str | None:
        rows = await self._fetch(
            "SELECT password_hash FROM users WHERE id = $1 AND status = 'active'", user_id
        )
        return cast(str | None, rows[0][0]) if rows else None

    async def set_password(self, user_id: str, password_hash: str) -> bool:
        return await self._changed(
            "UPDATE users SET password_hash = $2 WHERE id = $1 AND status = 'active'",
            user_id,
            password_hash,
        )

    async def account_state(self, user_id: str) -> AccountState | None:
        rows = await self._fetch("SELECT status FROM users WHERE id = $1", user_id)
        return cast(AccountState, rows[0][0]) if rows else None

    async def begin_deletion(self, user_id: str) -> bool:
        rows = await self._fetch(
            "WITH d AS (UPDATE users SET status = 'deleting'"
            "           WHERE id = $1 AND status <> 'deleted' RETURNING 1),"
            " e AS (UPDATE cache_epoch SET epoch = epoch + 1"
            "       WHERE id AND EXISTS (SELECT 1 FROM d) RETURNING 1)"
            " SELECT count(*) AS n FROM d",
            user_id,
        )
        return bool(rows[0]["n"])

    async def erase_account(self, user_id: str) -> None:
        async def erase(conn: asyncpg.Connection) -> None:
            state = await conn.fetchval(
                "SELECT status FROM users WHERE id = $1 FOR UPDATE", user_id
            )
            if state != "deleting":
                return
            await _hand_over(conn, user_id)
            groups = await conn.fetch(
                "DELETE FROM members WHERE user_id = $1 RETURNING group_id", user_id
            )
            blockers = await conn.fetch(
                "DELETE FROM blocks WHERE blocked_id = $1 RETURNING blocker_id", user_id
            )
            # Earlier texts kept by the edit events of its messages go too.
            edits = await conn.fetch(
                "SELECT e.seq, e.fields FROM events e JOIN messages m ON e.subject = m.id"
                " WHERE m.sender_id = $1 AND e.type = 'message_edited'",
                user_id,
            )
            for edit in edits:
                kept = decode_fields(edit["fields"])
                if "message" in kept:
                    await conn.execute(
                        "UPDATE events SET fields = $1 WHERE seq = $2",
                        encode_fields(scrubbed(kept)),
                        edit["seq"],
                    )
            for statement in ERASE:
                await conn.execute(statement, user_id)
            # The cached sets this made stale, in the cache log (parley.cache.redis).
            keys = ["g:" + user_id, "b:" + user_id]
            keys += ["m:" + row[0] for row in groups] + ["b:" + row[0] for row in blockers]
            await conn.execute(
                "WITH c AS (UPDATE cache_clock SET pos = pos + 1 WHERE id RETURNING pos)"
                " INSERT INTO cache_log (pos, key)"
                " SELECT c.pos, k FROM c CROSS JOIN unnest($1::text[]) AS k",
                list(dict.fromkeys(keys)),
            )

        await self._in_transaction(erase)

    async def finish_deletion(self, user_id: str) -> None:
        await self._execute(
            "UPDATE users SET status = 'deleted' WHERE id = $1 AND status = 'deleting'",
            user_id,
        )

    async def deleting_users(self) -> list[str]:
        # No index: a scan of users, made at start-up and by the rare sweep.
        rows = await self._fetch("SELECT id FROM users WHERE status = 'deleting' ORDER BY id")
        return [row[0] for row in rows]
