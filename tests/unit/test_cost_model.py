"""Parley's cost model against hand computations on a bench with round numbers."""

from __future__ import annotations

import dataclasses
import json
import math

import msgspec
import pytest

from parley.cost.measured import (
    BenchError,
    BenchFile,
    OperationProfile,
    ShapeBench,
    Workload,
    parse_bench,
)
from parley.cost.model import (
    LineItem,
    ModelError,
    ModelInputs,
    ShapeCost,
    cheapest_highly_available,
    compute_load,
    estimate,
    pick_class,
    single_process_ceiling,
    stream_rates,
    with_settings,
)
from parley.cost.prices import InstanceClass, Prices
from parley.cost.report import Report, render_text

# 8.64 sends a day makes sends/s = users / 10,000; 600,000 users -> 10,000 checks/s, 60 sends/s.
WORKLOAD = Workload(checks_per_user_per_minute=1, sends_per_user_per_day=8.64, messages_per_check=7)
USERS = 600_000
CHECK = OperationProfile(
    requests_per_second=2000,
    cpu_seconds_per_request=0.0003,
    storage_reads_per_request=1,
    storage_writes_per_request=0,
    read_units_per_read=0.5,
    storage_cpu_seconds_per_request=0.00005,
    cache_ops_per_request=2,
    cache_cpu_seconds_per_request=0.00001,
    request_bytes=400,
    response_bytes=600,
)
SEND = OperationProfile(
    requests_per_second=500,
    cpu_seconds_per_request=0.001,
    storage_reads_per_request=2,
    storage_writes_per_request=2,
    read_units_per_read=0.5,
    write_units_per_write=2,
    storage_cpu_seconds_per_request=0.0005,
    cache_ops_per_request=3,
    cache_cpu_seconds_per_request=0.00002,
    request_bytes=500,
    response_bytes=500,
)
SHAPE = ShapeBench(operations={"check": CHECK, "send": SEND}, process_base_bytes=100e6)
BENCH = BenchFile(
    format="parley-bench/1",
    sample=False,
    idle_connection_bytes=0,  # connection memory is tested on its own below
    workload=WORKLOAD,
    shapes={"sqlite-single": SHAPE, "postgres-redis": SHAPE, "dynamodb-fargate": SHAPE},
)
# The ALB with a new connection per request: the course design's client, priced by hand below.
INPUTS = ModelInputs(
    target_utilisation=0.5, dynamodb_target_utilisation=0.5, retention_days=100,
    stored_bytes_per_message=1000, load_balancer="alb", new_connections_per_request=1,
    reconnects_per_user_per_hour=0, size_task_memory=False,
)  # fmt: skip


def _one(shape: str, users: int = USERS, inputs: ModelInputs = INPUTS) -> ShapeCost:
    (result,) = [r for r in estimate(BENCH, [users], Prices(), inputs) if r.shape == shape]
    return result


def _items(result: ShapeCost) -> dict[str, float | None]:
    return {i.name: i.monthly for i in result.line_items}


def test_load_by_hand() -> None:
    load = compute_load(USERS, WORKLOAD, SHAPE, INPUTS)
    assert load.requests_per_second == pytest.approx({"check": 10_000, "send": 60})
    # one process: 10,000/2,000 + 60/500 = 5.12 processes' worth of requests
    assert load.process_busy == pytest.approx(5.12)
    # CPU: (10,000 x 0.0003 + 60 x 0.001) / 0.5 = 3.06 / 0.5 = 6.12 vCPU
    assert load.app_vcpus_by_cpu == pytest.approx(6.12)
    # throughput: 5.12 / 0.5 x 1 vCPU per process = 10.24 vCPU, the larger of the two
    assert load.app_vcpus == pytest.approx(10.24)
    # request units: 10,000 x 1 x 0.5 + 60 x 2 x 0.5 = 5,060 RRU/s; 60 x 2 x 2 = 240 WRU/s
    assert load.read_units_per_second == pytest.approx(5060)
    assert load.write_units_per_second == pytest.approx(240)
    # the course design's 7 messages per check: 70,000 messages delivered/s against 60 sent/s
    assert load.messages_delivered_per_second == pytest.approx(70_000)


def test_dynamodb_fargate_by_hand() -> None:
    result = _one("dynamodb-fargate")
    items = _items(result)
    # 11 tasks (ceil 10.24) x (1 x 0.04048 + 2 x 0.004445) x 730 h = 11 x 36.0401
    assert items["Fargate"] == pytest.approx(396.4411)
    # 5,060 RRU/s x 2,628,000 s / 1e6 x 0.125 = 1,662.21; 240 x 2.628 x 0.625 = 394.20
    assert items["DynamoDB on-demand"] == pytest.approx(2056.41)
    # ceil(5,060/0.5) = 10,120 RCU, ceil(240/0.5) = 480 WCU: (1.3156 + 0.312) x 730
    assert items["DynamoDB provisioned"] == pytest.approx(1188.148)
    # 600,000 x 8.64 x 100 days x 1,000 B = 518.4 GB x 0.25
    assert items["DynamoDB storage"] == pytest.approx(129.6)
    # Redis CPU (10,000 x 0.00001 + 60 x 0.00002) / 0.5 = 0.2024 vCPU > t4g.micro's 0.2 sustained:
    # cache.t4g.small (0.4), primary + replica = 2 x 0.032 x 730
    assert items["ElastiCache"] == pytest.approx(46.72)
    # LCU: new connections 10,060/25 = 402.4 beats 600,000/3,000 = 200 and 36.2 GB/h:
    # (0.0225 + 402.4 x 0.008) x 730
    assert items["ALB"] == pytest.approx(2366.441)
    # (10,000 x 600 + 60 x 500) B/s x 2,628,000 s = 15,846.84 GB x 0.09
    assert items["Data transfer out"] == pytest.approx(1426.2156)
    included = {i.name for i in result.line_items if i.included}
    assert "DynamoDB provisioned" in included  # cheaper than on-demand here
    assert "DynamoDB on-demand" not in included
    assert result.total == pytest.approx(5553.5657)  # sum of the counted items
    assert result.design_scope_total == pytest.approx(1631.3091)  # Fargate + DynamoDB + cache


