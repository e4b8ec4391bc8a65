"""Parley's capacity and cost model: pure functions from measured figures to dollars a month.

For ``users`` users the workload gives requests per second per operation; the bench gives what
one request of each operation costs (CPU, storage calls, request units, cache CPU, bytes) in each
deployment shape. Capacity is sized at ``peak_factor`` x the average rate and at
``target_utilisation``; usage-billed items (DynamoDB on-demand, load-balancer capacity units, data
transfer) are billed on the average. A figure the bench did not measure is ``None``: the line
items that depend on it have no figure (printed as unknown), and the shape's total is unknown,
with the sum of the known items as a lower bound. Formulas are spelled out in ``docs/cost.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from parley.cost.measured import (
    SHAPES,
    STREAM_OPERATIONS,
    WORKLOADS,
    BenchFile,
    ShapeBench,
    Workload,
)
from parley.cost.prices import InstanceClass, Prices

__all__ = [
    "CATEGORIES",
    "DESIGN_SCOPE",
    "DYNAMODB_MODES",
    "FARGATE_SIZES",
    "HIGHLY_AVAILABLE_SHAPES",
    "LOAD_BALANCERS",
    "STREAM_LABELS",
    "LineItem",
    "Load",
    "ModelError",
    "ModelInputs",
    "ShapeCost",
    "Verdict",
    "cheapest_highly_available",
    "compute_load",
    "estimate",
    "estimate_shape",
    "pick_class",
    "single_process_ceiling",
    "stream_rates",
    "with_settings",
]

GB: Final = 1e9  # bytes; AWS data and storage prices are per GB
GIB: Final = 2**30  # bytes; Fargate and instance memory sizes
DYNAMODB_MODES: Final = ("cheaper", "on-demand", "provisioned")
LOAD_BALANCERS: Final = ("cheaper", "alb", "nlb-tcp", "nlb-tls")
HIGHLY_AVAILABLE_SHAPES: Final = ("postgres-redis", "dynamodb-fargate")
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


@dataclass(frozen=True, slots=True)
class CapacityUnit:
    """What one load-balancer capacity unit (ALB LCU, NLB NLCU) covers, per dimension.

    https://aws.amazon.com/elasticloadbalancing/pricing/ : an hour is billed on the dimension
    with the highest usage.
    """

    new_connections_per_second: float
    active_connections: float  # sampled per minute
    gb_per_hour: float
    rule_evaluations_per_second: float = math.inf  # ALB only
    free_rules: float = 0.0


ALB_LCU: Final = CapacityUnit(25, 3_000, 1.0, 1_000, 10)
NLB_TCP_NLCU: Final = CapacityUnit(800, 100_000, 1.0)  # TCP listener: Parley terminates TLS
NLB_TLS_NLCU: Final = CapacityUnit(50, 3_000, 1.0)  # TLS listener: the NLB terminates TLS
# Kept for callers of the earlier names.
ALB_NEW_CONNECTIONS_PER_LCU: Final = ALB_LCU.new_connections_per_second
ALB_ACTIVE_CONNECTIONS_PER_LCU: Final = ALB_LCU.active_connections
ALB_GB_PER_LCU: Final = ALB_LCU.gb_per_hour
ALB_RULE_EVALUATIONS_PER_LCU: Final = ALB_LCU.rule_evaluations_per_second
ALB_FREE_RULES: Final = ALB_LCU.free_rules


class ModelError(ValueError):
    """A model input is out of range (utilisation outside (0, 1], an invalid Fargate size, ...)."""


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """Deployment and traffic assumptions: all editable (``--set NAME=VALUE``)."""

    target_utilisation: float = 0.6  # of every CPU we size (app, database, cache)
    task_vcpu: float = 1.0
    task_memory_gb: float = 2.0  # the smallest size considered when size_task_memory is on
    size_task_memory: bool = True  # pick the cheapest Fargate memory size for the connections
    min_tasks: int = 2  # scale-out shapes keep two tasks for availability
    peak_factor: float = 1.0  # busiest-hour rate / average rate, for capacity
    dynamodb_mode: str = "cheaper"  # which DynamoDB billing mode counts in the total
    dynamodb_target_utilisation: float = 0.7  # provisioned capacity (AWS auto-scaling default)
    rds_multi_az: bool = True
    cache_replicas: int = 1  # per Redis shard
    # A real client keeps one connection open (checks reuse it; an online user's long-poll or
    # live stream is that connection): new connections are reconnects, not requests.
    new_connections_per_request: float = 0.0  # 1 = a new connection for every request
    reconnects_per_user_per_hour: float = 1.0  # network changes, idle timeouts, app restarts
    active_connections_per_user: float = 1.0  # connections each user holds open (polling)
    # The stream workload: the share of users holding a live stream at any moment (1: every
    # user all the time, as the course design's every user checking every minute), and the
    # keep-alive interval (PARLEY_KEEPALIVE_SECONDS; below the load balancer's idle timeout).
    online_share: float = 1.0
    keepalive_seconds: float = 60.0
    alb_rules_per_request: float = 1.0
    load_balancer: str = "cheaper"  # cheaper | alb | nlb-tcp | nlb-tls
    # Parley's CPU per TLS handshake (nlb-tcp only); NaN (not set): the bench's measurement,
    # or TLS_HANDSHAKE_ASSUMED when the bench has none.
    tls_handshake_cpu_seconds: float = math.nan
    memory_utilisation: float = 0.8  # of a task's memory that connections and caches may fill
    # What-if for the memory per idle connection, in KiB; NaN (not set): the bench's measurement.
    idle_connection_kib: float = math.nan
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
        if self.load_balancer not in LOAD_BALANCERS:
            raise ModelError(f"load_balancer must be one of {', '.join(LOAD_BALANCERS)}")
        if not 0 < self.memory_utilisation <= 1:
            raise ModelError("memory_utilisation must be in (0, 1]")
        if not 0 <= self.online_share <= 1:
            raise ModelError("online_share must be in [0, 1]")
        if not (math.isfinite(self.keepalive_seconds) and self.keepalive_seconds > 0):
            raise ModelError("keepalive_seconds must be a finite number > 0")
        if self.min_tasks < 1 or self.cache_replicas < 0:
            raise ModelError("min_tasks must be >= 1 and cache_replicas >= 0")
        for name in (
            "peak_factor",
            "new_connections_per_request",
            "reconnects_per_user_per_hour",
            "active_connections_per_user",
            "alb_rules_per_request",
            "stored_bytes_per_message",
            "retention_days",
            "hours_per_month",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ModelError(f"{name} must be a finite number >= 0")
        for name in ("idle_connection_kib", "tls_handshake_cpu_seconds"):
            value = getattr(self, name)
            if not math.isnan(value) and not (math.isfinite(value) and value >= 0):
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
    """What ``users`` users ask of one shape, per second. ``*_vcpus`` are sized for the peak.

    A ``None`` figure depends on something the bench did not measure. ``missing_operations``
    names the operations the workload runs but the bench has no profile for (a stream workload
    on a bench without live-stream figures): every figure that needs them is ``None``, and the
    CPU figures cover the other operations only (a lower bound).
    """

    users: int
    # polling: check (finds messages), idle (finds none), send; stream: send, push, tick, open
    requests_per_second: dict[str, float]
    total_requests_per_second: float  # HTTP requests (a stream's ticks and pushes are not)
    messages_sent_per_second: float
    messages_delivered_per_second: float
    busy_check_share: float  # checks that find something: min(1, messages per check)
    process_busy: float  # processes fully busy at the peak (sum of rate / one process's rate)
    app_vcpus_by_cpu: float
    app_vcpus_by_throughput: float
    app_vcpus: float
    storage_reads_per_second: float | None
    storage_writes_per_second: float | None
    read_units_per_second: float | None
    write_units_per_second: float | None
    storage_vcpus: float | None
    cache_ops_per_second: float | None
    cache_vcpus: float | None
    bytes_in_per_second: float | None
    bytes_out_per_second: float | None
    connections: float  # held open at once
    new_connections_per_second: float
    connection_bytes: float | None  # memory every held connection needs in the app processes
    live_stream: bool = False  # the stream workload (else a polling one)
    missing_operations: tuple[str, ...] = ()


# How the report names a live-stream operation the bench did not measure.
STREAM_LABELS: Final = {
    "tick": "live-stream tick",
    "push": "live-stream push",
    "open": "live-stream open",
}


def _rates(users: float, workload: Workload, bench: ShapeBench) -> tuple[dict[str, float], float]:
    """Request rates per measured operation, and the share of checks that find something.

    With an ``idle`` profile in the bench, checks split into those that find messages (priced as
    the bench's ``check``, which returned ~7) and those that find none (``idle``). The share that
    finds something is ``min(1, messages_per_check)``: an upper bound of ``1 - e^-m`` (arrivals at
    random), so a realistic workload is never priced below what it costs.
    """
    rates = workload.rates(users)
    busy = min(1.0, workload.messages_per_check)
    if "idle" in bench.operations:
        checks = rates["check"]
        rates = {"check": checks * busy, "idle": checks * (1 - busy), "send": rates["send"]}
    return rates, busy


def stream_rates(users: float, workload: Workload, inputs: ModelInputs) -> dict[str, float]:
    """The stream workload's rates: every online user holds one live stream.

    send = users x sends a day / 86,400; tick = online users / keep-alive interval; push = send x
    recipients x online share (a message reaches each online recipient's open stream); open =
    online users x reconnects an hour / 3,600.
    """
    online = users * inputs.online_share
    send = users * workload.sends_per_user_per_day / 86_400
    return {
        "send": send,
        "tick": online / inputs.keepalive_seconds,
        "push": send * workload.recipients_per_send * inputs.online_share,
        "open": online * inputs.reconnects_per_user_per_hour / 3600,
    }


def _busy_per_request(op: str, bench: ShapeBench) -> float:
    """Share of one measured server one request keeps busy: 1 / the measured throughput, or for
    a live-stream operation (not run to saturation) its CPU over the server's vCPUs."""
    profile = bench.operations[op]
    if op in STREAM_OPERATIONS:
        return profile.cpu_seconds_per_request / bench.process_vcpus
    return 1 / profile.requests_per_second


def compute_load(
    users: int,
    workload: Workload,
    bench: ShapeBench,
    inputs: ModelInputs,
    *,
    live_stream: bool = False,
) -> Load:
    """The load of the polling workload ``workload`` describes, or with ``live_stream`` the
    stream workload (rates from ``stream_rates``)."""
    if live_stream:
        rates, busy = stream_rates(users, workload, inputs), 0.0
    else:
        rates, busy = _rates(users, workload, bench)
    peak, util = inputs.peak_factor, inputs.target_utilisation
    ops = bench.operations
    missing = tuple(op for op, rate in rates.items() if op not in ops and rate > 0)
    known = {op: rate for op, rate in rates.items() if op in ops}

    def total(per_request: Callable[[str], float]) -> float:
        return sum(rate * per_request(op) for op, rate in known.items())

    def measured(name: str, scale: Callable[[str], float] = lambda op: 1.0) -> float | None:
        """sum(rate x figure), or None when an operation that runs has no figure."""
        if missing:
            return None
        result = 0.0
        for op, rate in rates.items():
            value: float | None = getattr(ops[op], name) if op in ops else None
            if value is None:
                if rate > 0:
                    return None
                continue
            result += rate * value * scale(op)
        return result

    def sized(name: str) -> float | None:
        value = measured(name)
        return None if value is None else peak * value / util

    process_busy = peak * total(lambda op: _busy_per_request(op, bench))
    by_cpu = peak * total(lambda op: ops[op].cpu_seconds_per_request) / util
    by_throughput = process_busy / util * bench.process_vcpus
    if live_stream:
        connections = users * inputs.online_share
        new_connections = rates["open"] + rates["send"] * inputs.new_connections_per_request
        http_requests = rates["send"] + rates["open"]
        delivered = rates["send"] * workload.recipients_per_send
    else:
        connections = users * inputs.active_connections_per_user
        http_requests = sum(rates.values())
        new_connections = (
            http_requests * inputs.new_connections_per_request
            + connections * inputs.reconnects_per_user_per_hour / 3600
        )
        delivered = workload.rates(users)["check"] * workload.messages_per_check
    return Load(
        users=users,
        requests_per_second=rates,
        total_requests_per_second=http_requests,
        messages_sent_per_second=rates["send"],
        messages_delivered_per_second=delivered,
        busy_check_share=busy,
        process_busy=process_busy,
        app_vcpus_by_cpu=by_cpu,
        app_vcpus_by_throughput=by_throughput,
        app_vcpus=max(by_cpu, by_throughput),
        storage_reads_per_second=measured("storage_reads_per_request"),
        storage_writes_per_second=measured("storage_writes_per_request"),
        read_units_per_second=measured(
            "storage_reads_per_request", lambda op: ops[op].read_units_per_read
        ),
        write_units_per_second=measured(
            "storage_writes_per_request", lambda op: ops[op].write_units_per_write
        ),
        storage_vcpus=sized("storage_cpu_seconds_per_request"),
        cache_ops_per_second=measured("cache_ops_per_request"),
        cache_vcpus=sized("cache_cpu_seconds_per_request"),
        bytes_in_per_second=measured("request_bytes"),
        bytes_out_per_second=measured("response_bytes"),
        connections=connections,
        new_connections_per_second=new_connections,
        connection_bytes=None,
        live_stream=live_stream,
        missing_operations=missing,
    )


def _missing_labels(load: Load) -> tuple[str, ...]:
    return tuple(STREAM_LABELS.get(op, op) for op in load.missing_operations)


def _why(load: Load, *own: str) -> tuple[str, ...]:
    """The unmeasured figures that leave an item without a price: the missing operations when
    there are any (they decide everything that sums over operations), else ``own``."""
    return _missing_labels(load) or own


def _not_measured(load: Load, what: str) -> str:
    """The detail of an item without a price."""
    if load.missing_operations:
        return f"{', '.join(_missing_labels(load))} not measured"
    return f"{what} not measured"


CATEGORIES: Final = ("compute", "database", "cache", "storage", "network")
DESIGN_SCOPE: Final = ("compute", "database", "cache")  # what the course design priced


@dataclass(frozen=True, slots=True)
class LineItem:
    name: str
    category: str  # one of CATEGORIES
    monthly: float | None  # None: depends on a figure the bench did not measure
    detail: str
    included: bool = True  # False for an alternative shown beside the one that counts
    unknown: tuple[str, ...] = ()  # the unmeasured figures that leave it without a price
    floor: float = 0.0  # without a price: what it costs at least (from the figures known)
    driver: str = ""  # the measured figure (or price) that sets it, for the closing note


@dataclass(frozen=True, slots=True)
class ShapeCost:
    shape: str
    users: int
    feasible: bool
    total: float | None  # None when the shape cannot carry the load or a counted item is unknown
    design_scope_total: float | None  # compute + database + cache: what the course design priced
    line_items: tuple[LineItem, ...]
    notes: tuple[str, ...]
    load: Load = field(repr=False)
    workload: str = "original"  # which workload scenario (WORKLOADS)
    # the counted items' figures plus the floors of those without one: a lower bound of the total
    known_total: float = 0.0
    unknown: tuple[str, ...] = ()  # figures the bench did not measure that the total needs
    highly_available: bool = False


def pick_class(
    classes: Sequence[InstanceClass],
    required_vcpus: float,
    usable: Callable[[InstanceClass], float] = lambda c: c.sustained_vcpu,
    required_gib: float = 0.0,
) -> tuple[InstanceClass, int]:
    """The cheapest class whose usable CPU (and memory) covers the need; else N of the most
    capable class."""
    if not classes:
        raise ModelError("an instance table is empty")
    fitting = [c for c in classes if usable(c) >= required_vcpus and c.memory_gib >= required_gib]
    if fitting:
        return min(fitting, key=lambda c: (c.hourly, -usable(c))), 1
    biggest = max(classes, key=lambda c: (usable(c), c.memory_gib, -c.hourly))
    by_cpu = math.ceil(required_vcpus / usable(biggest))
    by_memory = math.ceil(required_gib / biggest.memory_gib) if biggest.memory_gib else 1
    return biggest, max(by_cpu, by_memory, 1)


def _redis_usable(c: InstanceClass) -> float:
    return min(1.0, c.sustained_vcpu)  # Redis executes commands on one thread


def single_process_ceiling(
    workload: Workload, bench: ShapeBench, inputs: ModelInputs, *, live_stream: bool = False
) -> int:
    """Most users one process serves at the target utilisation (the ``sqlite-single`` ceiling).

    Operations the bench has no profile for are left out: then it is an upper bound."""
    if live_stream:
        rates = stream_rates(1, workload, inputs)
    else:
        rates, _ = _rates(1, workload, bench)
    per_user = inputs.peak_factor * sum(
        rate * _busy_per_request(op, bench) for op, rate in rates.items() if op in bench.operations
    )
    return math.floor(inputs.target_utilisation / per_user) if per_user > 0 else 0


_OP_NAMES: Final = {
    "check": "check finding messages",
    "idle": "idle check",
    "send": "send",
    "tick": "keep-alive tick of an idle stream",
    "push": "message pushed on a stream",
    "open": "stream opened",
}


def _driver(load: Load, sb: ShapeBench, label: str, name: str, unit: str, scale: float) -> str:
    """``label`` of the operation that contributes most to ``name``, with its figure."""
    rates = load.requests_per_second
    figures = {op: getattr(sb.operations[op], name) for op in rates if op in sb.operations}
    known = {op: v for op, v in figures.items() if v is not None}
    if not known:
        return label
    op = max(known, key=lambda o: rates[o] * known[o])
    what = _OP_NAMES.get(op, op)
    article = "an" if what[0] in "aeiou" else "a"
    value = known[op] * scale
    text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return f"{label} of {article} {what} ({text} {unit})".replace(" )", ")")


def _unknown(*pairs: tuple[str, float | None]) -> tuple[str, ...]:
    return tuple(name for name, value in pairs if value is None)


def _connection_memory(
    load: Load, sb: ShapeBench, idle_connection_bytes: float | None
) -> tuple[float | None, float | None, tuple[str, ...]]:
    """(bytes every held connection needs, one process's base bytes, the unknown figures)."""
    if load.connections == 0:
        return 0.0, sb.process_base_bytes, _unknown(("process memory", sb.process_base_bytes))
    held = None if idle_connection_bytes is None else load.connections * idle_connection_bytes
    missing = _unknown(
        ("memory per idle connection", idle_connection_bytes),
        ("process memory", sb.process_base_bytes),
    )
    return held, sb.process_base_bytes, missing


def _fargate(
    load: Load,
    sb: ShapeBench,
    bench: BenchFile,
    inputs: ModelInputs,
    prices: Prices,
    extra_vcpus: float = 0.0,
    extra_note: str = "",
) -> LineItem:
    hours = inputs.hours_per_month
    vcpus = load.app_vcpus + extra_vcpus
    by_cpu = max(inputs.min_tasks, math.ceil(vcpus / inputs.task_vcpu - 1e-9))
    held, base, missing = _connection_memory(load, sb, bench.idle_connection_bytes)
    missing = _missing_labels(load) + missing
    cpu_text = f"{vcpus:.2f} vCPU needed at {inputs.target_utilisation:.0%}{extra_note}"
    rates = {o: r for o, r in load.requests_per_second.items() if o in sb.operations}
    busiest = max(rates, key=lambda o: rates[o] * _busy_per_request(o, sb), default="")
    if load.app_vcpus_by_cpu >= load.app_vcpus_by_throughput or busiest in STREAM_OPERATIONS:
        # a live-stream operation is sized by its CPU, not by a measured throughput
        cpu_driver = _driver(load, sb, "app CPU", "cpu_seconds_per_request", "ms", 1e3)
    else:
        op = busiest
        what = _OP_NAMES.get(op, op)
        cpu_driver = (
            f"throughput of the measured process(es) on {'an' if what[0] in 'aeiou' else 'a'} "
            f"{what} "
            f"({sb.operations[op].requests_per_second:,.0f} req/s on {sb.process_vcpus:g} vCPU)"
        )
    if held is None or base is None:
        # the memory bound is unknown: the CPU bound at the smallest size is a floor
        per_task = inputs.task_vcpu * prices.fargate_vcpu_hour + (
            inputs.task_memory_gb * prices.fargate_gb_hour
        )
        size = f"{inputs.task_vcpu:g} vCPU / {inputs.task_memory_gb:g} GB"
        return LineItem(
            "Fargate",
            "compute",
            None,
            f">= {by_cpu} tasks x {size} ({cpu_text}); task count unknown: "
            + ", ".join(missing)
            + " not measured",
            unknown=missing,
            driver=cpu_driver,
            floor=by_cpu * per_task * hours,
        )
    sizes = _memory_sizes(inputs) if inputs.size_task_memory else [inputs.task_memory_gb]
    options = []
    for memory_gb in sizes:
        usable = memory_gb * GIB * inputs.memory_utilisation - base
        if usable <= 0:
            continue
        by_memory = math.ceil(held / usable - 1e-9)
        tasks = max(by_cpu, by_memory)
        per_task = inputs.task_vcpu * prices.fargate_vcpu_hour + memory_gb * prices.fargate_gb_hour
        options.append((tasks * per_task * hours, memory_gb, tasks, by_memory, usable))
    if not options:
        raise ModelError(
            f"a {inputs.task_memory_gb:g} GB task at {inputs.memory_utilisation:.0%} does not hold "
            f"one process ({base / 2**20:,.0f} MiB measured)"
        )
    monthly, memory_gb, tasks, by_memory, usable = min(options)
    memory_bound = by_memory > by_cpu
    per_connection = (bench.idle_connection_bytes or 0) / 1024
    size = f"{inputs.task_vcpu:g} vCPU / {memory_gb:g} GB"
    memory_text = (
        f"memory {by_memory} ({load.connections:,.0f} connections x {per_connection:.1f} KiB, "
        f"{usable / GIB:.2f} GiB usable per task)"
    )
    memory_driver = f"memory per idle connection ({per_connection:.1f} KiB)"
    if load.missing_operations:
        # CPU covers the measured operations only: the cheapest option is a floor
        return LineItem(
            "Fargate",
            "compute",
            None,
            f">= {tasks} tasks x {size}: CPU >= {by_cpu} ({cpu_text}, without "
            f"{', '.join(load.missing_operations)}), {memory_text}; task count unknown: "
            + ", ".join(missing)
            + " not measured",
            unknown=missing,
            driver=memory_driver if memory_bound else cpu_driver,
            floor=monthly,
        )
    return LineItem(
        "Fargate",
        "compute",
        monthly,
        f"{tasks} tasks x {size}, {'memory' if memory_bound else 'CPU'}-bound: CPU "
        f"{by_cpu} ({cpu_text}), {memory_text}",
        driver=memory_driver if memory_bound else cpu_driver,
    )


def _memory_sizes(inputs: ModelInputs) -> list[float]:
    """Fargate's memory sizes for the task's vCPU (1 GB steps), from ``task_memory_gb`` up."""
    low, high = FARGATE_SIZES[inputs.task_vcpu]
    sizes = [low, *range(math.ceil(low) if low >= 1 else 1, math.floor(high) + 1)]
    return sorted({m for m in sizes if m >= inputs.task_memory_gb})


def _lb_units(
    load: Load, inputs: ModelInputs, unit: CapacityUnit
) -> tuple[float | None, float, str]:
    """(capacity units or None when bytes are unknown, the known lower bound, its dimension)."""
    dims = {
        "new connections": load.new_connections_per_second / unit.new_connections_per_second,
        "active connections": load.connections / unit.active_connections,
        "rule evaluations": load.total_requests_per_second
        * max(0.0, inputs.alb_rules_per_request - unit.free_rules)
        / unit.rule_evaluations_per_second,
    }
    if load.bytes_in_per_second is not None and load.bytes_out_per_second is not None:
        dims["processed bytes"] = (
            (load.bytes_in_per_second + load.bytes_out_per_second) * 3600 / GB / unit.gb_per_hour
        )
        dimension, units = max(dims.items(), key=lambda kv: kv[1])
        return units, units, dimension
    dimension, units = max(dims.items(), key=lambda kv: kv[1])
    return None, units, dimension


_LB: Final = {
    "alb": ("ALB", ALB_LCU, "LCU"),
    "nlb-tcp": ("NLB (TCP, TLS in Parley)", NLB_TCP_NLCU, "NLCU"),
    "nlb-tls": ("NLB (TLS listener)", NLB_TLS_NLCU, "NLCU"),
}


def _load_balancer(kind: str, load: Load, inputs: ModelInputs, prices: Prices) -> LineItem:
    """The line item for one load-balancer option (with its floor when bytes are unknown)."""
    name, unit, unit_name = _LB[kind]
    hourly, unit_hour = (
        (prices.alb_hour, prices.alb_lcu_hour)
        if kind == "alb"
        else (prices.nlb_hour, prices.nlb_lcu_hour)
    )
    hours = inputs.hours_per_month
    units, floor, dimension = _lb_units(load, inputs, unit)
    if units is None:
        return LineItem(
            name,
            "network",
            None,
            f">= {floor:,.1f} {unit_name} (by {dimension}); "
            + _not_measured(load, "processed bytes"),
            unknown=_why(
                load,
                *_unknown(
                    ("request bytes", load.bytes_in_per_second),
                    ("response bytes", load.bytes_out_per_second),
                ),
            ),
            driver=dimension,
            floor=(hourly + floor * unit_hour) * hours,
        )
    return LineItem(
        name,
        "network",
        (hourly + units * unit_hour) * hours,
        f"1 load balancer + {units:,.1f} {unit_name} (by {dimension})",
        driver=dimension,
    )


TLS_HANDSHAKE_ASSUMED: Final = 0.002  # seconds of CPU per TLS handshake, when not measured


def tls_handshake(bench: BenchFile, inputs: ModelInputs) -> tuple[float, str]:
    """Parley's CPU per TLS handshake, and where the figure comes from."""
    if not math.isnan(inputs.tls_handshake_cpu_seconds):
        return inputs.tls_handshake_cpu_seconds, "set"
    if bench.tls_handshake_cpu_seconds is not None:
        return bench.tls_handshake_cpu_seconds, "measured"
    return TLS_HANDSHAKE_ASSUMED, "assumed"


def _at_least(item: LineItem) -> float:
    return item.floor if item.monthly is None else item.monthly


def _front(
    load: Load, sb: ShapeBench, bench: BenchFile, inputs: ModelInputs, prices: Prices
) -> tuple[list[LineItem], list[str]]:
    """Fargate plus every load-balancer option; the chosen option (and its Fargate) counts.

    Behind ``nlb-tcp`` Parley terminates TLS itself (``PARLEY_TLS_CERT``): each new
    connection costs it a handshake (the bench's ``tls_handshake_cpu_seconds``, or the input).
    """
    peak, util = inputs.peak_factor, inputs.target_utilisation
    handshake, source = tls_handshake(bench, inputs)
    tls_vcpus = peak * load.new_connections_per_second * handshake / util
    options: dict[str, tuple[LineItem, LineItem, float]] = {}
    for kind in _LB:
        extra = tls_vcpus if kind == "nlb-tcp" else 0.0
        note = (
            f", incl. {extra:.2f} for TLS handshakes ({handshake * 1000:.2f} ms each, {source})"
            if extra
            else ""
        )
        compute = _fargate(load, sb, bench, inputs, prices, extra, note)
        lb = _load_balancer(kind, load, inputs, prices)
        known = _at_least(compute) + _at_least(lb)
        options[kind] = (compute, lb, known)
    chosen = (
        min(options, key=lambda k: options[k][2])
        if inputs.load_balancer == "cheaper"
        else inputs.load_balancer
    )
    compute, _, _ = options[chosen]
    items = [compute]
    for kind, (_, lb, _) in options.items():
        items.append(dataclasses.replace(lb, included=kind == chosen))
    notes = [f"load balancer: {_LB[chosen][0]} ({inputs.load_balancer})"]
    return items, notes


def _data_transfer(load: Load, sb: ShapeBench, prices: Prices, hours: float) -> LineItem:
    if load.bytes_out_per_second is None:
        return LineItem(
            "Data transfer out",
            "network",
            None,
            _not_measured(load, "response bytes"),
            unknown=_why(load, "response bytes"),
        )
    gb = load.bytes_out_per_second * hours * 3600 / GB
    return LineItem(
        "Data transfer out",
        "network",
        gb * prices.data_transfer_out_gb,
        f"{gb:,.0f} GB of responses",
        driver=_driver(load, sb, "response bytes", "response_bytes", "B", 1.0),
    )


def _stored_bytes(sb: ShapeBench, inputs: ModelInputs) -> tuple[float, str]:
    """Bytes one stored message takes, and where the figure comes from: the shape's measurement,
    else the ``stored_bytes_per_message`` input."""
    if sb.stored_bytes_per_message is not None:
        return sb.stored_bytes_per_message, "measured"
    return inputs.stored_bytes_per_message, "input, not measured"


def _storage(
    users: int, workload: Workload, sb: ShapeBench, inputs: ModelInputs
) -> tuple[float, str]:
    """(GB of stored messages, what sets it) for ``users`` users over the retention period."""
    per_message, source = _stored_bytes(sb, inputs)
    gb = users * workload.sends_per_user_per_day * inputs.retention_days * per_message / GB
    return gb, f"stored bytes per message ({per_message:,.0f} B, {source})"


def _elasticache(
    load: Load, sb: ShapeBench, inputs: ModelInputs, prices: Prices, hours: float
) -> LineItem:
    if load.cache_vcpus is None:
        return LineItem(
            "ElastiCache",
            "cache",
            None,
            _not_measured(load, "Redis CPU per request")
            + f"; at least {1 + inputs.cache_replicas} x the cheapest class",
            unknown=_why(load, "Redis CPU"),
            floor=(1 + inputs.cache_replicas) * min(c.hourly for c in prices.cache_classes) * hours,
            driver="the smallest node and its replica",
        )
    cls, shards = pick_class(prices.cache_classes, load.cache_vcpus, _redis_usable)
    nodes = shards * (1 + inputs.cache_replicas)
    ops = "" if load.cache_ops_per_second is None else f"{load.cache_ops_per_second:,.0f} ops/s, "
    return LineItem(
        "ElastiCache",
        "cache",
        nodes * cls.hourly * hours,
        f"{nodes} x {cls.name} ({shards} shard(s) + {inputs.cache_replicas} replica each; "
        f"{ops}{load.cache_vcpus:.3f} vCPU of Redis)",
        driver=_driver(load, sb, "Redis CPU", "cache_cpu_seconds_per_request", "ms", 1e3),
    )


def _cost_sqlite(
    load: Load,
    sb: ShapeBench,
    bench: BenchFile,
    workload: Workload,
    inputs: ModelInputs,
    prices: Prices,
) -> tuple[bool, list[LineItem], list[str]]:
    hours = inputs.hours_per_month
    feasible = load.process_busy <= inputs.target_utilisation
    held, base, missing = _connection_memory(load, sb, bench.idle_connection_bytes)
    missing = _missing_labels(load) + missing
    gb, stored = _storage(load.users, workload, sb, inputs)
    notes: list[str] = []
    if held is None or base is None:
        instance = LineItem(
            "EC2 instance",
            "compute",
            None,
            f"memory unknown: {', '.join(missing)} not measured",
            unknown=missing,
        )
    else:
        need_gib = (held + base) / GIB / inputs.memory_utilisation
        cls, count = pick_class(prices.ec2_classes, load.app_vcpus, required_gib=need_gib)
        if count > 1:  # also when the CPU figure is a lower bound: it cannot fit
            feasible = False
            notes.append(
                f"EXCEEDS ONE INSTANCE: {load.app_vcpus:.2f} vCPU and {need_gib:,.1f} GiB needed"
            )
        need = f"{load.app_vcpus:.2f} vCPU needed at {inputs.target_utilisation:.0%}"
        with_connections = f"{need_gib:,.2f} GiB with {load.connections:,.0f} connections"
        if load.missing_operations:
            # CPU covers the measured operations only: the class that fits them is a floor
            instance = LineItem(
                "EC2 instance",
                "compute",
                None,
                f">= 1 x {cls.name} (>= {need}, {with_connections}); CPU unknown: "
                f"{', '.join(missing)} not measured",
                unknown=missing,
                floor=cls.hourly * hours,
            )
        else:
            instance = LineItem(
                "EC2 instance",
                "compute",
                cls.hourly * hours,
                f"1 x {cls.name} ({need}, {with_connections})",
                driver=_driver(load, sb, "app CPU", "cpu_seconds_per_request", "ms", 1e3),
            )
    items = [
        instance,
        LineItem(
            "EBS storage",
            "storage",
            gb * prices.ebs_storage_gb_month,
            f"{gb:,.1f} GB gp3; {stored}",
            driver=stored,
        ),
        _data_transfer(load, sb, prices, hours),
    ]
    ceiling = single_process_ceiling(workload, sb, inputs, live_stream=load.live_stream)
    notes.append(
        f"one process serves up to {ceiling:,} users at {inputs.target_utilisation:.0%}"
        + (
            f" (an upper bound: {', '.join(_missing_labels(load))} not measured)"
            if load.missing_operations
            else ""
        )
    )
    notes.append("not highly available: one process on one instance in one zone")
    if load.process_busy > inputs.target_utilisation:
        notes.insert(
            0,
            f"EXCEEDS ONE PROCESS: needs {load.process_busy / inputs.target_utilisation:.1f} "
            "processes' worth of throughput; use a scale-out shape",
        )
    return feasible, items, notes


def _cost_postgres(
    load: Load,
    sb: ShapeBench,
    bench: BenchFile,
    workload: Workload,
    inputs: ModelInputs,
    prices: Prices,
) -> tuple[bool, list[LineItem], list[str]]:
    hours = inputs.hours_per_month
    az = 2 if inputs.rds_multi_az else 1
    gb, stored = _storage(load.users, workload, sb, inputs)
    front, notes = _front(load, sb, bench, inputs, prices)
    if load.storage_vcpus is None:
        rds = LineItem(
            "RDS PostgreSQL",
            "database",
            None,
            _not_measured(load, "PostgreSQL CPU per request")
            + f"; at least {az} x the cheapest class",
            unknown=_why(load, "PostgreSQL CPU"),
            floor=az * min(c.hourly for c in prices.rds_classes) * hours,
            driver="the smallest class" + (" and its standby" if az == 2 else ""),
        )
    else:
        cls, count = pick_class(prices.rds_classes, load.storage_vcpus)
        if count > 1:
            notes.append(
                f"database CPU exceeds the largest class: {count} x {cls.name} means read "
                "replicas or sharding, which this model prices but Parley does not configure"
            )
        rds = LineItem(
            "RDS PostgreSQL",
            "database",
            count * az * cls.hourly * hours,
            f"{count} x {cls.name}{' Multi-AZ' if az == 2 else ''} "
            f"({load.storage_vcpus:.2f} vCPU of database needed)",
            driver=_driver(
                load, sb, "PostgreSQL CPU", "storage_cpu_seconds_per_request", "ms", 1e3
            ),
        )
    items = [
        front[0],
        rds,
        LineItem(
            "RDS storage",
            "storage",
            gb * az * prices.rds_storage_gb_month,
            f"{gb:,.1f} GB gp3{' x 2 (Multi-AZ)' if az == 2 else ''}; {stored}",
            driver=stored,
        ),
        _elasticache(load, sb, inputs, prices, hours),
        *front[1:],
        _data_transfer(load, sb, prices, hours),
    ]
    return True, items, notes


def _cost_dynamodb(
    load: Load,
    sb: ShapeBench,
    bench: BenchFile,
    workload: Workload,
    inputs: ModelInputs,
    prices: Prices,
) -> tuple[bool, list[LineItem], list[str]]:
    hours = inputs.hours_per_month
    seconds = hours * 3600
    front, notes = _front(load, sb, bench, inputs, prices)
    gb, stored = _storage(load.users, workload, sb, inputs)
    rru, wru = load.read_units_per_second, load.write_units_per_second
    if rru is None or wru is None:
        missing = _why(load, *_unknown(("DynamoDB reads", rru), ("DynamoDB writes", wru)))
        database = [
            LineItem(
                "DynamoDB",
                "database",
                None,
                _not_measured(load, "request units per request"),
                unknown=missing,
            )
        ]
    else:
        on_demand = (
            rru * seconds / 1e6 * prices.dynamodb_read_request_units_per_million
            + wru * seconds / 1e6 * prices.dynamodb_write_request_units_per_million
        )
        peak, target = inputs.peak_factor, inputs.dynamodb_target_utilisation
        rcu = max(1, math.ceil(rru * peak / target))
        wcu = max(1, math.ceil(wru * peak / target))
        provisioned = (rcu * prices.dynamodb_rcu_hour + wcu * prices.dynamodb_wcu_hour) * hours
        if inputs.dynamodb_mode == "cheaper":
            use_on_demand = on_demand <= provisioned
        else:
            use_on_demand = inputs.dynamodb_mode == "on-demand"
        database = [
            LineItem(
                "DynamoDB on-demand",
                "database",
                on_demand,
                f"{rru:,.1f} RRU/s + {wru:,.1f} WRU/s",
                included=use_on_demand,
                driver=_driver(load, sb, "DynamoDB calls", "storage_reads_per_request", "", 1.0),
            ),
            LineItem(
                "DynamoDB provisioned",
                "database",
                provisioned,
                f"{rcu:,} RCU + {wcu:,} WCU (x{peak:g} peak at {target:.0%} target)",
                included=not use_on_demand,
                driver=_driver(load, sb, "DynamoDB calls", "storage_reads_per_request", "", 1.0),
            ),
        ]
        reads = load.storage_reads_per_second or 0.0
        writes = load.storage_writes_per_second or 0.0
        notes.append(
            f"DynamoDB billed {'on-demand' if use_on_demand else 'provisioned'} "
            f"({inputs.dynamodb_mode}); reads {reads:,.0f}/s, writes {writes:,.0f}/s"
        )
    items = [
        front[0],
        *database,
        LineItem(
            "DynamoDB storage",
            "storage",
            gb * prices.dynamodb_storage_gb_month,
            f"{gb:,.1f} GB; {stored}",
            driver=stored,
        ),
        _elasticache(load, sb, inputs, prices, hours),
        *front[1:],
        _data_transfer(load, sb, prices, hours),
    ]
    return True, items, notes


_SHAPE_COSTS: Final = {
    "sqlite-single": _cost_sqlite,
    "postgres-redis": _cost_postgres,
    "dynamodb-fargate": _cost_dynamodb,
}


def _highly_available(shape: str, inputs: ModelInputs) -> bool:
    """At least two app processes (ECS spreads tasks over zones), a database with a standby
    (RDS Multi-AZ; DynamoDB replicates across three zones itself), Redis with a replica."""
    if shape not in HIGHLY_AVAILABLE_SHAPES or inputs.min_tasks < 2 or inputs.cache_replicas < 1:
        return False
    return inputs.rds_multi_az or shape != "postgres-redis"


def estimate_shape(
    shape: str,
    users: int,
    sb: ShapeBench,
    workload: Workload,
    inputs: ModelInputs,
    prices: Prices,
    bench: BenchFile | None = None,
    workload_name: str = "original",
) -> ShapeCost:
    file = bench or BenchFile(format="parley-bench/1", sample=False, shapes={shape: sb})
    if not math.isnan(inputs.idle_connection_kib):
        file = msgspec.structs.replace(
            file, idle_connection_bytes=inputs.idle_connection_kib * 1024
        )
    live_stream = workload_name == "stream"
    load = compute_load(users, workload, sb, inputs, live_stream=live_stream)
    load = dataclasses.replace(load, connection_bytes=file.idle_connection_bytes)
    cost = _SHAPE_COSTS.get(shape)
    if cost is None:
        raise ModelError(f"unknown shape {shape!r}")
    feasible, items, notes = cost(load, sb, file, workload, inputs, prices)
    if load.missing_operations:
        notes.append(
            "no live-stream figures for "
            + ", ".join(load.missing_operations)
            + " in the bench: the stream workload cannot be priced (unknown, never zero); "
            "`parley bench` measures them"
        )
    elif not live_stream and "idle" not in sb.operations:
        notes.append(
            "no idle-check figures in the bench: every check is priced as one that finds messages"
        )
    counted = [i for i in items if i.included]
    unknown = tuple(dict.fromkeys(u for i in counted for u in i.unknown))
    known_total = sum(_at_least(i) for i in counted)
    complete = feasible and not unknown
    total = known_total if complete else None
    design_scope = (
        sum(i.monthly for i in counted if i.category in DESIGN_SCOPE and i.monthly is not None)
        if complete
        else None
    )
    return ShapeCost(
        shape,
        users,
        feasible,
        total,
        design_scope,
        tuple(items),
        tuple(notes),
        load,
        workload=workload_name,
        known_total=known_total,
        unknown=unknown,
        highly_available=_highly_available(shape, inputs),
    )


def estimate(
    bench: BenchFile,
    users: Sequence[int],
    prices: Prices | None = None,
    inputs: ModelInputs | None = None,
    workload: Workload | None = None,
    workloads: Sequence[str] = ("original",),
) -> list[ShapeCost]:
    """Costs for every shape in the bench (in ``SHAPES`` order) at every user count, under
    each named workload (``original``: the course design's 7 messages a check; ``realistic``:
    derived from sends and checks; ``stream``: a live stream per online user)."""
    p = prices or Prices()
    mi = (inputs or ModelInputs()).validate()
    w = workload or bench.workload
    for name in workloads:
        if name not in WORKLOADS:
            raise ModelError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    return [
        estimate_shape(shape, n, bench.shapes[shape], w.scenario(name), mi, p, bench, name)
        for name in workloads
        for shape in SHAPES
        if shape in bench.shapes
        for n in users
    ]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The cheapest highly available shape at one user count, against a budget."""

    users: int
    budget: float
    best: ShapeCost | None  # None when no highly available shape has a complete total
    within: bool | None  # None when unknown
    text: str
    workload: str = "stream"


def _money(x: float) -> str:
    return f"${x:,.2f}"


def cheapest_highly_available(
    results: Sequence[ShapeCost], users: int, budget: float, workload: str = "stream"
) -> Verdict:
    """Name the cheapest highly available shape and whether it fits ``budget``; if not, the line
    item (and the measured figure behind it) that stops it, and by how much."""
    candidates = [
        r
        for r in results
        if r.users == users and r.workload == workload and r.highly_available and r.feasible
    ]
    if not candidates:
        return Verdict(
            users, budget, None, None, "no highly available shape in the bench", workload
        )
    complete = [r for r in candidates if r.total is not None]
    if not complete:
        floor = min(candidates, key=lambda r: r.known_total)
        missing = ", ".join(floor.unknown)
        verdict = (
            "unknown: no highly available shape can be priced in full. "
            f"Lowest known part: {floor.shape} at >= {_money(floor.known_total)}/month; "
            f"not measured: {missing}."
        )
        if floor.known_total > budget:
            known = sorted(
                (i for i in floor.line_items if i.included and _at_least(i) > 0),
                key=lambda i: -_at_least(i),
            )
            verdict += (
                f" Its known part alone exceeds {_money(budget)} by "
                f"{_money(floor.known_total - budget)}, whatever the missing figures: "
                + "; ".join(
                    f"{i.name} {'>= ' if i.monthly is None else ''}{_money(_at_least(i))} "
                    f"(set by {i.driver or 'its price'})"
                    for i in known
                )
                + "."
            )
        within = False if floor.known_total > budget else None
        return Verdict(users, budget, None, within, verdict, workload)
    best = min(complete, key=lambda r: r.total or 0.0)
    total = best.total or 0.0
    head = f"cheapest highly available shape: {best.shape} at {_money(total)}/month"
    if total <= budget:
        return Verdict(users, budget, best, True, f"{head}, within {_money(budget)}.", workload)
    excess = total - budget
    counted = sorted(
        (i for i in best.line_items if i.included and i.monthly),
        key=lambda i: -(i.monthly or 0.0),
    )
    parts = [
        f"{i.name} {_money(i.monthly or 0.0)} (set by {i.driver or 'its price'})" for i in counted
    ]
    top = counted[0]
    monthly = top.monthly or 0.0
    if monthly > excess:
        share = excess / monthly
        stop = (
            f"the largest, {top.name}, would have to fall by {_money(excess)} ({share:.0%}, to "
            f"{_money(monthly - excess)}): in proportion, {top.driver or 'its price'} would have "
            f"to fall to {1 - share:.0%} of "
            + ("the input" if "input, not measured" in top.driver else "what was measured")
        )
    else:
        needed, running = [], 0.0
        for item in counted:
            needed.append(item.name)
            running += item.monthly or 0.0
            if running >= excess:
                break
        stop = (
            f"no single item covers the excess: it takes {' + '.join(needed)} "
            f"({_money(running)}) together"
            if running >= excess
            else "every item together is less than the excess"
        )
    text = (
        f"{head}, over {_money(budget)} by {_money(excess)}. Items, largest first: "
        f"{'; '.join(parts)}. To fit, {stop}."
    )
    return Verdict(users, budget, best, False, text, workload)
