"""The commit frontier: out-of-order finishes, release on error, clock monotonicity.

Only the tracker's public API is used: a clock function is injected, and writes hold their
positions with ``async with tracker.writing()``, in tasks that finish when told to.
"""

from __future__ import annotations

import asyncio

import pytest

from parley.domain.positions import PositionTracker


class FakeClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Write:
    """A write holding its position until :meth:`finish` (or :meth:`fail`)."""

    def __init__(self, tracker: PositionTracker) -> None:
        self.tracker = tracker
        self.ts = -1
        self._go = asyncio.Event()
        self._fail = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        entered = asyncio.Event()

        async def hold() -> None:
            async with self.tracker.writing() as ts:
                self.ts = ts
                entered.set()
                await self._go.wait()
                if self._fail:
                    raise OSError("the write failed")

        self._task = asyncio.create_task(hold())
        await entered.wait()
        return self.ts

    async def finish(self) -> None:
        assert self._task is not None
        self._go.set()
        await self._task

    async def fail(self) -> None:
        self._fail = True
        with pytest.raises(OSError):
            await self.finish()

    async def cancel(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


async def test_out_of_order_finish() -> None:
    clock = FakeClock(8)
    tracker = PositionTracker(clock)
    writes = []
    for ts in (8, 9, 10, 11):
        clock.now = ts
        write = Write(tracker)
        await write.start()
        writes.append(write)
    assert [w.ts for w in writes] == [8, 9, 10, 11]
    assert tracker.in_flight == 4
    clock.now = 12
    assert tracker.frontier() == 7
    await writes[1].finish()
    assert tracker.frontier() == 7
    await writes[0].finish()
    assert tracker.frontier() == 9
    await writes[3].finish()
    assert tracker.frontier() == 9
    await writes[2].finish()
    assert tracker.frontier() == 11
    assert tracker.in_flight == 0


async def test_same_millisecond_writes_stay_hidden_until_all_finish() -> None:
    clock = FakeClock(100)
    tracker = PositionTracker(clock)
    a, b = Write(tracker), Write(tracker)
    assert await a.start() == await b.start() == 100
    clock.now = 105
    await a.finish()
    assert tracker.frontier() == 99
    await b.finish()
    assert tracker.frontier() == 104


@pytest.mark.parametrize("end", ["fail", "cancel"])
async def test_a_failed_or_cancelled_write_releases_its_position(end: str) -> None:
    clock = FakeClock(200)
    tracker = PositionTracker(clock)
    write = Write(tracker)
    await write.start()
    clock.now = 210
    assert tracker.frontier() == 199
    await (write.fail() if end == "fail" else write.cancel())
    assert tracker.frontier() == 209
    assert tracker.in_flight == 0


async def test_writes_in_one_block_in_sequence() -> None:
    clock = FakeClock(300)
    tracker = PositionTracker(clock)
    async with tracker.writing() as first:
        clock.now = 301
        assert tracker.frontier() == 299
    async with tracker.writing() as second:
        assert (first, second) == (300, 301)
    assert tracker.frontier() == 300 and tracker.in_flight == 0


async def test_frontier_trails_clock_so_new_writes_land_above_it() -> None:
    clock = FakeClock(50)
    tracker = PositionTracker(clock)
    handed_out = tracker.frontier()
    assert handed_out == 49
    async with tracker.writing() as ts:
        assert ts > handed_out


async def test_clock_never_goes_back() -> None:
    clock = FakeClock(1_000)
    tracker = PositionTracker(clock)
    async with tracker.writing() as first:
        pass
    handed_out = tracker.frontier()
    clock.now = 900  # the wall clock jumps back
    async with tracker.writing() as later:
        assert later >= first
    assert tracker.frontier() >= handed_out


async def test_advance_raises_the_floor() -> None:
    tracker = PositionTracker(FakeClock(10))
    tracker.advance(500)
    async with tracker.writing() as ts:
        assert ts == 500


async def test_start_is_a_floor() -> None:
    tracker = PositionTracker(FakeClock(10), start=700)
    assert tracker.now() == 700 and tracker.frontier() == 699


async def test_caught_up_waits_for_the_clock_to_pass_a_finished_write() -> None:
    clock = FakeClock(400)
    tracker = PositionTracker(clock)
    async with tracker.writing() as ts:
        pass
    assert tracker.frontier() == ts - 1  # acknowledged, but in the current millisecond

    async def tick() -> None:
        await asyncio.sleep(0.005)
        clock.now = 401

    ticking = asyncio.create_task(tick())
    assert await tracker.caught_up(timeout=5) == ts
    await ticking


async def test_a_stopped_clock_does_not_hide_a_finished_write() -> None:
    clock = FakeClock(500)
    tracker = PositionTracker(clock, start=900)  # the wall clock is behind the floor
    async with tracker.writing() as ts:
        assert ts == 900
    assert tracker.frontier() == 899
    assert await tracker.caught_up(timeout=0.01) == 900
    async with tracker.writing() as later:  # still lands above what readers were given
        assert later > 900


async def test_a_running_write_still_holds_the_frontier_back() -> None:
    clock = FakeClock(500)
    tracker = PositionTracker(clock, start=900)
    slow = Write(tracker)
    assert await slow.start() == 900
    clock.now = 950
    async with tracker.writing() as done:
        assert done == 950
    assert await tracker.caught_up(timeout=0.01) == 899
    await slow.finish()
    assert await tracker.caught_up(timeout=0.01) == 950
