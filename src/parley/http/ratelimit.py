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
"""

from __future__ import annotations

import time
from collections.abc import Callable

from parley.errors import RateLimited
from parley.settings import RateLimits

CREATES = frozenset({"create_user", "create_group"})
SENDS = frozenset({"send_message"})


class Window:
    __slots__ = ("budget", "counts", "epoch", "seconds")

    def __init__(self, budget: int, seconds: float) -> None:
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
        if count > self.budget:
            return int((epoch + 1) * self.seconds - now) + 1
        return None


class RateLimiter:
    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.address = Window(limits.address_per_minute, 60)
        self.token = Window(limits.requests_per_minute, 60)
        self.creates = Window(limits.creates_per_hour, 3600)
        self.sends = Window(limits.sends_per_minute, 60)
        self.rejected = 0

    def _check(self, window: Window, key: str, what: str) -> None:
        wait = window.hit(key, self.clock())
        if wait is not None:
            self.rejected += 1
            raise RateLimited(f"too many requests ({what}); retry later", wait)

    def before_auth(self, address: str, route: str) -> None:
        self._check(self.address, address, "per address")
        if route in CREATES:
            self._check(self.creates, address, "creations per address")

    def after_auth(self, actor: str, route: str) -> None:
        self._check(self.token, actor, "per token")
        if route in SENDS:
            self._check(self.sends, actor, "sends per token")
