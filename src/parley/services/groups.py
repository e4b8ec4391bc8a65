"""Groups and their members."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from parley.cache.base import Directory
from parley.domain.models import GroupRecord, new_id
from parley.domain.rules import Limits, check_id, clean_name
from parley.domain.validation import check_text, well_formed_id
from parley.errors import Code, Conflict, Forbidden, NotFound
from parley.services.access import Actor, require_self
from parley.services.users import UserService
from parley.storage.base import Storage


@dataclass(frozen=True, slots=True)
class GroupView:
    group: GroupRecord
    members: list[str]


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

    async def require(self, group_id: str) -> GroupRecord:
        # A malformed id names nothing stored: answered as an unknown one, without storage.
        group = await self.directory.group(group_id) if well_formed_id(group_id) else None
        if group is None:
            raise NotFound("group not found", Code.GROUP_NOT_FOUND)
        return group

    async def create(self, actor: Actor, name: str) -> GroupRecord:
        """Create a group. In token mode its creator becomes its first member."""
        clean = clean_name(check_text(name, "groupName"), "groupName", self.limits.group_name_max)
        group = GroupRecord(new_id("g_"), clean)
        await self.storage.create_group(group, actor)
        await self.directory.group_created(group, actor)
        return group

    async def _require_member(self, actor: Actor, group_id: str) -> None:
        if actor is not None and not await self.directory.is_member(group_id, actor):
            raise Forbidden("you are not a member of this group", Code.NOT_A_MEMBER)

    async def add(self, actor: Actor, group_id: str, user_id: str) -> None:
        check_id(user_id, "userId")
        await self.require(group_id)
        await self._require_member(actor, group_id)
        await self.users.require(user_id)
        # The conditional write decides, not the cache; and a 409 forgets the cached
        # memberships too, since it may be the answer to a cache that was wrong.
        changed = await self.storage.add_member(group_id, user_id)
        await self.directory.memberships_changed(group_id, user_id)
        if not changed:
            raise Conflict("user is already a member", Code.ALREADY_MEMBER)
        self._membership_changed(user_id)

    async def remove(self, actor: Actor, group_id: str, user_id: str) -> None:
        check_id(user_id, "userId")
        await self.require(group_id)
        if actor != user_id:  # anyone may leave; removing others needs membership
            await self._require_member(actor, group_id)
        await self.users.require(user_id)
        changed = await self.storage.remove_member(group_id, user_id)
        # A 409 too: the cache may still hold the membership the database no longer has.
        await self.directory.memberships_changed(group_id, user_id)
        if not changed:
            raise Conflict("user is not a member", Code.NOT_IN_GROUP)
        self._membership_changed(user_id)

    def _membership_changed(self, user_id: str) -> None:
        for listener in self.membership_listeners:
            listener(user_id)

    async def view(self, actor: Actor, group_id: str) -> GroupView:
        group = await self.require(group_id)
        await self._require_member(actor, group_id)
        return GroupView(group, sorted(await self.directory.members_of(group_id)))

    async def of_user(self, actor: Actor, user_id: str) -> list[GroupRecord]:
        require_self(actor, user_id)
        await self.users.require(user_id)
        groups = []
        for group_id in sorted(await self.directory.groups_of(user_id)):
            group = await self.directory.group(group_id)
            if group is not None:
                groups.append(group)
        return groups
