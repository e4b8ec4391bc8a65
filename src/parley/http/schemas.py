"""Wire formats: request and response bodies, decoded and encoded by msgspec.

Unknown request fields are ignored. Field aliases from the original API are accepted:
``userName`` for ``username``; ``recipientId`` for ``receiverId`` (private) and for
``groupId`` (group).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from parley.domain.models import GroupRecord, Message, Page, TokenRecord, UserRecord


class Body(msgspec.Struct, omit_defaults=True):
    pass


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


class SendIn(Body):
    senderId: str
    message: str
    receiverId: str | None = None
    groupId: str | None = None
    recipientId: str | None = None
    clientMessageId: str | None = None


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
    groupId: str
    userId: str
    member: bool


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

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        if not m.body:  # erased (an empty message cannot be sent)
            return cls(m.id, m.type, m.sender_id, m.recipient_id, str(m.ts), None, True)
        return cls(m.id, m.type, m.sender_id, m.recipient_id, str(m.ts), m.body)


class MessagesOut(Body):
    messages: list[MessageOut]
    nextTimestamp: str
    hasMore: bool

    @classmethod
    def of(cls, page: Page) -> MessagesOut:
        return cls([MessageOut.of(m) for m in page.messages], str(page.next_ts), page.has_more)


class TicketOut(Body):
    ticket: str
    expiresIn: int


class HealthOut(Body):
    status: str
    checks: dict[str, str] = {}


class ErrorDetail(Body):
    code: str
    message: str


class ErrorOut(Body):
    error: ErrorDetail


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
