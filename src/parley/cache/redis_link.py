"""One process's link to the shared Redis, and when what Redis says may be trusted.

Redis holds copies of PostgreSQL state (memberships, blocks, per-stream watermarks). A copy
is only right if every committed write was mirrored into it. A process that commits a
write but cannot mirror it (Redis down, cut off, slow) makes the copy wrong for everyone,
so it says so where everyone looks: it bumps the **cache epoch**, a counter in PostgreSQL.

    PostgreSQL   cache_epoch.epoch = E            (the truth about which copy is valid)
                 cache_clock.pos, cache_log       (every change to a cached rule)
    Redis        {prefix}epoch = E                (the namespace being served)
                 {prefix}E:earliest = F           (clock frontier when namespace E opened)
                 {prefix}E:applied, :confirmed    (how far it caught up with PostgreSQL)
                 {prefix}E:s:<set>, :l:<set>      (cached sets and their fill leases)
                 {prefix}E:w:<stream>             (last message timestamp per stream)

* Every process polls the epoch (one tiny query every ``poll`` seconds) and trusts Redis
  for ``lease`` seconds after the start of a poll that saw namespace E open and current.
  A new epoch is opened in Redis by whichever process sees it first: it sets
  ``{prefix}epoch``, *then* reads the frontier F, then records ``earliest = F``. Missing
  watermarks mean "no change since ``earliest``"; older cursors get "maybe changed".
* Every request's script checks that Redis still serves the epoch the process polled;
  if not, the request is answered from PostgreSQL.
* A write mirrors into whatever namespace Redis serves at that moment (atomically, in a
  script), so a write racing an epoch change is never lost.
* A process that could not mirror a committed write bumps the epoch (coalesced), and for
  membership and block changes waits ``lease`` plus two timeouts before answering, so no
  process still trusts the old namespace when the client hears "done".
* Any Redis error opens the circuit: the process serves from PostgreSQL and probes Redis
  in the background until it answers again.
* Each namespace records the ``run_id`` of the Redis server it was opened on, and every
  poll compares it: a Redis that restarted (empty, or restored from an older snapshot that
  lacks mirrored writes) gets a new epoch before anyone trusts it again.
* A writer can also die between its commit and its Redis update. With PostgreSQL, every
  rule change logs the cached keys it makes stale in the same transaction (the cache
  log), and each namespace records how far it ``applied`` that log and up to which
  message position it ``confirmed`` the watermarks. A poll renews the lease only once
  the namespace caught up with the log position and the message frontier it read
  (``_catch_up``): a change whose writer died is applied by any other process, and no
  process trusts Redis without it for longer than one lease after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from parley.cache import redis_wire
from parley.cache.base import sent_stream
from parley.errors import ParleyError, Unavailable

log = logging.getLogger("parley.cache.redis")

FAILURES = (RedisError, OSError, TimeoutError)

# Open namespace ARGV[2]: 3 = Redis already serves a newer one, 2 = open and ready,
# 1 = current but its ``earliest`` still has to be recorded.
OPEN = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local e = tonumber(ARGV[2])
if cur > e then return 3 end
if cur < e then
  redis.call('SET', KEYS[1], ARGV[2])
  if cur > 0 then
    for _, name in ipairs({'earliest', 'boot', 'applied', 'confirmed', 'last'}) do
      redis.call('EXPIRE', ARGV[1] .. cur .. ':' .. name, 604800)
    end
  end
end
if redis.call('EXISTS', ARGV[1] .. ARGV[2] .. ':earliest') == 1 then return 2 end
return 1
"""

