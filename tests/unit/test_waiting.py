"""What a waiting long-poll or live stream holds, and how its waiting ends.

A process holds one waiter per open long-poll and live stream, tens of thousands of them,
so waiting must be small: a waiter's time limit is an entry in the notifier's one timer
wheel (no timer of its own), and an open stream is one request coroutine with no task of
its own for its events or for noticing the client leave. These tests drive the notifier,
the message service and the ASGI app in-process and assert on those structures.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from parley.app import Parley, build
from parley.cache.base import Watch
from parley.cache.memory import Alarms, Notifier
from parley.http.server import ParleyApp, create_app
from parley.settings import Settings
from parley.storage.memory import MemoryStorage
from tests.unit.fakes import Services, make_services


def scheduled_timers() -> int:
    loop = asyncio.get_running_loop()
    return len(loop._scheduled)  # type: ignore[attr-defined]


async def until(condition: Any, rounds: int = 500) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


# --- the notifier -----------------------------------------------------------------------
async def test_many_waits_share_one_timer() -> None:
    notifier = Notifier()
    before = scheduled_timers()
    waits = [asyncio.create_task(notifier.wait([f"s{i}"], 30)) for i in range(200)]
    await until(lambda: notifier.waiting == 200)
    assert scheduled_timers() - before <= 1  # one wheel timer, not one per waiter
    for i in range(200):
        notifier.notify(f"s{i}")
    assert await asyncio.gather(*waits) == [True] * 200
    assert notifier.waiting == 0 and notifier._waiters == {}


async def test_a_time_limit_ends_the_wait_never_early() -> None:
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await notifier.wait(["a", "b"], 0.12) is False
    assert loop.time() - started >= 0.12 - 0.001  # the loop's own timer resolution
    assert notifier.waiting == 0 and notifier.alarms.pending == 0


async def test_waiters_of_one_stream_are_all_woken_and_forgotten() -> None:
    notifier = Notifier()
    first = asyncio.create_task(notifier.wait(["inbox"], 30))
    await until(lambda: notifier.waiting == 1)
    second = asyncio.create_task(notifier.wait(["inbox", "group"], 30))
    await until(lambda: notifier.waiting == 3)
    notifier.notify("inbox")
    assert await first is True and await second is True
    assert notifier._waiters == {}
    # one left after the other's time limit: still woken by a notification
    short = asyncio.create_task(notifier.wait(["inbox"], 0.05))
    long = asyncio.create_task(notifier.wait(["inbox"], 30))
    assert await short is False
    assert notifier.waiting == 1
    notifier.notify("inbox")
    assert await long is True and notifier._waiters == {}


async def test_a_cancelled_wait_leaves_nothing_registered() -> None:
    notifier = Notifier()
    waiting = asyncio.create_task(notifier.wait(["a"], 30))
    await until(lambda: notifier.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert notifier._waiters == {}


async def test_a_stopped_watch_ends_the_wait_at_once() -> None:
    notifier = Notifier()
    watch = Watch()
    waiting = asyncio.create_task(notifier.wait(["a"], 30, watch))
    await until(lambda: notifier.waiting == 1)
    watch.stop()
    assert await waiting is False and notifier.waiting == 0
    assert await notifier.wait(["a"], 30, watch) is False  # gone: no new wait


async def test_alarms_ring_buckets_in_order() -> None:
    alarms = Alarms()
    loop = asyncio.get_running_loop()
    now = loop.time()
    futures = [loop.create_future() for _ in range(3)]
    alarms.wake_at(now + 0.2, futures[0])
    alarms.wake_at(now + 0.06, futures[1])  # earlier than the armed timer: re-armed
    alarms.wake_at(now + 0.2, futures[2])
    await asyncio.wait_for(futures[1], 1)
    assert not futures[0].done() and not futures[2].done()
    await asyncio.wait_for(asyncio.gather(futures[0], futures[2]), 1)
    assert loop.time() >= now + 0.2 - 0.001 and alarms.pending == 0


# --- the message service ------------------------------------------------------------------
@pytest.fixture
def svc() -> Services:
    return make_services()


async def test_a_long_poll_with_a_watch_ends_when_its_client_goes(svc: Services) -> None:
    bob = (await svc.users.create("bob")).user.id
    cursor = (await svc.messages.check(bob, bob, None)).next_ts
    svc.clock.tick()
    watch = Watch()
    poll = asyncio.create_task(svc.messages.check(bob, bob, cursor, wait=30, watch=watch))
    await until(lambda: svc.notifier.waiting == 1)
    watch.stop()
    page = await asyncio.wait_for(poll, 1)
    assert page.messages == [] and page.next_ts >= cursor
    assert svc.notifier.waiting == 0


# --- live streams over the ASGI app ---------------------------------------------------------
class Client:
    """One client of the ASGI app, as the HTTP server presents it: ``receive`` hands out
    futures (the request, then one that resolves when the connection closes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.closed: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.chunks: list[bytes] = []
        self.asked = 0

    def receive(self) -> asyncio.Future[dict[str, Any]]:
        self.asked += 1
        if self.asked == 1:
            request = self.loop.create_future()
            request.set_result({"type": "http.request", "body": b"", "more_body": False})
            return request
        return self.closed

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        elif message.get("body"):
            self.chunks.append(message["body"])

    def close(self) -> None:
        self.closed.set_result({"type": "http.disconnect"})


async def request(
    app: ParleyApp, method: str, path: str, body: bytes = b"", query: bytes = b""
) -> Any:
    replies: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}
    await app(scope, receive, send)
    return json.loads(replies[1]["body"])


