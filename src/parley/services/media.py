"""Attachments: uploads, who may download them, and the garbage collector.

An upload streams into the blob store (``parley.media``) while it arrives and is hashed;
its record (id, uploader, type, size, SHA-256) then goes to the database through the
storage port. The same bytes uploaded twice are stored once (blobs are named by their
SHA-256), under two records.

Who may download a file (token mode): its uploader, and whoever can see a message that
carries it: both ends of a private message, the current members of a group (someone
removed from a group loses its files with its messages). Anyone else gets 404, the same
answer as for an id that does not exist. Open mode keeps the original API's rule: anyone
may act as anyone, so anyone may download, and any sender may attach any upload.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from parley.cache.base import Directory
from parley.domain.models import MediaRecord, MediaRef, MessageType, new_id
from parley.domain.validation import well_formed_id
from parley.errors import Code, InvalidInput, NotFound, PayloadTooLarge
from parley.media.blobs import BlobStore
from parley.services.access import Actor
from parley.storage.media_port import MediaPort

MAX_ATTACHMENTS = 10
DEFAULT_TYPE = "application/octet-stream"
GC_BATCH = 500
# type/subtype, then parameters; ASCII only, as an HTTP header can carry it
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(\"[\x20-\x21\x23-\x7e]*\"|[A-Za-z0-9!#$&^_.+-]+))*"
)


def check_content_type(raw: str | None) -> str:
    """The upload's media type as given (lowercased type/subtype), or the default."""
    if raw is None or not raw.strip():
        return DEFAULT_TYPE
    value = raw.strip()
    if len(value) > 255 or _MEDIA_TYPE.fullmatch(value) is None:
        raise InvalidInput(
            "Content-Type must be a media type like image/png", Code.BAD_CONTENT_TYPE
        )
    kind, _, rest = value.partition(";")
    return kind.strip().lower() + (";" + rest if rest else "")


@dataclass
class GcReport:
    records: int = 0  # media records removed
    blobs: int = 0  # blobs removed
    spools: int = 0  # spool files of interrupted uploads removed


class MediaService:
    def __init__(
        self,
        storage: MediaPort,
        blobs: BlobStore,
        directory: Directory | None,
        max_size: int,
    ) -> None:
        self.storage = storage
        self.blobs = blobs
        self.directory = directory
        self.max_size = max_size

    # upload ----------------------------------------------------------------------------
    async def upload(
        self,
        actor: Actor,
        content_type: str | None,
        declared: int | None,
        chunks: AsyncIterator[bytes],
    ) -> MediaRecord:
        """Store a file arriving in ``chunks``: 413 from ``declared`` (Content-Length)
        before reading anything, or as soon as more than the limit has arrived."""
        kind = check_content_type(content_type)
        if declared is not None and declared > self.max_size:
            raise PayloadTooLarge(f"files are limited to {self.max_size} bytes")
        if declared == 0:
            raise InvalidInput("the file is empty", Code.EMPTY_FILE)
        spool = await asyncio.to_thread(self.blobs.spool)
        try:
            async for chunk in chunks:
                if spool.size + len(chunk) > self.max_size:
                    raise PayloadTooLarge(f"files are limited to {self.max_size} bytes")
                if spool.add(chunk):
                    await asyncio.to_thread(spool.flush)
            if spool.size == 0:  # no Content-Length, and nothing came
                raise InvalidInput("the file is empty", Code.EMPTY_FILE)
            await self.blobs.keep(spool)
        except BaseException:
            await asyncio.to_thread(spool.discard)
            raise
        record = MediaRecord(
            new_id("f_"), actor or "", kind, spool.size, spool.sha256, int(time.time() * 1000)
        )
        await self.storage.add_media(record)
        return record

    # attaching -------------------------------------------------------------------------
    @staticmethod
    def check_count(media_ids: Sequence[str]) -> tuple[str, ...]:
        """The attachments of a send, without repeats; 400 over the limit or empty ids."""
        unique = tuple(dict.fromkeys(media_ids))
        if len(unique) > MAX_ATTACHMENTS:
            raise InvalidInput(
                f"a message carries at most {MAX_ATTACHMENTS} attachments", Code.BAD_ATTACHMENT
            )
        if any(not m for m in unique):
            raise InvalidInput("an attachment id is empty", Code.EMPTY_FIELD)
        return unique

    async def check_owned(self, actor: Actor, sender_id: str, media_ids: Sequence[str]) -> None:
        """400 unless each file exists and (token mode) was uploaded by the sender."""
        for media_id in media_ids:
            record = await self.storage.get_media(media_id) if well_formed_id(media_id) else None
            if record is None or (actor is not None and record.uploader_id != sender_id):
                raise InvalidInput(
                    f"attachment {media_id[:140]!r} is not a file you uploaded",
                    Code.BAD_ATTACHMENT,
                )

    async def attach(
        self,
        message_id: str,
        kind: MessageType,
        sender_id: str,
        recipient_id: str,
        media_ids: Sequence[str],
    ) -> None:
        """Record, before the message is stored, that it carries these files."""
        refs = [MediaRef(m, message_id, kind, sender_id, recipient_id) for m in media_ids]
        await self.storage.add_media_refs(refs)

    # download --------------------------------------------------------------------------
    async def find(self, actor: Actor, media_id: str) -> MediaRecord:
        """The record of a file the caller may download; 404 otherwise."""
        if not well_formed_id(media_id):
            raise NotFound("media not found", Code.MEDIA_NOT_FOUND)
        record, refs = await self.storage.media_and_refs(media_id)
        if record is None or not await self._may_see(actor, record, refs):
            raise NotFound("media not found", Code.MEDIA_NOT_FOUND)
        return record

    async def _may_see(self, actor: Actor, record: MediaRecord, refs: list[MediaRef]) -> bool:
        if actor is None or actor == record.uploader_id:
            return True
        for ref in refs:
            if ref.type == "private":
                sees = actor in (ref.sender_id, ref.recipient_id)
            elif self.directory is not None:
                sees = await self.directory.is_member(ref.recipient_id, actor)
            else:
                sees = False
            if sees and await self._still_carried(ref):
                return True
        return False

    async def _still_carried(self, ref: MediaRef) -> bool:
        """Whether the message still carries the file: one deleted by its sender, erased
        with its sender's account, or never stored (a crash between the reference and the
        message) grants nobody access."""
        message = await self.storage.get_message(ref.message_id)
        return message is not None and not message.deleted and bool(message.body)

    # garbage collection ----------------------------------------------------------------
    async def collect(self, grace_seconds: float, now: float | None = None) -> GcReport:
        """Remove records no message carries, created more than ``grace_seconds`` ago;
        then blobs no record points at, not written for as long; then spool files of
        uploads that never finished."""
        report = GcReport()
        cutoff = (time.time() if now is None else now) - grace_seconds
        while True:
            batch = await self.storage.unreferenced_media(int(cutoff * 1000), GC_BATCH)
            removed = 0
            for record in batch:
                if await self.storage.delete_media(record.id):
                    removed += 1
            report.records += removed
            if len(batch) < GC_BATCH or removed == 0:
                break
        async for blob in self.blobs.blobs():
            if blob.modified >= cutoff or await self.storage.media_with_sha(blob.sha256):
                continue
            if await self.blobs.delete(blob.sha256, cutoff):
                report.blobs += 1
        for path in await asyncio.to_thread(self.blobs.stale_spools, cutoff):
            await asyncio.to_thread(path.unlink, missing_ok=True)
            report.spools += 1
        return report