def test_postgres_redis_picks_the_rds_class_by_database_cpu() -> None:
    items = _items(_one("postgres-redis"))
    # database CPU (10,000 x 0.00005 + 60 x 0.0005) / 0.5 = 1.06 vCPU: the t4g classes sustain
    # at most 0.6 (large: 2 x 30 %), so db.m7g.large, Multi-AZ = 2 x 0.168 x 730
    assert items["RDS PostgreSQL"] == pytest.approx(245.28)
    assert items["RDS storage"] == pytest.approx(518.4 * 2 * 0.115)  # both AZs hold the data
    single = _items(_one("postgres-redis", inputs=dataclasses.replace(INPUTS, rds_multi_az=False)))
    assert single["RDS PostgreSQL"] == pytest.approx(122.64)


def test_sqlite_single_has_a_one_process_ceiling() -> None:
    # per user: (1/60)/2,000 + (8.64/86,400)/500 = 8.5333e-6 of a process; 0.5 / that = 58,593.75
    assert single_process_ceiling(WORKLOAD, SHAPE, INPUTS) == 58_593
    over = _one("sqlite-single", users=USERS)
    assert not over.feasible and over.total is None
    assert over.notes[0].startswith("EXCEEDS ONE PROCESS")
    under = _one("sqlite-single", users=30_000)
    # 30,000 users: 500 checks/s + 3 sends/s; throughput 0.256 / 0.5 = 0.512 vCPU > a t4g's
    # 0.4 sustained, so c7g.large: 0.0725 x 730
    assert under.feasible
    assert _items(under)["EC2 instance"] == pytest.approx(52.925)
    assert "ALB" not in _items(under)  # one instance, no load balancer


def test_peak_factor_sizes_capacity_but_not_usage_billing() -> None:
    peak = dataclasses.replace(INPUTS, peak_factor=2.0)
    base, doubled = _items(_one("dynamodb-fargate")), _items(_one("dynamodb-fargate", inputs=peak))
    assert doubled["Fargate"] == pytest.approx(21 * 36.0401)  # ceil(20.48) tasks
    assert doubled["DynamoDB provisioned"] == pytest.approx((20240 * 0.00013 + 960 * 0.00065) * 730)
    assert doubled["DynamoDB on-demand"] == pytest.approx(base["DynamoDB on-demand"])
    assert doubled["Data transfer out"] == pytest.approx(base["Data transfer out"])


def test_dynamodb_mode_can_force_on_demand() -> None:
    result = _one("dynamodb-fargate", inputs=dataclasses.replace(INPUTS, dynamodb_mode="on-demand"))
    counted = {i.name for i in result.line_items if i.included}
    assert "DynamoDB on-demand" in counted and "DynamoDB provisioned" not in counted


def test_small_scale_keeps_the_minimum_task_count() -> None:
    items = _items(_one("dynamodb-fargate", users=1_000))
    assert items["Fargate"] == pytest.approx(2 * 36.0401)  # min_tasks = 2


def test_pick_class_takes_the_cheapest_that_fits_or_several_of_the_biggest() -> None:
    table = (
        InstanceClass("big", 4, 16, 0.4),
        InstanceClass("burst", 2, 4, 0.05, baseline=0.2),  # 0.4 vCPU sustained
        InstanceClass("small", 1, 2, 0.1),
    )
    assert pick_class(table, 0.3) == (table[1], 1)
    assert pick_class(table, 0.9) == (table[2], 1)
    assert pick_class(table, 3.5) == (table[0], 1)
    assert pick_class(table, 9.0) == (table[0], 3)  # ceil(9 / 4)
    with pytest.raises(ModelError):
        pick_class((), 1.0)


def test_redis_counts_one_thread_per_node() -> None:
    heavy = msgspec.structs.replace(CHECK, cache_cpu_seconds_per_request=0.00009)
    bench = BenchFile(
        format="parley-bench/1",
        sample=False,
        workload=WORKLOAD,
        shapes={"postgres-redis": ShapeBench(operations={"check": heavy, "send": SEND})},
    )
    (result,) = estimate(bench, [USERS], Prices(), INPUTS)
    # (10,000 x 0.00009 + 60 x 0.00002) / 0.5 = 1.8024 vCPU of Redis: a cache.m7g.large gives one
    # thread (1.0), so 2 shards x (primary + replica) = 4 nodes x 0.158 x 730
    assert _items(result)["ElastiCache"] == pytest.approx(4 * 0.158 * 730)


@pytest.mark.parametrize(
    "change",
    [
        {"target_utilisation": 0.0},
        {"target_utilisation": 1.5},
        {"task_vcpu": 3.0},
        {"task_vcpu": 1.0, "task_memory_gb": 16.0},
        {"peak_factor": 0.5},
        {"dynamodb_mode": "reserved"},
        {"min_tasks": 0},
    ],
)
def test_inputs_out_of_range_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ModelError):
        dataclasses.replace(ModelInputs(), **change).validate()  # type: ignore[arg-type]


