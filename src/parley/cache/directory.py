"""The directory shared by every process: memberships and blocks in Redis sets.

Memberships and blocks change, and a change made through one process must hold on the
very next request to any other. So no process keeps them in memory: each request reads the
Redis set, and each committed write updates the sets in place before the client hears
back. Users and groups never change once created, so they are kept in memory too.

Filling a set from PostgreSQL races with writes. A reader that misses takes a *lease*
(``SET NX`` with a token) before reading PostgreSQL, and may store what it read only if
the lease is still its own; every write deletes the leases of the sets it touches::

    reader B: miss, lease=t1 ..... read PostgreSQL ..... fill if lease == t1  (refused)
    writer A:            commit; delete lease; update set if it exists

When Redis cannot be trusted (see ``parley.cache.redis``) every read goes to PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from parley.cache.changes import sent_stream
from parley.cache.redis import RedisLink
from parley.cache.watermarks import RedisChanges
from parley.domain.models import GroupRecord, TokenRecord, UserRecord
from parley.services.directory import Directory
from parley.storage.base import Storage

# Sets are stored with a "" member so that an empty set still exists.
READ_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return {-1} end
local ns = ARGV[1] .. ARGV[2] .. ':'
if redis.call('EXISTS', ns .. 'earliest') == 0 then return {-1} end
local members = redis.call('SMEMBERS', ns .. 's:' .. ARGV[3])
if #members > 0 then return {1, members} end
if redis.call('SET', ns .. 'l:' .. ARGV[3], ARGV[4], 'NX', 'PX', ARGV[5]) then return {0} end
return {2}
"""

# A user's groups, and with them the watermarks of every stream the user reads (its inbox,
# its sent messages, each group): an idle check then costs one round trip.
READ_GROUPS = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return {-1} end
local ns = ARGV[1] .. ARGV[2] .. ':'
local earliest = redis.call('GET', ns .. 'earliest')
if not earliest then return {-1} end
local members = redis.call('SMEMBERS', ns .. 's:g:' .. ARGV[3])
if #members == 0 then
  if redis.call('SET', ns .. 'l:g:' .. ARGV[3], ARGV[4], 'NX', 'PX', ARGV[5]) then return {0} end
  return {2}
end
local marks = {redis.call('GET', ns .. 'w:' .. ARGV[3]) or '0',
               redis.call('GET', ns .. 'w:sent:' .. ARGV[3]) or '0'}
