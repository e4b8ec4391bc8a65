"""Cross-process wake-ups: Redis pub/sub feeding :meth:`Notifier.notify`.

Every process publishes the streams of the messages it stored (``Notifier.broadcast``)
on one channel and subscribes to it; a message from another process wakes the local
long-polls and live streams of those streams. A wake-up is a hint: one that is lost
(Redis down, a dropped connection) only delays an answer until the waiter's next check,
and the waiters re-check on their own while Redis cannot be trusted.

While the process is subscribed, every wake-up published after the subscription reaches it
(Redis delivers a channel's messages in order on a live connection, and a subscriber that
falls too far behind is disconnected, never skipped): ``Notifier.reliable`` is true and
waiters sleep until woken. When the subscription is lost, and again once it is back,
every local waiter is poked (``Notifier.poke_all``): it re-checks at once, and while
unsubscribed it re-checks on its own every few seconds.

Publishing never blocks the request path: streams queue up and one task publishes them
in batches, after the watermarks were raised (``marked`` runs before ``notify_all``), so
a woken waiter finds the change. A write's answer waits for its batch (``flushed``): when
a client hears "sent", the wake-up has left Redis for every subscribed process.

Polls answered from wake-ups
----------------------------
A poll that finds nothing records its look (as a live stream does); the next poll of the
same user with the same cursor is answered "nothing new" without a Redis call when none
of its streams was notified since, the subscription and the cache namespace are unchanged
(``mark``) and every byte Redis sent on the subscription has been read (``settled``). The
subscription's messages are handled as the event loop reads them (``redis_wire``), so

    a message acknowledged through any process (its batch was published before the
    answer)  =>  its wake-up is in this process's socket or already handled
             =>  a later poll here either sees unread bytes and asks Redis, or was
                 told of the change: it does not answer "nothing new".

The one gap is the network itself: a wake-up packet delayed between Redis and this host
for longer than the client's whole round trip through the writer (a retransmission) lets
one poll answer "nothing new"; the next poll after it arrives sees the message. Over a
``rediss://`` URL (redis-py's pub/sub) polls always ask Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence

import msgspec
from redis.asyncio.client import PubSub

from parley.cache import redis_wire
from parley.cache.memory import Notifier
from parley.cache.redis_changes import RedisChanges
from parley.cache.redis_link import FAILURES, RedisLink

log = logging.getLogger("parley.cache.wakeups")

QUEUE_MAX = 100_000


class Signal(msgspec.Struct, array_like=True):
    users: list[str]
    fields: dict[str, str]


class Wakeup(msgspec.Struct, array_like=True):
    origin: str
    streams: list[str]
    signals: list[Signal] = []  # ephemeral signals (typing) for listening streams
    # woken without counting as news for idle checks in flight (a catch-up's repeats)
    again: list[str] = []


class RedisWakeups:
    def __init__(self, link: RedisLink, notifier: Notifier, changes: RedisChanges) -> None:
        self.link = link
        self.notifier = notifier
        self.changes = changes
        self.channel = link.key("wake")
        self.origin = os.urandom(6).hex()
        self.received = 0
        self.subscriptions = 0  # subscriptions confirmed (the first, then one per loss)
        self.resubscribe_after = 0.1  # seconds after a lost subscription, doubling to 2
        self._pending: list[str] = []
        self._dropped = False  # wake-ups left out of a full queue: they count as failed
        self._signals: list[Signal] = []
        self._queued = 0  # wake-ups and signals queued so far
        self._sent = 0  # of those, how many were published (or given up)
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self._subscription: redis_wire.Subscription | None = None
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Subscriptions hold a connection and wait on it: their own client, no read timeout.
        self._listener = link.connect(None, name=f"parley-wake-{self.origin}")

    async def start(self) -> None:
        self._stopping = False
        self._reliable(False)  # until subscribed
        self.notifier.broadcast = self.publish
        self.notifier.broadcast_signal = self.publish_signal
        # With a cache log, catch-ups wake the readers of every range (a writer that died
        # before publishing included); without one a waiter cannot know nothing was lost.
        self.notifier.mark = self.mark if self.link.log is not None else None
        self.notifier.flush = self.flushed
        own = self.link.log is not None and redis_wire.supported(self.link.url)
        self.notifier.settled = self.settled if own else None
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="parley-redis-publish"),
            asyncio.create_task(self._listen_loop(), name="parley-redis-listen"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self.notifier.broadcast = None
        self.notifier.broadcast_signal = None
        self.notifier.flush = None
        self.notifier.settled = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._listener.aclose()

    # publishing ------------------------------------------------------------------------
    def publish(self, streams: list[str]) -> None:
        if len(self._pending) < QUEUE_MAX:
            self._pending.extend(streams)
        else:
            self._dropped = True
        self._queued += 1
        self._ready.set()

    def publish_signal(self, users: list[str], fields: dict[str, str]) -> None:
        if len(self._signals) < QUEUE_MAX:
            self._signals.append(Signal(users, fields))
        self._queued += 1
        self._ready.set()

    async def flushed(self) -> None:
        """Return once everything queued so far was published (or given up on: then the
        namespace is being retired). Bounded: a Redis that hangs costs a few timeouts."""
        if self._sent >= self._queued or self._stopping:
            return
        future = asyncio.get_running_loop().create_future()
        self._flushes.append((self._queued, future))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), max(self.link.timeout * 8, 0.5))

    async def _publish_loop(self) -> None:
        while not self._stopping:
            await self._ready.wait()
            self._ready.clear()
            upto = self._queued
            streams, self._pending = list(dict.fromkeys(self._pending)), []
            signals, self._signals = self._signals, []
            dropped, self._dropped = self._dropped, False
            try:
                if ((streams or signals) and not await self._send(streams, signals)) or dropped:
                    # Waiters elsewhere may sleep through these changes: retire the
                    # namespace, so every process's streams look again at their next
                    # keep-alive.
                    await self.link.write_failed(wait=False)
            finally:
                self._sent = upto
                waiting, self._flushes = self._flushes, []
                for seq, future in waiting:
                    if seq > upto:
                        self._flushes.append((seq, future))
                    elif not future.done():
                        future.set_result(None)

    async def _send(
        self, streams: list[str], signals: list[Signal], again: Sequence[str] = ()
    ) -> bool:
        if not self.link.healthy:
            return False
        payload = msgspec.msgpack.encode(Wakeup(self.origin, streams, signals, list(again)))
        return await self.link.call("PUBLISH", self.channel, payload) is not None

    async def caught_up(self, streams: list[str], raised: list[str]) -> bool:
        """A catch-up's wake-ups (``RedisLink.on_caught_up``): here at once, and published
        before the catch-up confirms its range. Only the watermarks it raised turn a
        concurrent idle check's "no" into a "maybe" (``RedisChanges.heard``): the others
        were raised by their writers, and a check that started after that sees them."""
        self.changes.heard(raised)
        for stream in streams:
            self.notifier.notify(stream)
        first = set(raised)
        return await self._send(raised, [], [s for s in streams if s not in first])

    def mark(self) -> tuple[int, int, bool]:
        """``Notifier.mark`` with Redis: what changes when a wake-up may have been lost
        (the subscription's generation, the cache epoch, trust in Redis)."""
        return (self.notifier.generation, self.link.epoch, self.link.usable)

    def settled(self) -> bool:
        """Has every wake-up Redis delivered to this process been handled? (Subscribed,
        and nothing unread on the subscription's socket.)"""
        subscription = self._subscription
        return self.notifier.reliable and subscription is not None and subscription.unread() == 0

    # listening -------------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        lost = 0  # subscriptions lost in a row
        while not self._stopping:
            try:
                if redis_wire.supported(self.link.url):
                    await self._listen_own()
                else:
                    await self._listen_pubsub()
            except FAILURES as exc:
                log.debug("redis subscription lost: %s", exc)
            finally:
                if self.notifier.reliable:
                    lost = 0
                self._reliable(False)
            first = self.resubscribe_after
            await asyncio.sleep(min(first * 2**lost, max(2.0, first)))
            lost = min(lost + 1, 8)

    def _reliable(self, value: bool) -> None:
        """Record whether this process hears every wake-up, and poke every waiter."""
        self.notifier.reliable = value
        self.notifier.generation += 1
        self.notifier.poke_all()

    async def _listen_own(self) -> None:
        """Subscribed on a connection of its own, whose messages are handled as read."""
        name = f"parley-wake-{self.origin}"
        subscription = redis_wire.Subscription(self.link.url, self.channel, self._heard, name=name)
        timeout = max(self.link.timeout * 10, 1.0)
        try:
            await subscription.open(timeout)
            self._subscription = subscription
            self.subscriptions += 1
            self._reliable(True)
            while not self._stopping:
                try:  # a silent channel: make sure the connection is alive
                    await asyncio.wait_for(asyncio.shield(subscription.closed), 5.0)
                except TimeoutError:
                    await subscription.ping(timeout)
                else:
                    return
        finally:
            self._subscription = None
            subscription.close()

    async def _listen_pubsub(self) -> None:
        pubsub: PubSub = self._listener.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            await self._listen(pubsub)
        finally:
            with contextlib.suppress(*FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _listen(self, pubsub: PubSub) -> None:
        idle = 0
        while not self._stopping:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                idle += 1
                if idle >= 5:  # a silent channel: make sure the connection is alive
                    idle = 0
                    async with asyncio.timeout(max(self.link.timeout * 10, 1.0)):
                        await pubsub.ping()
                continue
            idle = 0
            if message.get("type") == "subscribe":
                # From here on every wake-up reaches this process; those published while
                # it was not subscribed were lost: every waiter re-checks now.
                self.subscriptions += 1
                self._reliable(True)
                continue
            if message.get("type") == "message":
                self._heard(message["data"])

    def _heard(self, data: bytes) -> None:
        """One published wake-up: wake the local waiters it names."""
        try:
            wake = msgspec.msgpack.decode(data, type=Wakeup)
        except msgspec.DecodeError:
            return
        if wake.origin != self.origin:
            self.received += 1
            if wake.streams:
                self.changes.heard(wake.streams)
            for stream in wake.streams:
                self.notifier.notify(stream)
            for stream in wake.again:
                self.notifier.notify(stream)
            for signal in wake.signals:
                self.notifier.deliver(signal.users, signal.fields)
