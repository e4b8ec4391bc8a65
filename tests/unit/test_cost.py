"""The course design's three cost scenarios redone by hand, and the errors ``parley cost`` finds."""

from __future__ import annotations

import dataclasses

import pytest

from parley.cost.course_design import (
    DESIGN_HOURS_PER_MONTH,
    FINDINGS,
    SCENARIOS,
    DesignCosts,
    checks,
    findings,
    recompute,
    stated_total_from_subtotals,
)
from parley.cost.prices import Prices

BY_KEY = {s.key: s for s in SCENARIOS}

# Hand computation, every line item = units x $/hour x 24 h x 30 days (= 720 h), design prices:
# Fargate $0.04048/vCPU-h, $0.004445/GB-h; DynamoDB $0.00013/RCU-h, $0.00065/WCU-h;
# ElastiCache cache.t2.micro $0.017/h.
HAND = {
    "thousands": DesignCosts(
        fargate_vcpu=14.5728,  # 0.5 vCPU x 0.04048 x 720
        fargate_memory=3.2004,  # 1 GB x 0.004445 x 720
        fargate=17.7732,  # 14.5728 + 3.2004
        dynamodb_rcu=93.6,  # 1,000 RCU x 0.00013 x 720
        dynamodb_wcu=2.34,  # 5 WCU x 0.00065 x 720
        dynamodb=95.94,  # 93.60 + 2.34 (the course design printed 95.54)
        elasticache=0.0,  # in-process cache, no nodes
        total=113.7132,  # 17.7732 + 95.94
    ),
    "tens-of-thousands": DesignCosts(
        fargate_vcpu=87.4368,  # 1 vCPU x 0.04048 x 720 x 3 tasks
        fargate_memory=19.2024,  # 2 GB x 0.004445 x 720 x 3
        fargate=106.6392,  # 87.4368 + 19.2024
        dynamodb_rcu=336.96,  # 3,600 x 0.00013 x 720
        dynamodb_wcu=7.02,  # 15 x 0.00065 x 720
        dynamodb=343.98,  # 336.96 + 7.02
        elasticache=36.72,  # 3 nodes x 0.017 x 720
        total=487.3392,  # 106.6392 + 343.98 + 36.72
    ),
    "millions": DesignCosts(
        fargate_vcpu=699.4944,  # 2 vCPU x 0.04048 x 720 x 12 tasks
        fargate_memory=153.6192,  # 4 GB x 0.004445 x 720 x 12
        fargate=853.1136,  # 699.4944 + 153.6192
        dynamodb_rcu=3369.6,  # 36,000 x 0.00013 x 720
        dynamodb_wcu=56.16,  # 120 x 0.00065 x 720
        dynamodb=3425.76,  # 3,369.60 + 56.16
        elasticache=122.4,  # 10 nodes x 0.017 x 720
        total=4401.2736,  # 853.1136 + 3,425.76 + 122.40
    ),
}


@pytest.mark.parametrize("key", list(HAND))
def test_recompute_matches_the_hand_computation(key: str) -> None:
    got = dataclasses.asdict(recompute(BY_KEY[key]))
    want = dataclasses.asdict(HAND[key])
    assert got == pytest.approx(want, abs=1e-9)


def test_the_course_design_used_a_720_hour_month() -> None:
    assert DESIGN_HOURS_PER_MONTH == 720


@pytest.mark.parametrize(
    ("key", "total"),
    [
        ("thousands", 113.31),  # 17.77 + 95.54 + 0
        ("tens-of-thousands", 487.33),  # 106.63 + 343.98 + 36.72
        ("millions", 4401.26),  # 853.10 + 3,425.76 + 122.40
    ],
)
def test_the_course_designs_totals_are_the_sums_of_its_printed_subtotals(
    key: str, total: float
) -> None:
    scenario = BY_KEY[key]
    assert scenario.stated.total == total
    assert stated_total_from_subtotals(scenario) == total


def test_only_the_known_line_items_differ_from_what_the_course_design_printed() -> None:
    differing = {
        (s.key, name)
        for s in SCENARIOS
        for name, value in dataclasses.asdict(recompute(s)).items()
        if round(value, 2) != getattr(s.stated, name)
    }
    assert differing == {
        ("thousands", "dynamodb"),  # 95.54 printed, 95.94 correct
        ("thousands", "total"),  # 113.31 printed, 113.71 correct
        ("tens-of-thousands", "fargate_vcpu"),  # 87.4368 truncated to 87.43
        ("tens-of-thousands", "fargate"),  # 106.6392 -> 106.63
        ("tens-of-thousands", "total"),  # 487.3392 -> 487.33
        ("millions", "fargate_memory"),  # 153.6192 truncated to 153.61
        ("millions", "fargate"),  # 853.1136 -> 853.10
        ("millions", "total"),  # 4,401.2736 -> 4,401.26
    }


def _finding(key: str) -> tuple[float, float]:
    f = next(f for f in findings() if f.key == key)
    return f.design_value, f.correct_value


