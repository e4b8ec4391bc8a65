"""The original course design's three cost scenarios, redone from its own inputs, and its errors.

The course design ("Discussion of Scaling Effects" in its README; docs/cost.md names it) priced a
month as 24 h x 30 days and every line item as ``units x price-per-hour x 720``. ``recompute``
repeats exactly that; each scenario's ``stated`` holds the dollar figures as the design printed
them. Its totals are the sums of its printed subtotals, so ``stated_total_from_subtotals``
reproduces $113.31, $487.33 and $4,401.26 even where a subtotal itself is wrong (see
``FINDINGS``: one record per error, each with the small checker that computes it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

from parley.cost.prices import Prices

__all__ = [
    "DESIGN_HOURS_PER_MONTH",
    "FINDINGS",
    "SCENARIOS",
    "Check",
    "DesignCosts",
    "DesignScenario",
    "Evidence",
    "Finding",
    "Mistake",
    "checks",
    "findings",
    "recompute",
    "stated_total_from_subtotals",
]

DESIGN_HOURS_PER_MONTH: Final = 24 * 30
SECONDS_PER_DAY: Final = 86_400
# The design's workload: one check a minute reading 5 private + 2 group messages; 10 sends a day.
DESIGN_READS_PER_CHECK: Final = 7
DESIGN_PRIVATE_PER_CHECK: Final = 5
DESIGN_GROUP_PER_CHECK: Final = 2
DESIGN_SENDS_PER_DAY: Final = 10
CHECKS_PER_DAY: Final = 24 * 60


@dataclass(frozen=True, slots=True)
class DesignCosts:
    """Monthly dollars per line item, as the course design lists them."""

    fargate_vcpu: float
    fargate_memory: float
    fargate: float
    dynamodb_rcu: float
    dynamodb_wcu: float
    dynamodb: float
    elasticache: float
    total: float


@dataclass(frozen=True, slots=True)
class DesignScenario:
    """One scenario: the design's inputs as it wrote them, and its printed results in ``stated``."""

    key: str
    label: str
    users: int
    read_keep_fraction: float  # share of DynamoDB reads left after caching (0.7 = a 30 % cut)
    stated_reads_per_second: float
    stated_writes_per_day: int  # as printed, including its typos
    stated_writes_per_second: float
    rcu: int
    wcu: int
    task_vcpu: float
    task_memory_gb: float
    tasks: int
    cache_nodes: int
    stated: DesignCosts


SCENARIOS: Final = (
    DesignScenario(
        key="thousands",
        label="1,000-10,000 users (priced at 10,000)",
        users=10_000,
        read_keep_fraction=0.7,
        stated_reads_per_second=816,
        stated_writes_per_day=100_000,
        stated_writes_per_second=1.16,
        rcu=1_000,
        wcu=5,
        task_vcpu=0.5,
        task_memory_gb=1,
        tasks=1,
        cache_nodes=0,
        stated=DesignCosts(14.57, 3.20, 17.77, 93.60, 2.34, 95.54, 0.0, 113.31),
    ),
    DesignScenario(
        key="tens-of-thousands",
        label="10,000-100,000 users (priced at 100,000)",
        users=100_000,
        read_keep_fraction=0.3,
        stated_reads_per_second=3_500,
        stated_writes_per_day=100_000_000,
        stated_writes_per_second=12,
        rcu=3_600,
        wcu=15,
        task_vcpu=1,
        task_memory_gb=2,
        tasks=3,
        cache_nodes=3,
        stated=DesignCosts(87.43, 19.20, 106.63, 336.96, 7.02, 343.98, 36.72, 487.33),
    ),
    DesignScenario(
        key="millions",
        label="millions of users (priced at 1,000,000)",
        users=1_000_000,
        read_keep_fraction=0.3,
        stated_reads_per_second=35_000,
        stated_writes_per_day=1_000_000_000,  # printed "10,00,000,000"
        stated_writes_per_second=116,
        rcu=36_000,
        wcu=120,
        task_vcpu=2,
        task_memory_gb=4,
        tasks=12,
        cache_nodes=10,
        stated=DesignCosts(699.49, 153.61, 853.10, 3369.60, 56.16, 3425.76, 122.40, 4401.26),
    ),
)


