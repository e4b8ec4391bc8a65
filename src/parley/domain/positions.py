"""Message positions and the commit frontier of one process.

Every message write reserves its timestamp (unix ms) and holds it while it is written::

    async with positions.writing() as ts:
        await write(message, ts)

The position is released when the block exits, committed or not (an exception or a
cancellation included). Readers ask for :meth:`PositionTracker.frontier`: the largest
timestamp F such that

* every write that began with a timestamp <= F has finished, and
* every write that begins from now on gets a timestamp > F.

A reader that only returns messages with ``ts <= F`` and hands F out as ``nextTimestamp``
can therefore never hide a message from a client that polls with ``timestamp=F``: anything
committed later carries a larger timestamp. Writes may finish in any order; the frontier
stays below the oldest unfinished one::

    writing 8, 9, 10, 11         frontier 7
    9 exits                      frontier 7   (8 is still running)
    8 exits                      frontier 9   (10 is still running)
    10, 11 exit; clock at 12     frontier 11

The clock is monotonic (it never goes back even if the wall clock does), and the frontier
trails it by one millisecond, so timestamps handed out to readers never force the next
write's timestamp ahead of the wall clock. When the wall clock is behind the floor (it
stepped back, or a restart took the floor from a persisted high-water mark), a reader
waiting for a finished write moves the floor on by itself after a short wait instead of
waiting for the wall clock to catch up. This object is used from one event loop thread
only and takes no lock.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from types import TracebackType


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PositionTracker:
    def __init__(self, clock: Callable[[], int] = wall_clock_ms, start: int = 0) -> None:
        self._clock = clock
        self._last = start
        self._unfinished: list[int] = []  # heap of begun, unfinished timestamps
        self._finished: dict[int, int] = {}  # ts -> finished count still in the heap
        self.max_finished = 0

    def now(self) -> int:
        """The monotonic clock: never smaller than any earlier reading or start value."""
        wall = self._clock()
        if wall > self._last:
            self._last = wall
        return self._last

    def advance(self, ts: int) -> None:
        """Never hand out a timestamp below ``ts`` (used at start-up with the last stored one)."""
        if ts > self._last:
            self._last = ts

    def writing(self) -> Writing:
        """Reserve a timestamp for one write, released when the ``async with`` exits."""
        return Writing(self)

    def _begin(self) -> int:
        ts = self.now()
        heapq.heappush(self._unfinished, ts)
        return ts

    def _finish(self, ts: int) -> None:
        if ts > self.max_finished:
            self.max_finished = ts
        heap = self._unfinished
        if not self._finished and heap[0] == ts:  # the oldest write, none finished early
            heapq.heappop(heap)
            return
        self._finished[ts] = self._finished.get(ts, 0) + 1
        while heap and self._finished.get(heap[0], 0):
            top = heapq.heappop(heap)
            left = self._finished[top] - 1
            if left:
                self._finished[top] = left
            else:
                del self._finished[top]

    def frontier(self) -> int:
        limit = self.now() - 1
        if self._unfinished:
            return min(limit, self._unfinished[0] - 1)
        return limit

    async def caught_up(self, timeout: float = 0.05) -> int:
        """The frontier, once it covers every write already finished (read-your-writes).

        A write acknowledged in the current millisecond is above the frontier until the
        clock ticks; a reader that waits that long (bounded by ``timeout``) sees it. If the
        wall clock has not moved past the write by then (it is behind the floor), the floor
        moves one millisecond past the write: later writes land above the frontier all the
        same. Writes still running keep the frontier below them.
        """
        frontier = self.frontier()
        if frontier >= self.max_finished:
            return frontier
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while frontier < self.max_finished and loop.time() < deadline:
            await asyncio.sleep(0.0005)
            frontier = self.frontier()
        if frontier < self.max_finished:
            self.advance(self.max_finished + 1)
            frontier = self.frontier()
        return frontier

    @property
    def in_flight(self) -> int:
        return len(self._unfinished) - sum(self._finished.values())


class Writing:
    """One write's hold on its position (see :meth:`PositionTracker.writing`)."""

    __slots__ = ("_tracker", "ts")

    def __init__(self, tracker: PositionTracker) -> None:
        self._tracker = tracker
        self.ts = 0

    async def __aenter__(self) -> int:
        self.ts = self._tracker._begin()
        return self.ts

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._tracker._finish(self.ts)