@pytest.fixture
async def parley() -> Any:
    settings = Settings.from_env({"PARLEY_AUTH": "none", "PARLEY_RATE_LIMITS": "off"})
    running: Parley = build(settings, MemoryStorage(), secret_key=b"k" * 32)
    await running.start()
    yield running
    await running.stop()


async def test_idle_streams_hold_no_task_of_their_own_and_end_when_clients_go(
    parley: Parley,
) -> None:
    app = create_app(parley)
    loop = asyncio.get_running_loop()
    users = [
        (await request(app, "POST", "/v1/users/create", b'{"username": "u%d"}' % i))["userId"]
        for i in range(50)
    ]
    tasks_before = len(asyncio.all_tasks())
    timers_before = scheduled_timers()
    clients = [Client(loop) for _ in users]
    served = [
        asyncio.create_task(
            app(
                {
                    "type": "http",
                    "method": "GET",
                    "path": f"/v1/messages/{user}/stream",
                    "query_string": b"",
                    "headers": [],
                },
                client.receive,
                client.send,
            )
        )
        for user, client in zip(users, clients, strict=True)
    ]
    await until(lambda: parley.notifier.waiting == len(users))
    assert all(client.chunks[0] == b"retry: 2000\n\n" for client in clients)
    # One task per stream: the request the server runs (here: created above); the events
    # and the client's departure are awaited without tasks, time limits on one timer.
    assert len(asyncio.all_tasks()) - tasks_before == len(users)
    assert scheduled_timers() - timers_before <= 1
    assert app.active == len(users)
    # a message reaches its stream while the others stay idle
    body = json.dumps({"senderId": users[0], "receiverId": users[1], "message": "hi"})
    sent = await request(app, "POST", "/v1/messages/send", body.encode(), b"type=private")
    await until(lambda: len(clients[1].chunks) == 3)
    assert sent["messageId"].encode() in clients[1].chunks[2]
    assert [len(client.chunks) for client in clients[2:]] == [2] * (len(users) - 2)
    for client in clients:
        client.close()
    await asyncio.wait_for(asyncio.gather(*served), 2)
    assert parley.notifier.waiting == 0 and app.active == 0
