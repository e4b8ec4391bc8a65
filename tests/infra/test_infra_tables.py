"""The DynamoDB table specs: shapes, validation and boto3 create_table arguments."""

from __future__ import annotations

import pytest

from parley.storage.dynamodb_tables import (
    TABLES,
    GlobalSecondaryIndex,
    TableSpec,
    create_table_kwargs,
    get_table_spec,
    table_name,
    table_names,
    time_to_live_kwargs,
)

# suffix -> (hash key, range key, {index: (hash, range, projection)})
EXPECTED: dict[str, tuple[str, str | None, dict[str, tuple[str, str | None, str]]]] = {
    "users": ("user_id", None, {}),
    "tokens": ("user_id", "token_id", {}),
    "groups": ("group_id", None, {}),
    "members": ("user_id", "group_id", {"by_group": ("group_id", "user_id", "KEYS_ONLY")}),
    "blocks": ("blocker_id", "blocked_id", {}),
    "messages": ("recipient_id", "sk", {"by_pair": ("pair", "sk", "ALL")}),
    "conversations": ("user_id", "conversation", {}),
    "sends": ("send_key", None, {}),
    "media": (
        "media_id",
        None,
        {"by_sha": ("sha256", None, "KEYS_ONLY"), "by_age": ("gc", "created_at", "ALL")},
    ),
    "streams": ("stream_id", None, {}),
}


def test_every_table_is_described_once() -> None:
    suffixes = [spec.suffix for spec in TABLES]
    assert sorted(suffixes) == sorted(EXPECTED)
    assert len(set(suffixes)) == len(suffixes)


@pytest.mark.parametrize("suffix", sorted(EXPECTED))
def test_table_keys_and_indexes(suffix: str) -> None:
    hash_key, range_key, indexes = EXPECTED[suffix]
    spec = get_table_spec(suffix)
    assert (spec.hash_key, spec.range_key) == (hash_key, range_key)
    assert {i.name: (i.hash_key, i.range_key, i.projection) for i in spec.indexes} == indexes
    for attribute in spec.key_attributes:
        assert spec.attribute_type(attribute) == "S"


def test_specs_are_frozen() -> None:
    spec = get_table_spec("users")
    with pytest.raises(AttributeError):
        spec.hash_key = "other"  # type: ignore[misc]


def test_sends_expire_by_ttl() -> None:
    assert get_table_spec("sends").ttl_attribute == "expires_at"
    assert time_to_live_kwargs(get_table_spec("sends"), "p-") == {
        "TableName": "p-sends",
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expires_at"},
    }
    assert time_to_live_kwargs(get_table_spec("users"), "p-") is None


def test_table_names_use_the_prefix() -> None:
    assert table_name("parley-prod-", get_table_spec("messages")) == "parley-prod-messages"
    assert table_names("x_")["members"] == "x_members"
    with pytest.raises(ValueError):
        table_name("bad prefix/", get_table_spec("users"))
    with pytest.raises(ValueError):
        table_name("p" * 300, get_table_spec("users"))


def test_create_table_kwargs_on_demand() -> None:
    kwargs = create_table_kwargs(get_table_spec("tokens"), "parley-")
    assert kwargs == {
        "TableName": "parley-tokens",
        "AttributeDefinitions": [
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "token_id", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "user_id", "KeyType": "HASH"},
            {"AttributeName": "token_id", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    indexes = create_table_kwargs(get_table_spec("messages"), "parley-")["GlobalSecondaryIndexes"]
    assert indexes == [
        {
            "IndexName": "by_pair",
            "KeySchema": [
                {"AttributeName": "pair", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]


def test_create_table_kwargs_provisioned_covers_indexes() -> None:
    kwargs = create_table_kwargs(
        get_table_spec("members"),
        "p-",
        billing_mode="PROVISIONED",
        read_capacity=7,
        write_capacity=3,
        tags={"app": "parley"},
    )
    throughput = {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3}
    assert kwargs["BillingMode"] == "PROVISIONED"
    assert kwargs["ProvisionedThroughput"] == throughput
    indexes = kwargs["GlobalSecondaryIndexes"]
    assert isinstance(indexes, list)
    assert [index["ProvisionedThroughput"] for index in indexes] == [throughput]
    assert indexes[0]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert kwargs["Tags"] == [{"Key": "app", "Value": "parley"}]


def test_create_table_kwargs_for_every_table() -> None:
    for spec in TABLES:
        kwargs = create_table_kwargs(spec, "parley-")
        defined = {d["AttributeName"] for d in kwargs["AttributeDefinitions"]}  # type: ignore[attr-defined]
        keys = set(spec.key_attributes) | {a for i in spec.indexes for a in i.key_attributes}
        # DynamoDB rejects attribute definitions that no key uses, and keys without one.
        assert defined == keys


@pytest.mark.parametrize(
    ("billing", "read", "write"),
    [
        ("PROVISIONED", None, 5),
        ("PROVISIONED", 5, None),
        ("PROVISIONED", 0, 5),
        ("PAY_PER_REQUEST", 5, 5),
        ("SOMETIMES", None, None),
    ],
)
def test_create_table_kwargs_rejects_bad_capacity(
    billing: str, read: int | None, write: int | None
) -> None:
    with pytest.raises(ValueError):
        create_table_kwargs(
            get_table_spec("users"),
            "p-",
            billing_mode=billing,  # type: ignore[arg-type]
            read_capacity=read,
            write_capacity=write,
        )


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="without a type"):
        TableSpec(suffix="t", hash_key="a", attributes=())
    with pytest.raises(ValueError, match="not used"):
        TableSpec(suffix="t", hash_key="a", attributes=(("a", "S"), ("b", "S")))
    with pytest.raises(ValueError, match="twice"):
        TableSpec(suffix="t", hash_key="a", attributes=(("a", "S"), ("a", "N")))
    with pytest.raises(ValueError, match="without a type"):
        TableSpec(
            suffix="t",
            hash_key="a",
            attributes=(("a", "S"),),
            indexes=(GlobalSecondaryIndex(name="i", hash_key="b"),),
        )
    with pytest.raises(ValueError, match="INCLUDE"):
        GlobalSecondaryIndex(name="i", hash_key="b", projection="INCLUDE")
    with pytest.raises(ValueError, match="TTL"):
        TableSpec(suffix="t", hash_key="a", attributes=(("a", "S"),), ttl_attribute="a")
    with pytest.raises(KeyError):
        get_table_spec("nope")
