"""The cache ports for one process: everything in memory.

**Directory.** :class:`MemoryDirectory` serves users, groups, memberships and blocks from
memory. It loads an entry from storage the first time it is asked for and keeps it; every
write made through this process *forgets* the entries it touched after storage has
committed (they are loaded again on use), so the order in which writes finish never
matters. A conflict (409) forgets them too: the cache was wrong, the next read is right.
Unknown ids are not remembered (they are looked up again), so a user created by another
process is found. A load that raced with a write is not kept: every write bumps
``_epoch``, and a loaded value is cached only if the epoch did not move while it was read.

**Changes.** :class:`ChangeCache` is a "maybe changed" cache: it remembers, for each
stream, the timestamp of its last message, for every message stored after ``earliest``.
A stream it has no entry for has not changed since ``earliest``. So

    changed_since(streams, T) is False   =>   no message newer than T exists in them

and an idle poll is answered without touching the database. When the cache is full it
forgets its oldest entries and raises ``earliest`` to the newest position forgotten, so an
eviction can make it say "maybe" more often but can never hide a change.
:class:`LocalChanges` pairs it with the directory for the one-call idle check.

**Wake-ups.** :class:`Notifier`: waiters register on the streams they read;
``notify(stream)`` wakes every waiter of that stream. Every stored message goes through it:
in-process for the embedded default, and fed from Redis pub/sub
(``parley.cache.redis_wakeups``) when several processes share a database.

Waiting is kept small, because a process holds one waiter per open long-poll and live
stream (tens of thousands): a waiter is one future, registered under its streams (a
stream with one waiter holds it directly, not in a set of one), and its time limit is an
entry in the process's one :class:`Alarms` wheel rather than a timer object of its own.

This keeps one process right. Several processes on one database need Redis
(``parley.cache.redis_directory``) or ``parley.cache.uncached`` (``PARLEY_CACHE=none``).
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import TypeVar

from parley.cache.base import Directory, Look, Watch, event_stream, sent_stream
from parley.domain.models import GroupRecord, TokenRecord, UserRecord
from parley.storage.base import Storage

TOKENS_MAX = 200_000  # users whose tokens are kept; the whole map is dropped beyond


# directory ---------------------------------------------------------------------------
class MemoryDirectory:
    """:class:`~parley.cache.base.Directory` kept in this process's memory."""

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

    async def tokens(self, user_id: str, fresh: bool = False) -> dict[bytes, TokenRecord]:
        """A user's live tokens by hash; ``fresh`` reads storage even if cached. A token
        not in the map is looked up again by the caller (another process may have minted
        it); a revocation or an account deletion drops the entries before it answers."""
        tokens = None if fresh else self._tokens.get(user_id)
        if tokens is None:
            epoch = self._epoch
            tokens = {t.hash: t for t in await self.storage.user_tokens(user_id)}
            if epoch == self._epoch:
                if len(self._tokens) > TOKENS_MAX:
                    self._tokens.clear()
                self._tokens[user_id] = tokens
        return tokens

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


