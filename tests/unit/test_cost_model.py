"""Parley's cost model against hand computations on a bench with round numbers."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from parley.cost.measured import BenchFile, OperationProfile, ShapeBench, Workload
from parley.cost.model import (
    ModelError,
    ModelInputs,
    ShapeCost,
    compute_load,
    estimate,
    pick_class,
    single_process_ceiling,
    with_settings,
)
from parley.cost.prices import InstanceClass, Prices

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
    reconnects_per_user_per_hour=0,
)  # fmt: skip


def _one(shape: str, users: int = USERS, inputs: ModelInputs = INPUTS) -> ShapeCost:
    (result,) = [r for r in estimate(BENCH, [users], Prices(), inputs) if r.shape == shape]
    return result


def _items(result: ShapeCost) -> dict[str, float]:
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
