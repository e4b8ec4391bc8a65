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

Besides budgets, :class:`Waiting` caps the long-polls and live streams one user and one
address hold open at once in a process (``waiting_per_user``, ``waiting_per_address``):
each one holds a request slot for up to a minute (a stream: for hours), so without a cap
one client could take every slot of ``PARLEY_MAX_CONCURRENCY``.

With Redis (``PARLEY_REDIS_URL``) the counters are shared by every process: one script call
per request increments each budget's counter for the current window (INCR, and EXPIRE on the
first hit), so the limit is exact across processes. If Redis fails, each process falls back
to its own counters until it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from parley.errors import RateLimited, TooManyWaiting
from parley.settings import RateLimits

if TYPE_CHECKING:
    from parley.cache.redis_link import RedisLink

WAITING_RETRY_SECONDS = 5  # Retry-After of a refused long-poll or stream

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


class Waiting:
    """Long-polls and live streams open right now, per user and per client address.

    :meth:`enter` counts one in (or refuses it with 429 ``too_many_waiting``) and returns
    the function that counts it out again; the caller runs that exactly once, when the
    request is over. A cap of 0 means no cap.
    """

    def __init__(self, per_user: int, per_address: int) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.users: dict[str, int] = {}
        self.addresses: dict[str, int] = {}
        self.rejected = 0

    def enter(self, user: str, address: str) -> Callable[[], None]:
        users, addresses = self.users, self.addresses
        held_by_user = users.get(user, 0)
        held_by_address = addresses.get(address, 0)
        if self.per_user and held_by_user >= self.per_user:
            self._refuse(f"{self.per_user} for this user")
        if self.per_address and held_by_address >= self.per_address:
            self._refuse(f"{self.per_address} for this address")
        users[user] = held_by_user + 1
        addresses[address] = held_by_address + 1

        def leave() -> None:
            _decrement(users, user)
            _decrement(addresses, address)

        return leave

    def _refuse(self, cap: str) -> None:
        self.rejected += 1
        raise TooManyWaiting(
            f"too many long-polls and streams open at once (at most {cap}); "
            "close one or retry later",
            WAITING_RETRY_SECONDS,
        )


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)  # the tables only hold keys with something open