# change cache ------------------------------------------------------------------------
class ChangeCache:
    def __init__(self, earliest: int, max_entries: int = 1_000_000) -> None:
        self.earliest = earliest
        self.max_entries = max_entries
        self._last: dict[str, int] = {}

    def mark(self, stream: str, ts: int) -> None:
        last = self._last.pop(stream, None)
        if last is not None and last > ts:
            ts = last
        self._last[stream] = ts  # re-inserted: the dict stays in (roughly) position order
        if len(self._last) > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        drop = max(1, self.max_entries // 10)
        for stream in list(self._last)[:drop]:
            ts = self._last.pop(stream)
            if ts > self.earliest:
                self.earliest = ts

    def changed_since(self, streams: Iterable[str], after: int) -> bool:
        if after < self.earliest:
            return True
        last = self._last
        for stream in streams:
            ts = last.get(stream)
            if ts is not None and ts > after:
                return True
        return False

    def changed_for(
        self,
        user_id: str,
        groups: Iterable[str],
        include_sent: bool,
        after: int,
        include_events: bool = False,
    ) -> bool:
        """``changed_since`` over every stream ``user_id`` reads (``streams_of``), without
        building the list: this runs on every idle check."""
        if after < self.earliest:
            return True
        get = self._last.get
        ts = get(user_id)
        if ts is not None and ts > after:
            return True
        for group in groups:
            ts = get(group)
            if ts is not None and ts > after:
                return True
        if include_sent:
            ts = get(sent_stream(user_id))
            if ts is not None and ts > after:
                return True
        if include_events:
            for stream in (user_id, *groups):
                ts = get(event_stream(stream))
                if ts is not None and ts > after:
                    return True
        return False

    def __len__(self) -> int:
        return len(self._last)


class LocalChanges:
    """:class:`~parley.cache.base.Changes` for one process: a :class:`ChangeCache` in
    memory, asked together with the directory's groups."""

    def __init__(self, directory: Directory, max_entries: int = 1_000_000) -> None:
        self.directory = directory
        self.cache = ChangeCache(earliest=0, max_entries=max_entries)

    async def start(self, earliest: int) -> None:
        self.cache.earliest = earliest

    async def marked(self, marks: Sequence[tuple[str, int]]) -> None:
        for stream, ts in marks:
            self.cache.mark(stream, ts)

    async def look(
        self, user_id: str, after: int | None, include_sent: bool, include_events: bool = False
    ) -> Look:
        groups = await self.directory.groups_of(user_id)
        if after is None:
            return Look(groups, True)
        changed = self.cache.changed_for(user_id, groups, include_sent, after, include_events)
        return Look(groups, changed)


# wake-ups ----------------------------------------------------------------------------
Waiters = asyncio.Future[bool] | set[asyncio.Future[bool]]


class Alarms:
    """Many time limits on one loop timer: a future to wake at a time goes into the
    bucket of its ``TICK`` (rounded up, so never early); one timer, set for the earliest
    bucket, wakes a whole bucket at once. Futures already done when their bucket comes
    are skipped."""

    TICK = 0.05  # seconds: a limit ends at most this much late

    def __init__(self) -> None:
        self._buckets: dict[int, list[asyncio.Future[bool]]] = {}
        self._order: list[int] = []  # bucket numbers, a heap
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake_at(self, when: float, future: asyncio.Future[bool]) -> None:
        """Resolve ``future`` with False, if still pending, once the loop's clock
        reaches ``when``."""
        slot = math.ceil(when / self.TICK)
        bucket = self._buckets.get(slot)
        if bucket is None:
            self._buckets[slot] = bucket = []
            heapq.heappush(self._order, slot)
        bucket.append(future)
        loop = future.get_loop()
        if self._timer is None or slot < self._timer_slot or loop is not self._loop:
            self._loop = loop
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._order:
            self._timer_slot = self._order[0]
            self._timer = loop.call_at(self._timer_slot * self.TICK, self._ring, loop)

    def _ring(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._order and self._order[0] * self.TICK <= now:
            for future in self._buckets.pop(heapq.heappop(self._order)):
                if not future.done():
                    future.set_result(False)
        self._arm(loop)

    @property
    def pending(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())


T = TypeVar("T")


def _put(table: dict[str, T | set[T]], key: str, item: T) -> None:
    """Add ``item`` under ``key`` in a table holding one item, or a set of several."""
    present = table.get(key)
    if present is None or present is item:
        table[key] = item
    elif isinstance(present, set):
        present.add(item)
    else:
        table[key] = {present, item}


def _drop(table: dict[str, T | set[T]], key: str, item: T) -> None:
    present = table.get(key)
    if present is item:
        del table[key]
    elif isinstance(present, set):
        present.discard(item)
        if len(present) == 1:
            table[key] = next(iter(present))
        elif not present:
            del table[key]


HEARD_MAX = 100_000  # streams remembered by ``Notifier.heard_since`` (then: "maybe")


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, Waiters] = {}
        self.alarms = Alarms()
        self.wakeups = 0
        # Set by a cross-process channel (Redis pub/sub): called with the streams of every
        # message stored by this process, so other processes can wake their waiters.
        self.broadcast: Callable[[list[str]], None] | None = None
        # Set by the same channel: called with every signal raised in this process.
        self.broadcast_signal: Callable[[list[str], dict[str, str]], None] | None = None
        # Users' listening waiters: one Watch, or a set of them when a user has several.
        self._listeners: dict[str, Watch | set[Watch]] = {}
        self.signals = 0
        # Every wake-up for this process's waiters reaches it: true for one process; the
        # cross-process channel keeps it true only while it is subscribed.
        self.reliable = True
        self.generation = 0  # raised whenever wake-ups may have been lost
        # Which streams were notified when (``heard_since``): a waiter that was not
        # waiting at that moment (it was writing) still learns of it.
        self.serial = 0
        self._heard: dict[str, int] = {}
        self._heard_floor = 0
        # What a waiter compares to know that no wake-up meant for it was lost since it
        # last looked (None: it cannot know, and always looks again).
        self.mark: Callable[[], Hashable] | None = lambda: self.generation
        # Whether this process applied the wake-ups of every write answered anywhere, so a
        # poll may be answered from them (None: polls always look; see ``Wakeups``).
        self.settled: Callable[[], bool] | None = None
        # Waits until the wake-ups queued so far reached the processes that rely on them.
        self.flush: Callable[[], Awaitable[None]] | None = None

    async def wait(
        self, streams: Iterable[str], timeout: float, watch: Watch | None = None
    ) -> bool:
        """Wait until one of ``streams`` is notified (True) or ``timeout`` passes (False).
        With ``watch``, its ``stop()`` also ends the wait (False)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if watch is not None:
            if watch.gone:
                return False
            watch.future = future
        keys = list(streams)
        for key in keys:
            self._add(key, future)
        self.alarms.wake_at(loop.time() + timeout, future)
        try:
            return await future
        finally:
            for key in keys:
                self._remove(key, future)
            if watch is not None:
                watch.future = None

    def _add(self, key: str, future: asyncio.Future[bool]) -> None:
        _put(self._waiters, key, future)

    def _remove(self, key: str, future: asyncio.Future[bool]) -> None:
        _drop(self._waiters, key, future)

    def notify_all(self, streams: Iterable[str]) -> None:
        """Wake the waiters of these streams here and, through ``broadcast``, elsewhere."""
        for stream in streams:
            self.notify(stream)
        if self.broadcast is not None:
            self.broadcast(list(streams))

    def listen(self, user_id: str, watch: Watch) -> None:
        _put(self._listeners, user_id, watch)

    def unlisten(self, user_id: str, watch: Watch) -> None:
        _drop(self._listeners, user_id, watch)

    def signal(self, user_ids: Sequence[str], fields: dict[str, str]) -> None:
        """Pass a signal to the listening streams here and, through
        ``broadcast_signal``, elsewhere."""
        self.deliver(user_ids, fields)
        if self.broadcast_signal is not None:
            self.broadcast_signal(list(user_ids), fields)

    def deliver(self, user_ids: Iterable[str], fields: dict[str, str]) -> None:
        """Pass a signal to this process's listening waiters of these users."""
        for user_id in user_ids:
            present = self._listeners.get(user_id)
            if present is None:
                continue
            for watch in list(present) if isinstance(present, set) else (present,):
                if watch.gone:  # a waiter that ended without saying so
                    self.unlisten(user_id, watch)
                else:
                    watch.signal(fields)
                    self.signals += 1

    def poke_all(self) -> None:
        """Wake every waiter here to re-check now: wake-ups may have been lost, or may be
        lost from now on (the cross-process channel went down or came back)."""
        for waiting in list(self._waiters.values()):
            for future in list(waiting) if isinstance(waiting, set) else (waiting,):
                if not future.done():
                    future.set_result(True)
        for user_id, present in list(self._listeners.items()):
            for watch in list(present) if isinstance(present, set) else (present,):
                if watch.gone:
                    self.unlisten(user_id, watch)
                else:
                    watch.poke()

    async def flushed(self) -> None:
        """Return once the wake-ups queued so far have left for the other processes."""
        if self.flush is not None:
            await self.flush()

    def heard_since(self, serial: int, streams: Iterable[str]) -> bool:
        """Was one of ``streams`` notified after ``serial`` (a past ``self.serial``)?"""
        if serial < self._heard_floor:
            return True
        heard = self._heard
        return any(heard.get(stream, 0) > serial for stream in streams)

    def notify(self, stream: str) -> None:
        self.serial += 1
        if len(self._heard) >= HEARD_MAX:
            self._heard.clear()
            self._heard_floor = self.serial
        self._heard[stream] = self.serial
        present = self._waiters.get(stream)
        if present is None:
            return
        for future in list(present) if isinstance(present, set) else (present,):
            if not future.done():
                future.set_result(True)
                self.wakeups += 1

    @property
    def waiting(self) -> int:
        return sum(len(w) if isinstance(w, set) else 1 for w in self._waiters.values())