def _by_key(key: str) -> DesignScenario:
    return next(s for s in SCENARIOS if s.key == key)


def recompute(scenario: DesignScenario, prices: Prices | None = None) -> DesignCosts:
    """The course design's formulas on the course design's inputs, unrounded (720-hour month)."""
    p = prices or Prices()
    h = DESIGN_HOURS_PER_MONTH
    vcpu = scenario.task_vcpu * p.fargate_vcpu_hour * h * scenario.tasks
    memory = scenario.task_memory_gb * p.fargate_gb_hour * h * scenario.tasks
    rcu = scenario.rcu * p.dynamodb_rcu_hour * h
    wcu = scenario.wcu * p.dynamodb_wcu_hour * h
    cache = scenario.cache_nodes * p.design_cache_node_hour * h
    return DesignCosts(
        fargate_vcpu=vcpu,
        fargate_memory=memory,
        fargate=vcpu + memory,
        dynamodb_rcu=rcu,
        dynamodb_wcu=wcu,
        dynamodb=rcu + wcu,
        elasticache=cache,
        total=vcpu + memory + rcu + wcu + cache,
    )


def stated_total_from_subtotals(scenario: DesignScenario) -> float:
    """How the course design reached its total: the sum of its printed subtotals."""
    s = scenario.stated
    return round(s.fargate + s.dynamodb + s.elasticache, 2)


def design_reads_per_second(users: int, keep: float) -> float:
    return DESIGN_READS_PER_CHECK * users / 60 * keep


def design_writes_per_second(users: int) -> float:
    return users * DESIGN_SENDS_PER_DAY / SECONDS_PER_DAY


def requests_per_second(users: int) -> float:
    """Checks plus sends per second under the course design's workload."""
    return users / 60 + design_writes_per_second(users)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a finding's checker computes: both sides' figures and the arithmetic between them."""

    design_says: str
    correct: str
    why: str
    design_value: float
    correct_value: float


@dataclass(frozen=True, slots=True)
class Finding:
    """One error in the course design's cost discussion: an id, a title, and its checker."""

    id: str
    title: str
    kind: str  # arithmetic | rounding | labelling | modelling | convention | omission
    scenario: str | None  # a DesignScenario.key, or None when it affects every scenario
    checker: Callable[[Prices], Evidence]


@dataclass(frozen=True, slots=True)
class Mistake:
    """A finding checked against a set of prices, with the numbers that show it."""

    key: str
    kind: str
    scenario: str | None
    design_says: str
    correct: str
    why: str
    design_value: float
    correct_value: float


@dataclass(frozen=True, slots=True)
class Check:
    """A claim of the course design that was checked and holds (to the precision it printed)."""

    key: str
    claim: str
    design_value: float
    computed: float
    note: str


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _writes_per_day_label(key: str, printed: str, p: Prices) -> Evidence:
    sc = _by_key(key)
    per_day = sc.users * DESIGN_SENDS_PER_DAY
    return Evidence(
        design_says=f"{printed} writes/day",
        correct=f"{per_day:,} writes/day ({sc.users:,} users x {DESIGN_SENDS_PER_DAY}/day)",
        why=(
            f"the course design's {sc.stated_writes_per_second:g} writes/s is right for "
            f"{per_day:,}/day ({per_day / SECONDS_PER_DAY:.2f}/s); its printed figure would be "
            f"{sc.stated_writes_per_day / SECONDS_PER_DAY:,.0f}/s"
        ),
        design_value=sc.stated_writes_per_day,
        correct_value=per_day,
    )


def _dynamodb_subtotal(p: Prices) -> Evidence:
    sc = _by_key("thousands")
    stated, r = sc.stated, recompute(sc, p)
    return Evidence(
        design_says=f"DynamoDB {_money(stated.dynamodb)}/month, total {_money(stated.total)}",
        correct=f"DynamoDB {_money(r.dynamodb)}/month, total {_money(r.total)}",
        why=(
            f"{_money(stated.dynamodb_rcu)} RCU + {_money(stated.dynamodb_wcu)} WCU = "
            f"{_money(r.dynamodb)}; the total {_money(stated.total)} is "
            f"{_money(stated.fargate)} + the wrong subtotal"
        ),
        design_value=stated.dynamodb,
        correct_value=round(r.dynamodb, 2),
    )


