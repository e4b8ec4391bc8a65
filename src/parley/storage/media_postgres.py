"""Media records in PostgreSQL (tables in ``media_sql``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from parley.domain.models import MediaRecord, MediaRef
from parley.errors import Unavailable
from parley.storage.media_port import MediaPort, gone
from parley.storage.media_sql import MEDIA_COLUMNS, REF_COLUMNS, media_row, parse_media, parse_ref

FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresMedia(MediaPort):
    """Needs the adapter's ``_fetch`` and ``_execute`` (bounded, failures as 503)."""

    _fetch: Callable[..., Awaitable[list[Any]]]
    _execute: Callable[..., Awaitable[str]]
    _ready: Callable[[], asyncpg.Pool]
    _bounded: Callable[[Awaitable[Any]], Awaitable[Any]]

    async def add_media(self, record: MediaRecord) -> None:
        await self._execute(
            f"INSERT INTO media ({MEDIA_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
            *media_row(record),
        )

    async def get_media(self, media_id: str) -> MediaRecord | None:
        rows = await self._fetch(f"SELECT {MEDIA_COLUMNS} FROM media WHERE id = $1", media_id)
        return parse_media(rows[0]) if rows else None

    async def add_media_refs(self, refs: Sequence[MediaRef]) -> None:
        if not refs:
            return
        columns = list(zip(*[(r.media_id, r.message_id, r.type, r.sender_id, r.recipient_id)
                             for r in refs], strict=True))  # fmt: skip
        # Only refs to records that exist; each record row is locked (FOR SHARE) until the
        # insert commits, so the collector's DELETE waits and then sees the reference.
        rows = await self._fetch(
            "WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
            " $5::text[]) AS r(media_id, message_id, type, sender_id, recipient_id)),"
            " m AS (SELECT id FROM media WHERE id = ANY($1::text[]) FOR SHARE),"
            f" ins AS (INSERT INTO media_refs ({REF_COLUMNS})"
            " SELECT r.* FROM r JOIN m ON m.id = r.media_id ON CONFLICT DO NOTHING)"
            " SELECT id FROM m",
            *[list(c) for c in columns],
        )
        found = {row["id"] for row in rows}
        for ref in refs:
            if ref.media_id not in found:
                raise gone(ref.media_id)

    async def media_refs(self, media_id: str) -> list[MediaRef]:
        rows = await self._fetch(
            f"SELECT {REF_COLUMNS} FROM media_refs WHERE media_id = $1", media_id
        )
        return [parse_ref(r) for r in rows]

    async def unreferenced_media(self, created_before: int, limit: int) -> list[MediaRecord]:
        rows = await self._fetch(
            f"SELECT {MEDIA_COLUMNS} FROM media WHERE created_at < $1 AND NOT EXISTS"
            " (SELECT 1 FROM media_refs WHERE media_id = media.id)"
            " ORDER BY created_at LIMIT $2",
            created_before,
            limit,
        )
        return [parse_media(r) for r in rows]

    async def delete_media(self, media_id: str) -> bool:
        """Lock the record row first, then look for references with a statement of its
        own: it sees every reference committed by a send that held the row (``FOR SHARE``
        in ``add_media_refs``), which one DELETE's snapshot would not."""

        async def run() -> bool:
            async with self._ready().acquire() as conn, conn.transaction():
                if await conn.fetchval("SELECT 1 FROM media WHERE id = $1 FOR UPDATE", media_id):
                    carried = await conn.fetchval(
                        "SELECT 1 FROM media_refs WHERE media_id = $1 LIMIT 1", media_id
                    )
                    if carried is None:
                        await conn.execute("DELETE FROM media WHERE id = $1", media_id)
                        return True
            return False

        try:
            deleted: bool = await self._bounded(run())
        except FAILURES as exc:
            raise Unavailable("storage unavailable") from exc
        return deleted

    async def media_with_sha(self, sha256: str) -> bool:
        rows = await self._fetch("SELECT 1 FROM media WHERE sha256 = $1 LIMIT 1", sha256)
        return bool(rows)
