"""The Pulumi program, run offline under ``pulumi.runtime.set_mocks``.

Each test looks at the resources the program registers (with their resolved inputs), i.e.
at exactly what ``pulumi up`` would ask AWS to create.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip(
    "pulumi", reason="pulumi is not installed (pip install -r deploy/requirements.txt)"
)
pytest.importorskip("pulumi_aws", reason="pulumi-aws is not installed")

# Importing pulumi_aws.ec2 announces one deprecated resource type we never use.
pytestmark = pytest.mark.filterwarnings(
    "ignore:aws.ec2/encryptioncontrol.EncryptionControl has been deprecated:DeprecationWarning"
)

from parley_infra import stack as stack_module  # noqa: E402
from parley_infra.config import StackConfig  # noqa: E402
from parley_infra.policies import (  # noqa: E402
    DYNAMODB_ACTIONS,
    media_policy,
    task_policy_violations,
)

from parley.storage.dynamodb_tables import TABLES, table_name  # noqa: E402

# conftest.Synth: the registered resources and resolved outputs of one program run.
Synth = Any
SynthFn = Callable[[StackConfig], Synth]

CERT = "arn:aws:acm:eu-west-1:000000000000:certificate/0a1b2c3d-example"
BASE = StackConfig(region="eu-west-1", prefix="parley-test-", stack="test")
WITH_TLS = StackConfig(
    region="eu-west-1", prefix="parley-test-", stack="test", certificate_arn=CERT
)
BIG = StackConfig(
    region="us-east-2",
    prefix="chat-",
    stack="big",
    desired_count=4,
    min_count=3,
    max_count=20,
    cpu_target_percent=45,
    cpu=2048,
    memory=8192,
    redis_node_type="cache.r7g.large",
    redis_nodes=2,
    billing_mode="PROVISIONED",
    read_capacity=200,
    write_capacity=40,
    nat_gateway=True,
    image="registry.example/parley:2024.1",
    log_retention_days=90,
    table_deletion_protection=True,
)

SG_RULE_TYPES = (
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
)
INGRESS = SG_RULE_TYPES[0]
PULUMI_SECRET_SIG = (
    "4dabf18193072939515e22adb298388d"  # marks a secret value in Pulumi's wire format
)


@pytest.fixture(scope="module")
def base(synth: SynthFn) -> Synth:
    return synth(BASE)


@pytest.fixture(scope="module")
def tls(synth: SynthFn) -> Synth:
    return synth(WITH_TLS)


@pytest.fixture(scope="module")
def big(synth: SynthFn) -> Synth:
    return synth(BIG)


def _container(result: Synth) -> dict[str, Any]:
    definitions = json.loads(result.named("parley-task").inputs["containerDefinitions"])
    assert len(definitions) == 1
    container = definitions[0]
    assert isinstance(container, dict)
    return container


def _task_policy(result: Synth) -> dict[str, Any]:
    document = json.loads(result.named("parley-task-dynamodb").inputs["policy"])
    assert isinstance(document, dict)
    return document


def _table_arns(result: Synth) -> list[str]:
    """The ARNs (mock) AWS gave the tables."""
    return [r.state["arn"] for r in result.of_type("aws:dynamodb/table:Table")]


def assert_task_policy_is_least_privilege(result: Synth) -> None:
    """The assertion the deployed task policy must pass (also run on a widened one below)."""
    document = _task_policy(result)
    arns = _table_arns(result)
    assert len(arns) == len(TABLES)
    assert task_policy_violations(document, arns) == []
    resources: set[str] = set()
    for statement in document["Statement"]:
        actions = statement["Action"]
        assert isinstance(actions, list)
        for action in actions:
            assert "*" not in action and action in DYNAMODB_ACTIONS
        resources.update(statement["Resource"])
    assert resources == set(arns) | {f"{arn}/index/*" for arn in arns}
    assert "*" not in resources


# --- tables --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", TABLES, ids=[spec.suffix for spec in TABLES])
def test_every_table_exists_with_its_keys(base: Synth, spec: Any) -> None:
    table = base.named(f"table-{spec.suffix}").inputs
    assert table["name"] == table_name("parley-test-", spec)
    assert table["hashKey"] == spec.hash_key
    assert table.get("rangeKey") == spec.range_key
    assert {a["name"]: a["type"] for a in table["attributes"]} == dict(spec.attributes)
    indexes = {index["name"]: index for index in table.get("globalSecondaryIndexes", [])}
    assert set(indexes) == {index.name for index in spec.indexes}
    for index in spec.indexes:
        got = indexes[index.name]
        keys = [(k["attributeName"], k["keyType"]) for k in got["keySchemas"]]
        assert keys == list(zip(index.key_attributes, ("HASH", "RANGE"), strict=False))
        assert got["projectionType"] == index.projection
        assert "hashKey" not in got  # the deprecated form is not used
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert "readCapacity" not in table
    assert table["pointInTimeRecovery"] == {"enabled": True}
    assert table["deletionProtectionEnabled"] is False
    if spec.ttl_attribute:
        assert table["ttl"] == {"attributeName": spec.ttl_attribute, "enabled": True}
    else:
        assert "ttl" not in table


def test_exactly_the_specified_tables(base: Synth) -> None:
    names = sorted(r.inputs["name"] for r in base.of_type("aws:dynamodb/table:Table"))
    assert names == sorted(f"parley-test-{spec.suffix}" for spec in TABLES)
    assert base.outputs["tableNames"] == {s.suffix: f"parley-test-{s.suffix}" for s in TABLES}
    assert base.outputs["tablePrefix"] == "parley-test-"


def test_provisioned_billing_sets_capacity_on_tables_and_indexes(big: Synth) -> None:
    for resource in big.of_type("aws:dynamodb/table:Table"):
        table = resource.inputs
        assert table["billingMode"] == "PROVISIONED"
        assert (table["readCapacity"], table["writeCapacity"]) == (200, 40)
        assert table["deletionProtectionEnabled"] is True
        assert table["name"].startswith("chat-")
        for index in table.get("globalSecondaryIndexes", []):
            assert (index["readCapacity"], index["writeCapacity"]) == (200, 40)


# --- IAM -----------------------------------------------------------------------------------


def test_task_role_is_least_privilege(base: Synth) -> None:
    assert_task_policy_is_least_privilege(base)


def test_task_role_policy_with_other_prefix(big: Synth) -> None:
    assert_task_policy_is_least_privilege(big)
    assert all(":table/chat-" in arn for arn in _table_arns(big))


def _widen_resources(document: dict[str, Any]) -> None:
    document["Statement"][0]["Resource"] = "*"


def _widen_actions(document: dict[str, Any]) -> None:
    document["Statement"][0]["Action"] = ["dynamodb:*"]


def _add_scan(document: dict[str, Any]) -> None:
    document["Statement"][0]["Action"].append("dynamodb:Scan")


@pytest.mark.parametrize(
    "widen",
    [_widen_resources, _widen_actions, _add_scan],
    ids=["resource *", "dynamodb:*", "extra Scan"],
)
def test_a_widened_task_policy_would_fail_the_check(
    synth_uncached: SynthFn,
    monkeypatch: pytest.MonkeyPatch,
    widen: Callable[[dict[str, Any]], None],
) -> None:
    """Widen the policy inside the real program; the assertion above must then fail."""
    real = stack_module._task_policy_json

    def widened(arns: Any) -> str:
        document = json.loads(real(arns))
        widen(document)
        return json.dumps(document)

    monkeypatch.setattr(stack_module, "_task_policy_json", widened)
    result = synth_uncached(BASE)
    assert _task_policy(result) != json.loads(real(_table_arns(result)))  # it was widened
    with pytest.raises(AssertionError):
        assert_task_policy_is_least_privilege(result)


def test_no_role_gets_a_wildcard_action(base: Synth) -> None:
    for resource in base.of_type("aws:iam/rolePolicy:RolePolicy"):
        for statement in json.loads(resource.inputs["policy"])["Statement"]:
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                assert "*" not in action, (resource.name, action)
            if statement["Resource"] == "*":
                # AWS has no resource-level permission for the registry login.
                assert statement["Action"] == ["ecr:GetAuthorizationToken"]
    assert not base.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")


def test_roles_are_for_ecs_tasks_and_wired_to_the_task(base: Synth) -> None:
    for name in ("parley-exec-role", "parley-task-role"):
        trust = json.loads(base.named(name).inputs["assumeRolePolicy"])
        assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    task = base.named("parley-task").inputs
    assert task["taskRoleArn"].endswith("parley-task-role")
    assert task["executionRoleArn"].endswith("parley-exec-role")
    assert base.named("parley-task-dynamodb").inputs["role"] == "parley-task-role-id"


# --- network and security groups -----------------------------------------------------------


def _rules(result: Synth, group: str) -> list[dict[str, Any]]:
    group_id = result.named(group).id
    return [
        r.inputs
        for typ in SG_RULE_TYPES
        for r in result.of_type(typ)
        if r.inputs["securityGroupId"] == group_id
    ]


def _ingress(result: Synth, group: str) -> list[dict[str, Any]]:
    group_id = result.named(group).id
    return [r.inputs for r in result.of_type(INGRESS) if r.inputs["securityGroupId"] == group_id]


def test_only_the_load_balancer_is_open_to_the_internet(base: Synth, tls: Synth) -> None:
    for result, ports in ((base, {80}), (tls, {80, 443})):
        public = [
            r
            for typ in SG_RULE_TYPES
            for r in result.of_type(typ)
            if r.typ == INGRESS and (r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6"))
        ]
        assert {r.inputs["securityGroupId"] for r in public} == {result.named("parley-alb-sg").id}
        assert {(r.inputs["fromPort"], r.inputs["toPort"]) for r in public} == {
            (p, p) for p in ports
        }
        assert all(r.inputs["cidrIpv4"] == "0.0.0.0/0" for r in public)
        assert all(r.inputs["ipProtocol"] == "tcp" for r in public)


def test_tasks_accept_8080_and_8081_only_from_the_load_balancer(base: Synth) -> None:
    assert _ingress(base, "parley-tasks-sg") == [
        {
            "securityGroupId": "parley-tasks-sg-id",
            "referencedSecurityGroupId": "parley-alb-sg-id",
            "ipProtocol": "tcp",
            "fromPort": port,
            "toPort": port,
            "description": description,
        }
        for port, description in (
            (8080, "requests from the load balancer"),
            (8081, "live streams from the load balancer"),
        )
    ]


def test_redis_accepts_6379_only_from_the_tasks(base: Synth) -> None:
    rules = _rules(base, "parley-redis-sg")
    assert len(rules) == 1
    (rule,) = rules
    assert rule["referencedSecurityGroupId"] == "parley-tasks-sg-id"
    assert (rule["ipProtocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 6379, 6379)
    assert "cidrIpv4" not in rule and "cidrIpv6" not in rule


def test_security_groups_have_no_inline_rules(base: Synth) -> None:
    for group in base.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert "ingress" not in group.inputs and "egress" not in group.inputs, group.name


def test_redis_is_not_reachable_from_outside(base: Synth) -> None:
    redis = base.named("parley-redis").inputs
    assert redis["securityGroupIds"] == ["parley-redis-sg-id"]
    assert redis["port"] == 6379
    assert redis["nodeType"] == "cache.t4g.micro"
    assert redis["numCacheClusters"] == 1
    assert redis["automaticFailoverEnabled"] is False
    assert redis["atRestEncryptionEnabled"] is True
    subnets = base.named("parley-redis-subnets").inputs["subnetIds"]
    assert subnets == ["parley-private-0-id", "parley-private-1-id"]
    for subnet_id in subnets:
        subnet = base.by_id(subnet_id).inputs
        assert subnet["mapPublicIpOnLaunch"] is False
    # The private route table has no route to the internet gateway (and none at all
    # without a NAT gateway): nothing outside the VPC can reach those subnets.
    private_rt = base.named("parley-private-rt").id
    assert not [
        r for r in base.of_type("aws:ec2/route:Route") if r.inputs["routeTableId"] == private_rt
    ]
    for association in base.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation"):
        if association.inputs["subnetId"] in subnets:
            assert association.inputs["routeTableId"] == private_rt


def test_two_public_and_two_private_subnets_in_two_zones(
    base: Synth, mock_zones: list[str]
) -> None:
    subnets = base.of_type("aws:ec2/subnet:Subnet")
    assert sorted(s.name for s in subnets) == [
        "parley-private-0",
        "parley-private-1",
        "parley-public-0",
        "parley-public-1",
    ]
    for tier in ("public", "private"):
        zones = [base.named(f"parley-{tier}-{i}").inputs["availabilityZone"] for i in (0, 1)]
        assert zones == mock_zones[:2]
    assert base.named("parley-vpc").inputs["cidrBlock"] == "10.40.0.0/16"
    igw_route = base.named("parley-public-default").inputs
    assert igw_route["gatewayId"] == "parley-igw-id"
    assert igw_route["routeTableId"] == "parley-public-rt-id"
    assert "aws:index/getAvailabilityZones:getAvailabilityZones" in base.calls


def test_no_nat_gateway_by_default(base: Synth) -> None:
    assert not base.of_type("aws:ec2/natGateway:NatGateway")
    assert not base.of_type("aws:ec2/eip:Eip")
    network = base.named("parley-service").inputs["networkConfiguration"]
    # Without NAT the tasks sit in public subnets with public addresses (to reach ECR and
    # AWS APIs) but their security group still admits only the load balancer.
    assert network["subnets"] == ["parley-public-0-id", "parley-public-1-id"]
    assert network["assignPublicIp"] is True
    assert network["securityGroups"] == ["parley-tasks-sg-id"]


def test_nat_gateway_puts_tasks_in_private_subnets(big: Synth) -> None:
    (nat,) = big.of_type("aws:ec2/natGateway:NatGateway")
    assert nat.inputs["subnetId"] == "parley-public-0-id"
    route = big.named("parley-private-default").inputs
    assert route == {
        "routeTableId": "parley-private-rt-id",
        "destinationCidrBlock": "0.0.0.0/0",
        "natGatewayId": "parley-nat-id",
    }
    network = big.named("parley-service").inputs["networkConfiguration"]
    assert network["subnets"] == ["parley-private-0-id", "parley-private-1-id"]
    assert network["assignPublicIp"] is False


def test_gateway_endpoints_for_dynamodb_and_s3(base: Synth) -> None:
    endpoints = {
        r.inputs["serviceName"]: r.inputs for r in base.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    assert set(endpoints) == {"com.amazonaws.eu-west-1.dynamodb", "com.amazonaws.eu-west-1.s3"}
    for endpoint in endpoints.values():
        assert endpoint["vpcEndpointType"] == "Gateway"
        assert endpoint["routeTableIds"] == ["parley-public-rt-id", "parley-private-rt-id"]


# --- service -------------------------------------------------------------------------------


def test_task_size_and_count_come_from_config(base: Synth, big: Synth) -> None:
    for result, cfg in ((base, BASE), (big, BIG)):
        task = result.named("parley-task").inputs
        assert (task["cpu"], task["memory"]) == (str(cfg.cpu), str(cfg.memory))
        assert task["requiresCompatibilities"] == ["FARGATE"]
        assert task["networkMode"] == "awsvpc"
        service = result.named("parley-service").inputs
        assert service["desiredCount"] == cfg.desired_count
        assert service["launchType"] == "FARGATE"
        target = result.named("parley-scaling").inputs
        assert (target["minCapacity"], target["maxCapacity"]) == (cfg.min_count, cfg.max_count)
        assert target["scalableDimension"] == "ecs:service:DesiredCount"
        assert target["resourceId"] == "service/parley-cluster/parley-service"
        policy = result.named("parley-cpu-tracking").inputs
        assert policy["policyType"] == "TargetTrackingScaling"
        tracking = policy["targetTrackingScalingPolicyConfiguration"]
        assert tracking["targetValue"] == cfg.cpu_target_percent
        assert tracking["predefinedMetricSpecification"] == {
            "predefinedMetricType": "ECSServiceAverageCPUUtilization"
        }


def test_container_environment_and_port(base: Synth) -> None:
    container = _container(base)
    assert container["portMappings"] == [
        {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"},
        {"containerPort": 8081, "hostPort": 8081, "protocol": "tcp"},
    ]
    env = {item["name"]: item["value"] for item in container["environment"]}
    assert env == {
        "PARLEY_HOST": "0.0.0.0",
        "PARLEY_PORT": "8080",
        "PARLEY_STREAM_PORT": "8081",
        "PARLEY_STORAGE": "dynamodb",
        "PARLEY_DYNAMODB_TABLE_PREFIX": "parley-test-",
        "PARLEY_REDIS_URL": "redis://parley-redis.cache.example:6379",
        "PARLEY_AUTH": "token",
        "PARLEY_KEEPALIVE_SECONDS": "60",
        "PARLEY_REQUEST_TIMEOUT": "120",
        "AWS_REGION": "eu-west-1",
        "PARLEY_MEDIA_URL": "s3://parley-media-abc123/media",
    }
    assert container["image"] == "registry.example/parley-repo:latest"
    assert container["logConfiguration"]["options"]["awslogs-group"] == "parley-logs"
    assert "/healthz" in " ".join(container["healthCheck"]["command"])
    # Nothing secret travels in the task definition: the secret key is a reference that
    # ECS resolves when the task starts.
    assert not [k for k in env if any(w in k for w in ("SECRET", "PASSWORD", "KEY_ID"))]
    secret_arn = base.named("parley-secret-key").state["arn"]
    assert container["secrets"] == [{"name": "PARLEY_SECRET_KEY", "valueFrom": secret_arn}]


def test_the_secret_key_is_generated_into_secrets_manager(base: Synth) -> None:
    secret = base.named("parley-secret-key")
    version = base.named("parley-secret-key-version").inputs
    generated = base.named("parley-secret-key-value")
    assert generated.typ == "random:index/randomPassword:RandomPassword"
    assert generated.inputs["length"] >= 32  # Parley's minimum for PARLEY_SECRET_KEY
    assert version["secretId"] == secret.id
    value = generated.state["result"]
    assert len(value) == generated.inputs["length"]
    # handed over as a Pulumi secret: encrypted in the state, masked in previews
    assert version["secretString"] == {
        PULUMI_SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270",
        "value": value,
    }
    # the value itself is in the secret's version only
    holders = [r.name for r in base.resources if value in json.dumps(r.inputs)]
    assert holders == ["parley-secret-key-version"]


def test_only_the_execution_role_reads_the_secret_and_only_that_one(base: Synth) -> None:
    secret_arn = base.named("parley-secret-key").state["arn"]
    readers = {}
    for resource in base.of_type("aws:iam/rolePolicy:RolePolicy"):
        for statement in json.loads(resource.inputs["policy"])["Statement"]:
            if any(action.startswith("secretsmanager:") for action in statement["Action"]):
                readers[resource.inputs["role"]] = statement
    assert list(readers) == ["parley-exec-role-id"]
    assert readers["parley-exec-role-id"]["Action"] == ["secretsmanager:GetSecretValue"]
    assert readers["parley-exec-role-id"]["Resource"] == [secret_arn]


def test_configured_image_is_used(big: Synth) -> None:
    assert _container(big)["image"] == "registry.example/parley:2024.1"


def test_service_sits_behind_the_target_group(base: Synth) -> None:
    service = base.named("parley-service").inputs
    assert service["loadBalancers"] == [
        {
            "targetGroupArn": base.named(name).state["arn"],
            "containerName": "parley",
            "containerPort": port,
        }
        for name, port in (("parley-tg", 8080), ("parley-streams-tg", 8081))
    ]
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    for name, port in (("parley-tg", 8080), ("parley-streams-tg", 8081)):
        group = base.named(name).inputs
        assert (group["port"], group["protocol"], group["targetType"]) == (port, "HTTP", "ip")
        assert group["healthCheck"]["path"] == "/readyz"
        assert group["healthCheck"]["port"] == "traffic-port"  # each port answers for itself
        assert group["healthCheck"]["matcher"] == "200"


def test_live_streams_go_to_the_stream_port(base: Synth, tls: Synth) -> None:
    for result, listener in ((base, "parley-http"), (tls, "parley-https")):
        rules = result.of_type("aws:lb/listenerRule:ListenerRule")
        assert [r.name for r in rules] == ["parley-streams"]
        rule = rules[0].inputs
        assert rule["listenerArn"] == result.named(listener).state["arn"]
        assert rule["conditions"] == [{"pathPattern": {"values": ["/v1/messages/*/stream"]}}]
        assert rule["actions"] == [
            {"type": "forward", "targetGroupArn": result.named("parley-streams-tg").state["arn"]}
        ]
        # the load balancer may reach the stream port, and only the tasks on it
        egress = [
            r.inputs
            for typ in SG_RULE_TYPES
            for r in result.of_type(typ)
            if r.typ != INGRESS and r.inputs["securityGroupId"] == "parley-alb-sg-id"
        ]
        assert sorted((e["fromPort"], e["referencedSecurityGroupId"]) for e in egress) == [
            (8080, "parley-tasks-sg-id"),
            (8081, "parley-tasks-sg-id"),
        ]


def test_load_balancer_outlives_a_long_poll(base: Synth) -> None:
    alb = base.named("parley-alb").inputs
    assert alb["internal"] is False
    assert alb["loadBalancerType"] == "application"
    assert alb["idleTimeout"] > 60
    # a stream's keep-alive comes before the load balancer drops it for idleness, and
    # Parley keeps an idle connection longer than the load balancer does
    env = {item["name"]: item["value"] for item in _container(base)["environment"]}
    assert int(env["PARLEY_KEEPALIVE_SECONDS"]) < alb["idleTimeout"]
    assert int(env["PARLEY_REQUEST_TIMEOUT"]) > alb["idleTimeout"]
    assert alb["securityGroups"] == ["parley-alb-sg-id"]
    assert alb["subnets"] == ["parley-public-0-id", "parley-public-1-id"]


def test_http_only_without_a_certificate(base: Synth) -> None:
    listeners = base.of_type("aws:lb/listener:Listener")
    assert [r.name for r in listeners] == ["parley-http"]
    http = listeners[0].inputs
    assert (http["port"], http["protocol"]) == (80, "HTTP")
    assert http["defaultActions"][0]["type"] == "forward"
    assert base.outputs["serviceUrl"] == "http://parley-alb.eu-west-1.elb.example"


def test_https_listener_with_a_certificate(tls: Synth) -> None:
    https = tls.named("parley-https").inputs
    assert (https["port"], https["protocol"]) == (443, "HTTPS")
    assert https["certificateArn"] == CERT
    assert https["sslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert https["defaultActions"][0]["type"] == "forward"
    http = tls.named("parley-http").inputs
    assert http["defaultActions"] == [
        {
            "type": "redirect",
            "redirect": {"port": "443", "protocol": "HTTPS", "statusCode": "HTTP_301"},
        }
    ]
    assert tls.outputs["serviceUrl"] == "https://parley-alb.eu-west-1.elb.example"


def test_redis_replica_and_failover_when_asked(big: Synth) -> None:
    redis = big.named("parley-redis").inputs
    assert redis["nodeType"] == "cache.r7g.large"
    assert redis["numCacheClusters"] == 2
    assert redis["automaticFailoverEnabled"] is True
    assert redis["multiAzEnabled"] is True


def test_logs_and_registry(base: Synth, big: Synth) -> None:
    assert base.named("parley-logs").inputs["retentionInDays"] == 30
    assert big.named("parley-logs").inputs["retentionInDays"] == 90
    repo = base.named("parley-repo").inputs
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert base.outputs["ecrRepositoryUrl"] == "registry.example/parley-repo"
    lifecycle = json.loads(base.named("parley-repo-lifecycle").inputs["policy"])
    assert lifecycle["rules"][0]["selection"]["countNumber"] == 30


def test_region_and_tags_come_from_config(base: Synth) -> None:
    (provider,) = base.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "eu-west-1"
    assert json.loads(provider.inputs["defaultTags"])["tags"] == {"app": "parley", "stack": "test"}


def test_no_account_ids_or_credentials_in_inputs(base: Synth, tls: Synth, big: Synth) -> None:
    for result in (base, tls, big):
        for resource in result.resources:
            text = json.dumps(resource.inputs, sort_keys=True)
            text = text.replace(CERT, "<certificate>")
            assert not re.search(r"(?<!\d)\d{12}(?!\d)", text), resource.name
            assert "AKIA" not in text and "aws_secret" not in text.lower(), resource.name


def test_entry_point_reads_pulumi_config(run_entry_point: Callable[..., Synth]) -> None:
    """``deploy/__main__.py`` end to end: stack config in, resources out."""
    result = run_entry_point(
        {
            "aws:region": "ca-central-1",
            "parley:desiredCount": "3",
            "parley:maxCount": "9",
            "parley:cpu": "1024",
            "parley:memory": "2048",
            "parley:certificateArn": CERT.replace("eu-west-1", "ca-central-1"),
        },
        "staging",
    )
    names = sorted(r.inputs["name"] for r in result.of_type("aws:dynamodb/table:Table"))
    assert names == sorted(f"parley-staging-{spec.suffix}" for spec in TABLES)
    assert result.named("parley-service").inputs["desiredCount"] == 3
    assert result.named("parley-scaling").inputs["maxCapacity"] == 9
    task = result.named("parley-task").inputs
    assert (task["cpu"], task["memory"]) == ("1024", "2048")
    assert result.maybe("parley-https") is not None
    (provider,) = result.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "ca-central-1"


# --- uploaded files ----------------------------------------------------------------------


def test_uploaded_files_go_to_a_private_bucket_the_task_alone_may_use(base: Synth) -> None:
    (bucket,) = base.of_type("aws:s3/bucket:Bucket")
    block = base.named("parley-media-private").inputs
    assert all(
        block[key] is True
        for key in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    )
    rules = base.named("parley-media-lifecycle").inputs["rules"]
    assert rules[0]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    document = json.loads(base.named("parley-task-media").inputs["policy"])
    arn = bucket.state["arn"]
    assert document == media_policy(arn)
    resources = [r for statement in document["Statement"] for r in statement["Resource"]]
    assert resources == [f"{arn}/media/*", arn]
    actions = [a for statement in document["Statement"] for a in statement["Action"]]
    assert all("*" not in a and a.startswith("s3:") for a in actions)
    assert base.outputs["mediaBucket"] == "parley-media-abc123"