def _truncated_cents(key: str, item: str, p: Prices) -> Evidence:
    sc = _by_key(key)
    r = recompute(sc, p)
    stated: float = getattr(sc.stated, item)
    exact: float = getattr(r, item)
    label = item.replace("_", " ")
    return Evidence(
        design_says=f"{label} {_money(stated)}, total {_money(sc.stated.total)}",
        correct=f"{label} {_money(exact)}, total {_money(r.total)}",
        why=f"the product is {exact:.4f}, which rounds to {_money(exact)}; the course design "
        "truncated",
        design_value=sc.stated.total,
        correct_value=round(r.total, 2),
    )


def _pay_per_request(p: Prices) -> Evidence:
    sc = _by_key("millions")
    seconds = DESIGN_HOURS_PER_MONTH * 3600
    reads = sc.stated_reads_per_second * seconds / 1e6 * p.dynamodb_read_request_units_per_million
    writes = (
        sc.stated_writes_per_second * seconds / 1e6 * p.dynamodb_write_request_units_per_million
    )
    return Evidence(
        design_says='"Assuming the pay-per-request model": $0.00013 per RCU-hour, $0.00065 per '
        f"WCU-hour; 1,000,000 users: {_money(sc.stated.dynamodb)}/month",
        correct=f"on-demand (pay-per-request) for the same 35,000 reads/s and 116 writes/s: "
        f"{_money(reads + writes)}/month (strongly consistent reads)",
        why=(
            "RCU-hours and WCU-hours are provisioned-capacity prices; on-demand bills request "
            f"units (${p.dynamodb_read_request_units_per_million}/million reads, "
            f"${p.dynamodb_write_request_units_per_million}/million writes): 35,000/s x "
            f"{seconds:,} s = {35_000 * seconds / 1e6:,.0f} M reads -> "
            f"{_money(reads)}, 116/s -> {_money(writes)}"
        ),
        design_value=sc.stated.dynamodb,
        correct_value=round(reads + writes, 2),
    )


def _read_units_per_call(p: Prices) -> Evidence:
    calls = 1 + 1 + DESIGN_GROUP_PER_CHECK  # get user + private query + one query per group
    return Evidence(
        design_says=f"{DESIGN_READS_PER_CHECK} reads per check, 1 RCU per read",
        correct=f"at most {calls} read units per check strongly consistent, "
        f"{calls * 0.5:g} eventually consistent",
        why=(
            "a read unit is one strongly consistent (or two eventually consistent) reads of up "
            "to 4 KB per API call, and a Query is charged on the total size it returns; the "
            "course design's own access pattern is 1 user get + 1 private-message query + 1 "
            f"query per group, so 5 private + 2 group messages under 4 KB cost {calls} units, not "
            f"{DESIGN_READS_PER_CHECK}"
        ),
        design_value=DESIGN_READS_PER_CHECK,
        correct_value=calls,
    )


def _messages_per_check(p: Prices) -> Evidence:
    received = DESIGN_PRIVATE_PER_CHECK * CHECKS_PER_DAY
    return Evidence(
        design_says=f"{DESIGN_PRIVATE_PER_CHECK} new private messages per check "
        f"({received:,} a day per user)",
        correct=f"at most {DESIGN_SENDS_PER_DAY / CHECKS_PER_DAY:.4f} per check "
        f"({DESIGN_SENDS_PER_DAY} a day per user)",
        why=(
            f"a private message has one recipient, so users receive on average what they send: "
            f"<= {DESIGN_SENDS_PER_DAY} a day over {CHECKS_PER_DAY:,} checks; most checks find "
            "nothing new, so reads follow checks (API calls), not messages"
        ),
        design_value=DESIGN_PRIVATE_PER_CHECK,
        correct_value=DESIGN_SENDS_PER_DAY / CHECKS_PER_DAY,
    )


