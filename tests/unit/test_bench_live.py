"""``parley bench``'s live-stream figures (tick, push, open) and stored bytes per message:
the arithmetic, DynamoDB's item sizes and the bench file's shape (no server needed)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from parley.bench import stored
from parley.bench.cli import Row, cost_input, live_table
from parley.bench.live import (
    KEEPALIVE,
    Tap,
    Totals,
    keepalive_interval,
    per_operation,
    push_usage,
    read_users,
)
from parley.bench.usage import Usage
from parley.domain.models import Message
from parley.storage.dynamodb_items import message_items


def test_a_tap_counts_keepalives_and_messages_split_across_reads() -> None:
    totals = Totals()
    tap = Tap(totals)
    chunk = b"e\r\n" + KEEPALIVE + b"\r\n"
    tap.feed(chunk[:9])
    tap.feed(chunk[9:])
    event = b'id: 5\nevent: messages\ndata: {"messages":[{"messageId":"m_1"},{"messageId":"m_2"}]}'
    tap.feed(event[:40])
    tap.feed(event[40:])
    assert totals.keepalives == 1
    assert totals.messages == 2
    assert totals.bytes == len(chunk) + len(event)


def test_per_tick_figures_divide_the_window_by_the_ticks() -> None:
    used = Usage(cpu=0.5, storage_cpu=0.1, cache_cpu=0.02, cache_ops=200, reads=0, writes=0)
    figures = per_operation(used, 10_000, True, 0.0, 190_000)
    assert figures["cpu_seconds_per_request"] == pytest.approx(0.00005)
    assert figures["requests_per_second"] == pytest.approx(20_000)  # one busy vCPU
    assert figures["storage_cpu_seconds_per_request"] == pytest.approx(0.00001)
    assert figures["cache_ops_per_request"] == pytest.approx(0.02)
    assert figures["cache_cpu_seconds_per_request"] == pytest.approx(0.000002)
    assert figures["response_bytes"] == pytest.approx(19.0)
    assert figures["request_bytes"] == 0.0
    # SQLite: storage and cache run inside the server; no reads counted: unknown
    sqlite = per_operation(Usage(cpu=0.5), 10_000, False, 0.0, 190_000)
    assert sqlite["storage_cpu_seconds_per_request"] == 0.0
    assert sqlite["storage_reads_per_request"] is None
    # nothing counted: nothing known
    assert per_operation(used, 0, True, 0.0, 0.0)["cpu_seconds_per_request"] is None


def test_a_push_is_the_window_minus_the_sends_and_the_idle_streams() -> None:
    sent = Usage(cpu=0.8, storage_cpu=0.4, cache_cpu=0.1, cache_ops=4000, reads=800, writes=2000)
    pushed = Usage(cpu=1.3, storage_cpu=0.5, cache_cpu=0.2, cache_ops=6100, reads=1810, writes=2000)
    # one stream-second idle (keep-alives, wake-ups)
    idle = Usage(cpu=0.0001, storage_cpu=0.0, cache_cpu=0.0, cache_ops=0.1, reads=0.0, writes=0.0)
    used, clamped = push_usage(pushed, sent, 2000, 2000, 1000, idle)  # 500 streams for 2 s
    assert used.cpu == pytest.approx(0.4)  # 1.3 - 0.8 - 1000 x 0.0001
    assert used.cache_ops == pytest.approx(2000)  # 6100 - 4000 - 100
    assert used.reads == pytest.approx(1010)
    assert used.writes == pytest.approx(0)
    assert clamped == []
    figures = per_operation(used, 2000, True, 0.0, 600_000)
    assert figures["cpu_seconds_per_request"] == pytest.approx(0.0002)
    assert figures["storage_reads_per_request"] == pytest.approx(0.505)
    assert figures["response_bytes"] == pytest.approx(300)
    # the base sends scale to the pushed sends' count
    half, _ = push_usage(pushed, sent.scaled(0.5), 2000, 1000, 0, idle)
    assert half.cpu == pytest.approx(0.5)


def test_a_push_that_comes_out_negative_is_clamped_and_named() -> None:
    sent = Usage(cpu=1.0, storage_cpu=0.3, reads=10)
    pushed = Usage(cpu=0.9, storage_cpu=0.4, reads=5)
    used, clamped = push_usage(pushed, sent, 100, 100, 0, Usage(cpu=0.0))
    assert used.cpu == 0.0 and used.reads == 0.0
    assert used.storage_cpu == pytest.approx(0.1)
    assert clamped == ["cpu", "reads"]
    assert used.cache_ops is None  # not measured stays unknown
    assert per_operation(used, 100, True, 0.0, 0.0)["requests_per_second"] is None


def test_usage_arithmetic_keeps_unknowns_unknown() -> None:
    a = Usage(cpu=2.0, reads=10, cache_ops=None)
    b = Usage(cpu=0.5, reads=4, cache_ops=3)
    diff = a - b
    assert diff.cpu == 1.5 and diff.reads == 6 and diff.cache_ops is None
    assert a.scaled(0.5).reads == 5


def test_users_come_from_the_data_sets_file(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("u_a tokA g_1\nu_b tokB g_1\n\n")
    assert read_users(path) == [("u_a", "tokA"), ("u_b", "tokB")]


def test_dynamodb_attribute_sizes_follow_the_published_rules() -> None:
    assert stored.attribute_bytes({"S": "héllo"}) == 6  # UTF-8 bytes
    assert stored.attribute_bytes({"N": "12345"}) == 4  # ceil(5 / 2) + 1
    assert stored.attribute_bytes({"N": "1000"}) == 2  # one significant digit
    assert stored.attribute_bytes({"N": "1764412345678"}) == 8
    assert stored.attribute_bytes({"L": [{"S": "ab"}, {"S": "c"}]}) == 3 + 3 + 2
    assert stored.attribute_bytes({"BOOL": True}) == 1
    item = {"id": {"S": "m_1"}, "ts": {"N": "12"}}
    assert stored.item_bytes(item) == 100 + 2 + 3 + 2 + 2


def test_a_private_message_stores_three_items_and_an_index_entry_a_group_message_two() -> None:
    body = "x" * 13
    private = Message("m_" + "a" * 22, "private", "u_" + "b" * 22, "u_" + "c" * 22, body, 1, 3)
    group = Message("m_" + "a" * 22, "group", "u_" + "b" * 22, "g_" + "d" * 22, body, 1, 3)
    items = message_items(private)
    inbox, sent = items
    by_hand = 2 * stored.item_bytes(inbox) + stored.item_bytes(sent)
    locator = stored.item_bytes(stored.locator_item(private, None))
    assert stored.message_items_bytes(private) == by_hand + locator
    group_items = message_items(group)
    assert len(group_items) == 1
    group_locator = stored.item_bytes(stored.locator_item(group, None))
    assert stored.message_items_bytes(group) == stored.item_bytes(group_items[0]) + group_locator
    sizes = stored.dynamodb_message_bytes(13, group_share=0.25)
    assert sizes["private"] > sizes["group"] > 2 * stored.ITEM_OVERHEAD
    assert sizes["mean"] == pytest.approx(0.75 * sizes["private"] + 0.25 * sizes["group"], abs=0.1)
    # a longer body adds its bytes to each copy: inbox, by_pair entry, sent copy
    longer = stored.dynamodb_message_bytes(113)
    assert longer["private"] - stored.dynamodb_message_bytes(13)["private"] == 300


def test_sqlite_stored_bytes_count_the_messages_table_and_its_indexes(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE messages (id TEXT PRIMARY KEY, body TEXT);"
        "CREATE INDEX messages_by_body ON messages (body);"
        "CREATE TABLE other (x TEXT);"
    )
    conn.executemany("INSERT INTO messages VALUES (?, ?)", [(f"m{i}", "hi") for i in range(500)])
    conn.executemany("INSERT INTO other VALUES (?)", [("y" * 1000,) for _ in range(100)])
    conn.commit()
    conn.close()
    found = stored.sqlite_stored_bytes(path)
    assert found["messages"] == 500
    assert found["mean_body_chars"] == 2.0
    assert "messages_by_body" in found["indexes"]
    assert 0 < found["stored_bytes_per_message"] * 500 < path.stat().st_size


def _row(scenario: str) -> Row:
    return Row(scenario, 1000.0, 0.5, 1.0, 2.0, 3.0, 0, 10_000, 1.0, 0.0, 0.2, 0.1, 0.02, 1.0)


LIVE: dict[str, dict[str, float | None]] = {
    "tick": per_operation(Usage(cpu=0.5, storage_cpu=0.0, reads=0), 10_000, True, 0.0, 190_000),
    "push": per_operation(Usage(cpu=0.4, storage_cpu=0.1, reads=1000), 2000, True, 0.0, 600_000),
    "open": per_operation(Usage(cpu=0.3, storage_cpu=0.0, reads=None), 1000, True, 227e3, 349e3),
}


def _doc(pg_meta: dict[str, Any]) -> dict[str, Any]:
    rows = {name: _row(name) for name in ("ceiling", "idle", "check", "private")}
    meta = {"processes": 1, "storage": "sqlite", "users": 1000, "messages": 10_000}
    sqlite_meta = {
        **meta,
        "rss_bytes": 80e6,
        "live_operations": {"push": {**LIVE["push"], "storage_reads_per_request": 0.7}},
        "stored": {"stored_bytes_per_message": 300.0, "mean_body_chars": 8.2},
    }
    runs = {
        "sqlite": (rows, sqlite_meta),
        "postgres": (rows, {**meta, "storage": "postgres", "processes": 2, **pg_meta}),
    }
    return cost_input(runs, 60_000.0, {"measured_at": "now", "machine": "test"}, 36_659)


def test_the_bench_file_carries_the_live_operations_and_stored_bytes() -> None:
    doc = json.loads(
        json.dumps(
            _doc(
                {
                    "live_operations": LIVE,
                    "stored": {"stored_bytes_per_message": 420.5, "mean_body_chars": 8.2},
                    "live": {"tick": {"method": "m"}},
                }
            )
        )
    )
    pg = doc["shapes"]["postgres-redis"]
    assert set(pg["operations"]) == {"check", "idle", "send", "tick", "push", "open"}
    assert pg["stored_bytes_per_message"] == 420.5
    assert pg["operations"]["tick"]["requests_per_second"] == pytest.approx(20_000)
    assert set(pg["operations"]["tick"]) == set(pg["operations"]["check"])  # same fields
    assert doc["shapes"]["sqlite-single"]["stored_bytes_per_message"] == 300.0
    dynamo = doc["shapes"]["dynamodb-fargate"]
    # live operations: one DynamoDB call per storage-port call; the PostgreSQL run's first
    assert dynamo["operations"]["push"]["storage_reads_per_request"] == pytest.approx(0.5)
    assert dynamo["operations"]["push"]["storage_cpu_seconds_per_request"] == 0.0
    # several workers hid the opens' reads: the SQLite run has none either: unknown
    assert dynamo["operations"]["open"]["storage_reads_per_request"] is None
    assert dynamo["operations"]["tick"]["cpu_seconds_per_request"] == pytest.approx(0.00005)
    assert (
        dynamo["stored_bytes_per_message"]
        == doc["details"]["dynamodb"]["stored"]["stored_bytes_per_message"]
    )
    assert doc["details"]["dynamodb"]["stored"]["body_chars"] == 8
    assert doc["details"]["postgres"]["live"]["tick"]["method"] == "m"
    assert doc["workload"]["group_send_share"] == stored.GROUP_SEND_SHARE


def test_the_dynamodb_shape_falls_back_to_the_sqlite_runs_reads() -> None:
    hidden = {op: {**f, "storage_reads_per_request": None} for op, f in LIVE.items()}
    doc = _doc({"live_operations": hidden})
    push = doc["shapes"]["dynamodb-fargate"]["operations"]["push"]
    assert push["storage_reads_per_request"] == pytest.approx(0.7)
    # no stored bytes measured in the PostgreSQL run: none written for it or DynamoDB
    assert "stored_bytes_per_message" not in doc["shapes"]["postgres-redis"]
    assert "stored_bytes_per_message" not in doc["shapes"]["dynamodb-fargate"]


def test_the_live_table_prints_unknown_for_unmeasured_figures() -> None:
    text = live_table(LIVE)
    assert "tick" in text and "push" in text and "open" in text
    assert "unknown" in text  # the opens' reads
    assert "20000" in text  # the tick's rate per busy vCPU


def test_the_keepalive_interval_is_the_median_gap_between_a_streams_last_two() -> None:
    totals = Totals()
    taps = [Tap(totals) for _ in range(3)]
    for tap, gap in zip(taps, (2.0, 2.1, 15.0), strict=True):
        tap.feed(KEEPALIVE, 100.0)
        tap.feed(KEEPALIVE, 100.0 + gap)
    assert keepalive_interval(taps) == pytest.approx(2.1)
    assert keepalive_interval([Tap(Totals())]) is None  # none seen twice yet
    assert totals.keepalives == 6


def test_a_window_less_its_background_never_goes_below_zero() -> None:
    window = Usage(cpu=1.0, storage_cpu=0.02, cache_cpu=None, cache_ops=50.0, reads=0.0)
    background = Usage(cpu=0.1, storage_cpu=0.004, cache_cpu=0.001, cache_ops=20.0, reads=0.0)
    less = (window - background.scaled(10.0)).floored()  # a 10 s window
    assert less.cpu == 0.0  # 1.0 - 10 x 0.1
    assert less.storage_cpu == 0.0  # 0.02 - 10 x 0.004 < 0
    assert less.cache_cpu is None  # unknown stays unknown
    assert less.cache_ops == 0.0  # 50 - 10 x 20 < 0
    window = Usage(cpu=3.0, storage_cpu=0.05, cache_ops=300.0)
    less = (window - background.scaled(10.0)).floored()
    assert less.cpu == pytest.approx(2.0) and less.storage_cpu == pytest.approx(0.01)
    assert less.cache_ops == pytest.approx(100.0)
