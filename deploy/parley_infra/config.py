"""The stack's settings: a typed, validated object built from Pulumi config.

:func:`config_from_mapping` is pure (a mapping of raw strings in, a :class:`StackConfig`
out) so tests and tools can build configurations without a Pulumi engine;
:func:`load_config` reads the same keys from the running stack's Pulumi config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from ._schema import BillingMode

# Every key the program reads, its default, and what it means. docs/deploy-aws.md shows the
# same table; tests check that the two agree.
SETTINGS: Final[dict[str, tuple[str, str]]] = {
    "region": ("(aws:region)", "AWS region to deploy to."),
    "prefix": ("parley-<stack>-", "Prefix of every DynamoDB table name."),
    "image": ("<ECR repository>:latest", "Container image the service runs."),
    "desiredCount": ("2", "Tasks started by each deployment."),
    "minCount": ("2", "Fewest tasks autoscaling keeps."),
    "maxCount": ("6", "Most tasks autoscaling starts."),
    "cpuTargetPercent": ("60", "Average CPU that autoscaling aims for."),
    "cpu": ("512", "Task CPU units (1024 = 1 vCPU)."),
    "memory": ("1024", "Task memory in MiB."),
    "redisNodeType": ("cache.t4g.micro", "ElastiCache node type."),
    "redisNodes": ("1", "Redis nodes (2+ adds a replica and automatic failover)."),
    "billingMode": ("PAY_PER_REQUEST", "DynamoDB billing: PAY_PER_REQUEST or PROVISIONED."),
    "readCapacity": ("5", "Read capacity units per table and index (PROVISIONED only)."),
    "writeCapacity": ("5", "Write capacity units per table and index (PROVISIONED only)."),
    "certificateArn": ("(none)", "ACM certificate ARN; enables HTTPS on 443."),
    "natGateway": ("false", "Run tasks in private subnets behind a NAT gateway."),
    "vpcCidr": ("10.40.0.0/16", "Address range of the VPC (a /16)."),
    "logRetentionDays": ("30", "Days CloudWatch keeps the service's logs."),
    "tableDeletionProtection": ("false", "Refuse to delete the DynamoDB tables."),
}

# Task sizes Fargate accepts: CPU units -> (smallest MiB, largest MiB, step MiB).
FARGATE_SIZES: Final[dict[int, tuple[int, int, int]]] = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}

LOG_RETENTION_DAYS: Final[frozenset[int]] = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557}
    | {2922, 3288, 3653}
)

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_CERT_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$")
_CIDR16 = re.compile(r"^10\.(\d{1,3})\.0\.0/16$")
_BILLING_ALIASES: Final[dict[str, BillingMode]] = {
    "pay_per_request": "PAY_PER_REQUEST",
    "on-demand": "PAY_PER_REQUEST",
    "ondemand": "PAY_PER_REQUEST",
    "provisioned": "PROVISIONED",
}
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class ConfigError(ValueError):
    """A setting has a value the stack cannot deploy."""


@dataclass(frozen=True)
class StackConfig:
    """Everything the stack needs to know; validated on construction."""

    region: str
    prefix: str
    stack: str = "dev"
    image: str | None = None
    desired_count: int = 2
    min_count: int = 2
    max_count: int = 6
    cpu_target_percent: int = 60
    cpu: int = 512
    memory: int = 1024
    redis_node_type: str = "cache.t4g.micro"
    redis_nodes: int = 1
    billing_mode: BillingMode = "PAY_PER_REQUEST"
    read_capacity: int = 5
    write_capacity: int = 5
    certificate_arn: str | None = None
    nat_gateway: bool = False
    vpc_cidr: str = "10.40.0.0/16"
    log_retention_days: int = 30
    table_deletion_protection: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _REGION.match(self.region):
            raise ConfigError(f"region {self.region!r} is not an AWS region name")
        if not _PREFIX.match(self.prefix):
            raise ConfigError(
                f"prefix {self.prefix!r}: use letters, digits, '_', '.' and '-' (1-200 chars)"
            )
        if not 0 <= self.min_count <= self.desired_count <= self.max_count:
            raise ConfigError(
                "need 0 <= minCount <= desiredCount <= maxCount, got "
                f"{self.min_count} / {self.desired_count} / {self.max_count}"
            )
        if self.max_count < 1:
            raise ConfigError("maxCount must be at least 1")
        if not 10 <= self.cpu_target_percent <= 90:
            raise ConfigError("cpuTargetPercent must be between 10 and 90")
        sizes = FARGATE_SIZES.get(self.cpu)
        if sizes is None:
            raise ConfigError(f"cpu must be one of {sorted(FARGATE_SIZES)}, not {self.cpu}")
        low, high, step = sizes
        if not (low <= self.memory <= high and (self.memory - low) % step == 0):
            raise ConfigError(
                f"memory {self.memory} MiB does not fit cpu {self.cpu}: "
                f"use {low}..{high} in steps of {step}"
            )
        if not self.redis_node_type.startswith("cache."):
            raise ConfigError(f"redisNodeType {self.redis_node_type!r} is not a cache.* type")
        if not 1 <= self.redis_nodes <= 6:
            raise ConfigError("redisNodes must be between 1 and 6")
        if self.billing_mode not in ("PAY_PER_REQUEST", "PROVISIONED"):
            raise ConfigError(f"billingMode {self.billing_mode!r} is not supported")
        if self.billing_mode == "PROVISIONED" and (
            self.read_capacity < 1 or self.write_capacity < 1
        ):
            raise ConfigError("readCapacity and writeCapacity must be at least 1")
        if self.certificate_arn is not None and not _CERT_ARN.match(self.certificate_arn):
            raise ConfigError(f"certificateArn {self.certificate_arn!r} is not an ACM ARN")
        match = _CIDR16.match(self.vpc_cidr)
        if match is None or int(match.group(1)) > 255:
            raise ConfigError(f"vpcCidr {self.vpc_cidr!r}: use a 10.N.0.0/16 range")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ConfigError(
                f"logRetentionDays must be one of {sorted(LOG_RETENTION_DAYS)}, "
                f"not {self.log_retention_days}"
            )

    @property
    def resource_tags(self) -> dict[str, str]:
        """Tags put on every resource: ``app``, ``stack`` and any extra ``tags``."""
        return {"app": "parley", "stack": self.stack, **self.tags}

    @property
    def https(self) -> bool:
        """Whether the load balancer terminates TLS on 443."""
        return self.certificate_arn is not None

    def subnet_cidrs(self) -> tuple[list[str], list[str]]:
        """(public, private) /20 ranges carved out of the /16, two of each."""
        base = ".".join(self.vpc_cidr.split(".")[:2])
        public = [f"{base}.0.0/20", f"{base}.16.0/20"]
        private = [f"{base}.128.0/20", f"{base}.144.0/20"]
        return public, private


def _int(raw: Mapping[str, str], key: str, default: int) -> int:
    value = raw.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{key} must be a whole number, not {value!r}") from None


def _bool(raw: Mapping[str, str], key: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{key} must be true or false, not {value!r}")


def _str(raw: Mapping[str, str], key: str) -> str | None:
    value = raw.get(key)
    if value is None or not value.strip():
        return None
    return value.strip()


def billing_mode_from(value: str) -> BillingMode:
    """Parse a billing mode, accepting ``on-demand`` and lower case."""
    if value in ("PAY_PER_REQUEST", "PROVISIONED"):
        return value  # type: ignore[return-value]
    mode = _BILLING_ALIASES.get(value.strip().lower())
    if mode is None:
        raise ConfigError(f"billingMode must be PAY_PER_REQUEST or PROVISIONED, not {value!r}")
    return mode


def config_from_mapping(
    raw: Mapping[str, str], *, stack: str, default_region: str | None = None
) -> StackConfig:
    """Build a :class:`StackConfig` from raw string settings (keys as in :data:`SETTINGS`)."""
    unknown = set(raw) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"unknown settings: {sorted(unknown)}")
    region = _str(raw, "region") or default_region
    if region is None:
        raise ConfigError("set the region: pulumi config set parley:region <region>")
    prefix = _str(raw, "prefix") or f"parley-{stack}-"
    return StackConfig(
        region=region,
        prefix=prefix,
        stack=stack,
        image=_str(raw, "image"),
        desired_count=_int(raw, "desiredCount", 2),
        min_count=_int(raw, "minCount", 2),
        max_count=_int(raw, "maxCount", 6),
        cpu_target_percent=_int(raw, "cpuTargetPercent", 60),
        cpu=_int(raw, "cpu", 512),
        memory=_int(raw, "memory", 1024),
        redis_node_type=_str(raw, "redisNodeType") or "cache.t4g.micro",
        redis_nodes=_int(raw, "redisNodes", 1),
        billing_mode=billing_mode_from(_str(raw, "billingMode") or "PAY_PER_REQUEST"),
        read_capacity=_int(raw, "readCapacity", 5),
        write_capacity=_int(raw, "writeCapacity", 5),
        certificate_arn=_str(raw, "certificateArn"),
        nat_gateway=_bool(raw, "natGateway", False),
        vpc_cidr=_str(raw, "vpcCidr") or "10.40.0.0/16",
        log_retention_days=_int(raw, "logRetentionDays", 30),
        table_deletion_protection=_bool(raw, "tableDeletionProtection", False),
    )


def load_config() -> StackConfig:
    """Read the settings of the running Pulumi stack (namespace ``parley``)."""
    import pulumi

    config = pulumi.Config("parley")
    raw: dict[str, str] = {}
    for key in SETTINGS:
        value = config.get(key)
        if value is not None:
            raw[key] = value
    default_region = pulumi.Config("aws").get("region")
    return config_from_mapping(raw, stack=pulumi.get_stack(), default_region=default_region)
