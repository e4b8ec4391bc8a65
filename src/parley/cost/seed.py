"""The seed's three cost scenarios, redone from its own inputs, and what its arithmetic got wrong.

The seed ("Discussion of Scaling Effects" in ``seed/messaging-system-README.md``) priced a month
as 24 h x 30 days and every line item as ``units x price-per-hour x 720``. ``recompute`` repeats
exactly that; each scenario's ``stated`` holds the dollar figures as the seed printed them. The
seed's totals are the sums of its printed subtotals, so ``stated_total_from_subtotals`` reproduces
$113.31, $487.33 and $4,401.26 even where a subtotal itself is wrong (see ``findings``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from parley.cost.prices import Prices

__all__ = [
    "SCENARIOS",
    "SEED_HOURS_PER_MONTH",
    "Check",
    "Finding",
    "SeedCosts",
    "SeedScenario",
    "checks",
    "findings",
    "recompute",
    "stated_total_from_subtotals",
]

SEED_HOURS_PER_MONTH: Final = 24 * 30
SECONDS_PER_DAY: Final = 86_400
# The seed's workload: one check a minute reading 5 private + 2 group messages; 10 sends a day.
SEED_READS_PER_CHECK: Final = 7
SEED_PRIVATE_PER_CHECK: Final = 5
SEED_GROUP_PER_CHECK: Final = 2
SEED_SENDS_PER_DAY: Final = 10
CHECKS_PER_DAY: Final = 24 * 60


@dataclass(frozen=True, slots=True)
class SeedCosts:
    """Monthly dollars per line item, as the seed lists them."""

    fargate_vcpu: float
    fargate_memory: float
    fargate: float
    dynamodb_rcu: float
    dynamodb_wcu: float
    dynamodb: float
    elasticache: float
    total: float


@dataclass(frozen=True, slots=True)
class SeedScenario:
    """One scenario: the seed's inputs as it wrote them, and its printed results in ``stated``."""

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
    stated: SeedCosts


SCENARIOS: Final = (
    SeedScenario(
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
        stated=SeedCosts(14.57, 3.20, 17.77, 93.60, 2.34, 95.54, 0.0, 113.31),
    ),
    SeedScenario(
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
        stated=SeedCosts(87.43, 19.20, 106.63, 336.96, 7.02, 343.98, 36.72, 487.33),
    ),
    SeedScenario(
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
        stated=SeedCosts(699.49, 153.61, 853.10, 3369.60, 56.16, 3425.76, 122.40, 4401.26),
    ),
)


def _by_key(key: str) -> SeedScenario:
    return next(s for s in SCENARIOS if s.key == key)


def recompute(scenario: SeedScenario, prices: Prices | None = None) -> SeedCosts:
    """The seed's formulas on the seed's inputs, unrounded (720-hour month)."""
    p = prices or Prices()
    h = SEED_HOURS_PER_MONTH
    vcpu = scenario.task_vcpu * p.fargate_vcpu_hour * h * scenario.tasks
    memory = scenario.task_memory_gb * p.fargate_gb_hour * h * scenario.tasks
    rcu = scenario.rcu * p.dynamodb_rcu_hour * h
    wcu = scenario.wcu * p.dynamodb_wcu_hour * h
    cache = scenario.cache_nodes * p.seed_cache_node_hour * h
    return SeedCosts(
        fargate_vcpu=vcpu,
        fargate_memory=memory,
        fargate=vcpu + memory,
        dynamodb_rcu=rcu,
        dynamodb_wcu=wcu,
        dynamodb=rcu + wcu,
        elasticache=cache,
        total=vcpu + memory + rcu + wcu + cache,
    )


def stated_total_from_subtotals(scenario: SeedScenario) -> float:
    """How the seed reached its total: the sum of its printed subtotals."""
    s = scenario.stated
    return round(s.fargate + s.dynamodb + s.elasticache, 2)


def seed_reads_per_second(users: int, keep: float) -> float:
    return SEED_READS_PER_CHECK * users / 60 * keep


def seed_writes_per_second(users: int) -> float:
    return users * SEED_SENDS_PER_DAY / SECONDS_PER_DAY


def requests_per_second(users: int) -> float:
    """Checks plus sends per second under the seed's workload."""
    return users / 60 + seed_writes_per_second(users)


