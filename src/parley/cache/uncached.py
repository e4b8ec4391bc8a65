"""The cache ports with nothing cached across requests (``PARLEY_CACHE=none``).

For several processes on one database without Redis: memberships, blocks, users and tokens
are never kept, so a change made through one process (a block, a removal, a revoked token,
a deleted account) holds on the next request to any other, and every check reads storage.
Groups never change once created, so they are still kept. Wake-ups stay in-process
(``parley.cache.memory.Notifier``): a waiter in another process re-checks on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from parley.cache.base import Directory, Look
from parley.cache.memory import MemoryDirectory
from parley.domain.models import GroupRecord, TokenRecord, UserRecord


class UncachedDirectory(MemoryDirectory):
    """Every rule check reads storage; only groups (never changed once created) are kept.
    Nor are users and tokens (an account can be deleted, a token revoked through another
    process)."""

    async def user(self, user_id: str) -> UserRecord | None:
        return await self.storage.get_user(user_id)

    async def tokens(self, user_id: str, fresh: bool = False) -> dict[bytes, TokenRecord]:
        return {t.hash: t for t in await self.storage.user_tokens(user_id)}

    async def groups_of(self, user_id: str) -> set[str]:
        return set(await self.storage.user_groups(user_id))

    async def members_of(self, group_id: str) -> set[str]:
        return set(await self.storage.group_members(group_id))

    async def blocked_by(self, user_id: str) -> set[str]:
        return set(await self.storage.blocked_by(user_id))

    async def user_created(self, user: UserRecord) -> None:
        """Nothing is kept."""

    async def token_added(self, token: TokenRecord) -> None:
        """Nothing is kept."""

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

    async def look(
        self, user_id: str, after: int | None, include_sent: bool, include_events: bool = False
    ) -> Look:
        return Look(await self.directory.groups_of(user_id), True)
