"""The cache ports with nothing cached across requests (``PARLEY_CACHE=none``).

For several processes on one database without Redis: memberships and blocks are never
kept, so a change made through one process holds on the next request to any other, and
every check reads storage. Users and groups never change once created, so they are still
kept. Wake-ups stay in-process (``parley.cache.memory.Notifier``): a waiter in another
process re-checks on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from parley.cache.base import Directory, Look
from parley.cache.memory import MemoryDirectory
from parley.domain.models import GroupRecord, UserRecord


class UncachedDirectory(MemoryDirectory):
    """Every rule check reads storage; only users and groups (immutable) are kept."""

    async def groups_of(self, user_id: str) -> set[str]:
        return set(await self.storage.user_groups(user_id))

    async def members_of(self, group_id: str) -> set[str]:
        return set(await self.storage.group_members(group_id))

    async def blocked_by(self, user_id: str) -> set[str]:
        return set(await self.storage.blocked_by(user_id))

    async def user_created(self, user: UserRecord) -> None:
        self._users[user.id] = user

    async def group_created(self, group: GroupRecord, first_member: str | None) -> None:
        self._groups[group.id] = group

    async def memberships_changed(self, group_id: str, user_id: str) -> None:
        """Nothing is kept."""

    async def blocks_changed(self, blocker_id: str) -> None:
        """Nothing is kept."""


class NoChanges:
    """:class:`~parley.cache.base.Changes` that knows nothing: every check reads storage."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    async def start(self, earliest: int) -> None:
        """Nothing to remember."""

    async def marked(self, marks: Sequence[tuple[str, int]]) -> None:
        """Nothing to remember."""

    async def look(self, user_id: str, after: int | None, include_sent: bool) -> Look:
        return Look(await self.directory.groups_of(user_id), True)
