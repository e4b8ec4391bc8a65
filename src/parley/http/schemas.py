"""Wire formats: request and response bodies, decoded and encoded by msgspec.

Unknown request fields are ignored. Field aliases from the original API are accepted:
``userName`` for ``username``; ``recipientId`` for ``receiverId`` (private) and for
``groupId`` (group).

:func:`decode` turns a request body into its struct, or into a 400 that names the problem
in API terms (``missing_field``, ``invalid_field`` with the JSON type expected,
``invalid_json``, ``invalid_text``, ``too_deep``). The happy path is one msgspec decode
plus two byte counts; the explanations are worked out only when decoding failed.
"""

from __future__ import annotations

import json
import re
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec

from parley.domain.models import (
    Event,
    GroupRecord,
    MediaRecord,
    Message,
    Page,
    TokenRecord,
    UserRecord,
)
from parley.errors import Code, InvalidInput
from parley.services.conversations import Summary
from parley.storage.base import HistoryPage

MAX_DEPTH = 32  # nesting levels of arrays and objects a request body may have


class Body(msgspec.Struct, omit_defaults=True):
    pass


B = TypeVar("B", bound=msgspec.Struct)


# requests ------------------------------------------------------------------------------
class CreateUserIn(Body):
    username: str | None = None
    userName: str | None = None


class BlockIn(Body):
    blockedUserId: str


class CreateGroupIn(Body):
    groupName: str


class MemberIn(Body):
    userId: str


class RenameIn(Body):
    groupName: str


class SendIn(Body):
    senderId: str
    message: str
    receiverId: str | None = None
    groupId: str | None = None
    recipientId: str | None = None
    clientMessageId: str | None = None
    attachments: list[str] | None = None  # media ids from POST /v1/media (at most 10)


class ReadIn(Body):
    conversationId: str
    timestamp: str | int | float  # unix ms: a decimal string (as on the wire) or a number


# responses -----------------------------------------------------------------------------
class UserOut(Body):
    userId: str
    username: str
    token: str | None = None

    @classmethod
    def of(cls, user: UserRecord, token: str | None = None) -> UserOut:
        return cls(user.id, user.username, token)


class GroupOut(Body):
    groupId: str
    groupName: str

    @classmethod
    def of(cls, group: GroupRecord) -> GroupOut:
        return cls(group.id, group.name)


class GroupDetailsOut(Body):
    groupId: str
    groupName: str
    members: list[str]
    roles: dict[str, Literal["owner", "admin", "member"]]


class UserGroupsOut(Body):
    userId: str
    groups: list[GroupOut]


class BlockedOut(Body):
    userId: str
    blockedUserIds: list[str]


class BlockOut(Body):
    userId: str
    blockedUserId: str
    blocked: bool


class MembershipOut(Body):
    """The answer to a group op: ``member`` for add/remove, ``role`` for promote/demote,
    ``groupName`` (and no ``userId``) for rename."""

    groupId: str
    userId: str | None = None
    member: bool | None = None
    role: Literal["admin", "member"] | None = None
    groupName: str | None = None


class EditIn(Body):
    """``op=edit``: the new text. ``senderId`` is optional (open mode: when given, it must
    be the message's sender; token mode: it must be the caller)."""

    message: str | None = None
    senderId: str | None = None


class TypingIn(Body):
    conversationId: str


class TypingOut(Body):
    conversationId: str
    expiresAt: str


class MessageOut(Body):
    """A message; one whose sender deleted their account keeps its id and timestamp, has
    ``deleted: true`` and no ``message``."""

    messageId: str
    type: Literal["private", "group"]
    senderId: str
    recipientId: str
    timestamp: str
    message: str | None = None
    deleted: bool = False
    editedAt: str | None = None  # set once the sender edited it (unix ms)
    attachments: list[str] | None = None  # media ids; only when there are some

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        if not m.body or m.deleted:  # erased (an empty message cannot be sent)
            return cls(m.id, m.type, m.sender_id, m.recipient_id, str(m.ts), None, True)
        edited = str(m.edited_at) if m.edited_at else None
        files = list(m.attachments) if m.attachments else None
        return cls(
            m.id, m.type, m.sender_id, m.recipient_id, str(m.ts), m.body, False, edited, files
        )