# (course design's figure, correct figure) for every finding, computed by hand.
PINNED = {
    # 100,000 users x 10/day = 1,000,000 writes/day, not 100,000,000.
    "writes-per-day-tens-of-thousands": (100_000_000, 1_000_000),
    # 1,000,000 x 10 = 10,000,000; "10,00,000,000" is 1,000,000,000 in any digit grouping.
    "writes-per-day-millions": (1_000_000_000, 10_000_000),
    # $93.60 + $2.34 = $95.94, printed $95.54.
    "dynamodb-subtotal-thousands": (95.54, 95.94),
    # totals after correct rounding: 87.4368 + 19.2024 + 336.96 + 7.02 + 36.72 = 487.3392.
    "truncated-cents-tens-of-thousands": (487.33, 487.34),
    # 699.4944 + 153.6192 + 3,369.60 + 56.16 + 122.40 = 4,401.2736.
    "truncated-cents-millions": (4401.26, 4401.27),
    # on-demand, 30 days = 2,592,000 s: 35,000 x 2,592,000 / 1e6 x $0.125 = $11,340.00
    # plus 116 x 2,592,000 / 1e6 x $0.625 = $187.92 -> $11,527.92 against the design's $3,425.76.
    "pay-per-request-priced-as-provisioned": (3425.76, 11527.92),
    # 1 user get + 1 private query + 2 group queries = 4 units, not 7 reads.
    "read-units-per-message": (7, 4),
    # 10 sends a day / 1,440 checks a day = 0.006944 new private messages per check, not 5.
    "messages-per-check-vs-sends": (5, 10 / 1440),
    # 3,500 reads/s / 0.7 target = 5,000 RCU for the average alone; the design provisioned 3,600.
    "burst-headroom-tens-of-thousands": (3_600, 5_000),
    # 35,000 / 0.7 = 50,000 RCU; the course design provisioned 36,000.
    "burst-headroom-millions": (36_000, 50_000),
    # (1,000,000/60 + 1,000,000 x 10/86,400) / 24 vCPU = (16,666.67 + 115.74) / 24 = 699.3.
    "compute-not-derived": (24, 699.3),
    # 24 x 30 = 720 h against 8,760 / 12 = 730 h.
    "month-hours": (720, 730),
    # $0.0225 x 720 = $16.20 a month for the ALB the course design names but does not price.
    "load-balancer-not-priced": (0.0, 16.20),
}


def test_every_finding_is_pinned() -> None:
    assert [f.key for f in findings()] == list(PINNED)


@pytest.mark.parametrize(("key", "values"), list(PINNED.items()))
def test_finding_values_match_the_hand_computation(key: str, values: tuple[float, float]) -> None:
    design_value, correct_value = _finding(key)
    assert design_value == pytest.approx(values[0])
    assert correct_value == pytest.approx(values[1])
    assert design_value != pytest.approx(correct_value)  # a finding is a real difference


def test_findings_text_carries_the_numbers() -> None:
    by_key = {f.key: f for f in findings()}
    assert "100,000,000" in by_key["writes-per-day-tens-of-thousands"].design_says
    assert "1,000,000 writes/day" in by_key["writes-per-day-tens-of-thousands"].correct
    assert "10,00,000,000" in by_key["writes-per-day-millions"].design_says
    assert "$113.71" in by_key["dynamodb-subtotal-thousands"].correct
    assert "$11,527.92" in by_key["pay-per-request-priced-as-provisioned"].correct
    assert "667 LCU = $3,841.92" in by_key["load-balancer-not-priced"].correct  # 667x0.008x720
    for f in by_key.values():
        assert f.kind in {
            "arithmetic",
            "rounding",
            "labelling",
            "modelling",
            "convention",
            "omission",
        }
        assert f.scenario is None or f.scenario in BY_KEY


def test_findings_follow_the_prices_they_are_computed_from() -> None:
    cheaper = Prices(dynamodb_read_request_units_per_million=0.25)  # the pre-2024 on-demand price
    f = next(f for f in findings(cheaper) if f.key == "pay-per-request-priced-as-provisioned")
    # 35,000 x 2,592,000 / 1e6 x 0.25 = 22,680.00, + 187.92 for writes.
    assert f.correct_value == pytest.approx(22867.92)


def test_the_read_cut_factors_are_consistent_with_the_stated_cuts() -> None:
    # "caching reduces reads by 30%" -> keep 0.7; "by 70%" -> keep 0.3.
    assert [s.read_keep_fraction for s in SCENARIOS] == [0.7, 0.3, 0.3]
    by_key = {c.key: c for c in checks()}
    # (7 x 10,000 / 60) x 0.7 = 816.67 (printed ~816); 100,000: x 0.3 = 3,500; 1M: 35,000.
    assert by_key["reads-per-second-thousands"].computed == pytest.approx(816.6667, abs=1e-4)
    assert by_key["reads-per-second-tens-of-thousands"].computed == pytest.approx(3500)
    assert by_key["reads-per-second-millions"].computed == pytest.approx(35000)


def test_every_check_holds_to_the_precision_the_course_design_printed() -> None:
    listed = checks()
    assert len(listed) == 18
    for c in listed:
        if c.key.startswith(("reads-per-second", "writes-per-second")):
            assert abs(c.design_value - c.computed) < 1, c  # rates printed as whole numbers
        else:
            assert abs(c.design_value - c.computed) < 0.005, c  # dollars printed to the cent


def test_findings_are_data_with_one_checker_each() -> None:
    ids = [f.id for f in FINDINGS]
    titles = [f.title for f in FINDINGS]
    assert len(set(ids)) == len(ids) == len(PINNED)
    assert all(titles) and len(set(titles)) == len(titles)
    # Each checker answers for its own finding alone, from the prices it is given.
    cheaper = Prices(alb_hour=0.01)
    by_id = {f.id: f for f in FINDINGS}
    assert by_id["load-balancer-not-priced"].checker(cheaper).correct_value == pytest.approx(7.2)
    assert [m.key for m in findings()] == ids
