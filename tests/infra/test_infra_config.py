"""The stack's settings: defaults, parsing, validation, and their documentation."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from parley_infra.config import (
    SETTINGS,
    ConfigError,
    StackConfig,
    config_from_mapping,
    load_config,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy-aws.md"
CERT = "arn:aws:acm:eu-west-1:000000000000:certificate/0a1b2c3d-example"


def test_defaults() -> None:
    cfg = config_from_mapping({"region": "eu-west-1"}, stack="prod")
    assert cfg.prefix == "parley-prod-"
    assert (cfg.desired_count, cfg.min_count, cfg.max_count) == (2, 2, 6)
    assert (cfg.cpu, cfg.memory) == (512, 1024)
    assert cfg.billing_mode == "PAY_PER_REQUEST"
    assert cfg.certificate_arn is None and not cfg.https
    assert cfg.nat_gateway is False
    assert cfg.redis_node_type == "cache.t4g.micro"
    assert cfg.resource_tags == {"app": "parley", "stack": "prod"}


def test_region_falls_back_to_aws_region() -> None:
    assert config_from_mapping({}, stack="s", default_region="us-east-2").region == "us-east-2"
    with pytest.raises(ConfigError, match="region"):
        config_from_mapping({}, stack="s")


def test_every_setting_parses() -> None:
    cfg = config_from_mapping(
        {
            "region": "us-west-2",
            "prefix": "chat_",
            "image": "registry.example/parley:1.2.3",
            "desiredCount": "3",
            "minCount": "2",
            "maxCount": "12",
            "cpuTargetPercent": "50",
            "cpu": "1024",
            "memory": "3072",
            "redisNodeType": "cache.r7g.large",
            "redisNodes": "2",
            "billingMode": "provisioned",
            "readCapacity": "100",
            "writeCapacity": "20",
            "certificateArn": CERT,
            "natGateway": "true",
            "vpcCidr": "10.7.0.0/16",
            "logRetentionDays": "90",
            "tableDeletionProtection": "yes",
        },
        stack="s",
    )
    assert cfg == StackConfig(
        region="us-west-2",
        prefix="chat_",
        stack="s",
        image="registry.example/parley:1.2.3",
        desired_count=3,
        min_count=2,
        max_count=12,
        cpu_target_percent=50,
        cpu=1024,
        memory=3072,
        redis_node_type="cache.r7g.large",
        redis_nodes=2,
        billing_mode="PROVISIONED",
        read_capacity=100,
        write_capacity=20,
        certificate_arn=CERT,
        nat_gateway=True,
        vpc_cidr="10.7.0.0/16",
        log_retention_days=90,
        table_deletion_protection=True,
    )
    assert cfg.https
    assert cfg.subnet_cidrs() == (
        ["10.7.0.0/20", "10.7.16.0/20"],
        ["10.7.128.0/20", "10.7.144.0/20"],
    )


@pytest.mark.parametrize("alias", ["on-demand", "PAY_PER_REQUEST", "pay_per_request"])
def test_billing_aliases(alias: str) -> None:
    cfg = config_from_mapping({"region": "eu-west-1", "billingMode": alias}, stack="s")
    assert cfg.billing_mode == "PAY_PER_REQUEST"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cpu": "300"}, "cpu must be one of"),
        ({"cpu": "256", "memory": "4096"}, "does not fit"),
        ({"cpu": "512", "memory": "1536"}, "does not fit"),
        ({"minCount": "3", "desiredCount": "2"}, "minCount <= desiredCount"),
        ({"desiredCount": "9", "maxCount": "6"}, "desiredCount <= maxCount"),
        ({"desiredCount": "x"}, "whole number"),
        ({"natGateway": "maybe"}, "true or false"),
        ({"billingMode": "free"}, "billingMode"),
        ({"billingMode": "PROVISIONED", "readCapacity": "0"}, "at least 1"),
        ({"certificateArn": "arn:aws:iam::cert"}, "ACM"),
        ({"prefix": "has space"}, "prefix"),
        ({"redisNodeType": "t3.micro"}, "cache"),
        ({"vpcCidr": "192.168.0.0/16"}, "vpcCidr"),
        ({"logRetentionDays": "8"}, "logRetentionDays"),
        ({"region": "Europe"}, "region"),
        ({"desiredCnt": "2"}, "unknown settings"),
    ],
)
def test_bad_settings_are_refused(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_mapping({"region": "eu-west-1", **raw}, stack="s")


def test_scale_to_zero_is_allowed() -> None:
    cfg = config_from_mapping(
        {"region": "eu-west-1", "desiredCount": "0", "minCount": "0"}, stack="s"
    )
    assert cfg.desired_count == 0


def test_every_setting_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for key, (default, _) in SETTINGS.items():
        row = re.search(rf"^\| `{key}` \|(.*)$", text, flags=re.MULTILINE)
        assert row, f"docs/deploy-aws.md has no table row for {key}"
        assert default in row.group(1), f"{key}: documented default differs from {default!r}"
        assert f"parley:{key}" in text, f"docs/deploy-aws.md has no config example for {key}"


@pytest.mark.skipif(importlib.util.find_spec("pulumi") is None, reason="pulumi is not installed")
@pytest.mark.usefixtures("pulumi_loop")
def test_load_config_reads_the_stack_config() -> None:
    import pulumi
    from pulumi.runtime import config as runtime_config

    class _NoResources(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, str]]:
            return f"{args.name}-id", dict(args.inputs)

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, str], None]:
            return {}, None

    pulumi.runtime.set_mocks(_NoResources(), project="parley", stack="staging", preview=False)
    saved = dict(runtime_config.CONFIG.get())
    try:
        pulumi.runtime.set_all_config(
            {
                "aws:region": "ap-southeast-2",
                "parley:desiredCount": "4",
                "parley:maxCount": "8",
                "parley:natGateway": "true",
            }
        )
        cfg = load_config()
    finally:
        pulumi.runtime.set_all_config(saved)
    assert cfg.region == "ap-southeast-2"
    assert cfg.stack == "staging"
    assert cfg.prefix == "parley-staging-"
    assert (cfg.desired_count, cfg.max_count, cfg.nat_gateway) == (4, 8, True)


def test_project_file_matches_the_config_namespace() -> None:
    project = (DOC.parents[1] / "deploy" / "Pulumi.yaml").read_text(encoding="utf-8")
    # load_config reads "parley:<key>", the namespace of a project called "parley".
    assert re.search(r"^name: parley$", project, flags=re.MULTILINE)
    assert re.search(r"^runtime:\n  name: python$", project, flags=re.MULTILINE)


def test_pulumi_packages_are_pinned() -> None:
    requirements = (DOC.parents[1] / "deploy" / "requirements.txt").read_text(encoding="utf-8")
    pins = dict(
        line.split("==", 1)
        for line in requirements.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(pins) == {"pulumi", "pulumi-aws", "pulumi-random"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in pins.values())