def test_settings_reach_inputs_and_workload() -> None:
    inputs, workload = with_settings(
        ModelInputs(),
        WORKLOAD,
        {
            "rds_multi_az": "false",
            "min_tasks": "3",
            "peak_factor": "2",
            "sends_per_user_per_day": "20",
        },
    )
    assert inputs.rds_multi_az is False and inputs.min_tasks == 3 and inputs.peak_factor == 2.0
    assert workload.sends_per_user_per_day == 20.0
    assert workload.checks_per_user_per_minute == 1.0
    for bad in (
        {"nope": "1"},
        {"rds_multi_az": "maybe"},
        {"min_tasks": "1.5"},
        {"peak_factor": "x"},
    ):
        with pytest.raises(ModelError):
            with_settings(ModelInputs(), WORKLOAD, bad)


# --- the realistic workload, connections, memory, unknown figures, DynamoDB, availability ---

IDLE = OperationProfile(
    requests_per_second=10_000,
    cpu_seconds_per_request=0.0001,
    storage_reads_per_request=0,
    storage_writes_per_request=0,
    storage_cpu_seconds_per_request=0,
    cache_ops_per_request=1,
    cache_cpu_seconds_per_request=0.000002,
    request_bytes=400,
    response_bytes=300,
)
WITH_IDLE = ShapeBench(
    operations={"check": CHECK, "idle": IDLE, "send": SEND}, process_base_bytes=100e6
)


def test_realistic_messages_per_check_follow_from_sends_checks_and_fan_out() -> None:
    w = Workload(
        checks_per_user_per_minute=1,
        sends_per_user_per_day=10,
        messages_per_check=7,
        group_send_share=0.5,
        group_members=5,
    )
    # half the sends reach 1 user, half reach the 4 other members: 2.5 recipients a send;
    # 10 x 2.5 = 25 messages received a day over 1,440 checks
    assert w.recipients_per_send == pytest.approx(2.5)
    assert w.realistic_messages_per_check == pytest.approx(25 / 1440)
    assert w.scenario("original").messages_per_check == 7  # the course design's, kept
    assert w.scenario("realistic").messages_per_check == pytest.approx(0.0173611)
    private_only = msgspec.structs.replace(w, group_send_share=0)
    assert private_only.realistic_messages_per_check == pytest.approx(10 / 1440)  # finding 8


def test_realistic_workload_prices_most_checks_as_idle() -> None:
    w = WORKLOAD.scenario("realistic")
    load = compute_load(USERS, w, WITH_IDLE, INPUTS)
    busy = w.realistic_messages_per_check  # 8.64 x 2.5 / 1,440 = 0.015
    assert load.busy_check_share == pytest.approx(0.015)
    assert load.requests_per_second["check"] == pytest.approx(10_000 * busy)
    assert load.requests_per_second["idle"] == pytest.approx(10_000 * (1 - busy))
    # CPU: (150 x 0.0003 + 9,850 x 0.0001 + 60 x 0.001) / 0.5 = 2.18 vCPU
    assert load.app_vcpus_by_cpu == pytest.approx(2.18)
    original = compute_load(USERS, WORKLOAD, WITH_IDLE, INPUTS)
    assert original.requests_per_second["idle"] == 0  # 7 a check: every check finds some
    assert original.app_vcpus_by_cpu == pytest.approx(6.12)


def test_estimate_shows_both_workloads() -> None:
    bench = BenchFile(
        format="parley-bench/1",
        sample=False,
        idle_connection_bytes=0,
        workload=WORKLOAD,
        shapes={"postgres-redis": WITH_IDLE},
    )
    results = estimate(bench, [USERS], Prices(), INPUTS, workloads=("original", "realistic"))
    by_name = {r.workload: r for r in results}
    assert set(by_name) == {"original", "realistic"}
    original, realistic = by_name["original"].total, by_name["realistic"].total
    assert original is not None and realistic is not None
    assert realistic < original


def _front_items(inputs: ModelInputs, users: int = USERS) -> dict[str, LineItem]:
    bench = BenchFile(
        format="parley-bench/1",
        sample=False,
        idle_connection_bytes=0,
        workload=WORKLOAD,
        shapes={"postgres-redis": SHAPE},
    )
    (result,) = estimate(bench, [users], Prices(), inputs)
    return {i.name: i for i in result.line_items}


def test_kept_alive_connections_move_the_alb_to_active_connections() -> None:
    kept = dataclasses.replace(
        INPUTS, new_connections_per_request=0, reconnects_per_user_per_hour=1
    )
    alb = _front_items(kept)["ALB"]
    # new connections: 600,000 / 3,600 = 166.7/s -> 6.7 LCU; active 600,000 / 3,000 = 200 LCU;
    # bytes (10,000 x 1,000 + 60 x 1,000) B/s x 3,600 = 36.2 GB/h -> 36.2 LCU
    assert alb.monthly == pytest.approx((0.0225 + 200 * 0.008) * 730)
    assert "by active connections" in alb.detail


def test_nlb_is_priced_in_nlcu_and_chosen_when_cheaper() -> None:
    kept = dataclasses.replace(
        INPUTS,
        new_connections_per_request=0,
        reconnects_per_user_per_hour=1,
        load_balancer="cheaper",
    )
    items = _front_items(kept)
    tcp, tls, alb = items["NLB (TCP, TLS in Parley)"], items["NLB (TLS listener)"], items["ALB"]
    # TCP listener: 166.7 new flows/s / 800 = 0.21; 600,000 / 100,000 = 6; 36.216 GB/h / 1:
    # processed bytes decide, 36.216 NLCU
    assert tcp.monthly == pytest.approx((0.0225 + 36.216 * 0.006) * 730)
    assert "by processed bytes" in tcp.detail
    # TLS listener: 600,000 active / 3,000 = 200 NLCU
    assert tls.monthly == pytest.approx((0.0225 + 200 * 0.006) * 730)
    assert tcp.included and not tls.included and not alb.included
    # behind the TCP listener Parley terminates TLS: 166.7 handshakes/s x 2 ms / 0.5 = 0.67 vCPU
    # on top of 10.24: ceil(10.91) = 11 tasks (10.24 alone also needs 11)
    assert "incl. 0.67 for TLS handshakes" in items["Fargate"].detail
    forced = _front_items(dataclasses.replace(kept, load_balancer="alb"))
    assert forced["ALB"].included and not forced["NLB (TCP, TLS in Parley)"].included


