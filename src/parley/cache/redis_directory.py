"""The directory shared by every process: memberships and blocks in Redis sets.

Memberships and blocks change, and a change made through one process must hold on the
very next request to any other. So no process keeps them in memory: each request reads the
Redis set. A committed write never *patches* a set: it deletes it (with its fill lease),
and the next reader fills it from PostgreSQL. Deletions commute, so the order in which
writers' Redis calls arrive cannot matter (patches applied out of commit order could
leave a removed member in the set).

Filling a set from PostgreSQL races with writes. A reader that misses takes a *lease*
(``SET NX`` with a token) before reading PostgreSQL, and may store what it read only if
the lease is still its own; every write deletes the leases of the sets it touches::

    reader B: miss, lease=t1 ..... read PostgreSQL ..... fill if lease == t1  (refused)
    writer A:            commit; delete set and lease

A writer that dies between its commit and its delete is covered by the cache log: the
commit logged the keys in PostgreSQL, and no process trusts Redis again before the log
has been applied (``RedisLink._catch_up``). A conflict (409) deletes the sets too.

Users and groups never change once created, so each process keeps them in memory. Users
are read from PostgreSQL (once per process), never through Redis: Redis holds no token
hashes. Groups are shared through Redis.

When Redis cannot be trusted (see ``parley.cache.redis_link``) every read goes to PostgreSQL.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import msgspec

from parley.cache.base import event_stream, sent_stream
from parley.cache.memory import MemoryDirectory
from parley.cache.redis_link import RedisLink
from parley.domain.models import GroupRecord, TokenRecord, UserRecord
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
# its sent messages, each group): an idle check then costs one round trip
# (``RedisChanges.look``).
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
               redis.call('GET', ns .. 'w:sent:' .. ARGV[3]) or '0',
               redis.call('GET', ns .. 'w:ev:' .. ARGV[3]) or '0'}
for i = 1, #members do
  if members[i] ~= '' then
    marks[#marks + 1] = redis.call('GET', ns .. 'w:' .. members[i]) or '0'
    marks[#marks + 1] = redis.call('GET', ns .. 'w:ev:' .. members[i]) or '0'
  else marks[#marks + 1] = '0'; marks[#marks + 1] = '0' end
end
return {1, members, earliest, redis.call('GET', ns .. 'last') or '', marks}
"""