def event_out(e: Event) -> dict[str, str]:
    """An event on the wire: ``eventId``, ``type``, ``timestamp`` and the type's fields."""
    return {"eventId": e.id, "type": e.type, "timestamp": str(e.ts), **e.fields}


class MediaOut(Body):
    """An uploaded file: download it from GET /v1/media/{mediaId}; attach it to a send."""

    mediaId: str
    contentType: str
    size: int
    sha256: str

    @classmethod
    def of(cls, record: MediaRecord) -> MediaOut:
        return cls(record.id, record.content_type, record.size, record.sha256)


class MessagesOut(Body):
    messages: list[MessageOut]
    nextTimestamp: str
    hasMore: bool
    events: list[dict[str, str]] | None = None  # with include=events only

    @classmethod
    def of(cls, page: Page, include_events: bool = False) -> MessagesOut:
        messages = [MessageOut.of(m) for m in page.messages]
        if not include_events:
            return cls(messages, str(page.next_ts), page.has_more)
        events = [event_out(e) for e in page.events]
        return cls(messages, str(page.next_ts), page.has_more, events)


class HistoryOut(Body):
    """One page of a conversation, ascending; ``nextBefore`` (the page's oldest timestamp)
    asks for the page before it."""

    messages: list[MessageOut]
    hasMore: bool
    nextBefore: str | None

    @classmethod
    def of(cls, page: HistoryPage) -> HistoryOut:
        before = None if page.next_before is None else str(page.next_before)
        return cls([MessageOut.of(m) for m in page.messages], page.has_more, before)


class ReadOut(Body):
    conversationId: str
    readUpTo: str


class ConversationOut(Body):
    """``unreadCount`` counts messages from others after ``readUpTo``, at most 1000;
    ``unreadCapped`` says there are more. ``peerReadUpTo``: private conversations only."""

    conversationId: str
    type: Literal["private", "group"]
    name: str
    lastMessage: MessageOut | None
    unreadCount: int
    unreadCapped: bool
    readUpTo: str
    peerReadUpTo: str | None = None

    @classmethod
    def of(cls, c: Summary) -> ConversationOut:
        last = MessageOut.of(c.last) if c.last is not None else None
        peer = None if c.peer_read_up_to is None else str(c.peer_read_up_to)
        return cls(
            c.conv.other, c.conv.type, c.name, last, c.unread, c.capped, str(c.read_up_to), peer
        )


class ConversationsOut(Body):
    """``nextTimestamp``: a cursor for ``GET /v1/messages/:userId`` — polling from it
    delivers every message newer than what the conversations' histories hold."""

    conversations: list[ConversationOut]
    hasMore: bool
    nextTimestamp: str


class TicketOut(Body):
    ticket: str
    expiresIn: int


class HealthOut(Body):
    status: str
    checks: dict[str, str] = {}


class ErrorDetail(Body):
    code: Code  # stable: every value is listed in the document (parley.errors.Code)
    message: str


class ErrorOut(Body):
    error: ErrorDetail


# decoding ------------------------------------------------------------------------------
_SPECIAL = re.compile(rb'["\\\[\]{}]')
QUOTE, BACKSLASH = ord('"'), ord("\\")
OPENING, CLOSING = b"[{", b"]}"
_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "true or false"),  # before int: a bool is an int in Python
    (str, "a string"),
    (int, "a whole number"),
    (float, "a number"),
    (list, "an array"),
    (dict, "an object"),
)


def decode(raw: bytes, kind: type[B]) -> B:
    """The body as ``kind``, or :class:`InvalidInput` saying what is wrong with it."""
    if too_deep(raw):
        raise InvalidInput(f"body is nested more than {MAX_DEPTH} levels deep", Code.TOO_DEEP)
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError:
        raise _mismatch(raw, kind) from None
    except msgspec.DecodeError:
        raise _malformed(raw) from None


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (brackets inside strings
    do not count). Bodies with few brackets in all are let through after two counts; the
    others get one pass over their quotes, backslashes and brackets (linear, whatever the
    body, well-formed or not)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped_at = -1  # the position a backslash in a string makes literal
    for match in _SPECIAL.finditer(raw):
        at = match.start()
        char = raw[at]
        if in_string:
            if at == escaped_at:
                continue
            if char == BACKSLASH:
                escaped_at = at + 1
            elif char == QUOTE:
                in_string = False
        elif char == QUOTE:
            in_string = True
        elif char in OPENING:
            depth += 1
            if depth > limit:
                return True
        elif char in CLOSING:
            depth -= 1
    return False


