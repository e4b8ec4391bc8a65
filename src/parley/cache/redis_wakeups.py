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
(``mark``) and the process holds a **listener lease** (``settled``). The lease makes that
exact, whatever the delays between the processes and Redis:

* A process answering polls this way is a *listener*: its subscription connection (RESP3,
  ``redis_wire.Subscription``) renews ``{prefix}wl[origin] = Redis time + LEASE`` every
  ``RENEW`` seconds, and it trusts the lease locally until ``sent + LEASE x 0.75``. Redis
  answers a connection in order, so when a renewal's answer is handled, every wake-up
  published before it ran has been handled too.
* A writer publishes a batch with a sequence number, in a script that also returns the
  listeners whose leases are live at that moment (``PUBLISH_WAKE``). Each listener, having
  applied the batch, acknowledges it on the writer's own channel. A write is answered
  (``flushed``) only once every such listener acknowledged, or its lease, as recorded when
  the batch was published, has run out by the writer's clock.

So a poll answered from memory after a write was acknowledged came from a process that
had applied the write's wake-up (it acknowledged; its streams were heard: it looks), or
from one holding a lease renewed after the publish, whose answer it handled after the
batch (so it had applied it too). A listener that stalls or is cut off delays writes by
at most one lease and then answers polls only through Redis until it renews. Over a
``rediss://`` URL (redis-py's pub/sub) a process is not a listener and its polls always
ask Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence

import msgspec
from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError

from parley.cache import redis_wire
from parley.cache.memory import Notifier
from parley.cache.redis_changes import RedisChanges
from parley.cache.redis_link import FAILURES, RedisLink

log = logging.getLogger("parley.cache.wakeups")

QUEUE_MAX = 100_000
LEASE = 1.0  # seconds a listener's lease lasts in Redis (a stalled one delays writes this long)
RENEW = 0.25  # seconds between a listener's renewals
TRUSTED = 0.75  # the share of a lease a listener trusts, from the moment it asked