@dataclass(frozen=True, slots=True)
class Finding:
    """One error in the seed's cost discussion, with the numbers that show it."""

    key: str
    kind: str  # arithmetic | rounding | labelling | modelling | convention | omission
    scenario: str | None  # a SeedScenario.key, or None when it affects every scenario
    seed_says: str
    correct: str
    why: str
    seed_value: float
    correct_value: float


@dataclass(frozen=True, slots=True)
class Check:
    """A seed claim that was checked and holds (to the precision the seed printed)."""

    key: str
    claim: str
    seed_value: float
    computed: float
    note: str


def _money(x: float) -> str:
    return f"${x:,.2f}"


def findings(prices: Prices | None = None) -> list[Finding]:
    """Every seed error verified by arithmetic; the figures are computed here, not typed in."""
    p = prices or Prices()
    thousands, tens, millions = (_by_key(k) for k in ("thousands", "tens-of-thousands", "millions"))
    r1, r2, r3 = recompute(thousands, p), recompute(tens, p), recompute(millions, p)
    out: list[Finding] = []

    # 1-2: writes/day labels.
    for sc, printed in ((tens, "100,000,000"), (millions, "10,00,000,000")):
        per_day = sc.users * SEED_SENDS_PER_DAY
        out.append(
            Finding(
                key=f"writes-per-day-{sc.key}",
                kind="labelling",
                scenario=sc.key,
                seed_says=f"{printed} writes/day",
                correct=f"{per_day:,} writes/day ({sc.users:,} users x {SEED_SENDS_PER_DAY}/day)",
                why=(
                    f"the seed's {sc.stated_writes_per_second:g} writes/s is right for "
                    f"{per_day:,}/day ({per_day / SECONDS_PER_DAY:.2f}/s); its printed figure "
                    "would be "
                    f"{sc.stated_writes_per_day / SECONDS_PER_DAY:,.0f}/s"
                ),
                seed_value=sc.stated_writes_per_day,
                correct_value=per_day,
            )
        )

    # 3: the 10,000-user DynamoDB subtotal does not add up, and the total inherits it.
    out.append(
        Finding(
            key="dynamodb-subtotal-thousands",
            kind="arithmetic",
            scenario=thousands.key,
            seed_says=f"DynamoDB {_money(thousands.stated.dynamodb)}/month, total "
            f"{_money(thousands.stated.total)}",
            correct=f"DynamoDB {_money(r1.dynamodb)}/month, total {_money(r1.total)}",
            why=(
                f"{_money(thousands.stated.dynamodb_rcu)} RCU + "
                f"{_money(thousands.stated.dynamodb_wcu)} WCU = {_money(r1.dynamodb)}; the total "
                f"{_money(thousands.stated.total)} is "
                f"{_money(thousands.stated.fargate)} + the wrong subtotal"
            ),
            seed_value=thousands.stated.dynamodb,
            correct_value=round(r1.dynamodb, 2),
        )
    )

    # 4-5: truncated cents.
    for sc, r, item in ((tens, r2, "fargate_vcpu"), (millions, r3, "fargate_memory")):
        stated: float = getattr(sc.stated, item)
        exact: float = getattr(r, item)
        label = item.replace("_", " ")
        out.append(
            Finding(
                key=f"truncated-cents-{sc.key}",
                kind="rounding",
                scenario=sc.key,
                seed_says=f"{label} {_money(stated)}, total {_money(sc.stated.total)}",
                correct=f"{label} {_money(exact)}, total {_money(r.total)}",
                why=f"the product is {exact:.4f}, which rounds to {_money(exact)}; the seed "
                "truncated",
                seed_value=sc.stated.total,
                correct_value=round(r.total, 2),
            )
        )

    # 6: "pay-per-request" priced with provisioned-capacity rates.
    seconds_30d = SEED_HOURS_PER_MONTH * 3600
    reads_od = (
        millions.stated_reads_per_second
        * seconds_30d
        / 1e6
        * (p.dynamodb_read_request_units_per_million)
    )
    writes_od = (
        millions.stated_writes_per_second
        * seconds_30d
        / 1e6
        * (p.dynamodb_write_request_units_per_million)
    )
    out.append(
        Finding(
            key="pay-per-request-priced-as-provisioned",
            kind="modelling",
            scenario=None,
            seed_says='"Assuming the pay-per-request model": $0.00013 per RCU-hour, $0.00065 per '
            f"WCU-hour; 1,000,000 users: {_money(millions.stated.dynamodb)}/month",
            correct=f"on-demand (pay-per-request) for the same 35,000 reads/s and 116 writes/s: "
            f"{_money(reads_od + writes_od)}/month (strongly consistent reads)",
            why=(
                "RCU-hours and WCU-hours are provisioned-capacity prices; on-demand bills request "
                f"units (${p.dynamodb_read_request_units_per_million}/million reads, "
                f"${p.dynamodb_write_request_units_per_million}/million writes): 35,000/s x "
                f"{seconds_30d:,} s = {35_000 * seconds_30d / 1e6:,.0f} M reads -> "
                f"{_money(reads_od)}, 116/s -> {_money(writes_od)}"
            ),
            seed_value=millions.stated.dynamodb,
            correct_value=round(reads_od + writes_od, 2),
        )
    )

    # 7: capacity units counted per message, not per API call.
    calls_per_check = 1 + 1 + SEED_GROUP_PER_CHECK  # get user + private query + one query per group
    out.append(
        Finding(
            key="read-units-per-message",
            kind="modelling",
            scenario=None,
            seed_says=f"{SEED_READS_PER_CHECK} reads per check, 1 RCU per read",
            correct=f"at most {calls_per_check} read units per check strongly consistent, "
            f"{calls_per_check * 0.5:g} eventually consistent",
            why=(
                "a read unit is one strongly consistent (or two eventually consistent) reads of up "
                "to 4 KB per API call, and a Query is charged on the total size it returns; the "
                "seed's own access pattern is 1 user get + 1 private-message query + 1 query per "
                "group, so "
                f"5 private + 2 group messages under 4 KB cost {calls_per_check} units, not "
                f"{SEED_READS_PER_CHECK}"
            ),
            seed_value=SEED_READS_PER_CHECK,
            correct_value=calls_per_check,
        )
    )

    # 8: 5 private messages per check cannot come from 10 sends a day.
    private_received = SEED_PRIVATE_PER_CHECK * CHECKS_PER_DAY
    out.append(
        Finding(
            key="messages-per-check-vs-sends",
            kind="modelling",
            scenario=None,
            seed_says=f"{SEED_PRIVATE_PER_CHECK} new private messages per check "
            f"({private_received:,} a day per user)",
            correct=f"at most {SEED_SENDS_PER_DAY / CHECKS_PER_DAY:.4f} per check "
            f"({SEED_SENDS_PER_DAY} a day per user)",
            why=(
                f"a private message has one recipient, so users receive on average what they send: "
                f"<= {SEED_SENDS_PER_DAY} a day over {CHECKS_PER_DAY:,} checks; most checks find "
                "nothing new, so reads follow checks (API calls), not messages"
            ),
            seed_value=SEED_PRIVATE_PER_CHECK,
            correct_value=SEED_SENDS_PER_DAY / CHECKS_PER_DAY,
        )
    )

    # 9: "burst capacity" headroom is about 3 % over the daily average at the two larger scales.
    for sc in (tens, millions):
        reads = seed_reads_per_second(sc.users, sc.read_keep_fraction)
        writes = seed_writes_per_second(sc.users)
        out.append(
            Finding(
                key=f"burst-headroom-{sc.key}",
                kind="modelling",
                scenario=sc.key,
                seed_says=f"{sc.rcu:,} RCU and {sc.wcu} WCU 'for burst capacity'",
                correct=(
                    f"{sc.rcu / reads:.3f}x the average reads ({reads:,.0f}/s) and "
                    f"{sc.wcu / writes:.2f}x the average writes ({writes:.2f}/s): no room for a "
                    "peak"
                ),
                why=(
                    "provisioned capacity must cover the busiest hour, not the daily average "
                    "(reads above it are throttled); AWS's default auto-scaling target of 70 % "
                    "provisions 1/0.7 = 1.43x what is consumed. The 10,000-user scenario had "
                    "1.22x."
                ),
                seed_value=sc.rcu,
                correct_value=round(reads / 0.7),
            )
        )

    # 10: compute sized without load; the implied per-vCPU throughput differs by scenario.
    implied = [requests_per_second(sc.users) / (sc.task_vcpu * sc.tasks) for sc in SCENARIOS]
    out.append(
        Finding(
            key="compute-not-derived",
            kind="modelling",
            scenario=None,
            seed_says="; ".join(
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
            seed_value=millions.task_vcpu * millions.tasks,
            correct_value=round(implied[-1], 1),
        )
    )

    # 11: a month is 730 hours in AWS's own monthly figures.
    out.append(
        Finding(
            key="month-hours",
            kind="convention",
            scenario=None,
            seed_says=f"24 h x 30 days = {SEED_HOURS_PER_MONTH} h a month",
            correct="8,760 h / 12 = 730 h a month (AWS's $0.47/WCU-month = $0.00065 x 730)",
            why=(
                f"every always-on line item is {730 / SEED_HOURS_PER_MONTH - 1:.1%} low; the "
                f"1,000,000-user total becomes {_money(r3.total * 730 / SEED_HOURS_PER_MONTH)}"
            ),
            seed_value=SEED_HOURS_PER_MONTH,
            correct_value=730,
        )
    )

    # 12: the load balancer it names is never priced.
    checks_per_second = millions.users / 60
    lcu_new_connections = checks_per_second / 25
    alb_base = p.alb_hour * SEED_HOURS_PER_MONTH
    lcu_cost = math.ceil(lcu_new_connections) * p.alb_lcu_hour * SEED_HOURS_PER_MONTH
    out.append(
        Finding(
            key="load-balancer-not-priced",
            kind="omission",
            scenario=None,
            seed_says="load balancing (ALB) named for the 100,000 and 1,000,000-user scenarios, $0",
            correct=f"{_money(alb_base)}/month per ALB before traffic; at 1,000,000 users, if "
            f"each check opens a connection, {lcu_new_connections:,.0f} LCU = "
            f"{_money(lcu_cost)}/month",
            why=(
                f"an ALB costs ${p.alb_hour}/h plus ${p.alb_lcu_hour} per LCU-hour, an LCU being "
                "25 new connections/s (or 3,000 active connections, 1 GB/h, 1,000 rule "
                f"evaluations/s, whichever is highest); {checks_per_second:,.0f} checks/s / 25 = "
                f"{lcu_new_connections:,.0f} LCU"
            ),
            seed_value=0.0,
            correct_value=round(alb_base, 2),
        )
    )
    return out


def checks(prices: Prices | None = None) -> list[Check]:
    """Seed claims that were checked and hold; listed so the reader sees what was verified."""
    p = prices or Prices()
    out: list[Check] = []
    for sc in SCENARIOS:
        reads = seed_reads_per_second(sc.users, sc.read_keep_fraction)
        cut = 1 - sc.read_keep_fraction
        out.append(
            Check(
                key=f"reads-per-second-{sc.key}",
                claim=f"(7 x {sc.users:,} / 60) x {sc.read_keep_fraction:g} = "
                f"~{sc.stated_reads_per_second:,g} reads/s ({cut:.0%} cut by caching)",
                seed_value=sc.stated_reads_per_second,
                computed=reads,
                note="consistent with the stated cut (keep 0.7 for a 30 % cut, 0.3 for a 70 % cut)"
                + ("; 816.67 is truncated to 816" if sc.key == "thousands" else ""),
            )
        )
        writes = seed_writes_per_second(sc.users)
        out.append(
            Check(
                key=f"writes-per-second-{sc.key}",
                claim=f"{sc.users:,} users x 10/day / 86,400 = ~{sc.stated_writes_per_second:g} "
                "writes/s",
                seed_value=sc.stated_writes_per_second,
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
                    seed_value=stated,
                    computed=getattr(r, item),
                    note="units x price x 720 h",
                )
            )
        out.append(
            Check(
                key=f"total-from-subtotals-{sc.key}",
                claim=f"total {_money(sc.stated.total)} = sum of the printed subtotals",
                seed_value=sc.stated.total,
                computed=stated_total_from_subtotals(sc),
                note="the seed's totals add its subtotals correctly",
            )
        )
    return out
