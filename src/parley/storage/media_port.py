"""The part of the storage port that keeps media records (attachments).

A media record says who uploaded a file and what it is; its bytes live in a blob store
(``parley.media``) under their SHA-256. A *reference* ties a media id to a message that
carries it, with what decides who can see that message (type, sender, recipient). A
download reads the references, and then the message of the one that lets the caller see
it: a message deleted by its sender (or erased with its sender's account) grants nothing.

References are written before the message that carries them (``services.media``); a crash
in between leaves a reference to a message that never existed, which keeps the file
alive (the garbage collector skips it) but shows it to nobody (no message, no access).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from parley.domain.models import MediaRecord, MediaRef, Message
from parley.errors import Code, InvalidInput


def gone(media_id: str) -> InvalidInput:
    """The error for attaching a file whose record no longer exists."""
    return InvalidInput(f"attachment {media_id[:140]!r} no longer exists", Code.BAD_ATTACHMENT)


class MediaPort(ABC):
    @abstractmethod
    async def add_media(self, record: MediaRecord) -> None:
        """Store a new media record (ids are fresh: never an overwrite)."""

    @abstractmethod
    async def get_media(self, media_id: str) -> MediaRecord | None: ...

    @abstractmethod
    async def add_media_refs(self, refs: Sequence[MediaRef]) -> None:
        """Record that messages carry media files; repeating one changes nothing. Raises
        ``InvalidInput`` (``bad_attachment``) for a file whose record is gone (collected
        since the send checked it); SQL adapters then write none of them, DynamoDB the
        ones before it (which only keep those files from the collector)."""

    @abstractmethod
    async def media_refs(self, media_id: str) -> list[MediaRef]:
        """Every message that carries this media file."""

    async def media_and_refs(self, media_id: str) -> tuple[MediaRecord | None, list[MediaRef]]:
        """A record and the messages carrying it (what a download's authorization needs);
        adapters that keep both together read them at once."""
        record = await self.get_media(media_id)
        return record, (await self.media_refs(media_id) if record is not None else [])

    @abstractmethod
    async def get_message(self, message_id: str) -> Message | None:
        """A stored message by id (the storage adapter's; see ``Storage.get_message``)."""

    @abstractmethod
    async def unreferenced_media(self, created_before: int, limit: int) -> list[MediaRecord]:
        """Up to ``limit`` records created before ``created_before`` (unix ms) that no
        message carries: what the garbage collector removes."""

    @abstractmethod
    async def delete_media(self, media_id: str) -> bool:
        """Delete a record that no message carries; False if it is gone or carried."""

    @abstractmethod
    async def media_with_sha(self, sha256: str) -> bool:
        """Does any record still point at these bytes?"""
