"""Users, groups, memberships and blocks, served from memory.

The directory loads an entry from storage the first time it is asked for and keeps it;
every write made through this process *forgets* the entries it touched after storage has
committed (they are loaded again on use), so the order in which writes finish never
matters. A conflict (409) forgets them too: the cache was wrong, the next read is right.
Unknown ids are not remembered (they are looked up again), so a user created by another
process is found.

A load that raced with a write is not kept: every write bumps ``_epoch``, and a loaded
value is cached only if the epoch did not move while it was being read.

Tokens (signed-in devices) are kept by user as a map from the secret's hash to the token. A
token not in the map is looked up in storage again (it may have been minted by another
process); a revocation or an account deletion drops the cached entries before it answers.

This keeps one process right. Several processes on one database need Redis
(``parley.cache.directory``) or :class:`UncachedDirectory` (``PARLEY_CACHE=none``).
"""

from __future__ import annotations

from parley.domain.models import GroupRecord, TokenRecord, UserRecord
from parley.storage.base import Storage

TOKENS_MAX = 200_000  # users whose tokens are kept; the whole map is dropped beyond


class Directory:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._users: dict[str, UserRecord] = {}
        self._groups: dict[str, GroupRecord] = {}
        self._members: dict[str, set[str]] = {}
        self._memberships: dict[str, set[str]] = {}
        self._blocks: dict[str, set[str]] = {}
        self._tokens: dict[str, dict[bytes, TokenRecord]] = {}
        self._epoch = 0

    # reads -----------------------------------------------------------------------------
    async def user(self, user_id: str) -> UserRecord | None:
        user = self._users.get(user_id)
        if user is None:
            user = await self.storage.get_user(user_id)
            if user is not None:
                self._users[user_id] = user
        return user

    async def group(self, group_id: str) -> GroupRecord | None:
        group = self._groups.get(group_id)
        if group is None:
            group = await self.storage.get_group(group_id)
            if group is not None:
                self._groups[group_id] = group
        return group

    async def groups_of(self, user_id: str) -> set[str]:
        groups = self._memberships.get(user_id)
        if groups is None:
            epoch = self._epoch
            groups = set(await self.storage.user_groups(user_id))
            if epoch == self._epoch:
                self._memberships[user_id] = groups
        return groups

    async def members_of(self, group_id: str) -> set[str]:
        members = self._members.get(group_id)
        if members is None:
            epoch = self._epoch
            members = set(await self.storage.group_members(group_id))
            if epoch == self._epoch:
                self._members[group_id] = members
        return members

    async def blocked_by(self, user_id: str) -> set[str]:
        blocked = self._blocks.get(user_id)
        if blocked is None:
            epoch = self._epoch
            blocked = set(await self.storage.blocked_by(user_id))
            if epoch == self._epoch:
                self._blocks[user_id] = blocked
        return blocked

    async def is_member(self, group_id: str, user_id: str) -> bool:
        return group_id in await self.groups_of(user_id)

    async def tokens(self, user_id: str, fresh: bool = False) -> dict[bytes, TokenRecord]:
        """A user's live tokens by hash; ``fresh`` reads storage even if cached."""
        tokens = None if fresh else self._tokens.get(user_id)
        if tokens is None:
            epoch = self._epoch
            tokens = {t.hash: t for t in await self.storage.user_tokens(user_id)}
            if epoch == self._epoch:
                if len(self._tokens) > TOKENS_MAX:
                    self._tokens.clear()
                self._tokens[user_id] = tokens
        return tokens

    # devices: after a committed write ----------------------------------------------------
    async def token_added(self, token: TokenRecord) -> None:
        tokens = self._tokens.get(token.user_id)
        if tokens is not None:
            tokens[token.hash] = token

    async def token_removed(self, user_id: str, token_id: str) -> None:
        """A token was revoked: once this returns, no request is accepted with it here."""
        self._epoch += 1
        tokens = self._tokens.get(user_id)
        if tokens is not None:
            for key, token in list(tokens.items()):
                if token.id == token_id:
                    del tokens[key]

    async def user_deleted(self, user_id: str) -> None:
        """An account was deleted (or is being deleted): forget everything cached, since
        its memberships and blocks, and other users' blocks of it, are gone too."""
        self._epoch += 1
        self._users.pop(user_id, None)
        self._tokens.pop(user_id, None)
        self._members.clear()
        self._memberships.clear()
        self._blocks.clear()

    # after a committed write (or a conflict that showed the cache was wrong) ------------
    async def user_created(self, user: UserRecord) -> None:
        self._users[user.id] = user
        self._memberships[user.id] = set()
        self._blocks[user.id] = set()

    async def group_created(self, group: GroupRecord, first_member: str | None) -> None:
        self._groups[group.id] = group
        self._members[group.id] = set()
        if first_member is not None:
            await self.memberships_changed(group.id, first_member)

    async def memberships_changed(self, group_id: str, user_id: str) -> None:
        """``user_id`` joined or left ``group_id``: forget both sides (reloaded on use)."""
        self._epoch += 1
        self._members.pop(group_id, None)
        self._memberships.pop(user_id, None)

    async def blocks_changed(self, blocker_id: str) -> None:
        """Whom ``blocker_id`` blocks changed: forget it (reloaded on use)."""
        self._epoch += 1
        self._blocks.pop(blocker_id, None)


class UncachedDirectory(Directory):
    """Every rule check reads storage (``PARLEY_CACHE=none``).

    For several processes on one database without Redis: memberships and blocks are
    never kept, so a change made through one process holds on the next request to any
    other. Nor are users and tokens (an account can be deleted, a token revoked through
    another process). Groups never change once created, so they are still kept.
    """

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
