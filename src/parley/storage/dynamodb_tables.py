"""Parley's DynamoDB tables, as data.

This module is the single description of the tables Parley keeps in DynamoDB. The Pulumi
program in ``deploy/`` creates them from :data:`TABLES`, and the DynamoDB storage adapter and
``parley migrate`` use the same specs (through :func:`create_table_kwargs`), so the deployed
schema and the schema the code expects cannot drift apart.

It depends on the standard library only, so importing it never needs boto3 or Pulumi.

Design rules the layout follows:

- Every write that can conflict touches one item and is conditional (or is a transaction):
  a membership is an item of its own in ``members`` and a block is an item of its own in
  ``blocks``, so adding or removing one is a single conditional put or delete, never a
  read-modify-write of a list held inside another item.
- Messages are keyed by the receiving user or group (``recipient_id``) and a sort key
  ``sk`` that is unique per message by construction (the commit timestamp, which the
  ``streams`` table's clock hands out once, the message's position within its commit,
  then the message id), so two messages never overwrite each other. ``docs/dynamodb.md`` explains
  the clock and why every read is strongly consistent (no index serves a message read).
- ``sends`` holds idempotency keys; items carry an expiry attribute that DynamoDB's
  time-to-live removes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "TABLES",
    "AttributeType",
    "BillingMode",
    "GlobalSecondaryIndex",
    "Projection",
    "TableSpec",
    "create_table_kwargs",
    "get_table_spec",
    "table_name",
    "table_names",
    "time_to_live_kwargs",
]

AttributeType = Literal["S", "N", "B"]
Projection = Literal["ALL", "KEYS_ONLY", "INCLUDE"]
BillingMode = Literal["PAY_PER_REQUEST", "PROVISIONED"]

BILLING_MODES: Final[tuple[BillingMode, ...]] = ("PAY_PER_REQUEST", "PROVISIONED")

_NAME_PART = re.compile(r"^[A-Za-z0-9_.-]*$")
_MIN_TABLE_NAME: Final = 3
_MAX_TABLE_NAME: Final = 255


@dataclass(frozen=True, slots=True)
class GlobalSecondaryIndex:
    """A global secondary index: its keys and which attributes it projects."""

    name: str
    hash_key: str
    range_key: str | None = None
    projection: Projection = "ALL"
    non_key_attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not _NAME_PART.match(self.name):
            raise ValueError(f"invalid index name {self.name!r}")
        if self.projection == "INCLUDE" and not self.non_key_attributes:
            raise ValueError(f"index {self.name!r}: INCLUDE needs non_key_attributes")
        if self.projection != "INCLUDE" and self.non_key_attributes:
            raise ValueError(f"index {self.name!r}: non_key_attributes need INCLUDE")

    @property
    def key_attributes(self) -> tuple[str, ...]:
        """The index's key attribute names, hash key first."""
        return (self.hash_key,) if self.range_key is None else (self.hash_key, self.range_key)


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table: its name suffix, primary key, key attribute types and indexes.

    ``attributes`` declares the type of every attribute used in a key (of the table or of an
    index) and of nothing else, which is what DynamoDB's ``AttributeDefinitions`` requires.
    """

    suffix: str
    hash_key: str
    attributes: tuple[tuple[str, AttributeType], ...]
    range_key: str | None = None
    indexes: tuple[GlobalSecondaryIndex, ...] = ()
    ttl_attribute: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.suffix or not _NAME_PART.match(self.suffix):
            raise ValueError(f"invalid table suffix {self.suffix!r}")
        declared = [name for name, _ in self.attributes]
        if len(set(declared)) != len(declared):
            raise ValueError(f"table {self.suffix!r}: an attribute is declared twice")
        for _, kind in self.attributes:
            if kind not in ("S", "N", "B"):
                raise ValueError(f"table {self.suffix!r}: bad attribute type {kind!r}")
        used = set(self.key_attributes)
        for index in self.indexes:
            used.update(index.key_attributes)
        missing = used - set(declared)
        if missing:
            raise ValueError(f"table {self.suffix!r}: key attributes without a type: {missing}")
        unused = set(declared) - used
        if unused:
            raise ValueError(f"table {self.suffix!r}: attributes not used in any key: {unused}")
        index_names = [index.name for index in self.indexes]
        if len(set(index_names)) != len(index_names):
            raise ValueError(f"table {self.suffix!r}: duplicate index name")
        if self.ttl_attribute is not None and self.ttl_attribute in used:
            raise ValueError(f"table {self.suffix!r}: the TTL attribute cannot be a key")

    @property
    def key_attributes(self) -> tuple[str, ...]:
        """The table's key attribute names, hash key first."""
        return (self.hash_key,) if self.range_key is None else (self.hash_key, self.range_key)

    def attribute_type(self, name: str) -> AttributeType:
        """The declared type of a key attribute."""
        for declared, kind in self.attributes:
            if declared == name:
                return kind
        raise KeyError(name)

    def index(self, name: str) -> GlobalSecondaryIndex:
        """The index called ``name``."""
        for index in self.indexes:
            if index.name == name:
                return index
        raise KeyError(name)


