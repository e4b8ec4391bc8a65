"""The PostgreSQL adapter: any number of Parley processes on one database.

Positions come from the database, not from a process: a one-row ``clock`` table is the
serialization point of message writes. A write takes the clock row's lock, moves it to
``GREATEST(clock + 1, now in ms)`` using the *database's* clock, inserts its messages with
that timestamp, and commits — all in one statement (one round trip, one transaction)::

    writer A:  UPDATE clock -> 101 (row locked) ... INSERT ... COMMIT
    writer B:              waits for the lock ...  UPDATE clock -> 102 ... COMMIT

Clock commits are therefore serialized and strictly increasing, and a message commits in
the same transaction as the clock value it carries. A reader reads the clock row and the
messages in one statement, so in one snapshot, and hands the clock value out as the
frontier: everything at or below it is in that snapshot, and anything that commits later
moved the clock past it first. ``docs/scale-out.md`` walks through the argument.

Each process group-commits: appends queue up while a batch is being written, and the
next batch carries all of them under one timestamp (pages never split a timestamp, so
readers do not mind). When batches arrive faster than one per millisecond fleet-wide,
the clock runs ahead of the wall clock; a writer more than ``max_lead_ms`` ahead waits.

Schema changes are numbered migrations applied by ``parley migrate`` and at start-up,
under an advisory lock so that several processes starting at once apply each once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

import asyncpg
import msgspec

from parley.domain.models import Event, GroupRecord, Message, Page, TokenRecord, UserRecord
from parley.domain.roles import (
    GroupWrite,
    Member,
    Outcome,
    Role,
    decide_join,
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
from parley.storage.media_postgres import PostgresMedia
from parley.storage.media_sql import POSTGRES_MIGRATION as MEDIA_MIGRATION
from parley.storage.media_sql import join_ids
from parley.storage.postgres_accounts import INSERT_TOKEN, PostgresAccounts, token_args
from parley.storage.postgres_accounts import MIGRATION as ACCOUNTS_MIGRATION
from parley.storage.postgres_conversations import COLUMNS as MESSAGE_COLUMNS
from parley.storage.postgres_conversations import (
    KNOWN_PEERS_MAX,
    PostgresConversations,
    message_of,
)
from parley.storage.postgres_conversations import MIGRATION as CONVERSATIONS_MIGRATION

log = logging.getLogger("parley.storage.postgres")

T = TypeVar("T")
Roster = dict[str, Member]

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id text PRIMARY KEY,
        username text NOT NULL,
        token_hash bytea
    );
    CREATE TABLE groups (
        id text PRIMARY KEY,
        name text NOT NULL
    );
    -- group -> members (members_of, add, remove) and user -> groups (every check)
    CREATE TABLE members (
        group_id text NOT NULL,
        user_id text NOT NULL,
        PRIMARY KEY (group_id, user_id)
    );
    CREATE INDEX members_by_user ON members (user_id, group_id);
    CREATE TABLE blocks (
        blocker_id text NOT NULL,
        blocked_id text NOT NULL,
        PRIMARY KEY (blocker_id, blocked_id)
    );
    -- the serialization point of message writes: one row, the last committed position
    CREATE TABLE clock (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        ts bigint NOT NULL
    );
    INSERT INTO clock (id, ts) VALUES (true, 0);
    -- bumped when a process could not mirror a committed write into Redis
    CREATE TABLE cache_epoch (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        epoch bigint NOT NULL
    );
    INSERT INTO cache_epoch (id, epoch) VALUES (true, 1);
    CREATE TABLE messages (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        type text NOT NULL CHECK (type IN ('private', 'group')),
        sender_id text NOT NULL,
        recipient_id text NOT NULL,
        body text NOT NULL,
        ts bigint NOT NULL,
        send_key text
    );
    -- a user's inbox and each of its groups: recipient, then position
    CREATE INDEX messages_by_recipient ON messages (recipient_id, ts, seq);
    -- include=sent: the private messages a user sent
    CREATE INDEX messages_sent_private ON messages (sender_id, ts, seq)
        WHERE type = 'private';
    -- idempotent sends
    CREATE UNIQUE INDEX messages_send_key ON messages (sender_id, send_key)
        WHERE send_key IS NOT NULL;
    """,
    """
    -- the cache log: every change to a rule the shared cache holds (memberships, blocks)
    -- takes the next position, in the same transaction, and names the cached keys it
    -- makes stale; positions commit in increasing order with no gaps (the row lock)
    CREATE TABLE cache_clock (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        pos bigint NOT NULL
    );
    INSERT INTO cache_clock (id, pos) VALUES (true, 0);
    CREATE TABLE cache_log (
        pos bigint NOT NULL,
        key text NOT NULL,
        at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (pos, key)
    );
    CREATE INDEX cache_log_at ON cache_log (at);
    -- the cache's catch-up: the streams of the messages stored in a range of positions
    CREATE INDEX messages_by_ts ON messages (ts);
    """,
    # facts about the data itself (the auth mode it is served with)
    """
    CREATE TABLE meta (
        key text PRIMARY KEY,
        value text NOT NULL
    );
    """,
    ACCOUNTS_MIGRATION,
    # roles (owner, admin, member) and the order members joined in; in a group stored
    # before roles, the member with the smallest id becomes its owner
    """
    ALTER TABLE members ADD COLUMN role text NOT NULL DEFAULT 'member'
        CHECK (role IN ('owner', 'admin', 'member'));
    ALTER TABLE members ADD COLUMN joined bigint NOT NULL DEFAULT 0;
    UPDATE members SET role = 'owner' WHERE (group_id, user_id) IN
        (SELECT group_id, min(user_id) FROM members GROUP BY group_id);
    """,
    # change events: one row each, on the message clock, delivered to one or more streams
    # (a user's id or a group's id); messages can be edited and deleted
    """
    CREATE TABLE events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        type text NOT NULL,
        fields text NOT NULL,
        ts bigint NOT NULL,
        subject text
    );
    CREATE INDEX events_by_subject ON events (subject) WHERE subject IS NOT NULL;
    CREATE INDEX events_by_ts ON events (ts);
    CREATE TABLE event_streams (
        stream text NOT NULL,
        ts bigint NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (stream, ts, seq)
    );
    ALTER TABLE messages ADD COLUMN edited_at bigint NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN deleted boolean NOT NULL DEFAULT false;
    """,
    # conversations: an index per private conversation, peers, read markers
    CONVERSATIONS_MIGRATION,
    MEDIA_MIGRATION,
)

NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

# One statement, so one transaction and one round trip: move the clock (taking its row
# lock), insert the batch under the new timestamp, return what was inserted. Rows that
# hit an idempotency key already stored are skipped and looked up afterwards.
APPEND_SQL = f"""
WITH c AS (
    UPDATE clock SET ts = GREATEST(clock.ts + 1, {NOW_MS}) WHERE id
    RETURNING ts, {NOW_MS} AS now_ms
), ins AS (
    INSERT INTO messages (id, type, sender_id, recipient_id, body, ts, send_key, attachments)
    SELECT d.id, d.type, d.sender_id, d.recipient_id, d.body, c.ts, d.send_key, d.attachments
    FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]
    ) WITH ORDINALITY AS d(id, type, sender_id, recipient_id, body, send_key, attachments, n)
    CROSS JOIN c
    ORDER BY d.n
    ON CONFLICT (sender_id, send_key) WHERE send_key IS NOT NULL DO NOTHING
    RETURNING id, ts, seq
), pe AS (
    -- reads c, so it runs after the clock row is locked (no lock-order deadlock)
    INSERT INTO peers (user_id, peer_id)
    SELECT p.u, p.p FROM unnest($8::text[], $9::text[]) AS p(u, p) CROSS JOIN c
    ON CONFLICT DO NOTHING
)
SELECT c.ts AS clock, c.now_ms, ins.id, ins.seq FROM c LEFT JOIN ins ON true
"""

# The clock row and the page in one statement: one snapshot.
PAGE_SQL = f"""
WITH f AS (SELECT ts FROM clock WHERE id)
SELECT f.ts AS frontier, p.* FROM f LEFT JOIN LATERAL (
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE recipient_id = ANY($1::text[]) AND ts > $2 AND ts <= f.ts
    ORDER BY ts, seq LIMIT $3
) p ON true
ORDER BY p.ts, p.seq
"""

PAGE_WITH_SENT_SQL = f"""
WITH f AS (SELECT ts FROM clock WHERE id)
SELECT f.ts AS frontier, p.* FROM f LEFT JOIN LATERAL (
    SELECT * FROM (
        (SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE recipient_id = ANY($1::text[]) AND ts > $2 AND ts <= f.ts
         ORDER BY ts, seq LIMIT $3)
        UNION
        (SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE sender_id = $4 AND type = 'private' AND ts > $2 AND ts <= f.ts
         ORDER BY ts, seq LIMIT $3)
    ) u ORDER BY ts, seq LIMIT $3
) p ON true
ORDER BY p.ts, p.seq
"""

ROWS_AT_SQL = f"""
SELECT {MESSAGE_COLUMNS} FROM messages WHERE recipient_id = ANY($1::text[]) AND ts = $2
UNION
SELECT {MESSAGE_COLUMNS} FROM messages
WHERE sender_id = $3 AND type = 'private' AND ts = $2
ORDER BY ts, seq
"""

# The sets the shared cache holds, by key kind: the port operation each one stands for
# (counted under its name), and the query.
CACHED_SETS = {
    "b": ("blocked_by", "SELECT blocked_id FROM blocks WHERE blocker_id = $1 ORDER BY 1"),
    "g": ("user_groups", "SELECT group_id FROM members WHERE user_id = $1 ORDER BY 1"),
    "m": ("group_members", "SELECT user_id FROM members WHERE group_id = $1 ORDER BY 1"),
}

FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# Fault tests set PARLEY_TEST_EXIT_AFTER_COMMIT to operation names (add_block, ..., send):
# the process then exits, with this status, right after such a write commits.
EXIT_AFTER_COMMIT = 86
# Errors one bad row can cause: a batch that hits one is retried row by row.
ROW_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# When the storage operation the current task is in must answer (event loop time).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "parley_postgres_deadline", default=None
)


def _event(row: Any) -> Event:
    return Event(row["id"], row["type"], decode_fields(row["fields"]), row["ts"], row["seq"])


# One statement, one transaction: move the clock (taking its row lock) and insert the
# event and its stream rows under the new timestamp.
EVENT_SQL = f"""
WITH c AS (
    UPDATE clock SET ts = GREATEST(clock.ts + 1, {NOW_MS}) WHERE id RETURNING ts
), e AS (
    INSERT INTO events (id, type, fields, ts, subject)
    SELECT $1, $2, $3, c.ts, $4 FROM c
    RETURNING ts, seq
), s AS (
    INSERT INTO event_streams (stream, ts, seq)
    SELECT u.stream, e.ts, e.seq FROM e CROSS JOIN unnest($5::text[]) AS u(stream)
)
SELECT ts, seq FROM e
"""

