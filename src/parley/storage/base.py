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
    GroupRecord,
    Message,
    MessageType,
    Page,
    TokenRecord,
    UserRecord,
)
from parley.domain.roles import GroupWrite, Member, Outcome, Role

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


class BulkData(msgspec.Struct):
    """Rows to load at once (benchmarks and imports), with messages' timestamps given."""

    users: list[UserRecord] = []
    groups: list[GroupRecord] = []
    members: list[tuple[str, str]] = []  # (group_id, user_id)
    messages: list[Message] = []


class Storage(ABC):
    """What Parley needs from a database. All methods may raise ``Unavailable``."""

    name = "storage"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._meta: dict[str, str] = {}

    # lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, create or migrate the schema."""

    async def close(self) -> None:  # noqa: B027 - optional hook
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
        self, group_id: str, user_id: str, *, by: str | None, cap: int | None
    ) -> Outcome:
        """Add ``user_id`` if ``by`` may add members and the group has fewer than ``cap``."""

    @abstractmethod
    async def leave_group(self, group_id: str, user_id: str, *, by: str | None) -> GroupWrite:
        """Remove ``user_id`` (by itself, or by someone who may); an owner who leaves hands
        the group over to its successor in the same transaction."""

    @abstractmethod
    async def set_role(self, group_id: str, user_id: str, role: Role, *, by: str | None) -> Outcome:
        """Make a member an admin or an admin a member (the owner only)."""

    @abstractmethod
    async def rename_group(self, group_id: str, name: str, *, by: str | None) -> Outcome:
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

    async def read_messages(
        self, recipients: Sequence[str], sent_by: str | None, after: int | None, limit: int
    ) -> Page:
        """A page of messages newer than ``after``. Pages never split one timestamp."""
        start = -1 if after is None else after
        rows, frontier = await self._page_rows(recipients, sent_by, start, limit + 1)
        if len(rows) <= limit:
            return Page(rows, max(frontier, start, 0), False)
        boundary = rows[limit].ts
        kept = [m for m in rows[:limit] if m.ts < boundary]
        if kept:
            return Page(kept, kept[-1].ts, True)
        # More than `limit` messages share one millisecond: return all of them at once.
        same = await self._rows_at(recipients, sent_by, boundary)
        return Page(same, boundary, True)


def counted(cls: type[Storage]) -> type[Storage]:
    """Count every call of the port's operations in ``self.calls`` (for metrics and tests)."""
    names = [
        name
        for name, value in vars(Storage).items()
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