# Record ``earliest`` and ``confirmed`` (ARGV[3]), the server's run_id (ARGV[4]) and
# ``applied`` (ARGV[5]) for namespace ARGV[2], if it is still the one served.
SEAL = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local ns = ARGV[1] .. ARGV[2] .. ':'
if redis.call('EXISTS', ns .. 'earliest') == 1 then return 1 end
redis.call('SET', ns .. 'confirmed', ARGV[3])
redis.call('SET', ns .. 'boot', ARGV[4])
redis.call('SET', ns .. 'applied', ARGV[5])
redis.call('SET', ns .. 'earliest', ARGV[3])
return 1
"""

# Catch namespace ARGV[2] up with PostgreSQL, first half: forget the cached sets of the
# ARGV[6] (set, log position) pairs that follow, with their fill leases, unless the set was
# filled from a read at or after that position; raise the watermarks of the (stream,
# position) pairs after them. Returns the streams whose watermark it raised (their writers
# had not). Both steps are idempotent: a catch-up that dies after this is done again.
CATCH_UP = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return {0} end
local ns = ARGV[1] .. ARGV[2] .. ':'
local n = tonumber(ARGV[6])
for i = 7, 6 + n, 2 do
  local version = redis.call('GET', ns .. 'v:' .. ARGV[i])
  if (not version) or tonumber(version) < tonumber(ARGV[i + 1]) then
    redis.call('DEL', ns .. 's:' .. ARGV[i], ns .. 'l:' .. ARGV[i])
    redis.call('SET', ns .. 'v:' .. ARGV[i], '0', 'EX', 3600)
  end
end
local raised = {}
local top = 0
for i = 7 + n, #ARGV, 2 do
  local key = ns .. 'w:' .. ARGV[i]
  local ts = tonumber(ARGV[i + 1])
  if ts > top then top = ts end
  local current = redis.call('GET', key)
  if (not current) or tonumber(current) < ts then
    redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[5])
    raised[#raised + 1] = ARGV[i]
  end
end
if top > 0 then
  local current = redis.call('GET', ns .. 'last')
  if (not current) or tonumber(current) < top then redis.call('SET', ns .. 'last', top) end
end
return {1, raised}
"""

# Second half, once the wake-ups for the range were published: raise ``applied`` to
# ARGV[3] and ``confirmed`` to ARGV[4] (never lowered).
CONFIRM = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local ns = ARGV[1] .. ARGV[2] .. ':'
local function raise(name, value)
  local current = redis.call('GET', ns .. name)
  if (not current) or tonumber(current) < tonumber(value) then
    redis.call('SET', ns .. name, value)
  end
end
raise('applied', ARGV[3])
raise('confirmed', ARGV[4])
return 1
"""

WATERMARK_TTL = 7 * 86400  # seconds a stream's watermark lives after its last message
LOG_KEEP_SECONDS = 3600.0  # cache-log rows older than this are pruned
PRUNE_EVERY = 300.0  # seconds between one process's prunes
MAX_LOG_ROWS = 10_000  # log positions one poll applies; more: a new namespace
MAX_MESSAGES = 100_000  # messages one poll catches up; more: a new namespace


# Shared counters (``count``): add one to each key, set its lifetime when it is new.
def _info(raw: bytes) -> dict[str, str]:
    """The fields of an ``INFO`` reply."""
    fields = {}
    for line in raw.decode().splitlines():
        name, colon, value = line.partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value
    return fields


COUNT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  counts[i] = n
end
return counts
"""


@runtime_checkable
class EpochSource(Protocol):
    """Where the cache epoch lives (PostgreSQL: ``PostgresStorage``)."""

    async def cache_state(self) -> tuple[int, int]:
        """The cache epoch and the message commit frontier, read in one snapshot."""
        ...

    async def bump_cache_epoch(self) -> int: ...


@runtime_checkable
class CacheLog(Protocol):
    """A source that also logs every change to a cached rule (PostgreSQL)."""

    async def cache_clock(self) -> tuple[int, int, int]:
        """The cache epoch, the message commit frontier and the cache-log position."""
        ...

    async def cache_log(self, after: int, upto: int) -> dict[str, int] | None: ...

    async def read_cached(self, key: str) -> tuple[list[str], int]: ...

    async def stream_tops(
        self, after: int, upto: int, limit: int
    ) -> tuple[dict[str, int], dict[str, int]] | None: ...

    async def prune_cache_log(self, keep_seconds: float) -> None: ...


