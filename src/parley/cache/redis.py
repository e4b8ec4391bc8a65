"""One process's link to the shared Redis, and when what Redis says may be trusted.

Redis holds copies of PostgreSQL state (memberships, blocks, per-stream watermarks). A copy
is only right if every committed write was mirrored into it. A process that commits a
write but cannot mirror it (Redis down, cut off, slow) makes the copy wrong for everyone,
so it says so where everyone looks: it bumps the **cache epoch**, a counter in PostgreSQL.

    PostgreSQL   cache_epoch.epoch = E            (the truth about which copy is valid)
    Redis        {prefix}epoch = E                (the namespace being served)
                 {prefix}E:earliest = F           (clock frontier when namespace E opened)
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

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
  if cur > 0 then redis.call('EXPIRE', ARGV[1] .. cur .. ':earliest', 604800) end
end
if redis.call('EXISTS', ARGV[1] .. ARGV[2] .. ':earliest') == 1 then return 2 end
return 1
"""

# Record ``earliest`` (ARGV[3]) and the server's run_id (ARGV[4]) for namespace ARGV[2],
# if it is still the one served.
SEAL = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
redis.call('SET', ARGV[1] .. ARGV[2] .. ':earliest', ARGV[3], 'NX')
redis.call('SET', ARGV[1] .. ARGV[2] .. ':boot', ARGV[4], 'NX')
return 1
"""


@runtime_checkable
class EpochSource(Protocol):
    """Where the cache epoch lives (PostgreSQL: ``PostgresStorage``)."""

    async def cache_state(self) -> tuple[int, int]:
        """The cache epoch and the message commit frontier, read in one snapshot."""
        ...

    async def bump_cache_epoch(self) -> int: ...


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
        self.epoch_key = prefix + "epoch"
        self.epoch = 0  # the epoch PostgreSQL said, as last polled
        self.ready = 0  # the epoch whose namespace this process saw open in Redis
        self.trusted_until = 0.0  # monotonic deadline of the current lease
        self.healthy = True  # False: circuit open, Redis is not used until a probe succeeds
        self.failures = 0
        self.bumps = 0
        self._open = self.client.register_script(OPEN)
        self._seal = self.client.register_script(SEAL)
        self._tasks: list[asyncio.Task[None]] = []
        self._probe: asyncio.Task[None] | None = None
        self._bumping: asyncio.Task[None] | None = None
        self._next_bump: asyncio.Future[None] | None = None
        self._poll_now = asyncio.Event()
        self._stopping = False

    def connect(self, timeout: float | None) -> aioredis.Redis:
        """A client with no retries: a failed call fails fast and opens the circuit."""
        client: aioredis.Redis = aioredis.Redis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=max(self.timeout, 0.05),
            retry=Retry(NoBackoff(), 0),
            max_connections=256,
        )
        return client

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
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
            async with asyncio.timeout(self.timeout * 2):
                return await self.client.execute_command(command, *args)  # type: ignore[no-untyped-call]
        except FAILURES as exc:
            self.failed(exc)
            return None

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

    async def _poll_once(self) -> None:
        started = time.monotonic()
        try:
            epoch, _ = await self.source.cache_state()
        except ParleyError:
            return  # no renewal: the lease lapses and requests go to PostgreSQL
        self.epoch = max(self.epoch, epoch)
        if not self.healthy:
            return
        if self.ready == self.epoch and not await self._still_served(self.epoch):
            self.ready = 0
        if self.ready != self.epoch:
            await self._open_namespace(self.epoch)
        if self.ready == self.epoch:
            self.trusted_until = started + self.lease

    async def _still_served(self, epoch: int) -> bool:
        """Does Redis still serve namespace ``epoch``, on the server it was opened on?"""
        try:
            async with asyncio.timeout(self.timeout * 2):
                pipe = self.client.pipeline(transaction=False)
                pipe.get(self.epoch_key)
                pipe.get(self.key(str(epoch), ":boot"))
                pipe.info("server")
                served, boot, info = await pipe.execute()
        except FAILURES as exc:
            self.failed(exc)
            return False
        if served is None or int(served) != epoch:
            return False
        if boot is not None and boot.decode() != str(info.get("run_id", "")):
            log.warning("redis restarted since namespace %d opened; starting a new one", epoch)
            with contextlib.suppress(ParleyError):
                await self.write_failed(wait=False)
            return False
        return True

    async def _open_namespace(self, epoch: int) -> None:
        state = await self.run(self._open, [self.epoch_key], [self.prefix, epoch])
        if state == 1:
            # Read the frontier only now that Redis serves this namespace: every write
            # that commits later finds the namespace and mirrors into it.
            try:
                current, frontier = await self.source.cache_state()
            except ParleyError:
                return
            if current != epoch:
                self._poll_now.set()
                return
            run_id = await self._run_id()
            if run_id is None:
                return
            sealed = await self.run(
                self._seal, [self.epoch_key], [self.prefix, epoch, frontier, run_id]
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
