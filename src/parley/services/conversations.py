"""Conversations, read state and history (SPEC §7).

A conversation is named, from a user's side, by the peer's user id (private) or the group
id. Its history comes from an index per conversation in every storage adapter, so a page
costs the same whatever else the user has stored. Read markers are one conditional write
per (user, conversation) that only moves forward; moving one raises a ``read`` event for
the user's own devices and, in a private conversation, a ``receipt`` for the peer (unless
the reader blocks the peer). Sends cost nothing extra here: the list of conversations is
built when asked for, from the user's peers and groups and each one's newest message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from parley.cache.base import Directory
from parley.domain.models import Message
from parley.domain.rules import check_id
from parley.domain.validation import well_formed_id
from parley.errors import Code, Forbidden, NotFound
from parley.services.access import Actor, require_self
from parley.services.events import EventService
from parley.services.groups import GroupService
from parley.services.users import UserService
from parley.storage.base import Conversation, HistoryPage, Storage

UNREAD_CAP = 1000  # unread messages counted per conversation at most (then "1000+")
HISTORY_DEFAULT = 50
LIST_DEFAULT = 50


@dataclass(frozen=True, slots=True)
class Summary:
    """One conversation in a user's list."""

    conv: Conversation
    name: str
    last: Message | None
    unread: int
    capped: bool  # more than UNREAD_CAP unread: ``unread`` is the cap
    read_up_to: int
    peer_read_up_to: int | None  # private conversations with someone else only


@dataclass(frozen=True, slots=True)
class Listing:
    conversations: list[Summary]
    has_more: bool
    cursor: int  # polling from here delivers every message the list's histories lack


@dataclass(frozen=True, slots=True)
class Marked:
    conversation_id: str
    read_up_to: int
    moved: bool


class ConversationService:
    def __init__(
        self,
        storage: Storage,
        directory: Directory,
        users: UserService,
        groups: GroupService,
        events: EventService,
    ) -> None:
        self.storage = storage
        self.directory = directory
        self.users = users
        self.groups = groups
        self.events = events

    async def resolve(self, actor: Actor, user_id: str, conversation_id: str) -> Conversation:
        """The conversation ``conversation_id`` names for ``user_id``: a group it belongs
        to (403 if it does not), or a private conversation with that user."""
        require_self(actor, user_id)
        check_id(conversation_id, "conversationId")
        await self.users.require(user_id)
        if well_formed_id(conversation_id):
            # Ids are opaque, but Parley's own start with u_ / g_: look there first.
            kinds = (
                ("private", "group") if conversation_id.startswith("u_") else ("group", "private")
            )
            for kind in kinds:
                if kind == "group" and await self.directory.group(conversation_id) is not None:
                    if not await self.directory.is_member(conversation_id, user_id):
                        raise Forbidden("you are not a member of this group", Code.NOT_A_MEMBER)
                    return Conversation("group", user_id, conversation_id)
                if kind == "private" and await self.directory.user(conversation_id) is not None:
                    return Conversation("private", user_id, conversation_id)
        raise NotFound("no such user or group", Code.CONVERSATION_NOT_FOUND)

    # history ---------------------------------------------------------------------------
    async def history(
        self,
        actor: Actor,
        user_id: str,
        conversation_id: str,
        before: int | None,
        limit: int | None,
    ) -> HistoryPage:
        conv = await self.resolve(actor, user_id, conversation_id)
        return await self.storage.history(conv, before, limit or HISTORY_DEFAULT)

    # read markers ----------------------------------------------------------------------
    async def mark_read(self, actor: Actor, user_id: str, conversation_id: str, ts: int) -> Marked:
        """Move the read marker forward to ``ts`` (never past the conversation's newest
        message, so messages sent later count as unread); an older ``ts`` changes nothing."""
        conv = await self.resolve(actor, user_id, conversation_id)
        newest = await self.storage.last_message(conv)
        target = min(ts, newest.ts if newest is not None else 0)
        moved, stored = await self.storage.mark_read(user_id, conversation_id, target)
        if moved:
            fields = {"conversationId": conversation_id, "readUpTo": str(stored)}
            await self.events.emit("read", [user_id], fields)
            peer = conv.other
            private = conv.type == "private" and peer != user_id
            if private and peer not in await self.directory.blocked_by(user_id):
                receipt = {"conversationId": user_id, "userId": user_id, "readUpTo": str(stored)}
                await self.events.emit("receipt", [peer], receipt)
        return Marked(conversation_id, stored, moved)

    # the list --------------------------------------------------------------------------
    async def list(
        self, actor: Actor, user_id: str, before: int | None, limit: int | None
    ) -> Listing:
        """The user's conversations, most recent activity first (by their newest
        message; conversations without one last), ``limit`` at a time, older than
        ``before`` (a conversation's activity timestamp)."""
        require_self(actor, user_id)
        await self.users.require(user_id)
        # Taken first: every message at or below it is visible to the reads below, so it
        # is in a conversation's history; every later one comes to a poll from here.
        cursor = await self.storage.cursor()
        peers = await self.storage.private_peers(user_id)
        groups = sorted(await self.directory.groups_of(user_id))
        convs = [Conversation("private", user_id, p) for p in peers]
        convs += [Conversation("group", user_id, g) for g in groups]
        lasts = await asyncio.gather(*(self.storage.last_message(c) for c in convs))
        ranked = sorted(
            zip(convs, lasts, strict=True),
            key=lambda cl: (cl[1].ts, cl[1].seq) if cl[1] else (0, 0),
            reverse=True,
        )
        if before is not None:
            ranked = [(c, m) for c, m in ranked if (m.ts if m else 0) < before]
        size = limit or LIST_DEFAULT
        page, more = ranked[:size], len(ranked) > size
        ids = [c.other for c, _ in page]
        markers = await self.storage.read_markers(user_id, ids)
        others = [c.other for c, _ in page if c.type == "private" and c.other != user_id]
        peer_markers = await self.storage.peer_read_markers(user_id, others) if others else {}
        counts = await asyncio.gather(
            *(
                self.storage.unread_count(c, markers.get(c.other, 0), UNREAD_CAP + 1)
                for c, _ in page
            )
        )
        names = await asyncio.gather(*(self._name(c) for c, _ in page))
        summaries = [
            Summary(
                conv=c,
                name=name,
                last=last,
                unread=min(count, UNREAD_CAP),
                capped=count > UNREAD_CAP,
                read_up_to=markers.get(c.other, 0),
                peer_read_up_to=(
                    peer_markers.get(c.other, 0)
                    if c.type == "private" and c.other != user_id
                    else None
                ),
            )
            for (c, last), count, name in zip(page, counts, names, strict=True)
        ]
        return Listing(summaries, more, cursor)

    async def _name(self, conv: Conversation) -> str:
        if conv.type == "group":
            group = await self.storage.get_group(conv.other)
            return group.name if group else ""
        user = await self.directory.user(conv.other)
        return user.username if user else ""
