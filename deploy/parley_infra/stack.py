"""The whole Parley deployment as one Pulumi component.

``build_stack(StackConfig(...))`` creates every resource; ``__main__.py`` only loads the
config, calls it and exports :meth:`ParleyStack.exports`. Tests call ``build_stack`` under
Pulumi's mocks.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence

import pulumi
import pulumi_aws as aws
import pulumi_random as random

with warnings.catch_warnings():
    # Loading the s3 module also loads its deprecated *V2 resources, which warn on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pulumi_aws.s3 import (
        Bucket,
        BucketLifecycleConfiguration,
        BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs,
        BucketLifecycleConfigurationRuleArgs,
        BucketLifecycleConfigurationRuleFilterArgs,
        BucketPublicAccessBlock,
    )

from .config import StackConfig
from .containers import (
    CONTAINER_NAME,
    CONTAINER_PORT,
    READY_PATH,
    REDIS_PORT,
    STREAM_PATH,
    STREAM_PORT,
)
from .containers import container_definitions as make_container_definitions
from .network import Network, build_network
from .policies import assume_role_policy, execution_policy, media_policy, task_policy
from .tables import build_tables

# TLS 1.3 with TLS 1.2 fallback, the load balancer's recommended policy.
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# Long-polls wait up to 60 s; the load balancer must not cut them first.
ALB_IDLE_TIMEOUT = 90
REDIS_ENGINE_VERSION = "7.1"
SECRET_KEY_LENGTH = 64  # letters and digits: about 380 bits

_scaling = aws.appautoscaling
_TargetTracking = _scaling.PolicyTargetTrackingScalingPolicyConfigurationArgs
_PredefinedMetric = (
    _scaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs
)


class SecurityGroups:
    """The three security groups and every rule between them."""

    def __init__(self, cfg: StackConfig, network: Network, opts: pulumi.ResourceOptions) -> None:
        vpc_id = network.vpc.id
        self.alb = aws.ec2.SecurityGroup(
            "parley-alb-sg",
            vpc_id=vpc_id,
            description="Parley load balancer: HTTP(S) from anywhere",
            tags={"Name": f"parley-{cfg.stack}-alb"},
            opts=opts,
        )
        self.tasks = aws.ec2.SecurityGroup(
            "parley-tasks-sg",
            vpc_id=vpc_id,
            description="Parley tasks: port 8080 from the load balancer only",
            tags={"Name": f"parley-{cfg.stack}-tasks"},
            opts=opts,
        )
        self.redis = aws.ec2.SecurityGroup(
            "parley-redis-sg",
            vpc_id=vpc_id,
            description="Parley Redis: port 6379 from the tasks only",
            tags={"Name": f"parley-{cfg.stack}-redis"},
            opts=opts,
        )
        public_ports = [80, 443] if cfg.https else [80]
        for port in public_ports:
            aws.vpc.SecurityGroupIngressRule(
                f"parley-alb-in-{port}",
                security_group_id=self.alb.id,
                description=f"clients on {port}",
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4="0.0.0.0/0",
                opts=opts,
            )
        aws.vpc.SecurityGroupEgressRule(
            "parley-alb-out-tasks",
            security_group_id=self.alb.id,
            description="forward to the tasks",
            ip_protocol="tcp",
            from_port=CONTAINER_PORT,
            to_port=CONTAINER_PORT,
            referenced_security_group_id=self.tasks.id,
            opts=opts,
        )
        aws.vpc.SecurityGroupIngressRule(
            "parley-tasks-in-alb",
            security_group_id=self.tasks.id,
            description="requests from the load balancer",
            ip_protocol="tcp",
            from_port=CONTAINER_PORT,
            to_port=CONTAINER_PORT,
            referenced_security_group_id=self.alb.id,
            opts=opts,
        )
        aws.vpc.SecurityGroupEgressRule(
            "parley-alb-out-tasks-streams",
            security_group_id=self.alb.id,
            description="forward live streams to the tasks' stream port",
            ip_protocol="tcp",
            from_port=STREAM_PORT,
            to_port=STREAM_PORT,
            referenced_security_group_id=self.tasks.id,
            opts=opts,
        )
        aws.vpc.SecurityGroupIngressRule(
            "parley-tasks-in-alb-streams",
            security_group_id=self.tasks.id,
            description="live streams from the load balancer",
            ip_protocol="tcp",
            from_port=STREAM_PORT,
            to_port=STREAM_PORT,
            referenced_security_group_id=self.alb.id,
            opts=opts,
        )
        aws.vpc.SecurityGroupEgressRule(
            "parley-tasks-out-https",
            security_group_id=self.tasks.id,
            description="AWS APIs over HTTPS: DynamoDB, ECR, CloudWatch Logs",
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            cidr_ipv4="0.0.0.0/0",
            opts=opts,
        )
        aws.vpc.SecurityGroupEgressRule(
            "parley-tasks-out-redis",
            security_group_id=self.tasks.id,
            description="Redis",
            ip_protocol="tcp",
            from_port=REDIS_PORT,
            to_port=REDIS_PORT,
            referenced_security_group_id=self.redis.id,
            opts=opts,
        )
        aws.vpc.SecurityGroupIngressRule(
            "parley-redis-in-tasks",
            security_group_id=self.redis.id,
            description="Redis clients: the tasks",
            ip_protocol="tcp",
            from_port=REDIS_PORT,
            to_port=REDIS_PORT,
            referenced_security_group_id=self.tasks.id,
            opts=opts,
        )


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _task_policy_json(arns: Sequence[str]) -> str:
    return _json(task_policy(list(arns)))


class ParleyStack(pulumi.ComponentResource):
    """Every AWS resource of one Parley deployment."""

    def __init__(
        self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("parley:deploy:Stack", name, None, opts)
        self.cfg = cfg
        self.provider = aws.Provider(
            f"{name}-aws",
            region=cfg.region,
            default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.resource_tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        invoke = pulumi.InvokeOutputOptions(parent=self, provider=self.provider)

        # --- data -------------------------------------------------------------------------
        self.tables = build_tables(cfg, child)

        # --- network ----------------------------------------------------------------------
        self.network = build_network(cfg, child, invoke)
        self.security_groups = SecurityGroups(cfg, self.network, child)

        # --- image and logs ---------------------------------------------------------------
        self.repository = aws.ecr.Repository(
            "parley-repo",
            image_tag_mutability="MUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            force_delete=True,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            "parley-repo-lifecycle",
            repository=self.repository.name,
            policy=_json(
                {
                    "rules": [
                        {
                            "rulePriority": 1,
                            "description": "keep the 30 newest images",
                            "selection": {
                                "tagStatus": "any",
                                "countType": "imageCountMoreThan",
                                "countNumber": 30,
                            },
                            "action": {"type": "expire"},
                        }
                    ]
                }
            ),
            opts=child,
        )
        self.log_group = aws.cloudwatch.LogGroup(
            "parley-logs", retention_in_days=cfg.log_retention_days, opts=child
        )

        # --- Redis ------------------------------------------------------------------------
        redis_subnets = aws.elasticache.SubnetGroup(
            "parley-redis-subnets",
            description="Parley Redis: private subnets",
            subnet_ids=self.network.private_subnet_ids,
            opts=child,
        )
        replicated = cfg.redis_nodes > 1
        self.redis = aws.elasticache.ReplicationGroup(
            "parley-redis",
            description="Parley shared cache and wake-up channel",
            engine="redis",
            engine_version=REDIS_ENGINE_VERSION,
            node_type=cfg.redis_node_type,
            num_cache_clusters=cfg.redis_nodes,
            port=REDIS_PORT,
            subnet_group_name=redis_subnets.name,
            security_group_ids=[self.security_groups.redis.id],
            automatic_failover_enabled=replicated,
            multi_az_enabled=replicated,
            at_rest_encryption_enabled=True,
            transit_encryption_enabled=False,
            apply_immediately=True,
            opts=child,
        )

        # --- the server secret (PARLEY_SECRET_KEY) -------------------------------------------
        # Signs stream tickets: every task must share it, and nobody who can only read the
        # tables, their backups or Redis has it. Generated once (kept in the stack's state,
        # encrypted), stored in Secrets Manager, read by ECS at task start.
        self.secret_key_value = random.RandomPassword(
            "parley-secret-key-value",
            length=SECRET_KEY_LENGTH,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.secret_key = aws.secretsmanager.Secret(
            "parley-secret-key",
            description="Parley server secret: signs stream tickets (PARLEY_SECRET_KEY)",
            recovery_window_in_days=0,  # pulumi destroy removes it at once, like the rest
            opts=child,
        )
        self.secret_key_version = aws.secretsmanager.SecretVersion(
            "parley-secret-key-version",
            secret_id=self.secret_key.id,
            secret_string=self.secret_key_value.result,
            opts=child,
        )

        # --- IAM --------------------------------------------------------------------------
        self.execution_role = aws.iam.Role(
            "parley-exec-role",
            description="ECS starts Parley tasks with this role: image, logs, the secret key",
            assume_role_policy=_json(assume_role_policy()),
            opts=child,
        )
        self.execution_policy = aws.iam.RolePolicy(
            "parley-exec-policy",
            role=self.execution_role.id,
            policy=pulumi.Output.all(
                self.repository.arn, self.log_group.arn, self.secret_key.arn
            ).apply(lambda arns: _json(execution_policy(arns[0], arns[1], arns[2]))),
            opts=child,
        )
        self.task_role = aws.iam.Role(
            "parley-task-role",
            description="Parley's own permissions: its DynamoDB tables and nothing else",
            assume_role_policy=_json(assume_role_policy()),
            opts=child,
        )
        self.task_policy = aws.iam.RolePolicy(
            "parley-task-dynamodb",
            role=self.task_role.id,
            policy=pulumi.Output.all(*[table.arn for table in self.tables.values()]).apply(
                _task_policy_json
            ),
            opts=child,
        )

        # --- uploaded files: a private bucket every task shares ------------------------------
        self.media_bucket = Bucket("parley-media", force_destroy=False, opts=child)
        BucketPublicAccessBlock(
            "parley-media-private",
            bucket=self.media_bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        BucketLifecycleConfiguration(
            "parley-media-lifecycle",
            bucket=self.media_bucket.id,
            rules=[
                BucketLifecycleConfigurationRuleArgs(
                    id="abort-unfinished-uploads",
                    status="Enabled",
                    filter=BucketLifecycleConfigurationRuleFilterArgs(prefix="media/"),
                    abort_incomplete_multipart_upload=BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=1
                    ),
                )
            ],
            opts=child,
        )
        self.media_policy = aws.iam.RolePolicy(
            "parley-task-media",
            role=self.task_role.id,
            policy=self.media_bucket.arn.apply(lambda arn: _json(media_policy(arn))),
            opts=child,
        )

        # --- load balancer ----------------------------------------------------------------
        self.alb = aws.lb.LoadBalancer(
            "parley-alb",
            load_balancer_type="application",
            internal=False,
            security_groups=[self.security_groups.alb.id],
            subnets=self.network.public_subnet_ids,
            idle_timeout=ALB_IDLE_TIMEOUT,
            drop_invalid_header_fields=True,
            opts=child,
        )
        self.target_group = _target_group("parley-tg", CONTAINER_PORT, self.network, child)
        # Live streams go to the tasks' stream port, whose listener keeps no buffer per idle
        # connection (docs/realtime.md, "The stream port"); everything else to the main port.
        self.streams_target_group = _target_group(
            "parley-streams-tg", STREAM_PORT, self.network, child
        )
        forward = aws.lb.ListenerDefaultActionArgs(
            type="forward", target_group_arn=self.target_group.arn
        )
        self.https_listener: aws.lb.Listener | None = None
        if cfg.certificate_arn is not None:
            self.https_listener = aws.lb.Listener(
                "parley-https",
                load_balancer_arn=self.alb.arn,
                port=443,
                protocol="HTTPS",
                ssl_policy=SSL_POLICY,
                certificate_arn=cfg.certificate_arn,
                default_actions=[forward],
                opts=child,
            )
            http_action = aws.lb.ListenerDefaultActionArgs(
                type="redirect",
                redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                    port="443", protocol="HTTPS", status_code="HTTP_301"
                ),
            )
        else:
            http_action = forward
        self.http_listener = aws.lb.Listener(
            "parley-http",
            load_balancer_arn=self.alb.arn,
            port=80,
            protocol="HTTP",
            default_actions=[http_action],
            opts=child,
        )

        self.streams_rule = aws.lb.ListenerRule(
            "parley-streams",
            listener_arn=(self.https_listener or self.http_listener).arn,
            priority=10,
            conditions=[
                aws.lb.ListenerRuleConditionArgs(
                    path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(values=[STREAM_PATH])
                )
            ],
            actions=[
                aws.lb.ListenerRuleActionArgs(
                    type="forward", target_group_arn=self.streams_target_group.arn
                )
            ],
            opts=child,
        )

        # --- service ----------------------------------------------------------------------
        self.cluster = aws.ecs.Cluster("parley-cluster", opts=child)
        image: pulumi.Input[str] = (
            cfg.image
            if cfg.image is not None
            else pulumi.Output.concat(self.repository.repository_url, ":latest")
        )
        definitions = pulumi.Output.all(
            image,
            self.redis.primary_endpoint_address,
            self.log_group.name,
            self.secret_key.arn,
            self.media_bucket.bucket,
        ).apply(
            lambda values: _json(
                make_container_definitions(
                    cfg,
                    image=values[0],
                    redis_host=values[1],
                    log_group=values[2],
                    secret_key_arn=values[3],
                    media_bucket=values[4],
                )
            )
        )
        self.task_definition = aws.ecs.TaskDefinition(
            "parley-task",
            family=f"parley-{cfg.stack}",
            cpu=str(cfg.cpu),
            memory=str(cfg.memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture="X86_64"
            ),
            execution_role_arn=self.execution_role.arn,
            task_role_arn=self.task_role.arn,
            container_definitions=definitions,
            opts=child,
        )
        task_subnets = (
            self.network.private_subnet_ids if cfg.nat_gateway else self.network.public_subnet_ids
        )
        listeners = [self.http_listener] + ([self.https_listener] if self.https_listener else [])
        self.service = aws.ecs.Service(
            "parley-service",
            cluster=self.cluster.arn,
            task_definition=self.task_definition.arn,
            desired_count=cfg.desired_count,
            launch_type="FARGATE",
            platform_version="LATEST",
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=task_subnets,
                security_groups=[self.security_groups.tasks.id],
                assign_public_ip=not cfg.nat_gateway,
            ),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=group.arn,
                    container_name=CONTAINER_NAME,
                    container_port=port,
                )
                for group, port in (
                    (self.target_group, CONTAINER_PORT),
                    (self.streams_target_group, STREAM_PORT),
                )
            ],
            health_check_grace_period_seconds=30,
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                enable=True, rollback=True
            ),
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            wait_for_steady_state=False,
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    depends_on=[
                        *listeners,
                        self.streams_rule,
                        self.execution_policy,
                        self.task_policy,
                        self.secret_key_version,  # tasks start with the secret in place
                    ]
                ),
            ),
        )

        # --- autoscaling ------------------------------------------------------------------
        self.scaling_target = aws.appautoscaling.Target(
            "parley-scaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", self.cluster.name, "/", self.service.name),
            min_capacity=cfg.min_count,
            max_capacity=cfg.max_count,
            opts=child,
        )
        self.scaling_policy = aws.appautoscaling.Policy(
            "parley-cpu-tracking",
            policy_type="TargetTrackingScaling",
            service_namespace=self.scaling_target.service_namespace,
            scalable_dimension=self.scaling_target.scalable_dimension,
            resource_id=self.scaling_target.resource_id,
            target_tracking_scaling_policy_configuration=(
                _TargetTracking(
                    target_value=float(cfg.cpu_target_percent),
                    predefined_metric_specification=_PredefinedMetric(
                        predefined_metric_type="ECSServiceAverageCPUUtilization"
                    ),
                    scale_in_cooldown=120,
                    scale_out_cooldown=60,
                )
            ),
            opts=child,
        )

        scheme = "https" if cfg.https else "http"
        self.service_url: pulumi.Output[str] = pulumi.Output.concat(
            scheme, "://", self.alb.dns_name
        )
        self.register_outputs(self.exports())

    def exports(self) -> dict[str, object]:
        """The values ``pulumi stack output`` shows."""
        return {
            "serviceUrl": self.service_url,
            "albDnsName": self.alb.dns_name,
            "tablePrefix": self.cfg.prefix,
            "tableNames": {suffix: table.name for suffix, table in self.tables.items()},
            "mediaBucket": self.media_bucket.bucket,
            "ecrRepositoryUrl": self.repository.repository_url,
            "clusterName": self.cluster.name,
            "serviceName": self.service.name,
            "logGroupName": self.log_group.name,
            "redisEndpoint": self.redis.primary_endpoint_address,
        }


def build_stack(cfg: StackConfig, name: str = "parley") -> ParleyStack:
    """Create every resource of a Parley deployment described by ``cfg``."""
    return ParleyStack(name, cfg)


def _target_group(
    name: str, port: int, network: Network, opts: pulumi.ResourceOptions
) -> aws.lb.TargetGroup:
    """The tasks' ``port`` behind the load balancer, healthy while ``/readyz`` says so."""
    return aws.lb.TargetGroup(
        name,
        port=port,
        protocol="HTTP",
        target_type="ip",
        vpc_id=network.vpc.id,
        deregistration_delay=30,
        health_check=aws.lb.TargetGroupHealthCheckArgs(
            enabled=True,
            path=READY_PATH,
            protocol="HTTP",
            port="traffic-port",
            matcher="200",
            interval=15,
            timeout=5,
            healthy_threshold=2,
            unhealthy_threshold=3,
        ),
        opts=opts,
    )
