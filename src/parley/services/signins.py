"""The sign-in throttle: password attempts per user and per client address.

Every password attempt (``POST /v1/sessions``, and the password checks of changing a
password or deleting an account) is counted *before* the password is verified, in a fixed
window of ``window`` seconds, per user id and per address. Over either budget the attempt
is refused with ``RateLimited`` (429 + ``Retry-After``) without verifying anything. So from
one address at most ``per_address`` passwords are tried per window, and against one user
at most ``per_user`` (a window boundary can let through up to twice a budget in one
window's length, never more). Counting before verifying also means concurrent guesses
cannot overtake the count.

It is on whatever ``PARLEY_RATE_LIMITS`` says: those are request budgets for benchmarks,
this protects passwords. With Redis the counters are shared by every process (one script
call, INCR + EXPIRE); if Redis fails, each process counts on its own until it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from parley.cache.base import Counters
from parley.errors import RateLimited


@dataclass(frozen=True, slots=True)
class SignInLimits:
    per_user: int = 10
    per_address: int = 100
    window: int = 900  # seconds


class SignInThrottle:
    def __init__(
        self,
        limits: SignInLimits,
        shared: Counters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits
        self.shared = shared
        self.clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}
        self.refused = 0

    async def attempt(self, user_id: str, address: str) -> None:
        """Count one password attempt; RateLimited if over a budget."""
        now = self.clock()
        window = int(now // self.limits.window)
        keys = [f"signin:{window}:u:{user_id}", f"signin:{window}:a:{address}"]
        counts = None
        if self.shared is not None:
            counts = await self.shared.count(keys, self.limits.window + 1)
        if counts is None:
            if window != self._window:
                self._window, self._counts = window, {}
            counts = []
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1
                counts.append(self._counts[key])
        user_count, address_count = (int(c) for c in counts)
        if user_count > self.limits.per_user or address_count > self.limits.per_address:
            self.refused += 1
            wait = int((window + 1) * self.limits.window - now) + 1
            raise RateLimited("too many sign-in attempts; retry later", wait)
