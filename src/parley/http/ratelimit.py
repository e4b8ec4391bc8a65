"""Abuse limits: fixed-window request budgets per client address and per token.

Each budget is a counter per key that resets when its window rolls over (the whole table is
dropped at once, so memory stays bounded by the keys seen in one window). A fixed window
lets a client spend up to twice its budget across a window boundary; the default budgets
are far above what a real client needs, so this only stops floods.

Budgets (``RateLimits`` in settings):
  * every request, per client address                     ``address_per_minute``
  * every authenticated request, per token                ``requests_per_minute``
  * user and group creation, per client address           ``creates_per_hour``
  * sends, per token                                      ``sends_per_minute``

With Redis (``PARLEY_REDIS_URL``) the counters are shared by every process: one script call
per request increments each budget's counter for the current window (INCR, and EXPIRE on the
first hit), so the limit is exact across processes. If Redis fails, each process falls back
to its own counters until it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from parley.errors import RateLimited
from parley.settings import RateLimits

if TYPE_CHECKING:
    from parley.cache.redis import RedisLink

CREATES = frozenset({"create_user", "create_group"})
SENDS = frozenset({"send_message"})


class Window:
    __slots__ = ("budget", "counts", "epoch", "name", "seconds")

    def __init__(self, name: str, budget: int, seconds: float) -> None:
        self.name = name
        self.budget = budget
        self.seconds = seconds
        self.epoch = -1
        self.counts: dict[str, int] = {}

    def hit(self, key: str, now: float) -> int | None:
        """Count one request; the seconds to wait when over budget, else None."""
        epoch = int(now // self.seconds)
        if epoch != self.epoch:
            self.epoch = epoch
            self.counts = {}
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        return self.wait(count, now)

    def wait(self, count: int, now: float) -> int | None:
        """Seconds until the window rolls over when ``count`` is over budget, else None."""
        if count > self.budget:
            return int((int(now // self.seconds) + 1) * self.seconds - now) + 1
        return None


Check = tuple[Window, str, str]  # window, key, what it limits


class RateLimiter:
    """Budgets counted in this process."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.address = Window("address", limits.address_per_minute, 60)
        self.token = Window("token", limits.requests_per_minute, 60)
        self.creates = Window("creates", limits.creates_per_hour, 3600)
        self.sends = Window("sends", limits.sends_per_minute, 60)
        self.rejected = 0

    def _reject(self, wait: int, what: str) -> None:
        self.rejected += 1
        raise RateLimited(f"too many requests ({what}); retry later", wait)

    async def _enforce(self, checks: Sequence[Check]) -> None:
        now = self.clock()
        for window, key, what in checks:
            wait = window.hit(key, now)
            if wait is not None:
                self._reject(wait, what)

    async def before_auth(self, address: str, route: str) -> None:
        checks: list[Check] = [(self.address, address, "per address")]
        if route in CREATES:
            checks.append((self.creates, address, "creations per address"))
        await self._enforce(checks)

    async def after_auth(self, actor: str, route: str) -> None:
        checks: list[Check] = [(self.token, actor, "per token")]
        if route in SENDS:
            checks.append((self.sends, actor, "sends per token"))
        await self._enforce(checks)


COUNT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  counts[i] = n
end
return counts
"""


class SharedRateLimiter(RateLimiter):
    """Budgets counted in Redis, shared by every process (wall-clock windows)."""

    def __init__(self, limits: RateLimits, link: RedisLink) -> None:
        super().__init__(limits, time.time)
        self.link = link
        self._count = link.client.register_script(COUNT)

    async def _enforce(self, checks: Sequence[Check]) -> None:
        now = self.clock()
        keys = [
            self.link.key("rate:", window.name, ":", str(int(now // window.seconds)), ":", key)
            for window, key, _ in checks
        ]
        ttl = int(max(window.seconds for window, _, _ in checks)) + 1
        counts = await self.link.run(self._count, keys, [ttl])
        if counts is None:  # Redis is unavailable: count here until it is back
            await super()._enforce(checks)
            return
        for (window, _, what), count in zip(checks, counts, strict=True):
            wait = window.wait(int(count), now)
            if wait is not None:
                self._reject(wait, what)
