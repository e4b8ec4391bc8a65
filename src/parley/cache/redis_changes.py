"""Cross-process "maybe changed": per-stream watermarks in Redis.

The shared form of :class:`parley.cache.memory.ChangeCache`. After a message commits,
its writer raises ``{prefix}E:w:<stream>`` to the message's timestamp (never lowers it),
and ``{prefix}E:last`` to the largest timestamp of all. An idle check asks one script, in
one round trip, whether any of the caller's streams has a watermark above its cursor:

* a cursor older than the namespace's ``earliest``: maybe changed;
* a cursor at or above ``last``: nothing changed anywhere;
* a cursor older than the watermarks' lifetime (they expire a week after a stream's last
  message, to bound memory): maybe changed;
* otherwise: changed if one of the streams' watermarks is above the cursor (a stream with
  none has not changed since ``earliest``).

So

    changed(streams, T) is False   =>   no message newer than T exists in those streams

and an idle check touches no database. ``look`` reads the user's groups and the
watermarks of all its streams together (``RedisDirectory.groups_with_watermarks``, one
script): an idle check is one Redis round trip. Whenever Redis cannot be trusted the
answer is "maybe changed" and the check reads PostgreSQL.

A wake-up that arrives while a check is waiting for Redis would otherwise be lost (the
waiter registers only after the answer); ``heard`` records the streams notified during
the call, and a "no" for one of them becomes a "maybe".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from parley.cache.base import Look, streams_of
from parley.cache.redis_directory import RedisDirectory
from parley.cache.redis_link import WATERMARK_TTL, RedisLink

MARK = """
local e = redis.call('GET', KEYS[1])
if not e then return 0 end
local ns = ARGV[1] .. e .. ':'
local top = 0
for i = 3, #ARGV, 2 do
  local key = ns .. 'w:' .. ARGV[i]
  local ts = tonumber(ARGV[i + 1])
  if ts > top then top = ts end
  local current = redis.call('GET', key)
  if (not current) or tonumber(current) < ts then
    redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[2])
  else
    redis.call('EXPIRE', key, ARGV[2])
  end
end
local last = redis.call('GET', ns .. 'last')
if (not last) or tonumber(last) < top then redis.call('SET', ns .. 'last', top) end
return 1
"""

CHANGED = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return -1 end
local ns = ARGV[1] .. ARGV[2] .. ':'
local earliest = redis.call('GET', ns .. 'earliest')
if not earliest then return -1 end
local after = tonumber(ARGV[3])
if after < tonumber(earliest) then return 1 end
local last = redis.call('GET', ns .. 'last')
if (not last) or after >= tonumber(last) then return 0 end
if after < tonumber(ARGV[4]) then return 1 end
for i = 5, #ARGV do
  local last = redis.call('GET', ns .. 'w:' .. ARGV[i])
  if last and tonumber(last) > after then return 1 end
end
return 0
"""

TRUST_SPAN_MS = 6 * 86400 * 1000  # a cursor older than this gets "maybe" (TTL, less a day)
HEARD_MAX = 100_000


class RedisChanges:
    """:class:`~parley.cache.base.Changes` shared by every process through Redis."""

    def __init__(self, link: RedisLink, directory: RedisDirectory) -> None:
        self.link = link
        self.directory = directory
        self._mark = link.client.register_script(MARK)
        self._changed = link.client.register_script(CHANGED)
        self._heard: dict[str, int] = {}
        self._serial = 0
        self._floor = 0  # serials below this were forgotten
        self._queued: list[tuple[str, int]] = []
        self._next: asyncio.Future[None] | None = None
        self._flushing: asyncio.Task[None] | None = None

    async def start(self, earliest: int) -> None:
        """Nothing to do: each namespace records its own ``earliest`` when it opens."""

    def heard(self, streams: Sequence[str]) -> None:
        """These streams were just notified (here or through pub/sub)."""
        self._serial += 1
        if len(self._heard) > HEARD_MAX:
            self._heard.clear()
            self._floor = self._serial
        for stream in streams:
            self._heard[stream] = self._serial

    async def marked(self, marks: Sequence[tuple[str, int]]) -> None:
        """Raise the watermarks; concurrent calls share one script run (group commit)."""
        self.heard([stream for stream, _ in marks])
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        self._queued.extend(marks)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="parley-redis-marks")
        await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._next is not None:
            future, marks = self._next, self._queued
            self._next, self._queued = None, []
            args: list[str | int] = [self.link.prefix, WATERMARK_TTL]
            for stream, ts in marks:
                args += [stream, ts]
            try:
                if await self.link.run(self._mark, [self.link.epoch_key], args) is None:
                    # Stored, but other processes' idle checks cannot see it: retire the
                    # namespace (the next one's ``earliest`` covers these messages).
                    await self.link.write_failed(wait=False)
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # marked as retrieved: the callers re-raise it
            else:
                future.set_result(None)

    async def look(
        self, user_id: str, after: int | None, include_sent: bool, include_events: bool = False
    ) -> Look:
        serial = self._serial  # wake-ups heard from here on turn a "no" into a "maybe"
        groups, seen = await self.directory.groups_with_watermarks(user_id)
        if after is None:
            return Look(groups, True)
        streams = streams_of(user_id, groups, include_sent, include_events)
        if seen is None:  # the groups came from PostgreSQL: ask the watermarks alone
            return Look(groups, await self.changed(streams, after))
        if after < seen.earliest or not self.link.usable:
            return Look(groups, True)
        if seen.last is not None and after < seen.last:  # some stream moved
            floor = time.time_ns() // 1_000_000 - TRUST_SPAN_MS
            marks = seen.marks
            if after < floor or any(marks.get(s, after + 1) > after for s in streams):
                return Look(groups, True)
        return Look(groups, self._heard_since(serial, streams))

    async def changed(self, streams: Sequence[str], after: int) -> bool:
        """Whether any of ``streams`` may have changed after ``after`` (one script)."""
        link = self.link
        if not link.usable:
            return True
        floor = time.time_ns() // 1_000_000 - TRUST_SPAN_MS
        serial = self._serial
        answer = await link.run(
            self._changed, [link.epoch_key], [link.prefix, link.epoch, after, floor, *streams]
        )
        if answer is None:
            return True
        if answer == -1:
            link.resync()
            return True
        if answer == 1:
            return True
        return self._heard_since(serial, streams)

    def _heard_since(self, serial: int, streams: Sequence[str]) -> bool:
        if serial < self._floor:
            return True
        heard = self._heard
        return any(heard.get(stream, 0) > serial for stream in streams)