def _burst_headroom(key: str, p: Prices) -> Evidence:
    sc = _by_key(key)
    reads = design_reads_per_second(sc.users, sc.read_keep_fraction)
    writes = design_writes_per_second(sc.users)
    return Evidence(
        design_says=f"{sc.rcu:,} RCU and {sc.wcu} WCU 'for burst capacity'",
        correct=(
            f"{sc.rcu / reads:.3f}x the average reads ({reads:,.0f}/s) and "
            f"{sc.wcu / writes:.2f}x the average writes ({writes:.2f}/s): no room for a peak"
        ),
        why=(
            "provisioned capacity must cover the busiest hour, not the daily average (reads "
            "above it are throttled); AWS's default auto-scaling target of 70 % provisions "
            "1/0.7 = 1.43x what is consumed. The 10,000-user scenario had 1.22x."
        ),
        design_value=sc.rcu,
        correct_value=round(reads / 0.7),
    )


def _compute_not_derived(p: Prices) -> Evidence:
    implied = [requests_per_second(sc.users) / (sc.task_vcpu * sc.tasks) for sc in SCENARIOS]
    largest = SCENARIOS[-1]
    return Evidence(
        design_says="; ".join(
            f"{sc.tasks} x {sc.task_vcpu:g} vCPU for {sc.users:,} users" for sc in SCENARIOS
        ),
        correct="implied "
        + ", ".join(f"{x:,.1f}" for x in implied)
        + " requests/s per vCPU: assumed, never measured or stated",
        why=(
            "the Fargate sizes are not derived from the load (checks + sends per second over "
            "vCPUs); the throughput they assume per vCPU doubles from the smallest to the "
            "largest scenario with no reason given"
        ),
        design_value=largest.task_vcpu * largest.tasks,
        correct_value=round(implied[-1], 1),
    )


def _month_hours(p: Prices) -> Evidence:
    total = recompute(_by_key("millions"), p).total
    return Evidence(
        design_says=f"24 h x 30 days = {DESIGN_HOURS_PER_MONTH} h a month",
        correct="8,760 h / 12 = 730 h a month (AWS's $0.47/WCU-month = $0.00065 x 730)",
        why=(
            f"every always-on line item is {730 / DESIGN_HOURS_PER_MONTH - 1:.1%} low; the "
            f"1,000,000-user total becomes {_money(total * 730 / DESIGN_HOURS_PER_MONTH)}"
        ),
        design_value=DESIGN_HOURS_PER_MONTH,
        correct_value=730,
    )


def _load_balancer(p: Prices) -> Evidence:
    checks_per_second = _by_key("millions").users / 60
    lcu = checks_per_second / 25  # new connections/s per LCU, if each check opens one
    base = p.alb_hour * DESIGN_HOURS_PER_MONTH
    lcu_cost = math.ceil(lcu) * p.alb_lcu_hour * DESIGN_HOURS_PER_MONTH
    return Evidence(
        design_says="load balancing (ALB) named for the 100,000 and 1,000,000-user scenarios, $0",
        correct=f"{_money(base)}/month per ALB before traffic; at 1,000,000 users, if each "
        f"check opens a connection, {lcu:,.0f} LCU = {_money(lcu_cost)}/month",
        why=(
            f"an ALB costs ${p.alb_hour}/h plus ${p.alb_lcu_hour} per LCU-hour, an LCU being "
            "25 new connections/s (or 3,000 active connections, 1 GB/h, 1,000 rule "
            f"evaluations/s, whichever is highest); {checks_per_second:,.0f} checks/s / 25 = "
            f"{lcu:,.0f} LCU"
        ),
        design_value=0.0,
        correct_value=round(base, 2),
    )