def _shape_with_memory(
    connection_bytes: float | None, base: float | None, inputs: ModelInputs = INPUTS
) -> ShapeCost:
    sb = ShapeBench(operations={"check": CHECK, "send": SEND}, process_base_bytes=base)
    bench = BenchFile(
        format="parley-bench/1",
        sample=False,
        idle_connection_bytes=connection_bytes,
        workload=WORKLOAD,
        shapes={"dynamodb-fargate": sb},
    )
    (result,) = estimate(bench, [USERS], Prices(), inputs)
    return result


def test_task_count_is_the_larger_of_cpu_and_memory_bound() -> None:
    # usable per 2 GB task: 2 GiB x 0.8 - 100 MB = 1,617,983,529.6 B
    usable = 2 * 2**30 * 0.8 - 100e6
    # 600,000 connections x 36,659 B = 21.995 GB -> ceil(13.59) = 14 tasks > 11 by CPU
    heavy = _shape_with_memory(36_659, 100e6)
    assert math.ceil(600_000 * 36_659 / usable) == 14
    fargate = next(i for i in heavy.line_items if i.name == "Fargate")
    assert fargate.monthly == pytest.approx(14 * 36.0401)
    assert "memory-bound" in fargate.detail and "memory per idle connection" in fargate.driver
    # 12 KiB a connection: 7,372,800,000 B -> 5 tasks, so the CPU's 11 decide
    light = _shape_with_memory(12 * 1024, 100e6)
    fargate = next(i for i in light.line_items if i.name == "Fargate")
    assert fargate.monthly == pytest.approx(11 * 36.0401)
    assert "CPU-bound" in fargate.detail
    # a what-if for the memory per connection overrides the measured figure
    what_if = dataclasses.replace(INPUTS, idle_connection_kib=12)
    fargate = next(
        i for i in _shape_with_memory(36_659, 100e6, what_if).line_items if i.name == "Fargate"
    )
    assert fargate.monthly == pytest.approx(11 * 36.0401) and "12.0 KiB" in fargate.detail
    # with the memory size chosen: 3 GB tasks hold 21.995 GB in ceil(8.88) = 9 < 11 tasks, so
    # 11 x (0.04048 + 3 x 0.004445) x 730 = 432.13 beats 14 x 2 GB (504.56) and 11 x 4 GB
    sized = dataclasses.replace(INPUTS, size_task_memory=True)
    fargate = next(
        i for i in _shape_with_memory(36_659, 100e6, sized).line_items if i.name == "Fargate"
    )
    assert fargate.monthly == pytest.approx(432.13445)
    assert "11 tasks x 1 vCPU / 3 GB" in fargate.detail


def test_unknown_figures_are_never_priced_as_zero() -> None:
    # no connection memory measured: the Fargate line has no figure, and neither has the total
    result = _shape_with_memory(None, 100e6)
    fargate = next(i for i in result.line_items if i.name == "Fargate")
    assert fargate.monthly is None
    assert result.total is None and result.design_scope_total is None
    assert result.unknown == ("memory per idle connection",)
    # the known part counts the Fargate CPU bound as a floor: 11 tasks x 36.0401 (ceil 10.24)
    assert fargate.floor == pytest.approx(11 * 36.0401)
    known = sum(i.monthly for i in result.line_items if i.included and i.monthly is not None)
    assert result.known_total == pytest.approx(known + fargate.floor) and known > 0
    # database and Redis CPU absent from the bench file: unknown, not zero
    bare = OperationProfile(requests_per_second=2000, cpu_seconds_per_request=0.0003)
    bench = BenchFile(
        format="parley-bench/1",
        sample=False,
        idle_connection_bytes=0,
        workload=WORKLOAD,
        shapes={
            "postgres-redis": ShapeBench(
                operations={"check": bare, "send": bare}, process_base_bytes=1e8
            )
        },
    )
    (pg,) = estimate(bench, [USERS], Prices(), INPUTS)
    items = {i.name: i for i in pg.line_items}
    for name in ("RDS PostgreSQL", "ElastiCache", "ALB", "Data transfer out"):
        assert items[name].monthly is None, name
    assert pg.total is None
    assert {"PostgreSQL CPU", "Redis CPU", "response bytes"} <= set(pg.unknown)
    # a measured zero is a figure: SQLite has no database server to pay for
    assert pg.load.storage_vcpus is None
    zero = msgspec.structs.replace(bare, storage_cpu_seconds_per_request=0.0)
    assert compute_load(
        USERS, WORKLOAD, ShapeBench(operations={"check": zero, "send": zero}), INPUTS
    ).storage_vcpus == pytest.approx(0.0)


def test_unknown_figures_print_as_unknown() -> None:
    bare = {"requests_per_second": 2000, "cpu_seconds_per_request": 0.0003}
    doc = {
        "format": "parley-bench/1",
        "sample": False,
        "idle_connection_bytes": None,
        "shapes": {
            "postgres-redis": {
                "operations": {"check": bare, "send": {**bare, "response_bytes": None}}
            }
        },
    }
    bench = parse_bench(json.dumps(doc))
    report = Report.build("t", bench, [1_000_000], Prices(), ModelInputs(), bench.workload)
    text = render_text(report)
    assert "unknown (>= " in text
    assert "RDS PostgreSQL" in text and "PostgreSQL CPU per request not measured" in text
    assert "verdict: unknown" in text
    assert "$0.00" not in text.split("Prices (us-east-1")[0].split("3. Parley's model")[1]


