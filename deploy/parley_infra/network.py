"""The VPC: two public and two private subnets in two availability zones.

Public subnets hold the load balancer (and, without a NAT gateway, the tasks, which then get
public addresses but still accept traffic only from the load balancer). Private subnets hold
Redis, and the tasks when ``natGateway`` is on. Free gateway endpoints keep DynamoDB and S3
(ECR image layers) traffic inside AWS, off the NAT gateway's per-GB charge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .config import StackConfig


@dataclass(frozen=True)
class Network:
    vpc: aws.ec2.Vpc
    public_subnets: list[aws.ec2.Subnet]
    private_subnets: list[aws.ec2.Subnet]
    public_route_table: aws.ec2.RouteTable
    private_route_table: aws.ec2.RouteTable
    nat_gateway: aws.ec2.NatGateway | None

    @property
    def public_subnet_ids(self) -> list[pulumi.Output[str]]:
        return [subnet.id for subnet in self.public_subnets]

    @property
    def private_subnet_ids(self) -> list[pulumi.Output[str]]:
        return [subnet.id for subnet in self.private_subnets]


def _zone(index: int) -> Callable[[list[str]], str]:
    """Picks the ``index``-th available zone (the region must have two)."""

    def pick(names: list[str]) -> str:
        if len(names) < 2:
            raise ValueError("the region needs at least two available availability zones")
        return names[index]

    return pick


def build_network(
    cfg: StackConfig, opts: pulumi.ResourceOptions, invoke_opts: pulumi.InvokeOutputOptions
) -> Network:
    zones = aws.get_availability_zones_output(
        state="available",
        filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
        opts=invoke_opts,
    )
    vpc = aws.ec2.Vpc(
        "parley-vpc",
        cidr_block=cfg.vpc_cidr,
        enable_dns_hostnames=True,
        enable_dns_support=True,
        tags={"Name": f"parley-{cfg.stack}"},
        opts=opts,
    )
    igw = aws.ec2.InternetGateway(
        "parley-igw", vpc_id=vpc.id, tags={"Name": f"parley-{cfg.stack}"}, opts=opts
    )
    public_cidrs, private_cidrs = cfg.subnet_cidrs()

    public_rt = aws.ec2.RouteTable(
        "parley-public-rt",
        vpc_id=vpc.id,
        tags={"Name": f"parley-{cfg.stack}-public"},
        opts=opts,
    )
    aws.ec2.Route(
        "parley-public-default",
        route_table_id=public_rt.id,
        destination_cidr_block="0.0.0.0/0",
        gateway_id=igw.id,
        opts=opts,
    )
    public_subnets: list[aws.ec2.Subnet] = []
    for index, cidr in enumerate(public_cidrs):
        subnet = aws.ec2.Subnet(
            f"parley-public-{index}",
            vpc_id=vpc.id,
            cidr_block=cidr,
            availability_zone=zones.names.apply(_zone(index)),
            map_public_ip_on_launch=False,
            tags={"Name": f"parley-{cfg.stack}-public-{index}", "tier": "public"},
            opts=opts,
        )
        aws.ec2.RouteTableAssociation(
            f"parley-public-{index}-rta",
            subnet_id=subnet.id,
            route_table_id=public_rt.id,
            opts=opts,
        )
        public_subnets.append(subnet)

    private_rt = aws.ec2.RouteTable(
        "parley-private-rt",
        vpc_id=vpc.id,
        tags={"Name": f"parley-{cfg.stack}-private"},
        opts=opts,
    )
    nat: aws.ec2.NatGateway | None = None
    if cfg.nat_gateway:
        eip = aws.ec2.Eip(
            "parley-nat-eip", domain="vpc", tags={"Name": f"parley-{cfg.stack}-nat"}, opts=opts
        )
        nat = aws.ec2.NatGateway(
            "parley-nat",
            allocation_id=eip.id,
            subnet_id=public_subnets[0].id,
            tags={"Name": f"parley-{cfg.stack}"},
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[igw])),
        )
        aws.ec2.Route(
            "parley-private-default",
            route_table_id=private_rt.id,
            destination_cidr_block="0.0.0.0/0",
            nat_gateway_id=nat.id,
            opts=opts,
        )
    private_subnets: list[aws.ec2.Subnet] = []
    for index, cidr in enumerate(private_cidrs):
        subnet = aws.ec2.Subnet(
            f"parley-private-{index}",
            vpc_id=vpc.id,
            cidr_block=cidr,
            availability_zone=zones.names.apply(_zone(index)),
            map_public_ip_on_launch=False,
            tags={"Name": f"parley-{cfg.stack}-private-{index}", "tier": "private"},
            opts=opts,
        )
        aws.ec2.RouteTableAssociation(
            f"parley-private-{index}-rta",
            subnet_id=subnet.id,
            route_table_id=private_rt.id,
            opts=opts,
        )
        private_subnets.append(subnet)

    for service in ("dynamodb", "s3"):
        aws.ec2.VpcEndpoint(
            f"parley-{service}-endpoint",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{cfg.region}.{service}",
            vpc_endpoint_type="Gateway",
            route_table_ids=[public_rt.id, private_rt.id],
            tags={"Name": f"parley-{cfg.stack}-{service}"},
            opts=opts,
        )

    return Network(
        vpc=vpc,
        public_subnets=public_subnets,
        private_subnets=private_subnets,
        public_route_table=public_rt,
        private_route_table=private_rt,
        nat_gateway=nat,
    )