FINDINGS: Final = (
    Finding(
        "writes-per-day-tens-of-thousands",
        "writes/day label, 100,000 users",
        "labelling",
        "tens-of-thousands",
        partial(_writes_per_day_label, "tens-of-thousands", "100,000,000"),
    ),
    Finding(
        "writes-per-day-millions",
        "writes/day label, 1,000,000 users",
        "labelling",
        "millions",
        partial(_writes_per_day_label, "millions", "10,00,000,000"),
    ),
    Finding(
        "dynamodb-subtotal-thousands",
        "DynamoDB subtotal does not add up, and the total inherits it",
        "arithmetic",
        "thousands",
        _dynamodb_subtotal,
    ),
    Finding(
        "truncated-cents-tens-of-thousands",
        "Fargate vCPU cents truncated",
        "rounding",
        "tens-of-thousands",
        partial(_truncated_cents, "tens-of-thousands", "fargate_vcpu"),
    ),
    Finding(
        "truncated-cents-millions",
        "Fargate memory cents truncated",
        "rounding",
        "millions",
        partial(_truncated_cents, "millions", "fargate_memory"),
    ),
    Finding(
        "pay-per-request-priced-as-provisioned",
        '"pay-per-request" priced with provisioned-capacity rates',
        "modelling",
        None,
        _pay_per_request,
    ),
    Finding(
        "read-units-per-message",
        "read units counted per message, not per API call",
        "modelling",
        None,
        _read_units_per_call,
    ),
    Finding(
        "messages-per-check-vs-sends",
        "5 private messages per check cannot come from 10 sends a day",
        "modelling",
        None,
        _messages_per_check,
    ),
    Finding(
        "burst-headroom-tens-of-thousands",
        "'burst capacity' is about 3 % over the average, 100,000 users",
        "modelling",
        "tens-of-thousands",
        partial(_burst_headroom, "tens-of-thousands"),
    ),
    Finding(
        "burst-headroom-millions",
        "'burst capacity' is about 3 % over the average, 1,000,000 users",
        "modelling",
        "millions",
        partial(_burst_headroom, "millions"),
    ),
    Finding(
        "compute-not-derived",
        "compute sized without load; implied throughput per vCPU differs by scenario",
        "modelling",
        None,
        _compute_not_derived,
    ),
    Finding(
        "month-hours",
        "a month is 730 hours in AWS's own monthly figures",
        "convention",
        None,
        _month_hours,
    ),
    Finding(
        "load-balancer-not-priced",
        "the load balancer it names is never priced",
        "omission",
        None,
        _load_balancer,
    ),
)


def findings(prices: Prices | None = None) -> list[Mistake]:
    """Every error of the course design, verified by arithmetic (computed here, not typed in)."""
    p = prices or Prices()
    out = []
    for f in FINDINGS:
        e = f.checker(p)
        out.append(
            Mistake(
                f.id,
                f.kind,
                f.scenario,
                e.design_says,
                e.correct,
                e.why,
                e.design_value,
                e.correct_value,
            )
        )
    return out


def checks(prices: Prices | None = None) -> list[Check]:
    """What the course design got right, checked; listed so the reader sees what was verified."""
    p = prices or Prices()
    out: list[Check] = []
    for sc in SCENARIOS:
        reads = design_reads_per_second(sc.users, sc.read_keep_fraction)
        cut = 1 - sc.read_keep_fraction
        out.append(
            Check(
                key=f"reads-per-second-{sc.key}",
                claim=f"(7 x {sc.users:,} / 60) x {sc.read_keep_fraction:g} = "
                f"~{sc.stated_reads_per_second:,g} reads/s ({cut:.0%} cut by caching)",
                design_value=sc.stated_reads_per_second,
                computed=reads,
                note="consistent with the stated cut (keep 0.7 for a 30 % cut, 0.3 for a 70 % cut)"
                + ("; 816.67 is truncated to 816" if sc.key == "thousands" else ""),
            )
        )
        writes = design_writes_per_second(sc.users)
        out.append(
            Check(
                key=f"writes-per-second-{sc.key}",
                claim=f"{sc.users:,} users x 10/day / 86,400 = ~{sc.stated_writes_per_second:g} "
                "writes/s",
                design_value=sc.stated_writes_per_second,
                computed=writes,
                note="rate right, whatever the writes/day label says",
            )
        )
        r = recompute(sc, p)
        for item in ("dynamodb_rcu", "dynamodb_wcu", "elasticache"):
            stated: float = getattr(sc.stated, item)
            out.append(
                Check(
                    key=f"{item.replace('_', '-')}-{sc.key}",
                    claim=f"{item.replace('_', ' ')} {_money(stated)}",
                    design_value=stated,
                    computed=getattr(r, item),
                    note="units x price x 720 h",
                )
            )
        out.append(
            Check(
                key=f"total-from-subtotals-{sc.key}",
                claim=f"total {_money(sc.stated.total)} = sum of the printed subtotals",
                design_value=sc.stated.total,
                computed=stated_total_from_subtotals(sc),
                note="the course design's totals add its subtotals correctly",
            )
        )
    return out