def test_dynamodb_shape_priced_from_request_units_per_call() -> None:
    # the bench's DynamoDB shape: 4 calls at 1 RRU per check that finds messages (1 GetItem +
    # 3 Query), none for an idle check, 3 calls and 4 WRU per send (docs/dynamodb.md)
    ops = {
        "check": msgspec.structs.replace(
            CHECK, storage_reads_per_request=4, read_units_per_read=1.0
        ),
        "idle": msgspec.structs.replace(IDLE, storage_reads_per_request=0),
        "send": msgspec.structs.replace(
            SEND,
            storage_reads_per_request=0,
            storage_writes_per_request=3,
            write_units_per_write=4 / 3,
        ),
    }
    bench = BenchFile(
        format="parley-bench/1",
        sample=False,
        idle_connection_bytes=0,
        workload=WORKLOAD,
        shapes={"dynamodb-fargate": ShapeBench(operations=ops, process_base_bytes=1e8)},
    )
    original, realistic = estimate(
        bench, [USERS], Prices(), INPUTS, workloads=("original", "realistic")
    )
    # original: 10,000 checks/s x 4 = 40,000 RRU/s; 60 sends/s x 4 = 240 WRU/s
    assert original.load.read_units_per_second == pytest.approx(40_000)
    assert original.load.write_units_per_second == pytest.approx(240)
    # realistic: only 1.5 % of checks find something: 150 x 4 = 600 RRU/s
    assert realistic.load.read_units_per_second == pytest.approx(600)
    items = {i.name: i.monthly for i in realistic.line_items}
    # on-demand: 600 x 2.628 x 0.125 + 240 x 2.628 x 0.625 = 197.1 + 394.2
    assert items["DynamoDB on-demand"] == pytest.approx(591.3)
    # provisioned at 50 %: 1,200 RCU + 480 WCU = (0.156 + 0.312) x 730
    assert items["DynamoDB provisioned"] == pytest.approx(341.64)
    assert realistic.highly_available and realistic.total is not None


def test_cheapest_highly_available_shape_against_the_budget() -> None:
    bench = BenchFile(
        format="parley-bench/1",
        sample=False,
        idle_connection_bytes=0,
        workload=WORKLOAD,
        shapes={"sqlite-single": WITH_IDLE, "postgres-redis": WITH_IDLE},
    )
    results = estimate(bench, [30_000], Prices(), INPUTS, workloads=("realistic",))
    sqlite, pg = results
    assert not sqlite.highly_available and pg.highly_available
    assert pg.total is not None
    fits = cheapest_highly_available(results, 30_000, pg.total + 1, "realistic")
    assert fits.best is pg and fits.within is True and fits.workload == "realistic"
    over = cheapest_highly_available(results, 30_000, pg.total - 10, "realistic")
    assert over.within is False
    assert "over $" in over.text and "by $10.00" in over.text
    single_az = dataclasses.replace(INPUTS, rds_multi_az=False)
    none = estimate(bench, [30_000], Prices(), single_az, workloads=("realistic",))
    assert cheapest_highly_available(none, 30_000, 1e9, "realistic").best is None
    # the verdict's workload is the stream one by default: none in these results
    assert cheapest_highly_available(results, 30_000, 1e9).text.startswith("no highly")


# --- the stream workload: a live stream per online user ---

# Live-stream operations: requests_per_second is 1 / CPU, as `parley bench` writes it.
TICK = OperationProfile(
    requests_per_second=50_000,
    cpu_seconds_per_request=0.00002,
    storage_reads_per_request=0,
    storage_writes_per_request=0,
    storage_cpu_seconds_per_request=0,
    cache_ops_per_request=1,
    cache_cpu_seconds_per_request=0.000001,
    request_bytes=0,
    response_bytes=20,
)
PUSH = OperationProfile(
    requests_per_second=5_000,
    cpu_seconds_per_request=0.0002,
    storage_reads_per_request=1,
    storage_writes_per_request=0,
    read_units_per_read=0.5,
    storage_cpu_seconds_per_request=0.00004,
    cache_ops_per_request=2,
    cache_cpu_seconds_per_request=0.000004,
    request_bytes=0,
    response_bytes=400,
)
OPEN = OperationProfile(
    requests_per_second=2_000,
    cpu_seconds_per_request=0.0005,
    storage_reads_per_request=2,
    storage_writes_per_request=0,
    read_units_per_read=0.5,
    storage_cpu_seconds_per_request=0.0001,
    cache_ops_per_request=4,
    cache_cpu_seconds_per_request=0.00001,
    request_bytes=300,
    response_bytes=500,
)
STREAM_SHAPE = ShapeBench(
    operations={"check": CHECK, "send": SEND, "tick": TICK, "push": PUSH, "open": OPEN},
    process_vcpus=2,
    process_base_bytes=100e6,
)
# Half the users online, a keep-alive a minute, 1.2 reconnects an hour, a kept-alive client.
STREAM_INPUTS = dataclasses.replace(
    INPUTS,
    online_share=0.5,
    keepalive_seconds=60,
    reconnects_per_user_per_hour=1.2,
    new_connections_per_request=0,
    load_balancer="cheaper",
)


