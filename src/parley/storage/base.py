"""The storage port.

Every backend implements :class:`Storage`. The in-memory adapter is the reference; the
contract suite in ``tests/integration/test_storage_contract.py`` runs against every adapter.

Writes that can conflict are conditional and say whether they changed anything
(``add_member`` returns False when the user already was a member), so the rules hold
even when several processes write at once. Paging over messages is implemented once,
here, on top of two primitives each adapter provides (``_page_rows`` and ``_rows_at``).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

import msgspec

from parley.domain.models import (
    Event,
    GroupRecord,
    Message,
    MessageType,
    Page,
    TokenRecord,
    UserRecord,
)
from parley.domain.roles import GroupWrite, Member, Outcome, Role
from parley.storage.media_port import MediaPort

P = ParamSpec("P")
AccountState = Literal["active", "deleting", "deleted"]
R = TypeVar("R")


class MessageDraft(msgspec.Struct, frozen=True):
    """A message before storage gives it a timestamp and a sequence number."""

    id: str
    type: MessageType
    sender_id: str
    recipient_id: str
    body: str
    send_key: str | None = None  # the sender's idempotency key, if any
    attachments: tuple[str, ...] = ()  # media ids, stored with the message


class EventDraft(msgspec.Struct, frozen=True):
    """A change event before storage gives it a position (see ``Storage.append_event``).

    ``streams`` are the user ids and group ids it is delivered to: a user reads its own
    id's events and those of the groups it belongs to (``include=events``). One event
    addressed to several streams is one write at one position; a reader that reads more
    than one of its streams gets it once.
    """

    id: str
    type: str
    streams: tuple[str, ...]
    fields: dict[str, str]


_fields_encoder = msgspec.json.Encoder()
_fields_decoder = msgspec.json.Decoder(dict[str, str])


def encode_fields(fields: dict[str, str]) -> str:
    """An event's fields as stored (a JSON object)."""
    return _fields_encoder.encode(fields).decode()


def decode_fields(text: str | bytes) -> dict[str, str]:
    return _fields_decoder.decode(text)


def edited_fields(draft: EventDraft, body: str | None, ts: int) -> dict[str, str]:
    """The fields an edit's event is stored with: ``editedAt`` is its own position."""
    if body is None:
        return dict(draft.fields)
    return {**draft.fields, "editedAt": str(ts)}


def scrubbed(fields: dict[str, str]) -> dict[str, str]:
    """An edit event's fields once its message was deleted: the text is gone."""
    return {k: v for k, v in fields.items() if k != "message"}


def event_subject(draft: EventDraft) -> str | None:
    """The message an event is about (its ``messageId``), indexed so that deleting the
    message can erase its text from the message's earlier edit events too."""
    return draft.fields.get("messageId")


class GroupEvents:
    """The change events of one group write (``join_group``, ``leave_group``, ``set_role``,
    ``rename_group``): ``make`` drafts them from what the write did; storage stores them
    with the write, so that a committed change always has its events, and puts each stored
    event in ``stored`` with its streams (for the change cache and wake-ups)."""

    def __init__(self, make: Callable[[GroupWrite], list[EventDraft]]) -> None:
        self.make = make
        self.stored: list[tuple[Event, tuple[str, ...]]] = []

    def drafts(self, write: GroupWrite) -> list[EventDraft]:
        return self.make(write) if write.outcome == "done" else []


EMPTY_STREAM = "-"  # no id has this shape: a stream with no messages, for ``Storage.cursor``


class Conversation(msgspec.Struct, frozen=True):
    """One conversation as seen by ``user_id``: with a peer (private) or a group.

    A private conversation holds the messages between the two users in both directions
    (a user's conversation with itself: the messages it sent itself).
    """

    type: MessageType
    user_id: str
    other: str  # the peer's user id, or the group id


class HistoryPage(msgspec.Struct, frozen=True):
    """One page of a conversation's history: ascending, the newest page first."""

    messages: list[Message]
    has_more: bool
    next_before: int | None  # the page's oldest timestamp (None for an empty page)


