"""Rate limits shared through Redis are exact across processes, and survive its loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from parley.cache.redis_link import RedisLink
from parley.errors import RateLimited
from parley.http.ratelimit import SharedRateLimiter
from parley.settings import RateLimits
from tests.conftest import unavailable
from tests.integration.services import REDIS_URL, new_prefix, redis_unreachable


class NoEpochs:
    """The limiter uses plain commands only; the cache's epoch machinery is not started."""

    async def cache_state(self) -> tuple[int, int]:
        return 0, 0

    async def bump_cache_epoch(self) -> int:
        return 0


@pytest.fixture
async def links() -> AsyncIterator[list[RedisLink]]:
    reason = redis_unreachable()
    if reason:
        unavailable(reason)
    prefix = new_prefix()
    # A generous timeout: these tests are about exact counting while Redis answers, not
    # about how fast it answers on a loaded machine (a timeout opens the circuit).
    made = [RedisLink(REDIS_URL, prefix, NoEpochs(), timeout=5.0) for _ in range(2)]
    yield made
    for link in made:
        await link.stop()


async def attempt(limiter: SharedRateLimiter, actor: str) -> bool:
    try:
        await limiter.after_auth(actor, "send_message")
        return True
    except RateLimited:
        return False


async def test_budget_is_exact_across_processes(links: list[RedisLink]) -> None:
    limits = RateLimits(requests_per_minute=10_000, sends_per_minute=50)
    a, b = (SharedRateLimiter(limits, link) for link in links)
    results = await asyncio.gather(*(attempt(a if i % 2 else b, "u_1") for i in range(120)))
    assert all(link.healthy for link in links), "Redis failed during the test"
    assert results.count(True) == 50  # not 50 per process
    assert await attempt(a, "u_2")  # budgets are per token


async def test_falls_back_to_local_counts_without_redis(links: list[RedisLink]) -> None:
    limits = RateLimits(requests_per_minute=10_000, sends_per_minute=5)
    limiter = SharedRateLimiter(limits, links[0])
    links[0].healthy = False  # the circuit is open: Redis is not used
    results = [await attempt(limiter, "u_1") for _ in range(8)]
    assert results.count(True) == 5