def _stream(shape: ShapeBench, stored: float | None = None) -> dict[str, ShapeCost]:
    sb = msgspec.structs.replace(shape, stored_bytes_per_message=stored)
    bench = BenchFile(
        format="parley-bench/1",
        sample=False,
        idle_connection_bytes=0,
        workload=WORKLOAD,
        shapes={"postgres-redis": sb, "dynamodb-fargate": sb},
    )
    results = estimate(bench, [USERS], Prices(), STREAM_INPUTS, workloads=("stream",))
    return {r.shape: r for r in results}


def test_stream_rates_by_hand() -> None:
    rates = stream_rates(USERS, WORKLOAD, STREAM_INPUTS)
    # send 600,000 x 8.64 / 86,400 = 60/s; tick 300,000 online / 60 s = 5,000/s;
    # push 60 x 2.5 recipients x 0.5 online = 75/s; open 300,000 x 1.2 / 3,600 = 100/s
    assert rates == pytest.approx({"send": 60, "tick": 5_000, "push": 75, "open": 100})


def test_stream_load_by_hand() -> None:
    load = compute_load(USERS, WORKLOAD, STREAM_SHAPE, STREAM_INPUTS, live_stream=True)
    assert load.live_stream and load.missing_operations == ()
    assert "check" not in load.requests_per_second  # a live stream replaces the checks
    # HTTP requests are sends and opens (ticks and pushes are bytes on an open response)
    assert load.total_requests_per_second == pytest.approx(160)  # 60 + 100
    assert load.messages_delivered_per_second == pytest.approx(150)  # 60 x 2.5
    # CPU: (60 x 0.001 + 5,000 x 0.00002 + 75 x 0.0002 + 100 x 0.0005) / 0.5
    #    = (0.06 + 0.1 + 0.015 + 0.05) / 0.5 = 0.45 vCPU
    assert load.app_vcpus_by_cpu == pytest.approx(0.45)
    # throughput: sends by their measured rate, stream operations by CPU only (over 2 vCPU):
    # 60/500 + 0.165/2 = 0.2025 processes; / 0.5 x 2 vCPU = 0.81 vCPU. (By 1 / their written
    # requests_per_second they would count twice: 0.12 + 0.165 = 0.285 -> 1.14 vCPU.)
    assert load.process_busy == pytest.approx(0.2025)
    assert load.app_vcpus_by_throughput == pytest.approx(0.81)
    assert load.app_vcpus == pytest.approx(0.81)
    # storage calls: 75 x 1 + 100 x 2 + 60 x 2 = 395 reads/s; 60 x 2 = 120 writes/s
    assert load.storage_reads_per_second == pytest.approx(395)
    assert load.storage_writes_per_second == pytest.approx(120)
    # request units: 395 x 0.5 = 197.5 RRU/s; 120 x 2 = 240 WRU/s
    assert load.read_units_per_second == pytest.approx(197.5)
    assert load.write_units_per_second == pytest.approx(240)
    # database CPU (75 x 0.00004 + 100 x 0.0001 + 60 x 0.0005) / 0.5 = 0.043 / 0.5 = 0.086
    assert load.storage_vcpus == pytest.approx(0.086)
    # Redis: 5,000 x 1 + 75 x 2 + 100 x 4 + 60 x 3 = 5,730 ops/s;
    # (0.005 + 0.0003 + 0.001 + 0.0012) / 0.5 = 0.015 vCPU
    assert load.cache_ops_per_second == pytest.approx(5_730)
    assert load.cache_vcpus == pytest.approx(0.015)
    # bytes in 100 x 300 + 60 x 500 = 60,000 B/s;
    # out 5,000 x 20 + 75 x 400 + 100 x 500 + 60 x 500 = 210,000 B/s
    assert load.bytes_in_per_second == pytest.approx(60_000)
    assert load.bytes_out_per_second == pytest.approx(210_000)
    # streams held: 600,000 x 0.5; new connections: the opens
    assert load.connections == pytest.approx(300_000)
    assert load.new_connections_per_second == pytest.approx(100)


def test_stream_dynamodb_fargate_by_hand() -> None:
    result = _stream(STREAM_SHAPE)["dynamodb-fargate"]
    items = {i.name: i for i in result.line_items}
    monthly = {name: i.monthly for name, i in items.items()}
    # 0.81 vCPU + 100 handshakes/s x 2 ms / 0.5 = 0.4 for TLS behind nlb-tcp: ceil(1.21) = 2
    # tasks = min_tasks: 2 x (0.04048 + 2 x 0.004445) x 730 = 2 x 36.0401
    assert monthly["Fargate"] == pytest.approx(72.0802)
    # ALB: active 300,000 / 3,000 = 100 LCU beats 100/25 = 4 new and 0.972 GB/h:
    # (0.0225 + 100 x 0.008) x 730
    assert monthly["ALB"] == pytest.approx(600.425)
    # NLB TCP: active 300,000 / 100,000 = 3 NLCU beats 100/800 = 0.125 new and
    # (60,000 + 210,000) x 3,600 / 1e9 = 0.972 GB/h: (0.0225 + 3 x 0.006) x 730
    assert monthly["NLB (TCP, TLS in Parley)"] == pytest.approx(29.565)
    assert "by active connections" in items["NLB (TCP, TLS in Parley)"].detail
    # NLB TLS: 300,000 / 3,000 = 100 NLCU: (0.0225 + 100 x 0.006) x 730
    assert monthly["NLB (TLS listener)"] == pytest.approx(454.425)
    assert items["NLB (TCP, TLS in Parley)"].included and not items["ALB"].included
    # on-demand: 197.5 x 2.628 x 0.125 + 240 x 2.628 x 0.625 = 64.87875 + 394.2
    assert monthly["DynamoDB on-demand"] == pytest.approx(459.07875)
    # provisioned at 50 %: 395 RCU + 480 WCU = (0.05135 + 0.312) x 730, the cheaper
    assert monthly["DynamoDB provisioned"] == pytest.approx(265.2455)
    assert items["DynamoDB provisioned"].included
    # 600,000 x 8.64 x 100 days x 1,000 B (the input) = 518.4 GB x 0.25
    assert monthly["DynamoDB storage"] == pytest.approx(129.6)
    assert "1,000 B, input, not measured" in items["DynamoDB storage"].detail
    # 0.015 vCPU of Redis: cache.t4g.micro, primary + replica = 2 x 0.016 x 730
    assert monthly["ElastiCache"] == pytest.approx(23.36)
    # 210,000 B/s x 2,628,000 s = 551.88 GB x 0.09
    assert monthly["Data transfer out"] == pytest.approx(49.6692)
    assert "keep-alive tick" in items["Data transfer out"].driver  # 5,000 x 20 B: the most
    # 72.0802 + 265.2455 + 129.6 + 23.36 + 29.565 + 49.6692
    assert result.total == pytest.approx(569.5199)
    assert result.workload == "stream" and result.highly_available


