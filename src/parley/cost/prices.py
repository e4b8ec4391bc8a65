"""Price inputs for ``parley cost``: one typed, editable record, and where each figure came from.

Every figure here is an *input*, not a statement about today's AWS bill. Defaults are:

- the original course design's own prices where it gave one (Fargate vCPU-hour and GB-hour,
  DynamoDB RCU-hour and WCU-hour, ElastiCache ``cache.t2.micro`` node-hour), so its arithmetic
  can be redone;
- otherwise us-east-1 on-demand list prices, looked up in public sources in November 2026.
  ``SOURCES`` says which: ``checked`` means a public source agreed with the figure, ``unverified``
  means none was found and the figure is a plain input to confirm before relying on it.

Override any scalar with ``--price NAME=VALUE``, a class's hourly price with
``--price TABLE/CLASS=VALUE`` (e.g. ``rds_classes/db.m7g.large=0.17``), or many at once with
``--prices FILE.json`` (same keys; a table key takes a list of classes and replaces the table).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "SOURCES",
    "TABLES",
    "InstanceClass",
    "PriceError",
    "Prices",
    "load_prices_file",
    "with_overrides",
]


class PriceError(ValueError):
    """A price override names no known price, or its value is not a non-negative number."""


@dataclass(frozen=True, slots=True)
class InstanceClass:
    """One row of an instance table: size, hourly on-demand price and sustained CPU.

    ``baseline`` is the fraction of each vCPU a burstable class can use without running out of CPU
    credits (EC2 T4g: micro 10 %, small and medium 20 %, large 30 %); 1.0 for fixed-performance
    classes. The model sizes on sustained CPU, never on burst.
    """

    name: str
    vcpu: float
    memory_gib: float
    hourly: float
    baseline: float = 1.0

    @property
    def sustained_vcpu(self) -> float:
        return self.vcpu * self.baseline


# RDS for PostgreSQL, Single-AZ, us-east-1 (Multi-AZ bills two instances; the model doubles).
RDS_CLASSES: Final = (
    InstanceClass("db.t4g.micro", 2, 1, 0.016, 0.10),
    InstanceClass("db.t4g.small", 2, 2, 0.032, 0.20),
    InstanceClass("db.t4g.medium", 2, 4, 0.065, 0.20),
    InstanceClass("db.t4g.large", 2, 8, 0.129, 0.30),
    InstanceClass("db.m7g.large", 2, 8, 0.168),
    InstanceClass("db.m7g.xlarge", 4, 16, 0.337),
    InstanceClass("db.m7g.2xlarge", 8, 32, 0.674),
    InstanceClass("db.m7g.4xlarge", 16, 64, 1.348),
    InstanceClass("db.m7g.8xlarge", 32, 128, 2.696),
)

# ElastiCache (Redis OSS) nodes, us-east-1. Redis runs commands on one thread, so the model counts
# at most one vCPU of a node as usable. The course design's cache.t2.micro is previous
# generation (no new clusters), so it is not offered here; its price is
# ``Prices.design_cache_node_hour``.
CACHE_CLASSES: Final = (
    InstanceClass("cache.t4g.micro", 2, 0.5, 0.016, 0.10),
    InstanceClass("cache.t4g.small", 2, 1.37, 0.032, 0.20),
    InstanceClass("cache.t4g.medium", 2, 3.09, 0.065, 0.20),
    InstanceClass("cache.m7g.large", 2, 6.38, 0.158),
)

# EC2 Linux instances for the one-instance ``sqlite-single`` shape, us-east-1.
EC2_CLASSES: Final = (
    InstanceClass("t4g.small", 2, 2, 0.0168, 0.20),
    InstanceClass("t4g.medium", 2, 4, 0.0336, 0.20),
    InstanceClass("c7g.large", 2, 4, 0.0725),
    InstanceClass("m7g.large", 2, 8, 0.0816),
)


@dataclass(frozen=True, slots=True)
class Prices:
    """US dollars: ``*_hour`` per hour, ``*_month`` per GB-month, ``*_per_million`` per 10^6."""

    # --- the course design's own prices (its "Assumptions for cost estimation") ---
    fargate_vcpu_hour: float = 0.04048
    fargate_gb_hour: float = 0.004445
    dynamodb_rcu_hour: float = 0.00013
    dynamodb_wcu_hour: float = 0.00065
    design_cache_node_hour: float = 0.017
    # --- public list prices for what the course design did not price ---
    dynamodb_read_request_units_per_million: float = 0.125
    dynamodb_write_request_units_per_million: float = 0.625
    dynamodb_storage_gb_month: float = 0.25
    alb_hour: float = 0.0225
    alb_lcu_hour: float = 0.008
    nlb_hour: float = 0.0225
    nlb_lcu_hour: float = 0.006
    rds_storage_gb_month: float = 0.115
    ebs_storage_gb_month: float = 0.08
    data_transfer_out_gb: float = 0.09
    # --- instance tables (hourly prices per class) ---
    rds_classes: tuple[InstanceClass, ...] = RDS_CLASSES
    cache_classes: tuple[InstanceClass, ...] = CACHE_CLASSES
    ec2_classes: tuple[InstanceClass, ...] = EC2_CLASSES


TABLES: Final = ("rds_classes", "cache_classes", "ec2_classes")

COURSE_DESIGN = "course design"
CHECKED = "checked"
UNVERIFIED = "unverified"

# Provenance of every default: (status, note), as looked up in November 2026.
SOURCES: Final[Mapping[str, tuple[str, str]]] = {
    "fargate_vcpu_hour": (COURSE_DESIGN, "still the Linux/x86 us-east-1 list price (2026)"),
    "fargate_gb_hour": (COURSE_DESIGN, "still the Linux/x86 us-east-1 list price (2026)"),
    "dynamodb_rcu_hour": (
        COURSE_DESIGN,
        "a provisioned-capacity rate (AWS lists $0.09/RCU-month = 730 h)",
    ),
    "dynamodb_wcu_hour": (
        COURSE_DESIGN,
        "a provisioned-capacity rate (AWS lists $0.47/WCU-month = 730 h)",
    ),
    "design_cache_node_hour": (
        COURSE_DESIGN,
        "cache.t2.micro, previous generation; used only to redo the course design",
    ),
    "dynamodb_read_request_units_per_million": (
        CHECKED,
        "on-demand, after the November 2024 50% cut (secondary sources)",
    ),
    "dynamodb_write_request_units_per_million": (
        CHECKED,
        "on-demand, after the November 2024 50% cut (secondary sources)",
    ),
    "dynamodb_storage_gb_month": (CHECKED, "AWS DynamoDB pricing page; first 25 GB free (ignored)"),
    "alb_hour": (CHECKED, "AWS ELB pricing page example for us-east-1"),
    "alb_lcu_hour": (CHECKED, "AWS ELB pricing page example for us-east-1"),
    "nlb_hour": (CHECKED, "AWS ELB pricing page (Network Load Balancer), us-east-1"),
    "nlb_lcu_hour": (CHECKED, "AWS ELB pricing page (Network Load Balancer NLCU), us-east-1"),
    "rds_storage_gb_month": (CHECKED, "gp3, Single-AZ (secondary sources)"),
    "ebs_storage_gb_month": (UNVERIFIED, "EBS gp3; not confirmed in a source"),
    "data_transfer_out_gb": (
        CHECKED,
        "first 10 TB tier (secondary source); later tiers are cheaper, so this is an upper bound",
    ),
    "rds_classes": (
        UNVERIFIED,
        "db.t4g micro/small/medium checked for PostgreSQL; large and db.m7g.large/xlarge are the "
        "MySQL list prices (PostgreSQL may differ); 2xlarge and up extrapolated by doubling",
    ),
    "cache_classes": (
        UNVERIFIED,
        "cache.t4g prices from secondary sources that disagree by ~$0.001/h; cache.m7g.large not "
        "confirmed",
    ),
    "ec2_classes": (
        UNVERIFIED,
        "m7g.large checked (secondary source); the other rows not confirmed",
    ),
}


def _number(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise PriceError(f"price {name!r}: expected a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PriceError(f"price {name!r}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise PriceError(f"price {name!r}: must be a finite number >= 0, got {value!r}")
    return number


def _replace(prices: Prices, name: str, value: object) -> Prices:
    changes: dict[str, Any] = {name: value}
    return dataclasses.replace(prices, **changes)


def _scalar_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Prices) if f.name not in TABLES]


def _set_class_price(prices: Prices, key: str, value: object) -> Prices:
    table_name, _, class_name = key.partition("/")
    if table_name not in TABLES:
        raise PriceError(
            f"unknown price table {table_name!r} in {key!r}; tables: {', '.join(TABLES)}"
        )
    table: tuple[InstanceClass, ...] = getattr(prices, table_name)
    names = [c.name for c in table]
    if class_name not in names:
        raise PriceError(f"no class {class_name!r} in {table_name}; classes: {', '.join(names)}")
    hourly = _number(key, value)
    new_table = tuple(
        dataclasses.replace(c, hourly=hourly) if c.name == class_name else c for c in table
    )
    return _replace(prices, table_name, new_table)


def _parse_table(name: str, value: object) -> tuple[InstanceClass, ...]:
    if not isinstance(value, list) or not value:
        raise PriceError(f"price table {name!r}: expected a non-empty list of classes")
    rows: list[InstanceClass] = []
    for i, row in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(row, dict):
            raise PriceError(f"{where}: expected an object with name, vcpu, memory_gib, hourly")
        unknown = set(row) - {"name", "vcpu", "memory_gib", "hourly", "baseline"}
        if unknown:
            raise PriceError(f"{where}: unknown fields {sorted(unknown)}")
        missing = {"name", "vcpu", "memory_gib", "hourly"} - set(row)
        if missing:
            raise PriceError(f"{where}: missing fields {sorted(missing)}")
        if not isinstance(row["name"], str) or not row["name"]:
            raise PriceError(f"{where}.name: expected a non-empty string")
        vcpu = _number(f"{where}.vcpu", row["vcpu"])
        baseline = _number(f"{where}.baseline", row.get("baseline", 1.0))
        if vcpu <= 0 or not 0 < baseline <= 1:
            raise PriceError(f"{where}: vcpu must be > 0 and baseline in (0, 1]")
        rows.append(
            InstanceClass(
                name=row["name"],
                vcpu=vcpu,
                memory_gib=_number(f"{where}.memory_gib", row["memory_gib"]),
                hourly=_number(f"{where}.hourly", row["hourly"]),
                baseline=baseline,
            )
        )
    return tuple(rows)


def with_overrides(prices: Prices, overrides: Mapping[str, object]) -> Prices:
    """Return ``prices`` with each ``name -> value`` applied (names: see the module docstring)."""
    scalars = _scalar_names()
    for key, value in overrides.items():
        if "/" in key:
            prices = _set_class_price(prices, key, value)
        elif key in TABLES:
            prices = _replace(prices, key, _parse_table(key, value))
        elif key in scalars:
            prices = _replace(prices, key, _number(key, value))
        else:
            raise PriceError(
                f"unknown price {key!r}; known: {', '.join(scalars)}, or TABLE/CLASS "
                f"with TABLE one of {', '.join(TABLES)}"
            )
    return prices


def load_prices_file(path: Path, prices: Prices) -> Prices:
    """Apply a JSON object of overrides read from ``path`` to ``prices``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PriceError(f"cannot read prices file {str(path)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PriceError(f"prices file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PriceError(f"prices file {str(path)!r}: expected a JSON object of name -> value")
    return with_overrides(prices, data)
