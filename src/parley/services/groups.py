"""Groups, their members and their roles.

In token mode a group is run by its members' roles (``parley.domain.roles``): the creator
owns it, the owner and admins add and remove others, the owner promotes and demotes, the
owner and admins rename it, anyone may leave. Storage applies the role rules in the same
transaction as the write; this service checks what it can answer without a write first
(unknown ids, non-members, blocks) and turns storage's outcome into an answer. In open
mode (``actor`` None) nobody's role is checked, as in the original course design.

Every change is stored with its change events (SPEC §7: ``member_added``,
``member_removed``, ``role_changed``, ``group_renamed``; see ``change_event``), by the
same write (``Storage.GroupEvents``), so a committed change never lacks its events. The
stored events go to ``event_listeners`` (the change cache and wake-ups); events that a
process died before storing (DynamoDB's pending record) are finished by
``finish_events``, at start-up and by ``sweep``.
``PARLEY_TEST_EXIT_DURING_GROUP_CHANGE=committed`` (tests only) kills the server right
after a change was stored, before its events are announced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from parley.cache.base import Directory
from parley.domain.models import Event, GroupRecord, new_id
from parley.domain.roles import GroupWrite, Member, Outcome, Role
from parley.domain.rules import Limits, check_id, clean_name
from parley.domain.validation import check_text, well_formed_id
from parley.errors import Code, Conflict, Forbidden, NotFound
from parley.services.access import Actor, require_self
from parley.services.users import UserService
from parley.storage.base import EventDraft, GroupEvents, Storage

log = logging.getLogger("parley.groups")
FAULT = "PARLEY_TEST_EXIT_DURING_GROUP_CHANGE"
SWEEP_S = 600.0  # how often each process finishes group events a crash left pending

ChangeKind = Literal["member_added", "member_removed", "role_changed", "group_renamed"]


@dataclass(frozen=True, slots=True)
class GroupChange:
    """A committed change to a group: who did it (``actor``, None in open mode), whom it
    concerns (``user_id``), the role it gave (``role``) or the new name (``name``)."""

    kind: ChangeKind
    group_id: str
    actor: str | None
    user_id: str | None = None
    role: Role | None = None
    name: str | None = None


EventListener = Callable[[Event, Sequence[str]], Awaitable[None]]


def change_event(change: GroupChange) -> EventDraft:
    """The event of a change, for every member (the group's stream) and, when someone was
    removed, for them too (they no longer read the group)."""
    by = change.actor or ""
    group = change.group_id
    streams: tuple[str, ...] = (group,)
    if change.kind == "group_renamed":
        fields = {"groupId": group, "groupName": change.name or "", "by": by}
    elif change.kind == "role_changed":
        fields = {"groupId": group, "userId": change.user_id or "", "role": change.role or ""}
    else:
        fields = {"groupId": group, "userId": change.user_id or "", "by": by}
        if change.kind == "member_removed" and change.user_id:
            streams = (group, change.user_id)
    return EventDraft(new_id("e_"), change.kind, streams, fields)


def events_of(*changes: GroupChange) -> GroupEvents:
    return GroupEvents(lambda write: [change_event(change) for change in changes])


@dataclass(frozen=True, slots=True)
class GroupView:
    group: GroupRecord
    members: list[str]
    roles: dict[str, Role]


DENIED = {
    "add": "only the group's owner and admins may add members",
    "remove": "only the group's owner and admins may remove others (admins: members only)",
    "role": "only the group's owner may promote and demote",
    "rename": "only the group's owner and admins may rename it",
}


class GroupService:
    def __init__(
        self, storage: Storage, directory: Directory, users: UserService, limits: Limits
    ) -> None:
        self.storage = storage
        self.directory = directory
        self.users = users
        self.limits = limits
        # Called with a user id after that user joined or left a group (wakes its long-polls,
        # which must start waiting on the new set of groups).
        self.membership_listeners: list[Callable[[str], None]] = []
        # Called with every stored change event (membership, role, name) and its streams; a
        # listener's failure is logged and does not undo the change or fail the request.
        self.event_listeners: list[EventListener] = []

    async def require(self, group_id: str) -> GroupRecord:
        # A malformed id names nothing stored: answered as an unknown one, without storage.
        group = await self.directory.group(group_id) if well_formed_id(group_id) else None
        if group is None:
            raise NotFound("group not found", Code.GROUP_NOT_FOUND)
        return group

    async def create(self, actor: Actor, name: str) -> GroupRecord:
        """Create a group. In token mode its creator becomes its owner."""
        clean = clean_name(check_text(name, "groupName"), "groupName", self.limits.group_name_max)
        group = GroupRecord(new_id("g_"), clean)
        await self.storage.create_group(group, actor)
        await self.directory.group_created(group, actor)
        return group

    async def _require_member(self, actor: Actor, group_id: str) -> None:
        if actor is not None and not await self.directory.is_member(group_id, actor):
            raise Forbidden("you are not a member of this group", Code.NOT_A_MEMBER)

    @staticmethod
    def _refuse(outcome: Outcome, action: str) -> None:
        """Turn a storage outcome other than ``done`` into the matching error."""
        if outcome == "denied":
            raise Forbidden(DENIED[action], Code.NOT_ALLOWED)
        if outcome == "no_group":
            raise NotFound("group not found", Code.GROUP_NOT_FOUND)
        if outcome == "full":
            raise Conflict("the group is full", Code.GROUP_FULL)
        if outcome == "missing":
            raise Conflict("user is not a member", Code.NOT_IN_GROUP)
        if outcome == "owner":
            raise Conflict("the owner's role cannot be changed", Code.IS_OWNER)

    async def add(self, actor: Actor, group_id: str, user_id: str) -> None:
        check_id(user_id, "userId")
        await self.require(group_id)
        await self._require_member(actor, group_id)
        await self.users.require(user_id)
        if actor is not None and actor in await self.directory.blocked_by(user_id):
            raise Forbidden("this user has blocked you", Code.BLOCKED)
        # The conditional write decides, not the cache; and a 409 forgets the cached
        # memberships too, since it may be the answer to a cache that was wrong.
        events = events_of(GroupChange("member_added", group_id, actor, user_id, "member"))
        outcome = await self.storage.join_group(
            group_id, user_id, by=actor, cap=self.limits.group_members_max, events=events
        )
        await self.directory.memberships_changed(group_id, user_id)
        await self._refused(outcome, events)
        if outcome == "unchanged":
            raise Conflict("user is already a member", Code.ALREADY_MEMBER)
        self._refuse(outcome, "add")
        self._membership_changed(user_id)
        await self._announce(events)

    async def remove(self, actor: Actor, group_id: str, user_id: str) -> None:
        check_id(user_id, "userId")
        await self.require(group_id)
        if actor != user_id:  # anyone may leave; removing others needs membership
            await self._require_member(actor, group_id)
        await self.users.require(user_id)
        removed = GroupChange("member_removed", group_id, actor, user_id)

        def drafts(write: GroupWrite) -> list[EventDraft]:
            heir = write.new_owner  # an owner who left handed the group over
            handed = [GroupChange("role_changed", group_id, actor, heir, "owner")] if heir else []
            return [change_event(change) for change in (removed, *handed)]

        events = GroupEvents(drafts)
        write = await self.storage.leave_group(group_id, user_id, by=actor, events=events)
        # A 409 too: the cache may still hold the membership the database no longer has.
        await self.directory.memberships_changed(group_id, user_id)
        await self._refused(write.outcome, events)
        if write.outcome == "unchanged":
            raise Conflict("user is not a member", Code.NOT_IN_GROUP)
        self._refuse(write.outcome, "remove")
        self._membership_changed(user_id)
        await self._announce(events)

    async def set_role(self, actor: Actor, group_id: str, user_id: str, role: Role) -> None:
        """Promote (``admin``) or demote (``member``) a member: the owner only."""
        check_id(user_id, "userId")
        await self.require(group_id)
        await self._require_member(actor, group_id)
        await self.users.require(user_id)
        events = events_of(GroupChange("role_changed", group_id, actor, user_id, role))
        outcome = await self.storage.set_role(group_id, user_id, role, by=actor, events=events)
        await self._refused(outcome, events)
        if outcome == "unchanged":
            raise Conflict(
                f"user already has the role {role}",
                Code.ALREADY_ADMIN if role == "admin" else Code.ALREADY_MEMBER,
            )
        self._refuse(outcome, "role")
        await self._announce(events)

    async def rename(self, actor: Actor, group_id: str, name: str) -> GroupRecord:
        clean = clean_name(check_text(name, "groupName"), "groupName", self.limits.group_name_max)
        await self.require(group_id)
        await self._require_member(actor, group_id)
        events = events_of(GroupChange("group_renamed", group_id, actor, name=clean))
        outcome = await self.storage.rename_group(group_id, clean, by=actor, events=events)
        await self._refused(outcome, events)
        self._refuse(outcome, "rename")
        await self._announce(events)
        return GroupRecord(group_id, clean)

    def _membership_changed(self, user_id: str) -> None:
        for listener in self.membership_listeners:
            listener(user_id)

    async def _announce(self, events: GroupEvents) -> None:
        if os.environ.get(FAULT) == "committed":  # a fault test: kill -9 after the commit
            os.killpg(os.getpgrp(), signal.SIGKILL)  # the whole server (no worker respawn)
        await self._tell(events.stored)

    async def _refused(self, outcome: Outcome, events: GroupEvents) -> None:
        """A refused write stores no events of its own, but may have finished an earlier
        change's pending ones first (DynamoDB): those are announced all the same."""
        if outcome != "done":
            await self._tell(events.stored)

    async def _tell(self, stored: Sequence[tuple[Event, Sequence[str]]]) -> None:
        for event, streams in stored:
            for listener in self.event_listeners:
                try:
                    await listener(event, streams)
                except Exception:  # the change is committed; a listener cannot undo it
                    log.exception("group event listener failed for %s", event.type)

    async def finish_events(self) -> int:
        """Store the events of changes a crash left without them (DynamoDB's pending
        records) and announce them; returns how many. At start-up and every ``SWEEP_S``."""
        stored = await self.storage.finish_group_events()
        await self._tell(stored)
        return len(stored)

    async def sweep(self, every: float = SWEEP_S) -> None:
        """Until cancelled: every ``every`` seconds, ``finish_events``."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.finish_events()
            except Exception:  # storage down: the next sweep tries again
                log.warning("finishing pending group events failed", exc_info=True)

    async def _current(self, group_id: str) -> GroupRecord:
        # The name can change (rename), so it is read from storage, not from the cache
        # that knows the group exists.
        group = await self.storage.get_group(group_id)
        if group is None:
            raise NotFound("group not found", Code.GROUP_NOT_FOUND)
        return group

    async def view(self, actor: Actor, group_id: str) -> GroupView:
        await self.require(group_id)
        await self._require_member(actor, group_id)
        group = await self._current(group_id)
        members = sorted(await self.directory.members_of(group_id))
        roster: dict[str, Member] = {
            m.user_id: m for m in await self.storage.group_roster(group_id)
        }
        roles: dict[str, Role] = {
            user: roster[user].role if user in roster else "member" for user in members
        }
        return GroupView(group, members, roles)

    async def of_user(self, actor: Actor, user_id: str) -> list[GroupRecord]:
        require_self(actor, user_id)
        await self.users.require(user_id)
        groups = []
        for group_id in sorted(await self.directory.groups_of(user_id)):
            group = await self.storage.get_group(group_id)
            if group is not None:
                groups.append(group)
        return groups
