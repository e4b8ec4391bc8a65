"""Groups, their members and their roles.

In token mode a group is run by its members' roles (``parley.domain.roles``): the creator
owns it, the owner and admins add and remove others, the owner promotes and demotes, the
owner and admins rename it, anyone may leave. Storage applies the role rules in the same
transaction as the write; this service checks what it can answer without a write first
(unknown ids, non-members, blocks) and turns storage's outcome into an answer. In open
mode (``actor`` None) nobody's role is checked, as in the original course design.

Listeners (``change_listeners``) are called after every committed change with a
:class:`GroupChange`, in commit order per request: membership and role changes, renames.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from parley.cache.base import Directory
from parley.domain.models import GroupRecord, new_id
from parley.domain.roles import Member, Outcome, Role
from parley.domain.rules import Limits, check_id, clean_name
from parley.domain.validation import check_text, well_formed_id
from parley.errors import Code, Conflict, Forbidden, NotFound
from parley.services.access import Actor, require_self
from parley.services.users import UserService
from parley.storage.base import Storage

log = logging.getLogger("parley.groups")

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


ChangeListener = Callable[[GroupChange], Awaitable[None]]


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
        # Called after every committed group change (membership, role, name); a listener's
        # failure is logged and does not undo the change or fail the request.
        self.change_listeners: list[ChangeListener] = []

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
        outcome = await self.storage.join_group(
            group_id, user_id, by=actor, cap=self.limits.group_members_max
        )
        await self.directory.memberships_changed(group_id, user_id)
        if outcome == "unchanged":
            raise Conflict("user is already a member", Code.ALREADY_MEMBER)
        self._refuse(outcome, "add")
        self._membership_changed(user_id)
        await self._changed(GroupChange("member_added", group_id, actor, user_id, "member"))

    async def remove(self, actor: Actor, group_id: str, user_id: str) -> None:
        check_id(user_id, "userId")
        await self.require(group_id)
        if actor != user_id:  # anyone may leave; removing others needs membership
            await self._require_member(actor, group_id)
        await self.users.require(user_id)
        write = await self.storage.leave_group(group_id, user_id, by=actor)
        # A 409 too: the cache may still hold the membership the database no longer has.
        await self.directory.memberships_changed(group_id, user_id)
        if write.outcome == "unchanged":
            raise Conflict("user is not a member", Code.NOT_IN_GROUP)
        self._refuse(write.outcome, "remove")
        self._membership_changed(user_id)
        await self._changed(GroupChange("member_removed", group_id, actor, user_id))
        if write.new_owner is not None:
            await self._changed(
                GroupChange("role_changed", group_id, actor, write.new_owner, "owner")
            )

    async def set_role(self, actor: Actor, group_id: str, user_id: str, role: Role) -> None:
        """Promote (``admin``) or demote (``member``) a member: the owner only."""
        check_id(user_id, "userId")
        await self.require(group_id)
        await self._require_member(actor, group_id)
        await self.users.require(user_id)
        outcome = await self.storage.set_role(group_id, user_id, role, by=actor)
        if outcome == "unchanged":
            raise Conflict(
                f"user already has the role {role}",
                Code.ALREADY_ADMIN if role == "admin" else Code.ALREADY_MEMBER,
            )
        self._refuse(outcome, "role")
        await self._changed(GroupChange("role_changed", group_id, actor, user_id, role))

    async def rename(self, actor: Actor, group_id: str, name: str) -> GroupRecord:
        clean = clean_name(check_text(name, "groupName"), "groupName", self.limits.group_name_max)
        await self.require(group_id)
        await self._require_member(actor, group_id)
        self._refuse(await self.storage.rename_group(group_id, clean, by=actor), "rename")
        await self._changed(GroupChange("group_renamed", group_id, actor, name=clean))
        return GroupRecord(group_id, clean)

    def _membership_changed(self, user_id: str) -> None:
        for listener in self.membership_listeners:
            listener(user_id)

    async def _changed(self, change: GroupChange) -> None:
        for listener in self.change_listeners:
            try:
                await listener(change)
            except Exception:  # the change is committed; a listener cannot undo it
                log.exception("group change listener failed for %s", change.kind)

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
