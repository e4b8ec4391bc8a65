from __future__ import annotations

from parley.cache.base import sent_stream, streams_of
from parley.cache.memory import ChangeCache


def test_unknown_stream_unchanged_after_earliest() -> None:
    cache = ChangeCache(earliest=100)
    assert not cache.changed_since(["u1"], 100)
    assert cache.changed_since(["u1"], 99)  # before what the cache knows: maybe


def test_marked_stream_changes() -> None:
    cache = ChangeCache(earliest=0)
    cache.mark("g1", 50)
    assert cache.changed_since(["u1", "g1"], 49)
    assert not cache.changed_since(["u1", "g1"], 50)


def test_mark_keeps_the_largest_position() -> None:
    cache = ChangeCache(earliest=0)
    cache.mark("a", 70)
    cache.mark("a", 60)  # a write that finished out of order
    assert cache.changed_since(["a"], 65)


def test_eviction_never_hides_a_change() -> None:
    cache = ChangeCache(earliest=0, max_entries=10)
    for i in range(1, 30):
        cache.mark(f"s{i}", i)
    assert len(cache) <= 10
    # Every stream that changed after T must still be reported as (maybe) changed.
    for stream_no in range(1, 30):
        for after in range(0, stream_no):
            assert cache.changed_since([f"s{stream_no}"], after), (stream_no, after)


def test_changed_for_a_user_asks_every_stream_it_reads() -> None:
    cache = ChangeCache(earliest=100)
    cache.mark("g1", 150)
    cache.mark("u1", 120)
    cache.mark(sent_stream("u1"), 170)
    for after in (90, 100, 119, 120, 149, 150, 169, 170, 200):
        for groups in ((), ("g1",), ("g2",), ("g1", "g2")):
            for include_sent in (False, True):
                streams = streams_of("u1", groups, include_sent)
                expected = cache.changed_since(streams, after)
                assert cache.changed_for("u1", groups, include_sent, after) == expected
    assert cache.changed_for("u1", (), True, 169) and not cache.changed_for("u1", (), False, 169)