# Store what a reader read (ARGV[7:]) if its lease ARGV[4] is still its own; ARGV[6] is
# the cache-log position the read reflects (0: unknown), kept as the set's version.
FILL_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local ns = ARGV[1] .. ARGV[2] .. ':'
local lease = ns .. 'l:' .. ARGV[3]
if redis.call('GET', lease) ~= ARGV[4] then return 0 end
redis.call('DEL', lease)
local key = ns .. 's:' .. ARGV[3]
redis.call('DEL', key)
redis.call('SADD', key, '')
for i = 7, #ARGV, 500 do
  redis.call('SADD', key, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('EXPIRE', key, ARGV[5])
redis.call('SET', ns .. 'v:' .. ARGV[3], ARGV[6], 'EX', ARGV[5])
return 1
"""

# After a committed write, in whatever namespace Redis serves now: forget the sets named
# in ARGV[3:] and their fill leases; their version keys stay, as tombstones (version 0).
FORGET_SETS = """
local e = redis.call('GET', KEYS[1])
if not e then return 0 end
local ns = ARGV[1] .. e .. ':'
for i = 3, #ARGV do
  redis.call('DEL', ns .. 's:' .. ARGV[i], ns .. 'l:' .. ARGV[i])
  redis.call('SET', ns .. 'v:' .. ARGV[i], '0', 'EX', ARGV[2])
end
return 1
"""

# A new user's or group's sets start empty, unless something already touched them (a
# set's version key is written by every fill and left by every forget): so even a call
# that arrives late cannot bring back an empty set over a change. Nobody else knows the
# new id before the creating request answers.
NEW_SETS = """
local e = redis.call('GET', KEYS[1])
if not e then return 0 end
local ns = ARGV[1] .. e .. ':'
for i = 3, #ARGV do
  if redis.call('SET', ns .. 'v:' .. ARGV[i], '0', 'NX', 'EX', ARGV[2]) then
    redis.call('DEL', ns .. 's:' .. ARGV[i])
    redis.call('SADD', ns .. 's:' .. ARGV[i], '')
    redis.call('EXPIRE', ns .. 's:' .. ARGV[i], ARGV[2])
  end
end
return 1
"""

SET_TTL = 3600  # seconds a filled set lives (writes delete it; this only bounds memory)
# Without a cache log (DynamoDB) nothing repairs a set whose writer died between its
# commit and its delete but a later write, a 409 or expiry: expire sooner.
UNLOGGED_SET_TTL = 60
RECORD_TTL = 86400  # groups never change; this only bounds memory
LEASE_MS = 5000
LOCAL_MAX = 200_000


class Watermarks(NamedTuple):
    """The watermarks READ_GROUPS read with a user's groups, for ``RedisChanges.look``."""

    earliest: int  # the namespace's ``earliest``
    last: int | None  # the largest watermark of all (None: no message since ``earliest``)
    marks: dict[str, int]  # per stream the user reads (0: none)


class RedisDirectory(MemoryDirectory):
    """:class:`~parley.cache.base.Directory` shared by every process through Redis."""

    def __init__(self, storage: Storage, link: RedisLink) -> None:
        super().__init__(storage)
        self.link = link
        self._read = link.client.register_script(READ_SET)
        self._read_groups = link.client.register_script(READ_GROUPS)
        self._fill = link.client.register_script(FILL_SET)
        self._forget = link.client.register_script(FORGET_SETS)
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
        """Retire the namespace, and with it every process's users and tokens loaded under
        it; return only once no process can still trust them (``parley.cache.redis``).

        PostgreSQL retired it already, in the transaction of the revocation or deletion
        mark (``retires_cache_epoch``): then this only waits out the leases."""
        link = self.link
        if getattr(self.storage, "retires_cache_epoch", False):
            link.resync()
            await asyncio.sleep(link.lease + 2 * link.timeout + 0.05)
        else:
            await link.write_failed(wait=True)

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
    ) -> tuple[set[str], list[Any] | None]:
        """The set, and the script's whole answer when Redis had it (else None)."""
        link = self.link
        if not link.usable:
            return set(await load()), None
        epoch = link.epoch
        token = secrets.token_hex(8)
        answer = await link.run(
            script or self._read,
            [link.epoch_key],
            [link.prefix, epoch, name[2:] if script else name, token, LEASE_MS],
        )
        if answer is not None and answer[0] == 1:
            return {m.decode() for m in answer[1] if m}, answer
        if answer is not None and answer[0] == -1:
            link.resync()
        if answer is None or answer[0] != 0:
            return set(await load()), None  # no lease: read, do not fill
        version, ttl = 0, UNLOGGED_SET_TTL
        if link.log is not None:
            (values, version), ttl = await link.log.read_cached(name), SET_TTL
        else:
            values = await load()
        await link.run(
            self._fill,
            [link.epoch_key],
            [link.prefix, epoch, name, token, ttl, version, *values],
        )
        return set(values), None

    async def groups_with_watermarks(self, user_id: str) -> tuple[set[str], Watermarks | None]:
        """The user's groups and, when Redis had them, the watermarks of every stream the
        user reads, in one round trip (``None``: ask the watermarks separately)."""
        groups, answer = await self._set(
            "g:" + user_id, lambda: self.storage.user_groups(user_id), self._read_groups
        )
        if answer is None:
            return groups, None
        _, members, earliest, last, marks = answer
        streams = [user_id, sent_stream(user_id), event_stream(user_id)]
        for member in members:
            group = member.decode()
            streams += [group, event_stream(group) if group else ""]
        return groups, Watermarks(
            int(earliest),
            int(last) if last else None,
            {s: int(m) for s, m in zip(streams, marks, strict=True) if s},
        )

    async def groups_of(self, user_id: str) -> set[str]:
        return (await self.groups_with_watermarks(user_id))[0]

    async def members_of(self, group_id: str) -> set[str]:
        return (await self._set("m:" + group_id, lambda: self.storage.group_members(group_id)))[0]

    async def blocked_by(self, user_id: str) -> set[str]:
        return (await self._set("b:" + user_id, lambda: self.storage.blocked_by(user_id)))[0]

    # after a committed write (or a conflict that showed the cache was wrong) ------------
    async def _forget_sets(self, *names: str) -> None:
        link = self.link
        answer = await link.run(self._forget, [link.epoch_key], [link.prefix, SET_TTL, *names])
        if answer is not None:
            return
        # Not forgotten (Redis failed, or the answer was lost): retire the namespace, and
        # answer only once nobody trusts it.
        await self.link.write_failed(wait=True)

    async def _new_sets(self, *names: str) -> None:
        link = self.link
        await link.run(self._new, [link.epoch_key], [link.prefix, SET_TTL, *names])

    async def user_created(self, user: UserRecord) -> None:
        self._bound(self._users)
        self._users[user.id] = user
        await self._new_sets("g:" + user.id, "b:" + user.id)

    async def group_created(self, group: GroupRecord, first_member: str | None) -> None:
        self._bound(self._groups)
        self._groups[group.id] = group
        if first_member is None:
            await self._new_sets("m:" + group.id)
        else:
            await self.memberships_changed(group.id, first_member)

    async def memberships_changed(self, group_id: str, user_id: str) -> None:
        await self._forget_sets("m:" + group_id, "g:" + user_id)

    async def blocks_changed(self, blocker_id: str) -> None:
        await self._forget_sets("b:" + blocker_id)