class RedisLink:
    def __init__(
        self,
        url: str,
        prefix: str,
        source: EpochSource,
        *,
        timeout: float = 0.05,
        poll: float = 0.1,
        lease: float = 0.3,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.source = source
        self.timeout = timeout
        self.poll = poll
        self.lease = lease
        self.client = self.connect(timeout)
        # The request path's scripts and commands share one pipelined connection (see
        # ``redis_wire``); the poller, pub/sub and probes keep redis-py.
        self.wire = redis_wire.Wire(url, max(timeout, 0.05)) if redis_wire.supported(url) else None
        self.epoch_key = prefix + "epoch"
        self.epoch = 0  # the epoch PostgreSQL said, as last polled
        self.ready = 0  # the epoch whose namespace this process saw open in Redis
        self.trusted_until = 0.0  # monotonic deadline of the current lease
        self.healthy = True  # False: circuit open, Redis is not used until a probe succeeds
        self.failures = 0
        self.bumps = 0
        self._open = self.client.register_script(OPEN)
        self._seal = self.client.register_script(SEAL)
        self._catch_up_script = self.client.register_script(CATCH_UP)
        self._confirm_script = self.client.register_script(CONFIRM)
        self.log: CacheLog | None = source if isinstance(source, CacheLog) else None
        # Called by a catch-up with every stream that got a message, an event or a change of
        # groups in its range, after their watermarks were raised and before the range is
        # confirmed; publishes their wake-ups and says whether that worked.
        # (Also with the streams whose watermark it had to raise.)
        self.on_caught_up: Callable[[list[str], list[str]], Awaitable[bool]] | None = None
        self.caught_up = 0  # catch-ups that found work a writer had left undone
        self._pruned_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._probe: asyncio.Task[None] | None = None
        self._bumping: asyncio.Task[None] | None = None
        self._next_bump: asyncio.Future[None] | None = None
        self._poll_now = asyncio.Event()
        self._stopping = False
        self._counter: Any = None

    def connect(self, timeout: float | None, name: str | None = None) -> aioredis.Redis:
        """A client with no retries: a failed call fails fast and opens the circuit.
        ``name``: the connections' name in Redis (``CLIENT LIST``)."""
        client: aioredis.Redis = aioredis.Redis.from_url(
            self.url,
            client_name=name,
            socket_timeout=timeout,
            socket_connect_timeout=max(self.timeout, 0.05),
            retry=Retry(NoBackoff(), 0),
            max_connections=256,
        )
        return client

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        if self.wire is not None:
            self.wire = redis_wire.Wire(self.url, self.wire.connect_timeout)
        await self._poll_once()
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="parley-redis-epoch"))

    async def stop(self) -> None:
        self._stopping = True
        tasks = [*self._tasks, self._probe, self._bumping]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks.clear()
        if self.wire is not None:
            self.wire.shutdown()
        await self.client.aclose()

    # state -----------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """May this process answer from Redis right now?"""
        return (
            self.healthy
            and self.ready == self.epoch
            and self.ready > 0
            and time.monotonic() < self.trusted_until
        )

    @property
    def state(self) -> str:
        if not self.healthy:
            return "unavailable"
        return "ok" if self.usable else "degraded"

    def key(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    # calls -----------------------------------------------------------------------------
    async def run(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a registered script; ``None`` when Redis failed (the circuit opens)."""
        if not self.healthy:
            return None
        try:
            if self.wire is not None:
                return await self.wire.evalsha(
                    script.sha, script.script, keys, args, timeout=self.timeout * 2
                )
            async with asyncio.timeout(self.timeout * 2):
                return await script(keys=list(keys), args=list(args))
        except FAILURES as exc:
            self.failed(exc)
            return None

    async def call(self, command: str, *args: Any) -> Any:
        """Run one command; ``None`` when Redis failed (the circuit opens)."""
        if not self.healthy:
            return None
        try:
            if self.wire is not None:
                return await self.wire.execute(command, *args, timeout=self.timeout * 2)
            async with asyncio.timeout(self.timeout * 2):
                return await self.client.execute_command(command, *args)  # type: ignore[no-untyped-call]
        except FAILURES as exc:
            self.failed(exc)
            return None

    async def count(self, keys: Sequence[str], ttl: int) -> list[int] | None:
        """:class:`parley.cache.base.Counters` in Redis: one script, atomic per key."""
        if self._counter is None:
            self._counter = self.client.register_script(COUNT)
        counts = await self.run(self._counter, [self.key(k) for k in keys], [ttl])
        return None if counts is None else [int(c) for c in counts]

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.healthy:
            log.warning(
                "redis unavailable (%s: %s); answering from PostgreSQL until it is back",
                type(exc).__name__,
                exc,
            )
        self.healthy = False
        self.trusted_until = 0.0  # only a fresh poll (which checks the server) restores trust
        if self.wire is not None:
            self.wire.close()  # its calls in flight fail too; the next call reconnects
        if (self._probe is None or self._probe.done()) and not self._stopping:
            self._probe = asyncio.create_task(self._probe_loop(), name="parley-redis-probe")

    def resync(self) -> None:
        """Redis serves another namespace than we polled: poll again now."""
        self._poll_now.set()

    # mirroring failures ----------------------------------------------------------------
    async def write_failed(self, *, wait: bool) -> None:
        """A committed write could not be mirrored: stop every process trusting Redis.

        Bumps the epoch in PostgreSQL (one bump covers every failure that happened before
        it started). With ``wait``, returns only once no process can still hold a lease
        on the old namespace. Raises ``Unavailable`` if PostgreSQL is down too.
        """
        loop = asyncio.get_running_loop()
        if self._next_bump is None:
            self._next_bump = loop.create_future()
        future = self._next_bump
        if self._bumping is None or self._bumping.done():
            self._bumping = asyncio.create_task(self._bump_loop(), name="parley-redis-bump")
        await asyncio.shield(future)
        if wait:
            await asyncio.sleep(self.lease + 2 * self.timeout + 0.05)

    async def _bump_loop(self) -> None:
        while self._next_bump is not None:
            future, self._next_bump = self._next_bump, None
            try:
                epoch = await self.source.bump_cache_epoch()
            except Exception as exc:
                failure = exc if isinstance(exc, ParleyError) else Unavailable("cache epoch")
                future.set_exception(failure)
                future.exception()  # marked as retrieved: the callers re-raise it
                continue
            self.bumps += 1
            self.epoch = max(self.epoch, epoch)
            future.set_result(None)

    # epochs ----------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll):
                    await self._poll_now.wait()
            self._poll_now.clear()
            try:
                await self._poll_once()
            except Exception:  # never let the poller die; the lease just lapses
                log.exception("cache epoch poll failed")

    async def _clock(self) -> tuple[int, int, int | None]:
        """The epoch, the message frontier and (with a cache log) the log position."""
        if self.log is not None:
            return await self.log.cache_clock()
        epoch, frontier = await self.source.cache_state()
        return epoch, frontier, None

    async def _poll_once(self) -> None:
        started = time.monotonic()
        try:
            epoch, frontier, position = await self._clock()
        except ParleyError:
            return  # no renewal: the lease lapses and requests go to PostgreSQL
        self.epoch = max(self.epoch, epoch)
        if not self.healthy:
            return
        served = None
        if self.ready == self.epoch:
            served = await self._still_served(self.epoch)
            if served is None:
                self.ready = 0
        if self.ready != self.epoch:
            await self._open_namespace(self.epoch)
            if self.ready == self.epoch:
                served = await self._still_served(self.epoch)
        if self.ready != self.epoch or served is None:
            return
        # Trust Redis only once it reflects every change committed before this poll began
        # (a writer that died between its commit and its own Redis update included).
        if position is not None and not await self._catch_up(served, position, frontier):
            return
        self.trusted_until = started + self.lease
        if self.log is not None and started - self._pruned_at > PRUNE_EVERY:
            self._pruned_at = started
            with contextlib.suppress(ParleyError):
                await self.log.prune_cache_log(LOG_KEEP_SECONDS)

    async def _catch_up(self, served: tuple[int, int], position: int, frontier: int) -> bool:
        """Bring the namespace up to cache-log ``position`` and message ``frontier``."""
        applied, confirmed = served
        if applied >= position and confirmed >= frontier:
            return True
        assert self.log is not None
        try:
            keys: dict[str, int] | None = {}
            if position - applied > MAX_LOG_ROWS:
                keys = None
            elif applied < position:
                keys = await self.log.cache_log(applied, position)
            tops = None
            if keys is not None:
                tops = await self.log.stream_tops(confirmed, frontier, MAX_MESSAGES)
            if keys is None or tops is None:
                # Too far behind, or the log was pruned: a new namespace is cheaper.
                log.warning("redis cache namespace %d is too far behind", self.epoch)
                await self.write_failed(wait=False)
                return False
        except ParleyError:
            return False
        received, sent = tops
        forget: list[str | int] = []
        for key, at in keys.items():
            forget += [key, at]
        marks: list[str | int] = []
        for stream, ts in received.items():
            marks += [stream, ts]
        for sender, ts in sent.items():
            marks += [sent_stream(sender), ts]
        answer = await self.run(
            self._catch_up_script,
            [self.epoch_key],
            [
                self.prefix,
                self.epoch,
                position,
                frontier,
                WATERMARK_TTL,
                len(forget),
                *forget,
                *marks,
            ],
        )
        if answer is None or int(answer[0]) != 1:
            return False
        raised = [s.decode() for s in answer[1]]
        if keys or raised:
            self.caught_up += 1
        # Wake every reader of the range, not only those whose watermark had to be raised: a
        # writer may have died after raising its watermarks and before publishing. Only
        # then is the range confirmed, so a catch-up that dies in between is done again.
        woken = [*received, *(sent_stream(s) for s in sent)]
        woken += [key[2:] for key in keys if key.startswith("g:")]  # their groups changed
        if woken and self.on_caught_up is not None and not await self.on_caught_up(woken, raised):
            return False
        confirmed = await self.run(
            self._confirm_script,
            [self.epoch_key],
            [self.prefix, self.epoch, position, frontier],
        )
        return confirmed is not None and int(confirmed) == 1

    async def _still_served(self, epoch: int) -> tuple[int, int] | None:
        """Does Redis still serve namespace ``epoch``, on the server it was opened on?
        If so: how far it has applied the cache log and confirmed message watermarks."""
        names = [
            self.epoch_key,
            *(self.key(str(epoch), n) for n in (":boot", ":applied", ":confirmed")),
        ]
        try:
            if self.wire is not None:
                *values, raw = await self.wire.many(
                    [*(("GET", n) for n in names), ("INFO", "server")], timeout=self.timeout * 2
                )
                served, boot, applied, confirmed = values
                info = _info(raw)
            else:
                async with asyncio.timeout(self.timeout * 2):
                    pipe = self.client.pipeline(transaction=False)
                    for name in names:
                        pipe.get(name)
                    pipe.info("server")
                    served, boot, applied, confirmed, info = await pipe.execute()
        except FAILURES as exc:
            self.failed(exc)
            return None
        if served is None or int(served) != epoch:
            return None
        if boot is not None and boot.decode() != str(info.get("run_id", "")):
            log.warning("redis restarted since namespace %d opened; starting a new one", epoch)
            with contextlib.suppress(ParleyError):
                await self.write_failed(wait=False)
            return None
        if self.log is not None and (applied is None or confirmed is None):
            # Opened without a record of what it applied: nothing can vouch for it.
            with contextlib.suppress(ParleyError):
                await self.write_failed(wait=False)
            return None
        return int(applied or 0), int(confirmed or 0)

    async def _open_namespace(self, epoch: int) -> None:
        state = await self.run(self._open, [self.epoch_key], [self.prefix, epoch])
        if state == 1:
            # Read the frontier and the log position only now that Redis serves this
            # namespace (and before anything can be cached in it: reads wait for the
            # seal): every write that commits later finds the namespace and updates it,
            # or is caught up from the log.
            try:
                current, frontier, position = await self._clock()
            except ParleyError:
                return
            if current != epoch:
                self._poll_now.set()
                return
            run_id = await self._run_id()
            if run_id is None:
                return
            sealed = await self.run(
                self._seal,
                [self.epoch_key],
                [self.prefix, epoch, frontier, run_id, position or 0],
            )
            state = 2 if sealed else 0
        if state == 2:
            if self.ready != epoch:
                log.info("redis cache namespace %d open", epoch)
            self.ready = epoch
        elif state == 3:
            self._poll_now.set()

    async def _run_id(self) -> str | None:
        try:
            async with asyncio.timeout(self.timeout * 2):
                info = await self.client.info("server")
        except FAILURES as exc:
            self.failed(exc)
            return None
        return str(info.get("run_id", ""))

    async def _probe_loop(self) -> None:
        delay = 0.1
        while not self._stopping and not self.healthy:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            try:
                async with asyncio.timeout(max(self.timeout * 4, 0.2)):
                    await self.client.ping()
            except FAILURES:
                continue
            self.healthy = True
            log.warning("redis is back; using it again")
            self._poll_now.set()
