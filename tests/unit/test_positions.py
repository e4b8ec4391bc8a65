"""The commit frontier: out-of-order finishes, clock monotonicity."""

from __future__ import annotations

from parley.domain.positions import PositionTracker


class FakeClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_out_of_order_finish() -> None:
    clock = FakeClock(8)
    tracker = PositionTracker(clock)
    tickets = []
    for ts in (8, 9, 10, 11):
        clock.now = ts
        tickets.append(tracker.begin())
    assert tickets == [8, 9, 10, 11]
    clock.now = 12
    assert tracker.frontier() == 7
    tracker.finish(9)
    assert tracker.frontier() == 7
    tracker.finish(8)
    assert tracker.frontier() == 9
    tracker.finish(11)
    assert tracker.frontier() == 9
    tracker.finish(10)
    assert tracker.frontier() == 11
    assert tracker.in_flight == 0


def test_same_millisecond_writes_stay_hidden_until_all_finish() -> None:
    clock = FakeClock(100)
    tracker = PositionTracker(clock)
    a, b = tracker.begin(), tracker.begin()
    assert a == b == 100
    clock.now = 105
    tracker.finish(a)
    assert tracker.frontier() == 99
    tracker.finish(b)
    assert tracker.frontier() == 104


def test_frontier_trails_clock_so_new_writes_land_above_it() -> None:
    clock = FakeClock(50)
    tracker = PositionTracker(clock)
    handed_out = tracker.frontier()
    assert handed_out == 49
    assert tracker.begin() > handed_out


def test_clock_never_goes_back() -> None:
    clock = FakeClock(1_000)
    tracker = PositionTracker(clock)
    first = tracker.begin()
    tracker.finish(first)
    handed_out = tracker.frontier()
    clock.now = 900  # the wall clock jumps back
    assert tracker.begin() >= first
    assert tracker.frontier() >= handed_out


def test_advance_raises_the_floor() -> None:
    tracker = PositionTracker(FakeClock(10))
    tracker.advance(500)
    assert tracker.begin() == 500
