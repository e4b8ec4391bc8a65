"""The sign-in throttle: counted before any password is verified, shared by processes through
Redis, and still counting (per process) while Redis is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from parley.cache.redis_link import RedisLink
from parley.errors import RateLimited
from parley.services.signins import SignInLimits, SignInThrottle
from tests.conftest import unavailable
from tests.integration.services import REDIS_URL, new_prefix, redis_unreachable
from tests.integration.test_redis_ratelimit import NoEpochs


@pytest.fixture
async def links() -> AsyncIterator[list[RedisLink]]:
    reason = redis_unreachable()
    if reason:
        unavailable(reason)
    prefix = new_prefix()
    made = [RedisLink(REDIS_URL, prefix, NoEpochs(), timeout=5.0) for _ in range(2)]
    yield made
    for link in made:
        await link.stop()


async def tries(throttle: SignInThrottle, user: str, address: str) -> bool:
    try:
        await throttle.attempt(user, address)
        return True
    except RateLimited as exc:
        assert exc.retry_after >= 1
        return False


async def test_budgets_are_shared_by_processes(links: list[RedisLink]) -> None:
    limits = SignInLimits(per_user=7, per_address=1000, window=900)
    a, b = (SignInThrottle(limits, link) for link in links)
    got = await asyncio.gather(*(tries(a if i % 2 else b, "u_1", f"10.0.0.{i}") for i in range(40)))
    assert all(link.healthy for link in links), "Redis failed during the test"
    assert got.count(True) == 7  # not 7 per process
    limits = SignInLimits(per_user=1000, per_address=4, window=900)
    c, d = (SignInThrottle(limits, link) for link in links)
    got = await asyncio.gather(*(tries(c if i % 2 else d, f"u_{i}", "10.9.9.9") for i in range(40)))
    assert got.count(True) == 4


async def test_without_redis_each_process_still_counts() -> None:
    limits = SignInLimits(per_user=3, per_address=1000, window=900)
    throttle = SignInThrottle(limits, None)
    got = [await tries(throttle, "u_1", "a") for _ in range(10)]
    assert got == [True] * 3 + [False] * 7
    # a new window starts a new count
    moved = SignInThrottle(limits, None, clock=lambda: 10_000.0)
    assert await tries(moved, "u_1", "a")