def test_stream_postgres_redis_by_hand() -> None:
    items = {i.name: i.monthly for i in _stream(STREAM_SHAPE)["postgres-redis"].line_items}
    # 0.086 vCPU of PostgreSQL: db.t4g.micro (0.2 sustained), Multi-AZ = 2 x 0.016 x 730
    assert items["RDS PostgreSQL"] == pytest.approx(23.36)
    # 518.4 GB x 2 (Multi-AZ) x 0.115
    assert items["RDS storage"] == pytest.approx(119.232)


def test_measured_stored_bytes_override_the_input() -> None:
    result = _stream(STREAM_SHAPE, stored=250)["dynamodb-fargate"]
    storage = next(i for i in result.line_items if i.name == "DynamoDB storage")
    # 600,000 x 8.64 x 100 days x 250 B = 129.6 GB x 0.25
    assert storage.monthly == pytest.approx(32.4)
    assert "250 B, measured" in storage.detail and "input" not in storage.detail
    pg = next(i for i in _stream(STREAM_SHAPE, stored=250)["postgres-redis"].line_items
              if i.name == "RDS storage")  # fmt: skip
    assert pg.monthly == pytest.approx(129.6 * 2 * 0.115)  # 29.808
    assert "250 B, measured" in pg.driver


def test_stream_is_unknown_when_the_bench_has_no_stream_figures() -> None:
    result = _stream(SHAPE)["dynamodb-fargate"]  # check and send only: an older bench file
    assert result.total is None and result.design_scope_total is None
    assert result.unknown == ("live-stream tick", "live-stream push", "live-stream open")
    items = {i.name: i for i in result.line_items}
    for name in ("Fargate", "DynamoDB", "ElastiCache", "NLB (TCP, TLS in Parley)"):
        assert items[name].monthly is None, name
        assert items[name].unknown == result.unknown, name
    assert items["Data transfer out"].monthly is None
    assert "live-stream tick, live-stream push, live-stream open not measured" in (
        items["Data transfer out"].detail
    )
    # what is known still counts, as a lower bound: storage 129.6; Fargate at least 2 tasks
    # (72.0802: sends need 0.24 vCPU + 0.4 for TLS); NLB TCP at least 3 NLCU (29.565, active
    # streams); ElastiCache at least 2 x cache.t4g.micro (23.36); DynamoDB no floor
    assert items["DynamoDB storage"].monthly == pytest.approx(129.6)
    assert items["Fargate"].floor == pytest.approx(72.0802)
    assert items["NLB (TCP, TLS in Parley)"].floor == pytest.approx(29.565)
    assert items["ElastiCache"].floor == pytest.approx(23.36)
    assert result.known_total == pytest.approx(254.6052)  # 129.6 + 72.0802 + 29.565 + 23.36
    assert any("no live-stream figures" in n for n in result.notes)
    # only the operations that are missing are named
    partial = msgspec.structs.replace(SHAPE, operations={**SHAPE.operations, "tick": TICK})
    assert _stream(partial)["postgres-redis"].unknown == ("live-stream push", "live-stream open")
    # nobody online: no stream runs, so nothing is missing
    offline = dataclasses.replace(STREAM_INPUTS, online_share=0.0)
    assert compute_load(USERS, WORKLOAD, SHAPE, offline, live_stream=True).missing_operations == ()


def test_stream_verdict_names_the_missing_figures_and_the_known_floor() -> None:
    results = list(_stream(SHAPE).values())
    verdict = cheapest_highly_available(results, USERS, 200.0)
    assert verdict.workload == "stream" and verdict.best is None
    assert verdict.within is False  # 254.61 of known costs exceed 200 whatever the rest
    assert "not measured: live-stream tick, live-stream push, live-stream open" in verdict.text
    assert "exceeds $200.00 by $54.61" in verdict.text
    assert "Fargate >= $72.08" in verdict.text
    unknown = cheapest_highly_available(results, USERS, 1_000.0)
    assert unknown.within is None and unknown.text.startswith("unknown")
    priced = cheapest_highly_available(list(_stream(STREAM_SHAPE).values()), USERS, 440.0)
    assert priced.best is not None and priced.within is True
    # postgres-redis: Fargate 72.0802 + RDS 23.36 + RDS storage 119.232 + ElastiCache 23.36
    # + NLB 29.565 + transfer 49.6692 = 317.2664 (DynamoDB's provisioned 265.25 makes it 569.52)
    assert priced.best.shape == "postgres-redis"
    assert priced.best.total == pytest.approx(317.2664)
    assert "within $440.00" in priced.text


