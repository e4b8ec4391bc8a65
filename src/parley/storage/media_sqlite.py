"""Media records in SQLite (tables in ``media_sql``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from parley.domain.models import MediaRecord, MediaRef, Message
from parley.storage.media_port import MediaPort, gone
from parley.storage.media_sql import (
    MEDIA_COLUMNS,
    REF_COLUMNS,
    media_row,
    parse_media,
    parse_ref,
    ref_row,
)
from parley.storage.sqlite_conversations import COLUMNS, message_of


class SqliteMedia(MediaPort):
    """Needs the adapter's ``_write`` (the writer thread) and ``_query`` (the reader)."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Any]
    _query: Callable[..., list[Any]]

    async def add_media(self, record: MediaRecord) -> None:
        await self._write(
            lambda c: c.execute(
                f"INSERT INTO media ({MEDIA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", media_row(record)
            )
        )

    async def get_media(self, media_id: str) -> MediaRecord | None:
        rows = self._query(f"SELECT {MEDIA_COLUMNS} FROM media WHERE id = ?", (media_id,))
        return parse_media(rows[0]) if rows else None

    async def add_media_refs(self, refs: Sequence[MediaRef]) -> None:
        rows = [ref_row(r) for r in refs]

        def op(c: sqlite3.Connection) -> None:
            for ref in refs:  # in the same transaction as the insert (the one writer)
                if (
                    c.execute("SELECT 1 FROM media WHERE id = ?", (ref.media_id,)).fetchone()
                    is None
                ):
                    raise gone(ref.media_id)
            c.executemany(
                f"INSERT OR IGNORE INTO media_refs ({REF_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows
            )

        await self._write(op)

    async def media_refs(self, media_id: str) -> list[MediaRef]:
        rows = self._query(f"SELECT {REF_COLUMNS} FROM media_refs WHERE media_id = ?", (media_id,))
        return [parse_ref(r) for r in rows]

    async def unreferenced_media(self, created_before: int, limit: int) -> list[MediaRecord]:
        rows = self._query(
            f"SELECT {MEDIA_COLUMNS} FROM media WHERE created_at < ? AND NOT EXISTS"
            " (SELECT 1 FROM media_refs WHERE media_id = media.id)"
            " ORDER BY created_at LIMIT ?",
            (created_before, limit),
        )
        return [parse_media(r) for r in rows]

    async def delete_media(self, media_id: str) -> bool:
        changed: int = await self._write(
            lambda c: (
                c.execute(
                    "DELETE FROM media WHERE id = ? AND NOT EXISTS"
                    " (SELECT 1 FROM media_refs WHERE media_id = media.id)",
                    (media_id,),
                ).rowcount
            )
        )
        return changed > 0

    async def media_with_sha(self, sha256: str) -> bool:
        return bool(self._query("SELECT 1 FROM media WHERE sha256 = ? LIMIT 1", (sha256,)))


class SqliteMediaFile(SqliteMedia):
    """The media tables of a SQLite file, without the rest of the adapter: what
    ``parley media gc`` opens while a server may be using the same file (the full adapter
    would move the file's high-water mark, which belongs to the server)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"no SQLite database at {self.path}")
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA busy_timeout=30000")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("not open")
        return self._conn

    async def _write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = op(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self._connection().execute(sql, args).fetchall()

    async def get_message(self, message_id: str) -> Message | None:
        rows = self._query(f"SELECT {COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return message_of(rows[0]) if rows else None