TABLES: Final[tuple[TableSpec, ...]] = (
    TableSpec(
        suffix="users",
        hash_key="user_id",
        attributes=(("user_id", "S"),),
        description="One item per user: username, token hash, creation time.",
    ),
    TableSpec(
        suffix="tokens",
        hash_key="user_id",
        range_key="token_id",
        attributes=(("user_id", "S"), ("token_id", "S")),
        description=(
            "One item per signed-in device: the SHA-256 of its token's secret, device name, "
            "creation and last-use times. A user's devices are one Query."
        ),
    ),
    TableSpec(
        suffix="groups",
        hash_key="group_id",
        attributes=(("group_id", "S"),),
        description="One item per group: name, creation time.",
    ),
    TableSpec(
        suffix="members",
        hash_key="user_id",
        range_key="group_id",
        attributes=(("user_id", "S"), ("group_id", "S")),
        indexes=(
            GlobalSecondaryIndex(
                name="by_group", hash_key="group_id", range_key="user_id", projection="KEYS_ONLY"
            ),
        ),
        description=(
            "One item per membership, so joining and leaving are conditional single-item "
            "writes. Keyed by user: the groups of a user (every check, every group send) "
            "are read with strong consistency; by_group lists a group's members."
        ),
    ),
    TableSpec(
        suffix="blocks",
        hash_key="blocker_id",
        range_key="blocked_id",
        attributes=(("blocker_id", "S"), ("blocked_id", "S")),
        description="One item per (blocker, blocked) pair; block and unblock are conditional.",
    ),
    TableSpec(
        suffix="messages",
        hash_key="recipient_id",
        range_key="sk",
        attributes=(("recipient_id", "S"), ("sk", "S"), ("pair", "S")),
        indexes=(GlobalSecondaryIndex(name="by_pair", hash_key="pair", range_key="sk"),),
        description=(
            "Messages keyed by stream (a receiving user, a group, or 'sent:' + a sender for "
            "include=sent) and a per-message sort key: the commit timestamp, the "
            "position within its commit, the message id. Every stream read is a strongly "
            "consistent Query. by_pair (sparse: the receiver's item of a private message "
            "carries 'pair', its receiver and sender) is one direction of one private "
            "conversation, for history pages and unread counts."
        ),
    ),
    TableSpec(
        suffix="conversations",
        hash_key="user_id",
        range_key="conversation",
        attributes=(("user_id", "S"), ("conversation", "S")),
        description=(
            "Per user: 'p#' + a peer it exchanged private messages with (written with the "
            "first message of the pair a process sees), and 'r#' + a conversation id with "
            "the user's read marker (one item, moved by a conditional update)."
        ),
    ),
    TableSpec(
        suffix="sends",
        hash_key="send_key",
        attributes=(("send_key", "S"),),
        ttl_attribute="expires_at",
        description="Idempotency keys of sends and the message they stored; expire by TTL.",
    ),
    TableSpec(
        suffix="media",
        hash_key="media_id",
        attributes=(("media_id", "S"), ("sha256", "S"), ("gc", "S"), ("created_at", "N")),
        indexes=(
            GlobalSecondaryIndex(name="by_sha", hash_key="sha256", projection="KEYS_ONLY"),
            GlobalSecondaryIndex(name="by_age", hash_key="gc", range_key="created_at"),
        ),
        description=(
            "One item per uploaded file: uploader, type, size, SHA-256, creation time, and "
            "one attribute per message carrying it, so a download's authorization is one "
            "GetItem. by_sha tells the garbage collector whether bytes are still used; "
            "by_age (sparse: files no message carries yet) what it may remove."
        ),
    ),
    TableSpec(
        suffix="streams",
        hash_key="stream_id",
        attributes=(("stream_id", "S"),),
        description=(
            "The 'clock' item: the commit clock every message timestamp comes from, the "
            "unfinished reservations, the aborted ones, and the shared cache's epoch."
        ),
    ),
)