class BulkData(msgspec.Struct):
    """Rows to load at once (benchmarks and imports), with messages' timestamps given."""

    users: list[UserRecord] = []
    groups: list[GroupRecord] = []
    members: list[tuple[str, str]] = []  # (group_id, user_id)
    messages: list[Message] = []


class Storage(MediaPort, ABC):
    """What Parley needs from a database. All methods may raise ``Unavailable``."""

    name = "storage"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._meta: dict[str, str] = {}

    # lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    async def close(self) -> None:
        """Release connections and threads."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``Unavailable`` when the backend cannot serve requests."""

    @abstractmethod
    async def last_position(self) -> int:
        """The largest message timestamp stored (0 when there is none)."""

    async def record_meta(self, key: str, value: str, *, replace: bool = False) -> str | None:
        """Record a fact about the data (``auth_mode``) and return what was recorded before.

        Stores ``value`` when nothing is recorded under ``key`` yet, or always with
        ``replace``; of two concurrent first records exactly one wins and the other gets its
        value back. This default keeps it in the process (memory storage); adapters store it
        with their data.
        """
        previous = self._meta.get(key)
        if previous is None or replace:
            self._meta[key] = value
        return previous

    async def bulk_load(self, data: BulkData) -> None:
        """Load many rows at once into an idle store; adapters may do it faster."""
        for user in data.users:
            await self.create_user(user)
        for group in data.groups:
            await self.create_group(group, None)
        for group_id, user_id in data.members:
            await self.add_member(group_id, user_id)
        for m in data.messages:
            draft = MessageDraft(m.id, m.type, m.sender_id, m.recipient_id, m.body)
            await self.append_message(draft)

    # users -----------------------------------------------------------------------------
    @abstractmethod
    async def create_user(self, user: UserRecord, token: TokenRecord | None = None) -> None:
        """Store a new user and, in the same write, its first token (the sign-up one)."""

    @abstractmethod
    async def get_user(self, user_id: str) -> UserRecord | None:
        """An active user; None for unknown, ``deleting`` and ``deleted`` ones."""

    # devices, passwords and account deletion (see services.accounts) -----------------
    @abstractmethod
    async def add_token(self, token: TokenRecord) -> None:
        """Store a signed-in device's token (its secret's hash, never the secret)."""

    @abstractmethod
    async def user_tokens(self, user_id: str) -> list[TokenRecord]:
        """Every live token of a user, oldest first."""

    @abstractmethod
    async def delete_token(self, user_id: str, token_id: str) -> bool:
        """Revoke one token; False if the user had no such token."""

    @abstractmethod
    async def touch_token(self, user_id: str, token_id: str, at: int) -> None:
        """Record that the token was used at ``at`` (unix ms); nothing if it is gone."""

    @abstractmethod
    async def get_password(self, user_id: str) -> str | None:
        """The stored password hash of an active user, if one was set."""

    @abstractmethod
    async def set_password(self, user_id: str, password_hash: str) -> bool:
        """Store a password hash; False if the user is unknown or being deleted."""

    @abstractmethod
    async def account_state(self, user_id: str) -> AccountState | None:
        """``active``, ``deleting`` (deletion started, not finished), ``deleted``, or None."""

    @abstractmethod
    async def begin_deletion(self, user_id: str) -> bool:
        """Mark an active or half-deleted user ``deleting`` (lookups treat it as gone from
        then on); False if the user is unknown or already deleted."""

    @abstractmethod
    async def erase_account(self, user_id: str) -> None:
        """For a ``deleting`` user, erase its username and password, remove its memberships
        and blocks (by it and of it), erase the text of every message it sent (the
        messages stay, with an empty body: tombstones) and, last, its tokens. Idempotent;
        nothing for a user in another state."""

    @abstractmethod
    async def finish_deletion(self, user_id: str) -> None:
        """``deleting`` -> ``deleted`` (after ``erase_account``)."""

    @abstractmethod
    async def deleting_users(self) -> list[str]:
        """Every user in state ``deleting``: deletions that started and did not finish (a
        crash, or one running now)."""

    # groups ----------------------------------------------------------------------------
    @abstractmethod
    async def create_group(self, group: GroupRecord, first_member: str | None) -> None: ...

    @abstractmethod
    async def get_group(self, group_id: str) -> GroupRecord | None: ...

    async def add_member(self, group_id: str, user_id: str) -> bool:
        """Add a membership with no role check nor cap; False if it already existed."""
        return await self.join_group(group_id, user_id, by=None, cap=None) == "done"

    async def remove_member(self, group_id: str, user_id: str) -> bool:
        """Remove a membership with no role check; False if there was none."""
        return (await self.leave_group(group_id, user_id, by=None)).outcome == "done"

    # Roles (``parley.domain.roles``): each of these reads the group's roster and writes
    # in one transaction, so the rules hold whatever else runs at the same time. The
    # creator (``create_group``'s first member) is the owner; later members join as
    # members, in order.
    @abstractmethod
    async def join_group(
        self,
        group_id: str,
        user_id: str,
        *,
        by: str | None,
        cap: int | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        """Add ``user_id`` if ``by`` may add members and the group has fewer than ``cap``.

        With ``events``, every one of these four writes stores the change's events with the
        change (the same transaction, or on DynamoDB the pending record; see
        ``finish_group_events``)."""

    @abstractmethod
    async def leave_group(
        self, group_id: str, user_id: str, *, by: str | None, events: GroupEvents | None = None
    ) -> GroupWrite:
        """Remove ``user_id`` (by itself, or by someone who may); an owner who leaves hands
        the group over to its successor in the same transaction."""

    @abstractmethod
    async def set_role(
        self,
        group_id: str,
        user_id: str,
        role: Role,
        *,
        by: str | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        """Make a member an admin or an admin a member (the owner only)."""

    @abstractmethod
    async def rename_group(
        self, group_id: str, name: str, *, by: str | None, events: GroupEvents | None = None
    ) -> Outcome:
        """Rename the group (the owner and admins)."""

    @abstractmethod
    async def group_roster(self, group_id: str) -> list[Member]:
        """The group's members with their roles, in the order they joined."""

    @abstractmethod
    async def group_members(self, group_id: str) -> list[str]: ...

    @abstractmethod
    async def user_groups(self, user_id: str) -> list[str]: ...

    # blocks ----------------------------------------------------------------------------
    @abstractmethod
    async def add_block(self, blocker_id: str, blocked_id: str) -> bool:
        """Record that blocker blocks blocked; False if it already did."""

    @abstractmethod
    async def remove_block(self, blocker_id: str, blocked_id: str) -> bool:
        """Lift a block; False if there was none."""

    @abstractmethod
    async def blocked_by(self, blocker_id: str) -> list[str]:
        """The users ``blocker_id`` blocks."""

    # messages --------------------------------------------------------------------------
    @abstractmethod
    async def append_message(self, draft: MessageDraft) -> tuple[Message, bool]:
        """Store a message durably and return it with its timestamp.

        With a ``send_key``, a second append with the same sender and key stores nothing and
        returns the first message with ``False``.
        """

    @abstractmethod
    async def find_send(self, sender_id: str, send_key: str) -> Message | None:
        """The message stored earlier under this sender's idempotency key, if any."""

    @abstractmethod
    async def _page_rows(
        self, recipients: Sequence[str], sent_by: str | None, after: int, limit: int
    ) -> tuple[list[Message], int]:
        """Messages with ``after < ts <= frontier`` in (ts, seq) order, at most ``limit``,
        and the frontier used, read consistently with those rows.

        A message belongs to the answer when its ``recipient_id`` is in ``recipients``, or,
        with ``sent_by``, when it is a private message sent by that user.
        """

    @abstractmethod
    async def _rows_at(
        self, recipients: Sequence[str], sent_by: str | None, ts: int
    ) -> list[Message]:
        """Every message of the answer set with exactly this timestamp, in seq order."""

    # change events (SPEC §7) ---------------------------------------------------------
    @abstractmethod
    async def append_event(self, draft: EventDraft) -> Event:
        """Store a change event durably, once per stream of ``draft.streams``, at a
        position taken from the same clock and under the same commit frontier as
        messages; return it with its timestamp. The only write of an event."""

    async def finish_group_events(self) -> list[tuple[Event, tuple[str, ...]]]:
        """Store the events of group changes that committed without them (a process died
        in between) and return them with their streams. Only DynamoDB can leave any: the
        others store a change and its events in one transaction."""
        return []

    @abstractmethod
    async def get_message(self, message_id: str) -> Message | None:
        """A stored message by id, in its current state (edited, deleted)."""

    @abstractmethod
    async def edit_message(
        self, message_id: str, sender_id: str, body: str | None, events: Sequence[EventDraft]
    ) -> tuple[Message, list[Event]] | None:
        """Edit (``body``) or delete (``None``) a message that ``sender_id`` sent and has
        not deleted, and store ``events`` at one new position (one per reader's view of
        the conversation), in one write where the backend allows. An edit sets the
        message's ``edited_at`` and the events' ``editedAt`` to that position; a delete
        erases the text from the message and from its earlier ``message_edited`` events.
        Id and timestamp are kept. None (and nothing written) when the message is
        missing, deleted or someone else's."""

    @abstractmethod
    async def _event_rows(
        self, streams: Sequence[str], after: int, upto: int, limit: int
    ) -> list[Event]:
        """Events of these streams with ``after < ts <= upto`` in (ts, seq) order, each
        once, at most ``limit``. ``upto`` is a frontier a message read just returned."""

    @abstractmethod
    async def _event_rows_at(self, streams: Sequence[str], ts: int) -> list[Event]:
        """Every event of these streams with exactly this timestamp, in seq order."""

    async def read_messages(
        self,
        recipients: Sequence[str],
        sent_by: str | None,
        after: int | None,
        limit: int,
        event_streams: Sequence[str] | None = None,
    ) -> Page:
        """A page of messages newer than ``after``. Pages never split one timestamp.

        With ``event_streams`` the page also holds the events of those streams, merged
        with the messages under the same frontier; ``limit`` counts both.
        """
        start = -1 if after is None else after
        rows, frontier = await self._page_rows(recipients, sent_by, start, limit + 1)
        if event_streams is not None:
            return await self._with_events(
                recipients, sent_by, event_streams, start, limit, rows, frontier
            )
        if len(rows) <= limit:
            return Page(rows, max(frontier, start, 0), False)
        boundary = rows[limit].ts
        kept = [m for m in rows[:limit] if m.ts < boundary]
        if kept:
            return Page(kept, kept[-1].ts, True)
        # More than `limit` messages share one millisecond: return all of them at once.
        same = await self._rows_at(recipients, sent_by, boundary)
        return Page(same, boundary, True)

    # conversations: history, unread counts, read markers ------------------------------
    # Every adapter keeps an index per conversation (private: by recipient and sender;
    # group: by group), so a page costs the same whatever else the user has stored.
    @abstractmethod
    async def _history_frontier(self) -> int:
        """A position at or below which every message is committed and visible."""

    @abstractmethod
    async def _history_rows(self, conv: Conversation, below: int, limit: int) -> list[Message]:
        """At most ``limit`` messages of the conversation with ``ts < below``, newest first
        (descending ``(ts, seq)``)."""

    @abstractmethod
    async def _history_at(self, conv: Conversation, ts: int) -> list[Message]:
        """Every message of the conversation with exactly this timestamp, in seq order."""

    async def history(self, conv: Conversation, before: int | None, limit: int) -> HistoryPage:
        """The newest ``limit`` messages older than ``before``; pages never split one
        timestamp (a longer run of one millisecond comes whole)."""
        below = await self._history_frontier() + 1
        if before is not None:
            below = min(below, before)
        rows = await self._history_rows(conv, below, limit + 1)
        if len(rows) <= limit:
            kept, more = rows, False
        else:
            boundary = rows[limit].ts
            kept = [m for m in rows[:limit] if m.ts > boundary]
            more = True
            if not kept:  # more than `limit` messages share one millisecond
                kept = list(reversed(await self._history_at(conv, boundary)))
        kept.reverse()
        return HistoryPage(kept, more, kept[0].ts if kept else None)

    async def cursor(self) -> int:
        """A polling cursor as safe as a check's ``nextTimestamp`` (every message at or
        below it is already visible), read the way a check reads it: a page of a stream
        that holds nothing."""
        page = await self.read_messages([EMPTY_STREAM], None, None, 1)
        return page.next_ts

    async def last_message(self, conv: Conversation) -> Message | None:
        """The conversation's newest visible message."""
        below = await self._history_frontier() + 1
        rows = await self._history_rows(conv, below, 1)
        return rows[0] if rows else None

    @abstractmethod
    async def unread_count(self, conv: Conversation, after: int, cap: int) -> int:
        """How many messages of the conversation from others have ``ts > after``, counting
        no further than ``cap`` (the answer is at most ``cap``)."""

    @abstractmethod
    async def private_peers(self, user_id: str) -> list[str]:
        """Every user with whom ``user_id`` has exchanged a private message (itself too,
        if it sent itself one)."""

    @abstractmethod
    async def mark_read(self, user_id: str, conversation_id: str, ts: int) -> tuple[bool, int]:
        """Move the user's read marker of a conversation forward to ``ts`` (one conditional
        write); never back. Returns whether it moved and the marker's value afterwards."""

    @abstractmethod
    async def read_markers(self, user_id: str, conversation_ids: Sequence[str]) -> dict[str, int]:
        """The user's read markers of these conversations (absent: never marked)."""

    @abstractmethod
    async def peer_read_markers(self, user_id: str, peers: Sequence[str]) -> dict[str, int]:
        """Each peer's read marker of its private conversation with ``user_id``."""

    async def _with_events(
        self,
        recipients: Sequence[str],
        sent_by: str | None,
        streams: Sequence[str],
        start: int,
        limit: int,
        rows: list[Message],
        frontier: int,
    ) -> Page:
        """Merge the events up to ``frontier`` into a page of ``rows`` (``limit + 1`` at
        most, read under ``frontier``): one order, (ts, messages first, seq)."""
        events = await self._event_rows(streams, start, frontier, limit + 1) if streams else []
        # Beyond a list that came back full, only timestamps below its last are complete.
        bound: int | None = None
        if len(rows) > limit:
            bound = rows[limit].ts
        if len(events) > limit:
            bound = events[limit].ts if bound is None else min(bound, events[limit].ts)
        items: list[tuple[int, int, int, Message | Event]] = [(m.ts, 0, m.seq, m) for m in rows]
        items += [(e.ts, 1, e.seq, e) for e in events]
        items.sort(key=lambda item: item[:3])
        if bound is not None:
            items = [item for item in items if item[0] < bound]
        if bound is None and len(items) <= limit:
            return _page(items, max(frontier, start, 0), False)
        if len(items) > limit:
            boundary = items[limit][0]
            kept = [item for item in items[:limit] if item[0] < boundary]
        else:
            assert bound is not None
            boundary, kept = bound, items
        if kept:
            return _page(kept, kept[-1][0], True)
        # More than `limit` messages and events share one millisecond: all of them at once.
        same_rows = await self._rows_at(recipients, sent_by, boundary)
        same_events = await self._event_rows_at(streams, boundary)
        return Page(same_rows, boundary, True, same_events)


def _page(items: list[tuple[int, int, int, Message | Event]], next_ts: int, more: bool) -> Page:
    messages = [item[3] for item in items if isinstance(item[3], Message)]
    events = [item[3] for item in items if isinstance(item[3], Event)]
    return Page(messages, next_ts, more, events)


def counted(cls: type[Storage]) -> type[Storage]:
    """Count every call of the port's operations in ``self.calls`` (for metrics and tests)."""
    names = [
        name
        for name, value in {**vars(MediaPort), **vars(Storage)}.items()
        if callable(value) and not name.startswith("_") and name not in ("open", "close")
    ]
    for name in names:
        original = getattr(cls, name, None)
        if original is None:
            continue
        setattr(cls, name, _counting(name, original))
    return cls


def _counting(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def wrapper(self: Storage, *args: Any, **kwargs: Any) -> Any:
        self.calls[name] += 1
        return await method(self, *args, **kwargs)

    return wrapper