EVENT_ROWS_SQL = """
SELECT id, type, fields, ts, seq FROM events WHERE seq IN (
    SELECT seq FROM event_streams WHERE stream = ANY($1::text[]) AND ts > $2 AND ts <= $3
) ORDER BY ts, seq LIMIT $4
"""

EVENT_ROWS_AT_SQL = """
SELECT id, type, fields, ts, seq FROM events WHERE seq IN (
    SELECT seq FROM event_streams WHERE stream = ANY($1::text[]) AND ts = $2
) ORDER BY ts, seq
"""


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: Parley keeps no session state, so releasing costs no round trip."""


class _Append:
    """A queued send. Its caller stops waiting at its deadline: then ``future`` is
    cancelled, and a batch that is still writing it settles nothing for it."""

    __slots__ = ("draft", "future")

    def __init__(self, draft: MessageDraft, future: asyncio.Future[tuple[Message, bool]]) -> None:
        self.draft = draft
        self.future = future


@counted
class PostgresStorage(PostgresConversations, PostgresMedia, PostgresAccounts, Storage):
    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "",
        pool_size: int = 10,
        timeout: float = 10.0,
        max_batch: int = 1000,
        max_lead_ms: int = 50,
    ) -> None:
        super().__init__()
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.timeout = timeout
        self.max_batch = max_batch
        self.max_lead_ms = max_lead_ms
        self.batches = 0
        self._pool: asyncpg.Pool | None = None
        self._queue: list[_Append] = []
        self._wake = asyncio.Event()
        self._inflight: list[_Append] = []
        self._writer: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._known_peers: set[tuple[str, str]] = set()
        self._pending_peers: set[tuple[str, str]] = set()
        faults = os.environ.get("PARLEY_TEST_EXIT_AFTER_COMMIT", "")
        self.exit_after_commit = frozenset(filter(None, faults.split(",")))

    # lifecycle -------------------------------------------------------------------------
    def _server_settings(self) -> dict[str, str]:
        # JIT compilation costs ~100 ms per statement and pays off only for analytics;
        # the small tables' row estimates (the one-row clock) would trigger it otherwise.
        settings = {"application_name": "parley", "jit": "off"}
        if self.schema:
            settings["search_path"] = self.schema
        return settings

    async def open(self) -> None:
        try:
            await self.migrate()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=min(2, self.pool_size),
                max_size=self.pool_size,
                command_timeout=self.timeout,
                server_settings=self._server_settings(),
                reset=_keep_session,
            )
        except FAILURES as exc:
            log.error("postgres unreachable: %s", exc)
            raise Unavailable("storage unavailable") from exc
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="parley-postgres-writer")

    async def migrate(self) -> int:
        """Apply the migrations this database lacks; return the schema version."""
        conn = await asyncpg.connect(
            self.dsn, timeout=self.timeout, server_settings={"application_name": "parley"}
        )
        try:
            # Session-level advisory lock: processes starting together migrate one by one.
            key = zlib.crc32(f"parley-migrate:{self.schema}".encode()) - 2**31
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            try:
                if self.schema:
                    quoted = '"' + self.schema.replace('"', '""') + '"'
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
                    await conn.execute(f"SET search_path TO {quoted}")
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                version = await conn.fetchval(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                )
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    async with conn.transaction():
                        await conn.execute(script)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version) VALUES ($1)", number
                        )
                    log.info("postgres schema migrated to version %d", number)
                    version = number
                return int(version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
        finally:
            await conn.close()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            # Let queued appends finish (bounded), then stop the writer.
            for _ in range(100):
                if not self._queue and not self._inflight:
                    break
                await asyncio.sleep(0.05)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        for job in [*self._inflight, *self._queue]:
            if not job.future.done():
                job.future.set_exception(Unavailable("storage is closing"))
        self._queue.clear()
        self._inflight = []
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # plumbing --------------------------------------------------------------------------
    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable("storage is not open")
        return self._pool

    @contextlib.contextmanager
    def _deadline(self) -> Iterator[float]:
        """One deadline for every database call of the storage operation being run.

        The first (outermost) operation of a task sets it to ``timeout`` seconds from now;
        nested calls share it, so an operation that needs two queries still answers
        within ``timeout`` of being called.
        """
        outer = _DEADLINE.get()
        if outer is not None:
            yield outer
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        token = _DEADLINE.set(deadline)
        try:
            yield deadline
        finally:
            _DEADLINE.reset(token)

    async def _bounded(self, call: Awaitable[Any]) -> Any:
        """Await a pool call until the operation's deadline (``timeout`` from its start).

        ``command_timeout`` bounds only the query: acquiring a connection (connect) and
        releasing it (asyncpg waits, unbounded, for its cancel request) can hang on a dead
        network, and a cancelled task does not interrupt that clean-up. So the call runs
        in a task of its own, abandoned (cancelled, left to finish in the background) when
        time is up.
        """
        task = asyncio.ensure_future(call)
        with self._deadline() as deadline:
            left = deadline - asyncio.get_running_loop().time()
            try:
                done, _ = await asyncio.wait({task}, timeout=max(left, 0.0))
            except asyncio.CancelledError:
                self._abandon(task)
                raise
        if not done:
            self._abandon(task)
            raise TimeoutError(f"postgres call took over {self.timeout}s")
        return task.result()

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            rows: list[Any] = await self._bounded(
                self._ready().fetch(sql, *args, timeout=self.timeout)
            )
        except FAILURES as exc:
            log.error("postgres query failed: %s", exc)
            raise Unavailable("storage unavailable") from exc
        return rows

    async def _execute(self, sql: str, *args: Any) -> str:
        try:
            status: str = await self._bounded(
                self._ready().execute(sql, *args, timeout=self.timeout)
            )
        except FAILURES as exc:
            log.error("postgres write failed: %s", exc)
            raise Unavailable("storage unavailable") from exc
        return status

    async def _logged(self, operation: str, change: str, keys: list[str], *args: Any) -> bool:
        """Run ``change`` (a ``WITH ch AS (... RETURNING 1)`` clause) and, if it changed a
        row, take the next cache-log position and log ``keys`` under it: one statement, so
        one transaction. True if it changed a row."""
        rows = await self._fetch(
            f"""{change},
            c AS (UPDATE cache_clock SET pos = pos + 1
                  WHERE id AND EXISTS (SELECT 1 FROM ch) RETURNING pos),
            l AS (INSERT INTO cache_log (pos, key)
                  SELECT c.pos, k FROM c CROSS JOIN unnest($1::text[]) AS k)
            SELECT count(*) AS changed FROM ch""",
            keys,
            *args,
        )
        if operation in self.exit_after_commit:
            os._exit(EXIT_AFTER_COMMIT)  # a fault test: the process dies right after commit
        return bool(rows[0]["changed"])

    async def _locked_group(
        self,
        operation: str,
        group_id: str,
        work: Callable[[asyncpg.Connection, Roster], Awaitable[T]],
    ) -> T | None:
        """Run ``work`` with the group's roster in one transaction that holds the group
        row's lock (``FOR UPDATE``): every role and membership write of one group, from
        any process, runs one after the other. None if there is no such group."""

        async def run() -> T | None:
            async with self._ready().acquire() as conn, conn.transaction():
                found = await conn.fetchval(
                    "SELECT 1 FROM groups WHERE id = $1 FOR UPDATE", group_id
                )
                if found is None:
                    return None
                rows = await conn.fetch(
                    "SELECT user_id, role, joined FROM members WHERE group_id = $1", group_id
                )
                roster = {r[0]: Member(r[0], r[1], int(r[2])) for r in rows}
                return await work(conn, roster)

        try:
            result: T | None = await self._bounded(run())
        except FAILURES as exc:
            log.error("postgres write failed: %s", exc)
            raise Unavailable("storage unavailable") from exc
        if operation in self.exit_after_commit:
            os._exit(EXIT_AFTER_COMMIT)  # a fault test: the process dies right after commit
        return result

    @staticmethod
    async def _log_keys(conn: asyncpg.Connection, keys: list[str]) -> None:
        """Log cached keys a change makes stale, in the change's transaction (see _logged)."""
        await conn.execute(
            "WITH c AS (UPDATE cache_clock SET pos = pos + 1 WHERE id RETURNING pos)"
            " INSERT INTO cache_log (pos, key)"
            " SELECT c.pos, k FROM c CROSS JOIN unnest($1::text[]) AS k",
            keys,
        )

    async def ping(self) -> None:
        await self._fetch("SELECT 1")
        if self._writer is None or self._writer.done():
            raise Unavailable("storage writer is not running")

    async def last_position(self) -> int:
        rows = await self._fetch("SELECT ts FROM clock WHERE id")
        return int(rows[0]["ts"])

    # the shared cache's anchor (see parley.cache.redis_link) -------------------------
    async def cache_state(self) -> tuple[int, int]:
        """The cache epoch and the commit frontier, read in one snapshot."""
        rows = await self._fetch("SELECT e.epoch, c.ts FROM cache_epoch e, clock c")
        return int(rows[0]["epoch"]), int(rows[0]["ts"])

    async def bump_cache_epoch(self) -> int:
        rows = await self._fetch(
            "UPDATE cache_epoch SET epoch = epoch + 1 WHERE id RETURNING epoch"
        )
        return int(rows[0]["epoch"])

    async def cache_clock(self) -> tuple[int, int, int]:
        """The cache epoch, the message commit frontier and the cache-log position."""
        rows = await self._fetch(
            "SELECT e.epoch, c.ts, l.pos FROM cache_epoch e, clock c, cache_clock l"
        )
        return int(rows[0]["epoch"]), int(rows[0]["ts"]), int(rows[0]["pos"])

    async def cache_log(self, after: int, upto: int) -> dict[str, int] | None:
        """The keys logged at positions in (after, upto], each with the last such
        position; None if the log no longer holds every one of those positions (pruned)."""
        if upto <= after:
            return {}
        rows = await self._fetch(
            "SELECT key, max(pos) AS pos, (SELECT count(DISTINCT pos) FROM cache_log"
            "  WHERE pos > $1 AND pos <= $2) AS n"
            " FROM cache_log WHERE pos > $1 AND pos <= $2 GROUP BY key",
            after,
            upto,
        )
        if not rows or int(rows[0]["n"]) != upto - after:
            return None
        return {r["key"]: int(r["pos"]) for r in rows}

    async def read_cached(self, key: str) -> tuple[list[str], int]:
        """A cached set (``b:<blocker>``, ``g:<user>``, ``m:<group>``) and the cache-log
        position it reflects, read in one snapshot."""
        kind, _, ident = key.partition(":")
        operation, query = CACHED_SETS[kind]
        self.calls[operation] += 1
        rows = await self._fetch(
            f"SELECT (SELECT pos FROM cache_clock WHERE id) AS pos, ARRAY({query}) AS ids", ident
        )
        return list(rows[0]["ids"]), int(rows[0]["pos"])

    async def stream_tops(
        self, after: int, upto: int, limit: int
    ) -> tuple[dict[str, int], dict[str, int]] | None:
        """For the messages with ``after < ts <= upto``: the newest position per recipient,
        and per sender of private messages; None if there are ``limit`` messages or more."""
        if upto <= after:
            return {}, {}
        rows = await self._fetch(
            "WITH m AS (SELECT recipient_id, sender_id, type, ts FROM messages"
            "  WHERE ts > $1 AND ts <= $2 LIMIT $3)"
            " SELECT recipient_id AS id, max(ts) AS ts, false AS sent,"
            "  (SELECT count(*) FROM m) AS n FROM m GROUP BY recipient_id"
            " UNION ALL"
            " SELECT sender_id, max(ts), true, 0 FROM m WHERE type = 'private' GROUP BY sender_id"
            " UNION ALL"
            " SELECT 'ev:' || s.stream, max(e.ts), false, 0 FROM events e"
            "  JOIN event_streams s ON s.seq = e.seq AND s.ts = e.ts"
            "  WHERE e.ts > $1 AND e.ts <= $2 GROUP BY s.stream",
            after,
            upto,
            limit,
        )
        if rows and int(rows[0]["n"]) >= limit:
            return None
        received = {r["id"]: int(r["ts"]) for r in rows if not r["sent"]}
        sent = {r["id"]: int(r["ts"]) for r in rows if r["sent"]}
        return received, sent

    async def prune_cache_log(self, keep_seconds: float) -> None:
        """Forget cache-log rows older than ``keep_seconds``."""
        await self._execute(
            "DELETE FROM cache_log WHERE at < now() - make_interval(secs => $1)", keep_seconds
        )

    # users -----------------------------------------------------------------------------
    async def record_meta(self, key: str, value: str, *, replace: bool = False) -> str | None:
        # A row comes back when this statement wrote; none when a record existed and was
        # kept (or a concurrent first record won): then read the value that is there.
        rows = await self._fetch(
            "WITH old AS (SELECT value FROM meta WHERE key = $1)"
            " INSERT INTO meta (key, value) VALUES ($1, $2)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value WHERE $3"
            " RETURNING (SELECT value FROM old)",
            key,
            value,
            replace,
        )
        if rows:
            return None if rows[0][0] is None else str(rows[0][0])
        kept = await self._fetch("SELECT value FROM meta WHERE key = $1", key)
        return str(kept[0][0]) if kept else None

    async def create_user(self, user: UserRecord, token: TokenRecord | None = None) -> None:
        if token is None:
            await self._execute(
                "INSERT INTO users (id, username, token_hash) VALUES ($1, $2, $3)",
                user.id,
                user.username,
                user.token_hash,
            )
            return
        await self._execute(
            "WITH u AS (INSERT INTO users (id, username, token_hash) VALUES ($7, $8, $9)) "
            + INSERT_TOKEN,
            *token_args(token),
            user.id,
            user.username,
            user.token_hash,
        )

    async def get_user(self, user_id: str) -> UserRecord | None:
        rows = await self._fetch(
            "SELECT id, username, token_hash FROM users WHERE id = $1 AND status = 'active'",
            user_id,
        )
        return UserRecord(rows[0][0], rows[0][1], rows[0][2]) if rows else None

    # groups ----------------------------------------------------------------------------
    async def create_group(self, group: GroupRecord, first_member: str | None) -> None:
        keys = [] if first_member is None else ["m:" + group.id, "g:" + first_member]
        await self._logged(
            "create_group",
            "WITH g AS (INSERT INTO groups (id, name) VALUES ($2, $3)),"
            " ch AS (INSERT INTO members (group_id, user_id, role, joined)"
            "  SELECT $2, $4, 'owner', 1 WHERE $4::text IS NOT NULL RETURNING 1)",
            keys,
            group.id,
            group.name,
            first_member,
        )

    async def get_group(self, group_id: str) -> GroupRecord | None:
        rows = await self._fetch("SELECT id, name FROM groups WHERE id = $1", group_id)
        return GroupRecord(rows[0][0], rows[0][1]) if rows else None

    @staticmethod
    async def _store_events(
        conn: asyncpg.Connection,
        events: GroupEvents | None,
        write: GroupWrite,
        stored: list[tuple[Event, tuple[str, ...]]],
    ) -> None:
        """A group change's events, in the change's transaction (each takes the clock row's
        lock last, after the group row's: the order every group write takes them in)."""
        if events is None:
            return
        stored.clear()  # a retried transaction starts again
        for draft in events.drafts(write):
            row = await conn.fetchrow(
                EVENT_SQL,
                draft.id,
                draft.type,
                encode_fields(draft.fields),
                event_subject(draft),
                list(dict.fromkeys(draft.streams)),
            )
            event = Event(draft.id, draft.type, dict(draft.fields), int(row["ts"]), row["seq"])
            stored.append((event, draft.streams))

    async def join_group(
        self,
        group_id: str,
        user_id: str,
        *,
        by: str | None,
        cap: int | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        stored: list[tuple[Event, tuple[str, ...]]] = []

        async def run() -> Outcome:
            # Under the group row's lock, a summary of the roster (not the roster: an add
            # to a large group reads one row), then the insert and its cache log.
            async with self._ready().acquire() as conn, conn.transaction():
                found = await conn.fetchval(
                    "SELECT 1 FROM groups WHERE id = $1 FOR UPDATE", group_id
                )
                if found is None:
                    return "no_group"
                row = await conn.fetchrow(
                    "SELECT count(*) AS n, coalesce(max(joined), 0) AS top,"
                    " coalesce(bool_or(user_id = $2), false) AS present,"
                    " (SELECT role FROM members WHERE group_id = $1 AND user_id = $3) AS adder"
                    " FROM members WHERE group_id = $1",
                    group_id,
                    user_id,
                    by,
                )
                outcome = decide_join(
                    by is None, row["adder"], bool(row["present"]), int(row["n"]), cap
                )
                if outcome == "done":
                    await conn.execute(
                        "INSERT INTO members (group_id, user_id, role, joined)"
                        " VALUES ($1, $2, 'member', $3)",
                        group_id,
                        user_id,
                        int(row["top"]) + 1,
                    )
                    await self._log_keys(conn, ["m:" + group_id, "g:" + user_id])
                await self._store_events(conn, events, GroupWrite(outcome), stored)
                return outcome

        try:
            result: Outcome = await self._bounded(run())
        except FAILURES as exc:
            log.error("postgres write failed: %s", exc)
            raise Unavailable("storage unavailable") from exc
        if "add_member" in self.exit_after_commit:
            os._exit(EXIT_AFTER_COMMIT)  # a fault test: the process dies right after commit
        if events is not None:
            events.stored += stored
        return result

    async def leave_group(
        self, group_id: str, user_id: str, *, by: str | None, events: GroupEvents | None = None
    ) -> GroupWrite:
        stored: list[tuple[Event, tuple[str, ...]]] = []

        async def work(conn: asyncpg.Connection, roster: Roster) -> GroupWrite:
            write = decide_remove(roster, user_id, by)
            if write.outcome == "done":
                await conn.execute(
                    "DELETE FROM members WHERE group_id = $1 AND user_id = $2", group_id, user_id
                )
                if write.new_owner is not None:
                    await conn.execute(
                        "UPDATE members SET role = 'owner' WHERE group_id = $1 AND user_id = $2",
                        group_id,
                        write.new_owner,
                    )
                await self._log_keys(conn, ["m:" + group_id, "g:" + user_id])
            await self._store_events(conn, events, write, stored)
            return write

        result = await self._locked_group("remove_member", group_id, work)
        if events is not None:
            events.stored += stored
        return result or GroupWrite("no_group")

    async def set_role(
        self,
        group_id: str,
        user_id: str,
        role: Role,
        *,
        by: str | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        stored: list[tuple[Event, tuple[str, ...]]] = []

        async def work(conn: asyncpg.Connection, roster: Roster) -> Outcome:
            outcome = decide_role(roster, user_id, role, by)
            if outcome == "done":
                await conn.execute(
                    "UPDATE members SET role = $3 WHERE group_id = $1 AND user_id = $2",
                    group_id,
                    user_id,
                    role,
                )
            await self._store_events(conn, events, GroupWrite(outcome), stored)
            return outcome

        result = await self._locked_group("set_role", group_id, work)
        if events is not None:
            events.stored += stored
        return result or "no_group"

    async def rename_group(
        self, group_id: str, name: str, *, by: str | None, events: GroupEvents | None = None
    ) -> Outcome:
        stored: list[tuple[Event, tuple[str, ...]]] = []

        async def work(conn: asyncpg.Connection, roster: Roster) -> Outcome:
            if not may_rename(roster, by):
                return "denied"
            await conn.execute("UPDATE groups SET name = $2 WHERE id = $1", group_id, name)
            await self._store_events(conn, events, GroupWrite("done"), stored)
            return "done"

        result = await self._locked_group("rename_group", group_id, work)
        if events is not None:
            events.stored += stored
        return result or "no_group"

    async def group_roster(self, group_id: str) -> list[Member]:
        rows = await self._fetch(
            "SELECT user_id, role, joined FROM members WHERE group_id = $1", group_id
        )
        return in_order({r[0]: Member(r[0], r[1], int(r[2])) for r in rows})

    async def group_members(self, group_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT user_id FROM members WHERE group_id = $1 ORDER BY user_id", group_id
        )
        return [r[0] for r in rows]

    async def user_groups(self, user_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT group_id FROM members WHERE user_id = $1 ORDER BY group_id", user_id
        )
        return [r[0] for r in rows]

    # blocks ----------------------------------------------------------------------------
    async def add_block(self, blocker_id: str, blocked_id: str) -> bool:
        return await self._logged(
            "add_block",
            "WITH ch AS (INSERT INTO blocks (blocker_id, blocked_id) VALUES ($2, $3)"
            " ON CONFLICT DO NOTHING RETURNING 1)",
            ["b:" + blocker_id],
            blocker_id,
            blocked_id,
        )

    async def remove_block(self, blocker_id: str, blocked_id: str) -> bool:
        return await self._logged(
            "remove_block",
            "WITH ch AS (DELETE FROM blocks WHERE blocker_id = $2 AND blocked_id = $3 RETURNING 1)",
            ["b:" + blocker_id],
            blocker_id,
            blocked_id,
        )

    async def blocked_by(self, blocker_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT blocked_id FROM blocks WHERE blocker_id = $1 ORDER BY blocked_id", blocker_id
        )
        return [r[0] for r in rows]

    # messages: group commit ------------------------------------------------------------
    async def append_message(self, draft: MessageDraft) -> tuple[Message, bool]:
        """Queue the send for the writer; answer within ``timeout``, queueing included.

        A send still queued at its deadline is dropped (not stored); one whose batch is
        being written when time runs out may or may not be stored (a retry with the same
        Idempotency-Key finds it if it was). Either way it answers Unavailable.
        """
        if self._writer is None or self._writer.done():
            raise Unavailable("storage is not open")
        with self._deadline() as deadline:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[tuple[Message, bool]] = loop.create_future()
            job = _Append(draft, future)
            self._queue.append(job)
            self._wake.set()
            try:
                await asyncio.wait({future}, timeout=max(deadline - loop.time(), 0.0))
            finally:
                if not future.done():  # out of time, or the caller went away
                    self._give_up(job)
        if future.cancelled():
            log.warning("postgres send gave up after %ss", self.timeout)
            raise Unavailable("storage unavailable")
        result = future.result()
        if "send" in self.exit_after_commit:
            os._exit(EXIT_AFTER_COMMIT)  # a fault test: the process dies right after commit
        return result

    def _give_up(self, job: _Append) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(job)  # not taken by a batch yet: it is never written
        job.future.cancel()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                self._inflight = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                lead = await self._write_batch(self._inflight)
                self._inflight = []
                if lead > self.max_lead_ms:
                    # Backpressure: more than one batch per ms fleet-wide pushed the clock
                    # ahead of the database's wall clock; let the wall clock catch up.
                    await asyncio.sleep(min(lead - self.max_lead_ms, 1000) / 1000)

    async def _write_batch(self, batch: list[_Append]) -> int:
        """Write one batch; settle every future; return how far the clock leads (ms)."""
        try:
            columns = self._columns(batch, self._known_peers)
            self._pending_peers = set(zip(columns[7], columns[8], strict=True))  # type: ignore[arg-type]
            rows = await self._fetch(APPEND_SQL, *columns)
        except Unavailable as exc:
            if len(batch) > 1 and isinstance(exc.__cause__, ROW_ERRORS):
                # Possibly one bad row: write them one by one so it fails alone.
                lead = 0
                for job in batch:
                    if not job.future.done():  # its caller may have given up meanwhile
                        lead = await self._write_batch([job])
                return lead
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return 0
        self.batches += 1
        if len(self._known_peers) + len(self._pending_peers) > KNOWN_PEERS_MAX:
            self._known_peers.clear()
        self._known_peers |= self._pending_peers
        ts, now_ms = int(rows[0]["clock"]), int(rows[0]["now_ms"])
        stored = {row["id"]: int(row["seq"]) for row in rows if row["id"] is not None}
        for job in batch:
            if job.future.done():
                continue
            d = job.draft
            seq = stored.get(d.id)
            if seq is not None:
                message = Message(
                    d.id, d.type, d.sender_id, d.recipient_id, d.body, ts, seq,
                    attachments=d.attachments,
                )  # fmt: skip
                job.future.set_result((message, True))
            else:
                await self._replay(job)
        return ts - now_ms

    @staticmethod
    def _columns(
        batch: Sequence[_Append], known: AbstractSet[tuple[str, str]] = frozenset()
    ) -> list[list[str | None]]:
        """APPEND_SQL's arguments: the drafts' columns, then the ``peers`` rows of their
        private messages (both directions) other than those ``known`` to be stored."""
        drafts = [job.draft for job in batch]
        pairs = sorted(
            {
                pair
                for d in drafts
                if d.type == "private"
                for pair in ((d.sender_id, d.recipient_id), (d.recipient_id, d.sender_id))
            }
            - known
        )
        return [
            [d.id for d in drafts],
            [d.type for d in drafts],
            [d.sender_id for d in drafts],
            [d.recipient_id for d in drafts],
            [d.body for d in drafts],
            [d.send_key for d in drafts],
            [join_ids(d.attachments) for d in drafts],
            [u for u, _ in pairs],
            [p for _, p in pairs],
        ]

    async def _replay(self, job: _Append) -> None:
        """An idempotency key that was already used: answer with the first message."""
        d = job.draft
        try:
            earlier = await self.find_send(d.sender_id, d.send_key or "")
        except Unavailable as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if job.future.done():  # its caller gave up meanwhile
            return
        if earlier is None:
            job.future.set_exception(Unavailable("storage write failed"))
        else:
            job.future.set_result((earlier, False))

    async def find_send(self, sender_id: str, send_key: str) -> Message | None:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = $1 AND send_key = $2",
            sender_id,
            send_key,
        )
        return message_of(rows[0]) if rows else None

    # messages: reads -------------------------------------------------------------------
    async def read_messages(
        self,
        recipients: Sequence[str],
        sent_by: str | None,
        after: int | None,
        limit: int,
        event_streams: Sequence[str] | None = None,
    ) -> Page:
        with self._deadline():  # a page and its timestamp's rest: one timeout for both
            return await super().read_messages(recipients, sent_by, after, limit, event_streams)

    async def _page_rows(
        self, recipients: Sequence[str], sent_by: str | None, after: int, limit: int
    ) -> tuple[list[Message], int]:
        ids = list(recipients)
        if sent_by is not None:
            rows = await self._fetch(PAGE_WITH_SENT_SQL, ids, after, limit, sent_by)
        else:
            rows = await self._fetch(PAGE_SQL, ids, after, limit)
        frontier = int(rows[0]["frontier"])
        return [message_of(r) for r in rows if r["id"] is not None], frontier

    async def _rows_at(
        self, recipients: Sequence[str], sent_by: str | None, ts: int
    ) -> list[Message]:
        rows = await self._fetch(ROWS_AT_SQL, list(recipients), ts, sent_by)
        return [message_of(r) for r in rows]

    # change events -----------------------------------------------------------------------
    async def append_event(self, draft: EventDraft) -> Event:
        streams = list(dict.fromkeys(draft.streams))
        fields = encode_fields(draft.fields)
        with self._deadline():
            rows = await self._fetch(
                EVENT_SQL, draft.id, draft.type, fields, event_subject(draft), streams
            )
        return Event(draft.id, draft.type, dict(draft.fields), int(rows[0]["ts"]), rows[0]["seq"])

    async def get_message(self, message_id: str) -> Message | None:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id
        )
        return message_of(rows[0]) if rows else None

    async def edit_message(
        self, message_id: str, sender_id: str, body: str | None, events: Sequence[EventDraft]
    ) -> tuple[Message, list[Event]] | None:
        """One transaction: lock the message row, check it, take the next position from
        the clock row (its lock, as a send does), change the message, store the event."""

        async def run() -> tuple[Message, list[Event]] | None:
            async with self._ready().acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 FOR UPDATE",
                    message_id,
                )
                if row is None:
                    return None
                current = message_of(row)
                if current.sender_id != sender_id or current.deleted:
                    return None
                ts = int(
                    await conn.fetchval(
                        f"UPDATE clock SET ts = GREATEST(clock.ts + 1, {NOW_MS}) WHERE id"
                        " RETURNING ts"
                    )
                )
                if body is None:
                    await conn.execute(
                        "UPDATE messages SET body = '', deleted = true, attachments = NULL"
                        " WHERE id = $1",
                        message_id,
                    )
                    await conn.execute("DELETE FROM media_refs WHERE message_id = $1", message_id)
                    edits = await conn.fetch(
                        "SELECT seq, fields FROM events"
                        " WHERE subject = $1 AND type = 'message_edited'",
                        message_id,
                    )
                    for edit in edits:
                        clean = encode_fields(scrubbed(decode_fields(edit["fields"])))
                        await conn.execute(
                            "UPDATE events SET fields = $1 WHERE seq = $2", clean, edit["seq"]
                        )
                    changed = msgspec.structs.replace(
                        current, body="", deleted=True, attachments=()
                    )
                else:
                    await conn.execute(
                        "UPDATE messages SET body = $1, edited_at = $2 WHERE id = $3",
                        body,
                        ts,
                        message_id,
                    )
                    changed = msgspec.structs.replace(current, body=body, edited_at=ts)
                stored = []
                for event in events:
                    fields = edited_fields(event, body, ts)
                    seq = await conn.fetchval(
                        "WITH e AS (INSERT INTO events (id, type, fields, ts, subject)"
                        "  VALUES ($1, $2, $3, $4, $5) RETURNING seq, ts),"
                        " s AS (INSERT INTO event_streams (stream, ts, seq)"
                        "  SELECT u, e.ts, e.seq FROM e CROSS JOIN unnest($6::text[]) AS u)"
                        " SELECT seq FROM e",
                        event.id,
                        event.type,
                        encode_fields(fields),
                        ts,
                        event_subject(event),
                        list(dict.fromkeys(event.streams)),
                    )
                    stored.append(Event(event.id, event.type, fields, ts, int(seq)))
                return changed, stored

        try:
            result: tuple[Message, list[Event]] | None = await self._bounded(run())
        except FAILURES as exc:
            log.error("postgres write failed: %s", exc)
            raise Unavailable("storage unavailable") from exc
        return result

    async def _event_rows(
        self, streams: Sequence[str], after: int, upto: int, limit: int
    ) -> list[Event]:
        rows = await self._fetch(EVENT_ROWS_SQL, list(streams), after, upto, limit)
        return [_event(r) for r in rows]

    async def _event_rows_at(self, streams: Sequence[str], ts: int) -> list[Event]:
        rows = await self._fetch(EVENT_ROWS_AT_SQL, list(streams), ts)
        return [_event(r) for r in rows]

    # bulk ------------------------------------------------------------------------------
    async def bulk_load(self, data: BulkData) -> None:
        pool = self._ready()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table(
                    "users",
                    records=[(u.id, u.username, u.token_hash) for u in data.users],
                    columns=["id", "username", "token_hash"],
                )
                await conn.copy_records_to_table(
                    "groups", records=[(g.id, g.name) for g in data.groups], columns=["id", "name"]
                )
                await conn.executemany(
                    "INSERT INTO members (group_id, user_id) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING",
                    data.members,
                )
                await conn.copy_records_to_table(
                    "messages",
                    records=[
                        (m.id, m.type, m.sender_id, m.recipient_id, m.body, m.ts)
                        for m in data.messages
                    ],
                    columns=["id", "type", "sender_id", "recipient_id", "body", "ts"],
                )
                pairs = {
                    (m.sender_id, m.recipient_id) for m in data.messages if m.type == "private"
                }
                await conn.executemany(
                    "INSERT INTO peers (user_id, peer_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    sorted(pairs | {(b, a) for a, b in pairs}),
                )
                if data.messages:
                    # The clock never goes back: later writes land after the loaded rows.
                    top = max(m.ts for m in data.messages)
                    await conn.execute("UPDATE clock SET ts = GREATEST(ts, $1) WHERE id", top)
        except FAILURES as exc:
            log.error("postgres bulk load failed: %s", exc)
            raise Unavailable("storage unavailable") from exc