def get_table_spec(suffix: str) -> TableSpec:
    """The spec in :data:`TABLES` whose suffix is ``suffix``."""
    for spec in TABLES:
        if spec.suffix == suffix:
            return spec
    raise KeyError(suffix)


def table_name(prefix: str, spec: TableSpec) -> str:
    """The physical table name: ``prefix`` followed by the spec's suffix.

    Raises ``ValueError`` when the result is not a valid DynamoDB table name.
    """
    name = f"{prefix}{spec.suffix}"
    if not _NAME_PART.match(name) or not _MIN_TABLE_NAME <= len(name) <= _MAX_TABLE_NAME:
        raise ValueError(f"invalid DynamoDB table name {name!r} (prefix {prefix!r})")
    return name


def table_names(prefix: str, tables: tuple[TableSpec, ...] = TABLES) -> dict[str, str]:
    """Suffix -> physical name, for every table."""
    return {spec.suffix: table_name(prefix, spec) for spec in tables}


def _throughput(read_capacity: int, write_capacity: int) -> dict[str, int]:
    return {"ReadCapacityUnits": read_capacity, "WriteCapacityUnits": write_capacity}


def _key_schema(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key is not None:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return schema


def create_table_kwargs(
    spec: TableSpec,
    prefix: str,
    *,
    billing_mode: BillingMode = "PAY_PER_REQUEST",
    read_capacity: int | None = None,
    write_capacity: int | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Keyword arguments for boto3's ``DynamoDB.Client.create_table`` for ``spec``.

    With ``PROVISIONED``, ``read_capacity`` and ``write_capacity`` (both >= 1) apply to the
    table and to each of its indexes. With ``PAY_PER_REQUEST`` they must be left out.
    """
    if billing_mode not in BILLING_MODES:
        raise ValueError(f"billing_mode must be one of {BILLING_MODES}, not {billing_mode!r}")
    throughput: dict[str, int] | None = None
    if billing_mode == "PROVISIONED":
        if read_capacity is None or write_capacity is None:
            raise ValueError("PROVISIONED needs read_capacity and write_capacity")
        if read_capacity < 1 or write_capacity < 1:
            raise ValueError("capacities must be at least 1")
        throughput = _throughput(read_capacity, write_capacity)
    elif read_capacity is not None or write_capacity is not None:
        raise ValueError("capacities apply only to PROVISIONED billing")

    kwargs: dict[str, object] = {
        "TableName": table_name(prefix, spec),
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": kind} for name, kind in spec.attributes
        ],
        "KeySchema": _key_schema(spec.hash_key, spec.range_key),
        "BillingMode": billing_mode,
    }
    if throughput is not None:
        kwargs["ProvisionedThroughput"] = dict(throughput)
    if spec.indexes:
        indexes: list[dict[str, object]] = []
        for index in spec.indexes:
            projection: dict[str, object] = {"ProjectionType": index.projection}
            if index.non_key_attributes:
                projection["NonKeyAttributes"] = list(index.non_key_attributes)
            entry: dict[str, object] = {
                "IndexName": index.name,
                "KeySchema": _key_schema(index.hash_key, index.range_key),
                "Projection": projection,
            }
            if throughput is not None:
                entry["ProvisionedThroughput"] = dict(throughput)
            indexes.append(entry)
        kwargs["GlobalSecondaryIndexes"] = indexes
    if tags:
        kwargs["Tags"] = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]
    return kwargs


def time_to_live_kwargs(spec: TableSpec, prefix: str) -> dict[str, object] | None:
    """Keyword arguments for ``update_time_to_live``, or None if the table has no TTL."""
    if spec.ttl_attribute is None:
        return None
    return {
        "TableName": table_name(prefix, spec),
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": spec.ttl_attribute},
    }
