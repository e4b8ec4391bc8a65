from __future__ import annotations

import pytest

from parley.errors import RateLimited
from parley.http.ratelimit import RateLimiter
from parley.settings import RateLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_address_budget_and_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(address_per_minute=3), clock)
    for _ in range(3):
        await limiter.before_auth("1.2.3.4", "get_messages")
    with pytest.raises(RateLimited) as caught:
        await limiter.before_auth("1.2.3.4", "get_messages")
    assert 1 <= caught.value.retry_after <= 61
    await limiter.before_auth("5.6.7.8", "get_messages")  # other addresses are unaffected
    clock.now += 60
    await limiter.before_auth("1.2.3.4", "get_messages")  # a new window


async def test_separate_budgets_for_creations_and_sends() -> None:
    limiter = RateLimiter(RateLimits(creates_per_hour=2, sends_per_minute=2), Clock())
    await limiter.before_auth("a", "create_user")
    await limiter.before_auth("a", "create_group")
    with pytest.raises(RateLimited):
        await limiter.before_auth("a", "create_user")
    await limiter.before_auth("a", "get_user")  # other calls still pass
    await limiter.after_auth("u1", "send_message")
    await limiter.after_auth("u1", "send_message")
    with pytest.raises(RateLimited):
        await limiter.after_auth("u1", "send_message")
    await limiter.after_auth("u1", "get_messages")
