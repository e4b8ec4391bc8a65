"""Wire formats: request and response bodies, decoded and encoded by msgspec.

Unknown request fields are ignored. Field aliases from the original API are accepted:
``userName`` for ``username``; ``recipientId`` for ``receiverId`` (private) and for
``groupId`` (group).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from parley.domain.models import GroupRecord, Message, Page, UserRecord


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
    messageId: str
    type: Literal["private", "group"]
    senderId: str
    recipientId: str
    message: str
    timestamp: str

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        return cls(m.id, m.type, m.sender_id, m.recipient_id, m.body, str(m.ts))


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
