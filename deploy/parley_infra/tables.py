"""DynamoDB tables, one Pulumi resource per spec in Parley's table list."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from ._schema import TABLES, TableSpec, table_name
from .config import StackConfig


def table_args(spec: TableSpec, cfg: StackConfig) -> aws.dynamodb.TableArgs:
    """The Pulumi arguments of one table, derived from its spec and the stack's billing."""
    provisioned = cfg.billing_mode == "PROVISIONED"
    read_capacity = cfg.read_capacity if provisioned else None
    write_capacity = cfg.write_capacity if provisioned else None
    indexes = [
        aws.dynamodb.TableGlobalSecondaryIndexArgs(
            name=index.name,
            projection_type=index.projection,
            key_schemas=[
                aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                    attribute_name=attribute, key_type=key_type
                )
                for attribute, key_type in zip(
                    index.key_attributes, ("HASH", "RANGE"), strict=False
                )
            ],
            non_key_attributes=list(index.non_key_attributes) or None,
            read_capacity=read_capacity,
            write_capacity=write_capacity,
        )
        for index in spec.indexes
    ]
    ttl = (
        aws.dynamodb.TableTtlArgs(attribute_name=spec.ttl_attribute, enabled=True)
        if spec.ttl_attribute is not None
        else None
    )
    return aws.dynamodb.TableArgs(
        name=table_name(cfg.prefix, spec),
        billing_mode=cfg.billing_mode,
        hash_key=spec.hash_key,
        range_key=spec.range_key,
        attributes=[
            aws.dynamodb.TableAttributeArgs(name=name, type=kind) for name, kind in spec.attributes
        ],
        global_secondary_indexes=indexes or None,
        point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
        ttl=ttl,
        deletion_protection_enabled=cfg.table_deletion_protection,
        tags={"parley-table": spec.suffix},
        read_capacity=read_capacity,
        write_capacity=write_capacity,
    )


def build_tables(cfg: StackConfig, opts: pulumi.ResourceOptions) -> dict[str, aws.dynamodb.Table]:
    """One table per spec, keyed by the spec's suffix."""
    return {
        spec.suffix: aws.dynamodb.Table(f"table-{spec.suffix}", table_args(spec, cfg), opts=opts)
        for spec in TABLES
    }