def _mismatch(raw: bytes, kind: type[msgspec.Struct]) -> InvalidInput:
    """Valid JSON of the wrong shape: the first field that is missing or mistyped."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return _malformed(raw)
    if not isinstance(value, dict):
        return InvalidInput("body must be a JSON object", Code.INVALID_JSON)
    for field in msgspec.structs.fields(kind):
        name = field.encode_name
        given = value.get(name)
        if given is None:  # absent or null
            if field.required:
                return InvalidInput(f"{name} is required", Code.MISSING_FIELD)
            continue
        wanted = _wanted(field.type)
        if not _fits(given, wanted):
            words = " or ".join(_words(t) for t in wanted)
            return InvalidInput(f"{name} must be {words}", Code.INVALID_FIELD)
    return InvalidInput("body does not have the expected fields", Code.INVALID_FIELD)


def _wanted(annotation: Any) -> tuple[type, ...]:
    """The Python types a field accepts, null left out (``str | None`` -> ``(str,)``)."""
    if get_origin(annotation) in (Union, types.UnionType):
        options = get_args(annotation)
    else:
        options = (annotation,)
    return tuple(get_origin(option) or option for option in options if option is not type(None))


def _fits(value: Any, wanted: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true/false: only where a bool is wanted
        return bool in wanted
    if isinstance(value, int) and float in wanted:
        return True
    return isinstance(value, wanted)


def _words(kind: type) -> str:
    for python_type, words in _JSON_TYPES:
        if issubclass(kind, python_type):
            return words
    return "a valid value"


def _malformed(raw: bytes) -> InvalidInput:
    """Not JSON msgspec accepts: empty, not UTF-8, lone surrogates, or just not JSON."""
    if not raw.strip():
        return InvalidInput("body is empty: expected a JSON object", Code.INVALID_JSON)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidInput("body is not valid UTF-8", Code.INVALID_TEXT)
    try:
        value = json.loads(text)  # lenient: it keeps lone surrogates (nesting is bounded)
    except ValueError:
        return InvalidInput("body is not valid JSON", Code.INVALID_JSON)
    if _has_lone_surrogate(value):
        return InvalidInput(
            "text must not contain a lone UTF-16 surrogate (such as \\ud800)", Code.INVALID_TEXT
        )
    return InvalidInput("body is not valid JSON", Code.INVALID_JSON)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


# devices, passwords, deletion (SPEC §7) --------------------------------------------------
class TokenIn(Body):
    deviceName: str | None = None


class PasswordIn(Body):
    password: str
    currentPassword: str | None = None


class SignInIn(Body):
    userId: str
    password: str
    deviceName: str | None = None


class DeleteUserIn(Body):
    password: str | None = None


class NewTokenOut(Body):
    """A token for a device; ``token`` is the secret, shown this once."""

    tokenId: str
    token: str
    deviceName: str
    createdAt: str
    userId: str

    @classmethod
    def of(cls, token: TokenRecord, secret: str) -> NewTokenOut:
        return cls(token.id, secret, token.device_name, str(token.created_at), token.user_id)


class TokenOut(msgspec.Struct):
    tokenId: str
    deviceName: str
    createdAt: str
    lastUsedAt: str
    current: bool

    @classmethod
    def of(cls, token: TokenRecord, current: str | None) -> TokenOut:
        return cls(
            token.id,
            token.device_name,
            str(token.created_at),
            str(token.last_used_at),
            token.id == current,
        )


class TokensOut(Body):
    userId: str
    tokens: list[TokenOut]


class RevokedOut(Body):
    userId: str
    tokenId: str
    revoked: bool


class PasswordOut(Body):
    userId: str
    passwordSet: bool


class DeletedOut(Body):
    userId: str
    deleted: bool


class ExportDeviceOut(msgspec.Struct):
    tokenId: str
    deviceName: str
    createdAt: str
    lastUsedAt: str


class ExportOut(Body):
    """The shape of ``GET /v1/users/{userId}/export`` (sent as a stream, page by page)."""

    userId: str
    username: str
    exportedAt: str
    devices: list[ExportDeviceOut]
    groups: list[GroupOut]
    blockedUserIds: list[str]
    messages: list[MessageOut]