# Publish a batch; answer Redis's time (ms) and the live listeners with their lease ends,
# this process left out.
PUBLISH_WAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('PUBLISH', ARGV[1], ARGV[2])
local out = {now}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  if live[i] ~= ARGV[3] then
    out[#out + 1] = live[i]
    out[#out + 1] = live[i + 1]
  end
end
return out
"""

# A listener's lease: ends LEASE after Redis's time now; leases long over are dropped.
RENEW_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
return now
"""


class Signal(msgspec.Struct, array_like=True):
    users: list[str]
    fields: dict[str, str]


class Wakeup(msgspec.Struct, array_like=True):
    origin: str
    streams: list[str]
    signals: list[Signal] = []  # ephemeral signals (typing) for listening streams
    # woken without counting as news for idle checks in flight (a catch-up's repeats)
    again: list[str] = []
    seq: int = 0  # the writer's batch number, for listeners to acknowledge (0: none)


class _Acks:
    """One published batch waiting for its listeners (see the module text)."""

    __slots__ = ("acked", "done", "handles", "pending")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.acked: set[str] = set()  # acknowledged, possibly before the publish's answer
        self.pending: set[str] = set()
        self.handles: list[asyncio.TimerHandle] = []

    def drop(self, listener: str) -> None:
        if listener in self.pending:
            self.pending.discard(listener)
            if not self.pending:
                self.finish()

    def finish(self) -> None:
        for handle in self.handles:
            handle.cancel()
        if not self.done.done():
            self.done.set_result(None)


class RedisWakeups:
    def __init__(self, link: RedisLink, notifier: Notifier, changes: RedisChanges) -> None:
        self.link = link
        self.notifier = notifier
        self.changes = changes
        self.channel = link.key("wake")
        self._wake_channel = self.channel.encode()
        self.origin = os.urandom(6).hex()
        self.received = 0
        self.subscriptions = 0  # subscriptions confirmed (the first, then one per loss)
        self.resubscribe_after = 0.1  # seconds after a lost subscription, doubling to 2
        self._pending: list[str] = []
        self._dropped = False  # wake-ups left out of a full queue: they count as failed
        self._signals: list[Signal] = []
        self.subscription_url = link.url  # where the subscription connects (tests move it)
        # A connection of our own (RESP3, a listener lease), or redis-py's pub/sub (rediss://,
        # or a Redis before 6)
        self.own_subscription = redis_wire.supported(link.url)
        self.listeners_key = link.key("wl")
        self.ack_channel = link.key("ack:", self.origin)
        self.lease_until = 0.0  # monotonic: this process's listener lease, as it trusts it
        self.acks_sent = 0
        self.leases_waited_out = 0  # listeners a batch waited for until their lease ended
        self._seq = 0  # batches published by this process
        self._open: asyncio.Future[None] | None = None  # the batch being gathered
        self._inflight: set[asyncio.Future[None]] = set()  # published, not acknowledged
        self._acks: dict[int, _Acks] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._subscription: redis_wire.Subscription | None = None
        self._publish_wake = link.client.register_script(PUBLISH_WAKE)
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
        # (a listener needs the cache log's catch-ups too, and its own subscription)
        listener = self.link.log is not None and self.own_subscription
        self.notifier.settled = self.settled if listener else None
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
        self.lease_until = 0.0
        if self._subscription is not None:  # writers need not wait for this lease to end
            await self.link.call("ZREM", self.listeners_key, self.origin)
        for acks in list(self._acks.values()):
            acks.finish()
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
        self._gathering()

    def publish_signal(self, users: list[str], fields: dict[str, str]) -> None:
        if len(self._signals) < QUEUE_MAX:
            self._signals.append(Signal(users, fields))
        self._gathering()

    def _gathering(self) -> None:
        if self._open is None:
            self._open = asyncio.get_running_loop().create_future()
        self._ready.set()

    async def flushed(self) -> None:
        """Return once every batch queued or published so far is acknowledged by every live
        listener (or its lease ran out), or was given up on (then the namespace is retired
        and this waits until no process trusts it). Bounded by a lease and a second."""
        waits = [f for f in (self._open, *self._inflight) if f is not None and not f.done()]
        if not waits or self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LEASE + 1.0):
                for future in waits:  # shielded: other writers wait on the same batches
                    await asyncio.shield(future)

    async def _publish_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await self._ready.wait()
            self._ready.clear()
            streams, self._pending = list(dict.fromkeys(self._pending)), []
            signals, self._signals = self._signals, []
            dropped, self._dropped = self._dropped, False
            batch, self._open = self._open, None
            if batch is None:
                batch = loop.create_future()
            self._inflight.add(batch)
            batch.add_done_callback(self._inflight.discard)
            if not (streams or signals or dropped):
                batch.set_result(None)
                continue
            try:
                # (a batch with wake-ups left out is answered only once the namespace is
                # retired, below, not when its listeners acknowledge it)
                acked = loop.create_future() if dropped else batch
                published = await self._publish_batch(acked, streams, signals)
            except Exception:  # never leave a writer waiting on a batch that died here
                log.exception("publishing wake-ups failed")
                published = False
            if not published or dropped:
                # Waiters elsewhere may sleep through these changes: retire the namespace
                # (every process's streams look again at their next keep-alive, and its
                # polls at their next check), and answer once nobody trusts it.
                task = asyncio.create_task(self._given_up(batch), name="parley-redis-given-up")
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _given_up(self, batch: asyncio.Future[None]) -> None:
        try:
            await self.link.write_failed(wait=True)
        except Exception:  # PostgreSQL down too: the writers' answers wait no longer
            log.warning("could not retire the cache namespace after a lost wake-up")
        finally:
            if not batch.done():
                batch.set_result(None)

    async def _publish_batch(
        self, batch: asyncio.Future[None], streams: list[str], signals: list[Signal]
    ) -> bool:
        """Publish one batch; ``batch`` completes once the live listeners acknowledged it
        (the loop is not held meanwhile). False: it was not published."""
        if not self.link.healthy:
            return False
        self._seq += 1
        seq = self._seq
        acks = self._acks[seq] = _Acks(batch)  # first: an acknowledgement may come early
        batch.add_done_callback(lambda _: self._acks.pop(seq, None))
        payload = msgspec.msgpack.encode(Wakeup(self.origin, streams, signals, [], seq))
        answer = await self.link.run(
            self._publish_wake, [self.listeners_key], [self.channel, payload, self.origin]
        )
        if answer is None:
            self._acks.pop(seq, None)
            return False
        loop = asyncio.get_running_loop()
        heard_at = loop.time()
        now = int(answer[0])
        for i in range(1, len(answer), 2):
            listener = answer[i].decode()
            if listener not in acks.acked:
                # waited for until it acknowledges, or until its lease (as it stood when
                # the batch was published) is over by this process's clock
                acks.pending.add(listener)
                ends = heard_at + (int(answer[i + 1]) - now) / 1000
                acks.handles.append(loop.call_at(ends, self._lease_over, acks, listener))
        if not acks.pending:
            acks.finish()
        return True

    def _lease_over(self, acks: _Acks, listener: str) -> None:
        """A listener's lease ran out before it acknowledged: the batch no longer waits."""
        if listener in acks.pending:
            self.leases_waited_out += 1
        acks.drop(listener)

    def _acknowledged(self, data: bytes) -> None:
        """A listener applied our batch ``seq`` (``b"<origin>:<seq>"``)."""
        origin, _, seq = data.decode(errors="replace").partition(":")
        acks = self._acks.get(int(seq)) if seq.isdigit() else None
        if acks is not None:
            acks.acked.add(origin)
            acks.drop(origin)

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
        """May a poll be answered from the wake-ups? (Subscribed, and holding a listener
        lease: every write answered so far waited for this process's acknowledgement.)"""
        return (
            self.notifier.reliable
            and self._subscription is not None
            and time.monotonic() < self.lease_until
        )

    # listening -------------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        lost = 0  # subscriptions lost in a row
        while not self._stopping:
            try:
                if self.own_subscription:
                    await self._listen_own()
                else:
                    await self._listen_pubsub()
            except ResponseError as exc:
                if "HELLO" in str(exc).upper() or "UNKNOWN COMMAND" in str(exc).upper():
                    # A Redis before 6 (no RESP3): redis-py's pub/sub, and no listener lease
                    log.warning("redis without RESP3 (%s): polls will always ask Redis", exc)
                    self.own_subscription = False
                    self.notifier.settled = None  # polls stop remembering their looks
                else:
                    log.debug("redis subscription lost: %s", exc)
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
        """Subscribed on a connection of its own, whose messages are handled as read, and
        on which this process renews its listener lease."""
        name = f"parley-wake-{self.origin}"
        channels = [self.channel, self.ack_channel]
        subscription = redis_wire.Subscription(
            self.subscription_url, channels, self._message, name=name
        )
        timeout = max(self.link.timeout * 10, 1.0)
        renew = [self.listeners_key, self.origin, int(LEASE * 1000)]
        try:
            await subscription.open(timeout)
            self._subscription = subscription
            self.subscriptions += 1
            self._reliable(True)
            while not self._stopping:
                asked = time.monotonic()
                await subscription.execute("EVAL", RENEW_LEASE, 1, *renew, timeout=timeout)
                self.lease_until = asked + LEASE * TRUSTED
                try:
                    await asyncio.wait_for(asyncio.shield(subscription.closed), RENEW)
                except TimeoutError:
                    continue
                return
        finally:
            self.lease_until = 0.0
            self._subscription = None
            subscription.close()
            if not self._stopping:  # writers need not wait for this process's lease to end
                await self.link.call("ZREM", self.listeners_key, self.origin)

    def _message(self, channel: bytes, data: bytes) -> None:
        if channel == self._wake_channel:
            seq = self._heard(data)
            subscription = self._subscription
            if seq is not None and subscription is not None:
                origin, number = seq
                subscription.fire(
                    "PUBLISH", self.link.key("ack:", origin), f"{self.origin}:{number}"
                )
                self.acks_sent += 1
        else:
            self._acknowledged(data)

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

    def _heard(self, data: bytes) -> tuple[str, int] | None:
        """One published wake-up: wake the local waiters it names. Answers the batch to
        acknowledge (its writer and number), if any."""
        try:
            wake = msgspec.msgpack.decode(data, type=Wakeup)
        except msgspec.DecodeError:
            return None
        if wake.origin == self.origin:
            return None
        self.received += 1
        if wake.streams:
            self.changes.heard(wake.streams)
        for stream in wake.streams:
            self.notifier.notify(stream)
        for stream in wake.again:
            self.notifier.notify(stream)
        for signal in wake.signals:
            self.notifier.deliver(signal.users, signal.fields)
        return (wake.origin, wake.seq) if wake.seq else None
