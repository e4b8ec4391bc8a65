"""Wake-ups for long-polls and live streams.

Waiters register on the streams they read (a user's inbox, its groups, its sent messages);
``notify(stream)`` wakes every waiter of that stream. It is the one path every stored
message goes through: in-process for the embedded default, and fed from Redis pub/sub
when several processes share a database. A wake-up is only a hint to read again; a waiter
that wakes early or twice reads nothing new and goes back to waiting.

Waiting is kept small, because a process holds one waiter per open long-poll and live
stream (tens of thousands): a waiter is one future, registered under its streams (a
stream with one waiter holds it directly, not in a set of one), and its time limit is an
entry in the process's one :class:`Alarms` wheel rather than a timer object of its own.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Iterable

Waiters = asyncio.Future[bool] | set[asyncio.Future[bool]]


class Watch:
    """One waiting client: the future it waits on now, and whether it has gone away.
    ``stop()`` (its connection closed) marks it gone and wakes the current wait."""

    __slots__ = ("future", "gone")

    def __init__(self) -> None:
        self.future: asyncio.Future[bool] | None = None
        self.gone = False

    def stop(self) -> None:
        self.gone = True
        if self.future is not None and not self.future.done():
            self.future.set_result(False)


class Alarms:
    """Many time limits on one loop timer: a future to wake at a time goes into the
    bucket of its ``TICK`` (rounded up, so never early); one timer, set for the earliest
    bucket, wakes a whole bucket at once. Futures already done when their bucket comes
    are skipped."""

    TICK = 0.05  # seconds: a limit ends at most this much late

    def __init__(self) -> None:
        self._buckets: dict[int, list[asyncio.Future[bool]]] = {}
        self._order: list[int] = []  # bucket numbers, a heap
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake_at(self, when: float, future: asyncio.Future[bool]) -> None:
        """Resolve ``future`` with False, if still pending, once the loop's clock
        reaches ``when``."""
        slot = math.ceil(when / self.TICK)
        bucket = self._buckets.get(slot)
        if bucket is None:
            self._buckets[slot] = bucket = []
            heapq.heappush(self._order, slot)
        bucket.append(future)
        loop = future.get_loop()
        if self._timer is None or slot < self._timer_slot or loop is not self._loop:
            self._loop = loop
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._order:
            self._timer_slot = self._order[0]
            self._timer = loop.call_at(self._timer_slot * self.TICK, self._ring, loop)

    def _ring(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._order and self._order[0] * self.TICK <= now:
            for future in self._buckets.pop(heapq.heappop(self._order)):
                if not future.done():
                    future.set_result(False)
        self._arm(loop)

    @property
    def pending(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, Waiters] = {}
        self.alarms = Alarms()
        self.wakeups = 0
        # Set by a cross-process channel (Redis pub/sub): called with the streams of every
        # message stored by this process, so other processes can wake their waiters.
        self.broadcast: Callable[[list[str]], None] | None = None

    async def wait(
        self, streams: Iterable[str], timeout: float, watch: Watch | None = None
    ) -> bool:
        """Wait until one of ``streams`` is notified (True) or ``timeout`` passes (False).
        With ``watch``, its ``stop()`` also ends the wait (False)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if watch is not None:
            if watch.gone:
                return False
            watch.future = future
        keys = list(streams)
        for key in keys:
            self._add(key, future)
        self.alarms.wake_at(loop.time() + timeout, future)
        try:
            return await future
        finally:
            for key in keys:
                self._remove(key, future)
            if watch is not None:
                watch.future = None

    def _add(self, key: str, future: asyncio.Future[bool]) -> None:
        present = self._waiters.get(key)
        if present is None:
            self._waiters[key] = future
        elif isinstance(present, set):
            present.add(future)
        else:
            self._waiters[key] = {present, future}

    def _remove(self, key: str, future: asyncio.Future[bool]) -> None:
        present = self._waiters.get(key)
        if present is future:
            del self._waiters[key]
        elif isinstance(present, set):
            present.discard(future)
            if len(present) == 1:
                self._waiters[key] = next(iter(present))
            elif not present:
                del self._waiters[key]

    def notify_all(self, streams: Iterable[str]) -> None:
        """Wake the waiters of these streams here and, through ``broadcast``, elsewhere."""
        for stream in streams:
            self.notify(stream)
        if self.broadcast is not None:
            self.broadcast(list(streams))

    def notify(self, stream: str) -> None:
        present = self._waiters.get(stream)
        if present is None:
            return
        for future in list(present) if isinstance(present, set) else (present,):
            if not future.done():
                future.set_result(True)
                self.wakeups += 1

    @property
    def waiting(self) -> int:
        return sum(len(w) if isinstance(w, set) else 1 for w in self._waiters.values())
