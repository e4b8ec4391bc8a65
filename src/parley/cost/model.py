"""Parley's capacity and cost model: pure functions from measured figures to dollars a month.

For ``users`` users the workload gives requests per second per operation; the bench gives what
one request of each operation costs (CPU, storage calls, request units, cache CPU, bytes) in each
deployment shape. Capacity is sized at ``peak_factor`` x the average rate and at
``target_utilisation``; usage-billed items (DynamoDB on-demand, ALB LCUs, data transfer) are
billed on the average.
Formulas are spelled out in ``docs/cost.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from parley.cost.measured import OPERATIONS, SHAPES, BenchFile, ShapeBench, Workload
from parley.cost.prices import InstanceClass, Prices

__all__ = [
    "CATEGORIES",
    "DESIGN_SCOPE",
    "DYNAMODB_MODES",
    "FARGATE_SIZES",
    "LineItem",
    "Load",
    "ModelError",
    "ModelInputs",
    "ShapeCost",
    "compute_load",
    "estimate",
    "estimate_shape",
    "pick_class",
    "single_process_ceiling",
    "with_settings",
]

GB: Final = 1e9  # bytes; AWS data and storage prices are per GB
DYNAMODB_MODES: Final = ("cheaper", "on-demand", "provisioned")
# Fargate task sizes: vCPU -> (min, max) memory in GB.
FARGATE_SIZES: Final[Mapping[float, tuple[float, float]]] = {
    0.25: (0.5, 2),
    0.5: (1, 4),
    1: (2, 8),
    2: (4, 16),
    4: (8, 30),
    8: (16, 60),
    16: (32, 120),
}
ALB_NEW_CONNECTIONS_PER_LCU: Final = 25  # per second
ALB_ACTIVE_CONNECTIONS_PER_LCU: Final = 3_000  # per minute
ALB_GB_PER_LCU: Final = 1.0  # processed per hour
ALB_RULE_EVALUATIONS_PER_LCU: Final = 1_000  # per second
ALB_FREE_RULES: Final = 10


class ModelError(ValueError):
    """A model input is out of range (utilisation outside (0, 1], an invalid Fargate size, ...)."""


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """Deployment and traffic assumptions: all editable (``--set NAME=VALUE``)."""

    target_utilisation: float = 0.6  # of every CPU we size (app, database, cache)
    task_vcpu: float = 1.0
    task_memory_gb: float = 2.0
    min_tasks: int = 2  # scale-out shapes keep two tasks for availability
    peak_factor: float = 1.0  # busiest-hour rate / average rate, for capacity
    dynamodb_mode: str = "cheaper"  # which DynamoDB billing mode counts in the total
    dynamodb_target_utilisation: float = 0.7  # provisioned capacity (AWS auto-scaling default)
    rds_multi_az: bool = True
    cache_replicas: int = 1  # per Redis shard
    new_connections_per_request: float = 1.0  # checks a minute apart rarely reuse a connection
    active_connections_per_user: float = 1.0
    alb_rules_per_request: float = 1.0
    stored_bytes_per_message: float = 500.0  # item or row with keys and index overhead
    retention_days: float = 365.0
    hours_per_month: float = 730.0

    def validate(self) -> ModelInputs:
        if not 0 < self.target_utilisation <= 1:
            raise ModelError("target_utilisation must be in (0, 1]")
        if not 0 < self.dynamodb_target_utilisation <= 1:
            raise ModelError("dynamodb_target_utilisation must be in (0, 1]")
        if self.task_vcpu not in FARGATE_SIZES:
            sizes = ", ".join(f"{v:g}" for v in FARGATE_SIZES)
            raise ModelError(f"task_vcpu {self.task_vcpu:g} is not a Fargate size ({sizes})")
        low, high = FARGATE_SIZES[self.task_vcpu]
        if not low <= self.task_memory_gb <= high:
            raise ModelError(
                f"task_memory_gb {self.task_memory_gb:g} does not fit {self.task_vcpu:g} vCPU "
                f"(Fargate allows {low:g}-{high:g} GB)"
            )
        if self.dynamodb_mode not in DYNAMODB_MODES:
            raise ModelError(f"dynamodb_mode must be one of {', '.join(DYNAMODB_MODES)}")
        if self.min_tasks < 1 or self.cache_replicas < 0:
            raise ModelError("min_tasks must be >= 1 and cache_replicas >= 0")
        for name in (
            "peak_factor",
            "new_connections_per_request",
            "active_connections_per_user",
            "alb_rules_per_request",
            "stored_bytes_per_message",
            "retention_days",
            "hours_per_month",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ModelError(f"{name} must be a finite number >= 0")
        if self.peak_factor < 1:
            raise ModelError("peak_factor must be >= 1 (it scales the average up to the peak)")
        return self


def _coerce(name: str, current: object, text: str) -> object:
    if isinstance(current, bool):
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise ModelError(f"{name}: expected true or false, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ModelError(f"{name}: expected a whole number, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ModelError(f"{name}: expected a number, got {text!r}") from None
    return text


def with_settings(
    inputs: ModelInputs, workload: Workload, settings: Mapping[str, str]
) -> tuple[ModelInputs, Workload]:
    """Apply ``NAME=VALUE`` settings to the model inputs or the workload (names are distinct)."""
    input_names = {f.name for f in dataclasses.fields(ModelInputs)}
    workload_names = set(Workload.__struct_fields__)
    changes: dict[str, object] = {}
    workload_changes: dict[str, float] = {}
    for name, text in settings.items():
        if name in input_names:
            changes[name] = _coerce(name, getattr(inputs, name), text)
        elif name in workload_names:
            value = _coerce(name, 0.0, text)
            assert isinstance(value, float)
            if not math.isfinite(value) or value < 0:
                raise ModelError(f"{name} must be a finite number >= 0")
            workload_changes[name] = value
        else:
            known = ", ".join(sorted(input_names | workload_names))
            raise ModelError(f"unknown setting {name!r}; known: {known}")
    new_inputs = dataclasses.replace(inputs, **changes).validate()  # type: ignore[arg-type]
    fields = {f: getattr(workload, f) for f in workload_names} | workload_changes
    return new_inputs, Workload(**fields)


@dataclass(frozen=True, slots=True)
class Load:
    """What ``users`` users ask of one shape, per second. ``*_vcpus`` are sized for the peak."""

    users: int
    requests_per_second: dict[str, float]
    total_requests_per_second: float
    messages_sent_per_second: float
    messages_delivered_per_second: float
    process_busy: float  # processes fully busy at the peak (sum of rate / one process's rate)
    app_vcpus_by_cpu: float
    app_vcpus_by_throughput: float
    app_vcpus: float
    storage_reads_per_second: float
    storage_writes_per_second: float
    read_units_per_second: float
    write_units_per_second: float
    storage_vcpus: float
    cache_ops_per_second: float
    cache_vcpus: float
    bytes_in_per_second: float
    bytes_out_per_second: float


def compute_load(users: int, workload: Workload, bench: ShapeBench, inputs: ModelInputs) -> Load:
    rates = workload.rates(users)
    peak, util = inputs.peak_factor, inputs.target_utilisation
    ops = bench.operations

    def total(per_request: Callable[[str], float]) -> float:
        return sum(rates[op] * per_request(op) for op in OPERATIONS)

    process_busy = peak * total(lambda op: 1 / ops[op].requests_per_second)
    by_cpu = peak * total(lambda op: ops[op].cpu_seconds_per_request) / util
    by_throughput = process_busy / util * bench.process_vcpus
    return Load(
        users=users,
        requests_per_second=rates,
        total_requests_per_second=sum(rates.values()),
        messages_sent_per_second=rates["send"],
        messages_delivered_per_second=rates["check"] * workload.messages_per_check,
        process_busy=process_busy,
        app_vcpus_by_cpu=by_cpu,
        app_vcpus_by_throughput=by_throughput,
        app_vcpus=max(by_cpu, by_throughput),
        storage_reads_per_second=total(lambda op: ops[op].storage_reads_per_request),
        storage_writes_per_second=total(lambda op: ops[op].storage_writes_per_request),
        read_units_per_second=total(
            lambda op: ops[op].storage_reads_per_request * ops[op].read_units_per_read
        ),
        write_units_per_second=total(
            lambda op: ops[op].storage_writes_per_request * ops[op].write_units_per_write
        ),
        storage_vcpus=peak * total(lambda op: ops[op].storage_cpu_seconds_per_request) / util,
        cache_ops_per_second=total(lambda op: ops[op].cache_ops_per_request),
        cache_vcpus=peak * total(lambda op: ops[op].cache_cpu_seconds_per_request) / util,
        bytes_in_per_second=total(lambda op: ops[op].request_bytes),
        bytes_out_per_second=total(lambda op: ops[op].response_bytes),
    )


CATEGORIES: Final = ("compute", "database", "cache", "storage", "network")
DESIGN_SCOPE: Final = ("compute", "database", "cache")  # what the course design priced


@dataclass(frozen=True, slots=True)
class LineItem:
    name: str
    category: str  # one of CATEGORIES
    monthly: float
    detail: str
    included: bool = True  # False for an alternative shown beside the one that counts


@dataclass(frozen=True, slots=True)
class ShapeCost:
    shape: str
    users: int
    feasible: bool
    total: float | None  # None when the shape cannot carry the load
    design_scope_total: float | None  # compute + database + cache: what the course design priced
    line_items: tuple[LineItem, ...]
    notes: tuple[str, ...]
    load: Load = field(repr=False)


def pick_class(
    classes: Sequence[InstanceClass],
    required_vcpus: float,
    usable: Callable[[InstanceClass], float] = lambda c: c.sustained_vcpu,
) -> tuple[InstanceClass, int]:
    """The cheapest class whose usable CPU covers the need; else N of the most capable class."""
    if not classes:
        raise ModelError("an instance table is empty")
    fitting = [c for c in classes if usable(c) >= required_vcpus]
    if fitting:
        return min(fitting, key=lambda c: (c.hourly, -usable(c))), 1
    biggest = max(classes, key=lambda c: (usable(c), -c.hourly))
    return biggest, math.ceil(required_vcpus / usable(biggest))


def _redis_usable(c: InstanceClass) -> float:
    return min(1.0, c.sustained_vcpu)  # Redis executes commands on one thread


def single_process_ceiling(workload: Workload, bench: ShapeBench, inputs: ModelInputs) -> int:
    """Most users one process serves at the target utilisation (the ``sqlite-single`` ceiling)."""
    per_user = inputs.peak_factor * sum(
        rate / bench.operations[op].requests_per_second for op, rate in workload.rates(1).items()
    )
    return math.floor(inputs.target_utilisation / per_user) if per_user > 0 else 0


def _fargate(load: Load, inputs: ModelInputs, prices: Prices, hours: float) -> LineItem:
    tasks = max(inputs.min_tasks, math.ceil(load.app_vcpus / inputs.task_vcpu - 1e-9))
    per_task = inputs.task_vcpu * prices.fargate_vcpu_hour + (
        inputs.task_memory_gb * prices.fargate_gb_hour
    )
    return LineItem(
        "Fargate",
        "compute",
        tasks * per_task * hours,
        f"{tasks} tasks x {inputs.task_vcpu:g} vCPU / {inputs.task_memory_gb:g} GB "
        f"({load.app_vcpus:.2f} vCPU needed at {inputs.target_utilisation:.0%})",
    )


def _alb(load: Load, inputs: ModelInputs, prices: Prices, hours: float) -> LineItem:
    dims = {
        "new connections": load.total_requests_per_second
        * inputs.new_connections_per_request
        / ALB_NEW_CONNECTIONS_PER_LCU,
        "active connections": load.users
        * inputs.active_connections_per_user
        / ALB_ACTIVE_CONNECTIONS_PER_LCU,
        "processed bytes": (load.bytes_in_per_second + load.bytes_out_per_second)
        * 3600
        / GB
        / ALB_GB_PER_LCU,
        "rule evaluations": load.total_requests_per_second
        * max(0.0, inputs.alb_rules_per_request - ALB_FREE_RULES)
        / ALB_RULE_EVALUATIONS_PER_LCU,
    }
    dimension, lcus = max(dims.items(), key=lambda kv: kv[1])
    return LineItem(
        "ALB",
        "network",
        (prices.alb_hour + lcus * prices.alb_lcu_hour) * hours,
        f"1 ALB + {lcus:,.1f} LCU (by {dimension})",
    )


def _data_transfer(load: Load, prices: Prices, hours: float) -> LineItem:
    gb = load.bytes_out_per_second * hours * 3600 / GB
    return LineItem(
        "Data transfer out",
        "network",
        gb * prices.data_transfer_out_gb,
        f"{gb:,.0f} GB of responses",
    )


def _storage_gb(users: int, workload: Workload, inputs: ModelInputs) -> float:
    return (
        users
        * workload.sends_per_user_per_day
        * inputs.retention_days
        * inputs.stored_bytes_per_message
        / GB
    )


def _elasticache(load: Load, inputs: ModelInputs, prices: Prices, hours: float) -> LineItem:
    cls, shards = pick_class(prices.cache_classes, load.cache_vcpus, _redis_usable)
    nodes = shards * (1 + inputs.cache_replicas)
    return LineItem(
        "ElastiCache",
        "cache",
        nodes * cls.hourly * hours,
        f"{nodes} x {cls.name} ({shards} shard(s) + {inputs.cache_replicas} replica each; "
        f"{load.cache_ops_per_second:,.0f} ops/s, {load.cache_vcpus:.3f} vCPU of Redis)",
    )


def _cost_sqlite(
    load: Load, sb: ShapeBench, workload: Workload, inputs: ModelInputs, prices: Prices
) -> tuple[bool, list[LineItem], list[str]]:
    hours = inputs.hours_per_month
    feasible = load.process_busy <= inputs.target_utilisation
    cls, count = pick_class(prices.ec2_classes, load.app_vcpus)
    gb = _storage_gb(load.users, workload, inputs)
    items = [
        LineItem(
            "EC2 instance",
            "compute",
            count * cls.hourly * hours,
            f"{count} x {cls.name} ({load.app_vcpus:.2f} vCPU needed at "
            f"{inputs.target_utilisation:.0%})",
        ),
        LineItem("EBS storage", "storage", gb * prices.ebs_storage_gb_month, f"{gb:,.1f} GB gp3"),
        _data_transfer(load, prices, hours),
    ]
    ceiling = single_process_ceiling(workload, sb, inputs)
    notes = [f"one process serves up to {ceiling:,} users at {inputs.target_utilisation:.0%}"]
    if not feasible:
        notes.insert(
            0,
            f"EXCEEDS ONE PROCESS: needs {load.process_busy / inputs.target_utilisation:.1f} "
            "processes' worth of throughput; use a scale-out shape",
        )
    return feasible, items, notes


def _cost_postgres(
    load: Load, workload: Workload, inputs: ModelInputs, prices: Prices
) -> tuple[bool, list[LineItem], list[str]]:
    hours = inputs.hours_per_month
    cls, count = pick_class(prices.rds_classes, load.storage_vcpus)
    az = 2 if inputs.rds_multi_az else 1
    gb = _storage_gb(load.users, workload, inputs)
    notes: list[str] = []
    if count > 1:
        notes.append(
            f"database CPU exceeds the largest class: {count} x {cls.name} means read replicas "
            "or sharding, which this model prices but Parley does not configure"
        )
    if load.storage_vcpus == 0:
        notes.append("no database CPU in the bench: the smallest class is assumed")
    items = [
        _fargate(load, inputs, prices, hours),
        LineItem(
            "RDS PostgreSQL",
            "database",
            count * az * cls.hourly * hours,
            f"{count} x {cls.name}{' Multi-AZ' if az == 2 else ''} "
            f"({load.storage_vcpus:.2f} vCPU of database needed)",
        ),
        LineItem(
            "RDS storage",
            "storage",
            gb * az * prices.rds_storage_gb_month,
            f"{gb:,.1f} GB gp3{' x 2 (Multi-AZ)' if az == 2 else ''}",
        ),
        _elasticache(load, inputs, prices, hours),
        _alb(load, inputs, prices, hours),
        _data_transfer(load, prices, hours),
    ]
    return True, items, notes


def _cost_dynamodb(
    load: Load, workload: Workload, inputs: ModelInputs, prices: Prices
) -> tuple[bool, list[LineItem], list[str]]:
    hours = inputs.hours_per_month
    seconds = hours * 3600
    on_demand = (
        load.read_units_per_second * seconds / 1e6 * prices.dynamodb_read_request_units_per_million
        + load.write_units_per_second
        * seconds
        / 1e6
        * prices.dynamodb_write_request_units_per_million
    )
    peak, target = inputs.peak_factor, inputs.dynamodb_target_utilisation
    rcu = max(1, math.ceil(load.read_units_per_second * peak / target))
    wcu = max(1, math.ceil(load.write_units_per_second * peak / target))
    provisioned = (rcu * prices.dynamodb_rcu_hour + wcu * prices.dynamodb_wcu_hour) * hours
    if inputs.dynamodb_mode == "cheaper":
        use_on_demand = on_demand <= provisioned
    else:
        use_on_demand = inputs.dynamodb_mode == "on-demand"
    gb = _storage_gb(load.users, workload, inputs)
    items = [
        _fargate(load, inputs, prices, hours),
        LineItem(
            "DynamoDB on-demand",
            "database",
            on_demand,
            f"{load.read_units_per_second:,.1f} RRU/s + {load.write_units_per_second:,.1f} WRU/s",
            included=use_on_demand,
        ),
        LineItem(
            "DynamoDB provisioned",
            "database",
            provisioned,
            f"{rcu:,} RCU + {wcu:,} WCU (x{peak:g} peak at {target:.0%} target)",
            included=not use_on_demand,
        ),
        LineItem(
            "DynamoDB storage", "storage", gb * prices.dynamodb_storage_gb_month, f"{gb:,.1f} GB"
        ),
        _elasticache(load, inputs, prices, hours),
        _alb(load, inputs, prices, hours),
        _data_transfer(load, prices, hours),
    ]
    notes = [
        f"DynamoDB billed {'on-demand' if use_on_demand else 'provisioned'} "
        f"({inputs.dynamodb_mode}); reads {load.storage_reads_per_second:,.0f}/s, "
        f"writes {load.storage_writes_per_second:,.0f}/s"
    ]
    return True, items, notes


def estimate_shape(
    shape: str,
    users: int,
    sb: ShapeBench,
    workload: Workload,
    inputs: ModelInputs,
    prices: Prices,
) -> ShapeCost:
    load = compute_load(users, workload, sb, inputs)
    if shape == "sqlite-single":
        feasible, items, notes = _cost_sqlite(load, sb, workload, inputs, prices)
    elif shape == "postgres-redis":
        feasible, items, notes = _cost_postgres(load, workload, inputs, prices)
    elif shape == "dynamodb-fargate":
        feasible, items, notes = _cost_dynamodb(load, workload, inputs, prices)
    else:
        raise ModelError(f"unknown shape {shape!r}")
    counted = [i for i in items if i.included]
    total = sum(i.monthly for i in counted) if feasible else None
    design_scope = (
        sum(i.monthly for i in counted if i.category in DESIGN_SCOPE) if feasible else None
    )
    return ShapeCost(shape, users, feasible, total, design_scope, tuple(items), tuple(notes), load)


def estimate(
    bench: BenchFile,
    users: Sequence[int],
    prices: Prices | None = None,
    inputs: ModelInputs | None = None,
    workload: Workload | None = None,
) -> list[ShapeCost]:
    """Costs for every shape in the bench (in ``SHAPES`` order) at every user count."""
    p = prices or Prices()
    mi = (inputs or ModelInputs()).validate()
    w = workload or bench.workload
    return [
        estimate_shape(shape, n, bench.shapes[shape], w, mi, p)
        for shape in SHAPES
        if shape in bench.shapes
        for n in users
    ]
