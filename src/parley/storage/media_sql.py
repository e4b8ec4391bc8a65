"""Media records in SQL (SQLite and PostgreSQL share the shape).

``media`` holds one row per upload; ``media_refs`` one row per (file, message carrying
it), with the message's type, sender and recipient, which is all a download's
authorization needs. ``messages.attachments`` holds a message's media ids, comma-joined
(ids never contain commas), NULL when it has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parley.domain.models import MediaRecord, MediaRef, MessageType


def join_ids(ids: Sequence[str]) -> str | None:
    return ",".join(ids) if ids else None


def split_ids(value: str | None) -> tuple[str, ...]:
    return tuple(value.split(",")) if value else ()


SQLITE_MIGRATION = """
ALTER TABLE messages ADD COLUMN attachments TEXT;
CREATE TABLE media (
    id TEXT PRIMARY KEY,
    uploader_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX media_by_sha ON media (sha256);
CREATE INDEX media_by_age ON media (created_at);
CREATE TABLE media_refs (
    media_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    recipient_id TEXT NOT NULL,
    PRIMARY KEY (media_id, message_id)
) WITHOUT ROWID;
"""

POSTGRES_MIGRATION = """
ALTER TABLE messages ADD COLUMN attachments TEXT;
CREATE TABLE media (
    id TEXT PRIMARY KEY,
    uploader_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX media_by_sha ON media (sha256);
CREATE INDEX media_by_age ON media (created_at);
CREATE TABLE media_refs (
    media_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    recipient_id TEXT NOT NULL,
    PRIMARY KEY (media_id, message_id)
);
"""

MEDIA_COLUMNS = "id, uploader_id, content_type, size, sha256, created_at"
REF_COLUMNS = "media_id, message_id, type, sender_id, recipient_id"


def media_row(record: MediaRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.uploader_id,
        record.content_type,
        record.size,
        record.sha256,
        record.created_at,
    )


def parse_media(row: Sequence[Any]) -> MediaRecord:
    return MediaRecord(str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]), int(row[5]))


def ref_row(ref: MediaRef) -> tuple[str, str, str, str, str]:
    return (ref.media_id, ref.message_id, ref.type, ref.sender_id, ref.recipient_id)


def parse_ref(row: Sequence[Any]) -> MediaRef:
    kind: MessageType = "private" if row[2] == "private" else "group"
    return MediaRef(str(row[0]), str(row[1]), kind, str(row[3]), str(row[4]))
