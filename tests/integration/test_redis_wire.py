"""The pipelined Redis connection of the request path (``parley.cache.redis_wire``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from parley.cache.redis_wire import Wire, supported
from tests.conftest import unavailable
from tests.integration import services
from tests.integration.redis_proxy import TcpProxy

pytestmark = [pytest.mark.redis]

ECHO = "return ARGV[1]"


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    reason = services.redis_unreachable()
    if reason:
        unavailable(reason)
    connection = Wire(services.REDIS_URL, 2.0)
    yield connection
    connection.shutdown()


def test_only_plain_urls_are_taken() -> None:
    assert supported("redis://127.0.0.1:6379/0") and supported("unix:///run/redis.sock")
    assert not supported("rediss://cache.internal:6380/0")


async def test_concurrent_calls_get_their_own_replies(wire: Wire) -> None:
    sha = "0" * 40  # unknown to Redis: the first call loads the script itself
    replies = await asyncio.gather(
        *(wire.evalsha(sha, ECHO, [], [f"n{i}"], timeout=2.0) for i in range(200))
    )
    assert replies == [f"n{i}".encode() for i in range(200)]
    assert await wire.many([("ECHO", "a"), ("ECHO", "b")], timeout=2.0) == [b"a", b"b"]
    with pytest.raises(ResponseError):
        await wire.execute("NO-SUCH-COMMAND", timeout=2.0)
    assert await wire.execute("ECHO", "after an error", timeout=2.0) == b"after an error"


async def test_a_caller_that_gave_up_leaves_the_others_in_step(wire: Wire) -> None:
    await wire.execute("PING", timeout=2.0)
    first = asyncio.ensure_future(wire.execute("ECHO", "abandoned", timeout=2.0))
    second = asyncio.ensure_future(wire.execute("ECHO", "kept", timeout=2.0))
    await asyncio.sleep(0)
    first.cancel()  # its reply still comes, and must not go to the next caller
    assert await second == b"kept"
    assert await wire.execute("ECHO", "next", timeout=2.0) == b"next"


async def test_a_reply_waiting_unread_is_not_a_timeout(wire: Wire) -> None:
    await wire.execute("PING", timeout=2.0)
    call = asyncio.ensure_future(wire.execute("ECHO", "late", timeout=0.01))
    for _ in range(3):
        await asyncio.sleep(0)  # the command leaves
    # this process stalls (not Redis): the reply arrives meanwhile, unread
    time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the point
    assert await call == b"late"


async def test_a_lost_connection_fails_the_calls_in_flight_then_reconnects() -> None:
    reason = services.redis_unreachable()
    if reason:
        unavailable(reason)
    port = int(services.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = await TcpProxy(port).start()
    connection = Wire(proxy.url, 2.0)
    try:
        assert await connection.execute("PING", timeout=2.0) == b"PONG"
        proxy.cut("hang")
        stuck = asyncio.ensure_future(connection.execute("PING", timeout=30.0))
        await asyncio.sleep(0.05)
        proxy.cut("refuse")  # drops the connection under the waiting call
        with pytest.raises(RedisConnectionError):
            await stuck
        with pytest.raises((RedisConnectionError, OSError, TimeoutError)):
            await connection.execute("PING", timeout=2.0)
        proxy.restore()
        assert await connection.execute("PING", timeout=2.0) == b"PONG"
        connection.shutdown()
        with pytest.raises(RedisConnectionError):
            await connection.execute("PING", timeout=2.0)
    finally:
        connection.shutdown()
        await proxy.stop()