def test_single_process_ceiling_of_the_stream_workload() -> None:
    one_vcpu = msgspec.structs.replace(STREAM_SHAPE, process_vcpus=1.0)
    # per user: sends (8.64/86,400)/500 = 2e-7; stream CPU (0.5/60 x 0.00002 + 1e-4 x 2.5 x 0.5
    # x 0.0002 + 0.5 x 1.2/3,600 x 0.0005) = 1.6667e-7 + 2.5e-8 + 8.3333e-8 = 2.75e-7;
    # 0.5 / 4.75e-7 = 1,052,631.6
    ceiling = single_process_ceiling(WORKLOAD, one_vcpu, STREAM_INPUTS, live_stream=True)
    assert ceiling == 1_052_631
    # the same on 2 vCPU: 2e-7 + 2.75e-7 / 2 = 3.375e-7 -> 1,481,481.5
    two = single_process_ceiling(WORKLOAD, STREAM_SHAPE, STREAM_INPUTS, live_stream=True)
    assert two == 1_481_481


def test_stream_inputs_are_validated_and_settable() -> None:
    for bad in ({"online_share": 1.5}, {"online_share": -0.1}, {"keepalive_seconds": 0.0}):
        with pytest.raises(ModelError):
            dataclasses.replace(ModelInputs(), **bad).validate()  # type: ignore[arg-type]
    inputs, _ = with_settings(
        ModelInputs(), WORKLOAD, {"online_share": "0.3", "keepalive_seconds": "120"}
    )
    assert inputs.online_share == 0.3 and inputs.keepalive_seconds == 120.0
    defaults = ModelInputs()
    assert defaults.online_share == 1.0 and defaults.keepalive_seconds == 60.0


def test_old_bench_files_still_load_and_new_fields_are_checked() -> None:
    old = {
        "format": "parley-bench/1",
        "sample": False,
        "shapes": {
            "postgres-redis": {
                "operations": {
                    "check": {"requests_per_second": 100, "cpu_seconds_per_request": 0.001},
                    "idle": {"requests_per_second": 400, "cpu_seconds_per_request": 0.0002},
                    "send": {"requests_per_second": 50, "cpu_seconds_per_request": 0.002},
                }
            }
        },
    }
    bench = parse_bench(json.dumps(old))
    assert bench.shapes["postgres-redis"].stored_bytes_per_message is None
    assert set(bench.shapes["postgres-redis"].operations) == {"check", "idle", "send"}
    new = json.loads(json.dumps(old))
    shape = new["shapes"]["postgres-redis"]
    shape["stored_bytes_per_message"] = 420.5
    shape["operations"]["tick"] = {"requests_per_second": 50_000, "cpu_seconds_per_request": 2e-5}
    assert parse_bench(json.dumps(new)).shapes["postgres-redis"].stored_bytes_per_message == 420.5
    shape["stored_bytes_per_message"] = -1
    with pytest.raises(BenchError, match=r"postgres-redis\.stored_bytes_per_message"):
        parse_bench(json.dumps(new))
    del shape["stored_bytes_per_message"]
    shape["stored_bytes"] = 400  # unknown fields are still rejected
    with pytest.raises(BenchError, match="stored_bytes"):
        parse_bench(json.dumps(new))
    del shape["stored_bytes"]
    shape["operations"]["poll"] = shape["operations"]["tick"]
    with pytest.raises(BenchError, match="unknown poll"):
        parse_bench(json.dumps(new))


def test_a_stream_operation_is_never_named_as_a_throughput_limit() -> None:
    busy_tick = msgspec.structs.replace(TICK, cpu_seconds_per_request=0.0001)
    shape = msgspec.structs.replace(
        STREAM_SHAPE, operations={**STREAM_SHAPE.operations, "tick": busy_tick}
    )
    load = compute_load(USERS, WORKLOAD, shape, STREAM_INPUTS, live_stream=True)
    # CPU (0.06 + 0.5 + 0.015 + 0.05) / 0.5 = 1.25; throughput (60/500 + 0.565/2) / 0.5 x 2
    # = 1.61: throughput-bound, and the busiest operation is the tick (5,000 x 0.0001 / 2 = 0.25)
    assert load.app_vcpus_by_cpu == pytest.approx(1.25)
    assert load.app_vcpus == pytest.approx(1.61)
    fargate = next(i for i in _stream(shape)["postgres-redis"].line_items if i.name == "Fargate")
    assert fargate.driver == "app CPU of a keep-alive tick of an idle stream (0.1 ms)"
    sends = next(
        i for i in _stream(STREAM_SHAPE)["postgres-redis"].line_items if i.name == "Fargate"
    )
    assert sends.driver.startswith("throughput of the measured process(es) on a send")


def test_the_tls_handshake_cost_is_the_set_figure_else_the_measured_else_assumed() -> None:
    from parley.cost.measured import BenchFile
    from parley.cost.model import TLS_HANDSHAKE_ASSUMED, tls_handshake

    plain = BenchFile(format="parley-bench/1", sample=False, shapes={})
    measured = BenchFile(
        format="parley-bench/1", sample=False, shapes={}, tls_handshake_cpu_seconds=0.0007
    )
    assert tls_handshake(plain, ModelInputs()) == (TLS_HANDSHAKE_ASSUMED, "assumed")
    assert tls_handshake(measured, ModelInputs()) == (0.0007, "measured")
    chosen, _ = with_settings(ModelInputs(), WORKLOAD, {"tls_handshake_cpu_seconds": "0.001"})
    assert tls_handshake(measured, chosen) == (0.001, "set")
    for bad in ("-1", "inf"):
        with pytest.raises(ModelError):
            with_settings(ModelInputs(), WORKLOAD, {"tls_handshake_cpu_seconds": bad})