for i = 1, #members do
  if members[i] ~= '' then marks[#marks + 1] = redis.call('GET', ns .. 'w:' .. members[i]) or '0'
  else marks[#marks + 1] = '0' end
end
return {1, members, earliest, redis.call('GET', ns .. 'last') or '', marks}
"""

FILL_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local ns = ARGV[1] .. ARGV[2] .. ':'
local lease = ns .. 'l:' .. ARGV[3]
if redis.call('GET', lease) ~= ARGV[4] then return 0 end
redis.call('DEL', lease)
local key = ns .. 's:' .. ARGV[3]
redis.call('DEL', key)
redis.call('SADD', key, '')
for i = 6, #ARGV, 500 do
  redis.call('SADD', key, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('EXPIRE', key, ARGV[5])
return 1
"""

# After a committed write, in whatever namespace Redis serves now: ARGV[2] is + or -,
# then (set, member) pairs.
UPDATE_SETS = """
local e = redis.call('GET', KEYS[1])
if not e then return 0 end
local ns = ARGV[1] .. e .. ':'
for i = 3, #ARGV, 2 do
  redis.call('DEL', ns .. 'l:' .. ARGV[i])
  local key = ns .. 's:' .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then
    if ARGV[2] == '+' then redis.call('SADD', key, ARGV[i + 1])
    else redis.call('SREM', key, ARGV[i + 1]) end
  end
end
return 1
"""

# A new user's or group's sets start empty. Safe without a lease: nobody else knows the
# new id before the creating request answers.
NEW_SETS = """
local e = redis.call('GET', KEYS[1])
if not e then return 0 end
local ns = ARGV[1] .. e .. ':s:'
for i = 3, #ARGV do
  if redis.call('EXISTS', ns .. ARGV[i]) == 0 then
    redis.call('SADD', ns .. ARGV[i], '')
    redis.call('EXPIRE', ns .. ARGV[i], ARGV[2])
  end
end
return 1
"""

SET_TTL = 3600  # seconds a filled set lives (it is kept up to date, this only bounds memory)
RECORD_TTL = 86400  # users and groups never change; this only bounds memory
LEASE_MS = 5000
LOCAL_MAX = 200_000


class RedisDirectory(Directory):
    def __init__(
        self, storage: Storage, link: RedisLink, changes: RedisChanges | None = None
    ) -> None:
        super().__init__(storage)
        self.link = link
        self.changes = changes
        self._read = link.client.register_script(READ_SET)
        self._read_groups = link.client.register_script(READ_GROUPS)
        self._fill = link.client.register_script(FILL_SET)
        self._update = link.client.register_script(UPDATE_SETS)
        self._new = link.client.register_script(NEW_SETS)
        self._local_epoch = 0

    # immutable records: memory, then Redis, then PostgreSQL ----------------------------
    @staticmethod
    def _bound(cache: dict[str, Any]) -> None:
        if len(cache) > LOCAL_MAX:
            for old in list(cache)[: LOCAL_MAX // 10]:
                del cache[old]

    def _local(self) -> bool:
        """May users and tokens be answered from this process's memory right now?

        Only while the process holds its trust lease, and only for entries loaded under
        the epoch it follows: a revocation or an account deletion bumps the epoch and
        waits out every lease before it answers (``token_removed``), so by then every
        process has either dropped what it loaded before, or stopped trusting it.
        """
        link = self.link
        if not link.usable:
            return False
        if link.epoch != self._local_epoch:
            self._users.clear()
            self._tokens.clear()
            self._local_epoch = link.epoch
        return True

    async def user(self, user_id: str) -> UserRecord | None:
        if not self._local():
            return await self.storage.get_user(user_id)
        user = self._users.get(user_id)
        if user is not None:
            return user
        epoch = self.link.epoch
        user = await self.storage.get_user(user_id)
        if user is not None and self.link.epoch == epoch == self._local_epoch:
            self._bound(self._users)
            self._users[user_id] = user
        return user  # unknown ids are not remembered: another process may create them

    async def tokens(self, user_id: str, fresh: bool = False) -> dict[bytes, TokenRecord]:
        if not self._local():
            return {t.hash: t for t in await self.storage.user_tokens(user_id)}
        tokens = None if fresh else self._tokens.get(user_id)
        if tokens is not None:
            return tokens
        epoch = self.link.epoch
        tokens = {t.hash: t for t in await self.storage.user_tokens(user_id)}
        if self.link.epoch == epoch == self._local_epoch:
            self._bound(self._tokens)
            self._tokens[user_id] = tokens
        return tokens

    async def token_removed(self, user_id: str, token_id: str) -> None:
        await super().token_removed(user_id, token_id)
        await self._retire()

    async def user_deleted(self, user_id: str) -> None:
        await super().user_deleted(user_id)
        await self._retire()

    async def _retire(self) -> None:
        # Retire the namespace and every process's users and tokens loaded under it, and
        # answer only once no process can still trust them (parley.cache.redis).
        await self.link.write_failed(wait=True)

    async def group(self, group_id: str) -> GroupRecord | None:
        group = self._groups.get(group_id)
        if group is not None:
            return group
        name = self.link.key("group:", group_id)
        raw = await self.link.call("GET", name)
        if raw is not None:
            group = msgspec.msgpack.decode(raw, type=GroupRecord)
        else:
            group = await self.storage.get_group(group_id)
            if group is None:
                return None
            await self.link.call("SET", name, msgspec.msgpack.encode(group), "EX", RECORD_TTL)
        self._bound(self._groups)
        self._groups[group_id] = group
        return group

    # sets: Redis (per request), or PostgreSQL ------------------------------------------
    async def _set(
        self, name: str, load: Callable[[], Awaitable[list[str]]], script: Any = None
    ) -> set[str]:
        link = self.link
        if not link.usable:
            return set(await load())
        epoch = link.epoch
        token = secrets.token_hex(8)
        serial = self.changes.serial() if self.changes is not None else 0
        answer = await link.run(
            script or self._read,
            [link.epoch_key],
            [link.prefix, epoch, name[2:] if script else name, token, LEASE_MS],
        )
        if answer is not None and answer[0] == 1:
            members = {m.decode() for m in answer[1] if m}
            if len(answer) > 2 and self.changes is not None:
                self._peeked(name[2:], serial, answer)
            return members
        if answer is not None and answer[0] == -1:
            link.resync()
        values = await load()
        if answer is not None and answer[0] == 0:
            await link.run(
                self._fill, [link.epoch_key], [link.prefix, epoch, name, token, SET_TTL, *values]
            )
        return set(values)

    def _peeked(self, user_id: str, serial: int, answer: list[Any]) -> None:
        assert self.changes is not None
        _, members, earliest, last, marks = answer
        streams = [user_id, sent_stream(user_id), *(m.decode() for m in members)]
        self.changes.peeked(
            serial,
            int(earliest),
            int(last) if last else None,
            {s: int(m) for s, m in zip(streams, marks, strict=True) if s},
        )

    async def groups_of(self, user_id: str) -> set[str]:
        return await self._set(
            "g:" + user_id, lambda: self.storage.user_groups(user_id), self._read_groups
        )

    async def members_of(self, group_id: str) -> set[str]:
        return await self._set("m:" + group_id, lambda: self.storage.group_members(group_id))

    async def blocked_by(self, user_id: str) -> set[str]:
        return await self._set("b:" + user_id, lambda: self.storage.blocked_by(user_id))

    # updates after a committed write ---------------------------------------------------
    async def _mirror(self, op: str, pairs: list[tuple[str, str]]) -> None:
        args: list[str] = [self.link.prefix, op]
        for name, member in pairs:
            args += [name, member]
        if await self.link.run(self._update, [self.link.epoch_key], args) is None:
            # Not mirrored: retire the namespace, and answer only once nobody trusts it.
            await self.link.write_failed(wait=True)

    async def _new_sets(self, *names: str) -> None:
        link = self.link
        await link.run(self._new, [link.epoch_key], [link.prefix, SET_TTL, *names])

    async def user_created(self, user: UserRecord) -> None:
        self._users[user.id] = user
        await self._new_sets("g:" + user.id, "b:" + user.id)

    async def group_created(self, group: GroupRecord, first_member: str | None) -> None:
        self._groups[group.id] = group
        await self._new_sets("m:" + group.id)
        if first_member is not None:
            await self.member_added(group.id, first_member)

    async def member_added(self, group_id: str, user_id: str) -> None:
        await self._mirror("+", [("m:" + group_id, user_id), ("g:" + user_id, group_id)])

    async def member_removed(self, group_id: str, user_id: str) -> None:
        await self._mirror("-", [("m:" + group_id, user_id), ("g:" + user_id, group_id)])

    async def block_changed(self, blocker_id: str, blocked_id: str, blocked: bool) -> None:
        await self._mirror("+" if blocked else "-", [("b:" + blocker_id, blocked_id)])
