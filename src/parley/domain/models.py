"""The records Parley stores and the wire shape of a message.

Timestamps are integer unix milliseconds inside Parley and decimal strings on the wire.
Within one millisecond, messages are ordered by ``seq``, a storage-assigned tiebreak.
"""

from __future__ import annotations

import secrets
from typing import Literal

import msgspec

MessageType = Literal["private", "group"]


def new_id(prefix: str) -> str:
    """An opaque, URL-safe, unguessable id: a type prefix and 128 random bits."""
    return prefix + secrets.token_urlsafe(16)


class UserRecord(msgspec.Struct, frozen=True, gc=False):
    id: str
    username: str
    token_hash: bytes | None = None


class TokenRecord(msgspec.Struct, frozen=True, gc=False):
    """One signed-in device: a bearer token, stored as the hash of its secret."""

    id: str
    user_id: str
    hash: bytes
    device_name: str
    created_at: int  # unix ms
    last_used_at: int  # unix ms; updated lazily (see services.accounts)


class GroupRecord(msgspec.Struct, frozen=True, gc=False):
    id: str
    name: str


class Message(msgspec.Struct, frozen=True, gc=False):
    id: str
    type: MessageType
    sender_id: str
    recipient_id: str
    body: str
    ts: int
    seq: int = 0
    edited_at: int = 0  # unix ms of the last edit (0: never edited)
    deleted: bool = False  # deleted by its sender: the body is erased from storage
    attachments: tuple[str, ...] = ()  # media ids (see services.media)


class Event(msgspec.Struct, frozen=True):
    """A change event (SPEC §7): stored once for each stream it is addressed to, on the
    same clock and under the same commit frontier as messages.

    ``fields`` are the type's wire fields, every value a string (timestamps as decimal
    unix milliseconds, as everywhere on the wire). Within one millisecond events are
    ordered by ``seq`` after that millisecond's messages.
    """

    id: str
    type: str
    fields: dict[str, str]
    ts: int
    seq: int = 0


class MediaRecord(msgspec.Struct, frozen=True, gc=False):
    """An uploaded file: who uploaded it and what it is. Its bytes live in the blob store
    under ``sha256`` (content-addressed: the same bytes are stored once)."""

    id: str
    uploader_id: str
    content_type: str
    size: int
    sha256: str  # lowercase hex
    created_at: int  # unix ms


class MediaRef(msgspec.Struct, frozen=True, gc=False):
    """A message carrying a media file: who can see it follows from these fields."""

    media_id: str
    message_id: str
    type: MessageType
    sender_id: str
    recipient_id: str


class Page(msgspec.Struct, frozen=True):
    """One answer to "what is new for me since T".

    ``next_ts`` is a safe cursor: every message that will ever be visible with a timestamp
    at or below it is either in this page or in an earlier one.
    """

    messages: list[Message]
    next_ts: int
    has_more: bool
    events: list[Event] = []  # only when events were asked for (``include=events``)
