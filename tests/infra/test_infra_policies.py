"""The IAM documents and the checker that keeps the task role least-privilege.

These tests need no Pulumi: the documents are built from plain strings. The checker is shown
to reject every way of widening the task policy, so the stack test that runs it on the
deployed document would fail if the program ever granted more.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from parley_infra.policies import (
    DYNAMODB_ACTIONS,
    assume_role_policy,
    execution_policy,
    media_policy,
    task_policy,
    task_policy_violations,
)

ARNS = [
    "arn:aws:dynamodb:eu-west-1:mock-account:table/parley-t-users",
    "arn:aws:dynamodb:eu-west-1:mock-account:table/parley-t-messages",
]


def _statement(document: dict[str, Any]) -> dict[str, Any]:
    statements = document["Statement"]
    assert isinstance(statements, list)
    first = statements[0]
    assert isinstance(first, dict)
    return first


def test_task_policy_is_exactly_the_tables_and_their_indexes() -> None:
    document = task_policy(ARNS)
    assert task_policy_violations(document, ARNS) == []
    statement = _statement(document)
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == [
        ARNS[0],
        f"{ARNS[0]}/index/*",
        ARNS[1],
        f"{ARNS[1]}/index/*",
    ]
    assert sorted(statement["Action"]) == sorted(DYNAMODB_ACTIONS)


def test_task_policy_actions_are_the_ones_parley_calls() -> None:
    assert set(DYNAMODB_ACTIONS) == {
        f"dynamodb:{name}"
        for name in (
            "GetItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "Query",
            "BatchGetItem",
            "BatchWriteItem",
            "TransactWriteItems",
            "ConditionCheckItem",
            "DescribeTable",
        )
    }
    for action in DYNAMODB_ACTIONS:
        assert "*" not in action
    # Nothing that reads or drops whole tables.
    assert not {"dynamodb:Scan", "dynamodb:DeleteTable", "dynamodb:CreateTable"} & set(
        DYNAMODB_ACTIONS
    )


@pytest.mark.parametrize(
    "bad_arn",
    [
        "*",
        "arn:aws:dynamodb:eu-west-1:mock-account:table/*",
        "arn:aws:dynamodb:*:*:table/parley-users",
        "arn:aws:dynamodb:eu-west-1:mock-account:table/parley-?sers",
        "arn:aws:s3:::bucket",
        "",
    ],
)
def test_task_policy_refuses_widened_inputs(bad_arn: str) -> None:
    with pytest.raises(ValueError):
        task_policy([*ARNS, bad_arn])


def test_task_policy_needs_a_table() -> None:
    with pytest.raises(ValueError):
        task_policy([])


Mutation = Callable[[dict[str, Any]], None]


def _set_resource_star(document: dict[str, Any]) -> None:
    _statement(document)["Resource"] = "*"


def _add_resource_star(document: dict[str, Any]) -> None:
    _statement(document)["Resource"].append("*")


def _all_tables(document: dict[str, Any]) -> None:
    _statement(document)["Resource"].append("arn:aws:dynamodb:eu-west-1:mock-account:table/*")


def _other_table(document: dict[str, Any]) -> None:
    _statement(document)["Resource"].append(
        "arn:aws:dynamodb:eu-west-1:mock-account:table/someone-elses"
    )


def _dynamodb_star(document: dict[str, Any]) -> None:
    _statement(document)["Action"] = ["dynamodb:*"]


def _action_star(document: dict[str, Any]) -> None:
    _statement(document)["Action"] = "*"


def _action_prefix_star(document: dict[str, Any]) -> None:
    _statement(document)["Action"].append("dynamodb:Get*")


def _scan(document: dict[str, Any]) -> None:
    _statement(document)["Action"].append("dynamodb:Scan")


def _delete_table(document: dict[str, Any]) -> None:
    _statement(document)["Action"].append("dynamodb:DeleteTable")


def _not_resource(document: dict[str, Any]) -> None:
    statement = _statement(document)
    statement["NotResource"] = statement.pop("Resource")


def _not_action(document: dict[str, Any]) -> None:
    statement = _statement(document)
    statement["NotAction"] = ["dynamodb:DeleteTable"]
    del statement["Action"]


def _extra_statement(document: dict[str, Any]) -> None:
    document["Statement"].append({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})


def _drop_index_resources(document: dict[str, Any]) -> None:
    statement = _statement(document)
    statement["Resource"] = [r for r in statement["Resource"] if not r.endswith("/index/*")]


MUTATIONS: dict[str, Mutation] = {
    "resource is *": _set_resource_star,
    "resource list has *": _add_resource_star,
    "every table": _all_tables,
    "another table": _other_table,
    "dynamodb:*": _dynamodb_star,
    "action *": _action_star,
    "action prefix wildcard": _action_prefix_star,
    "Scan": _scan,
    "DeleteTable": _delete_table,
    "NotResource": _not_resource,
    "NotAction": _not_action,
    "extra statement": _extra_statement,
    "indexes missing": _drop_index_resources,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=list(MUTATIONS))
def test_checker_rejects_widened_documents(mutation: str) -> None:
    document = copy.deepcopy(task_policy(ARNS))
    MUTATIONS[mutation](document)
    problems = task_policy_violations(document, ARNS)
    assert problems, f"{mutation}: the checker let a widened policy through"


def test_checker_reports_the_wildcard() -> None:
    document = copy.deepcopy(task_policy(ARNS))
    _set_resource_star(document)
    _dynamodb_star(document)
    problems = task_policy_violations(document, ARNS)
    assert any("wildcard action 'dynamodb:*'" in p for p in problems)
    assert any("resource '*'" in p for p in problems)


SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:mock-account:secret:parley-key-AbC123"


def _execution(secret_arn: str = SECRET_ARN) -> dict[str, Any]:
    return execution_policy(
        "arn:aws:ecr:eu-west-1:mock-account:repository/parley",
        "arn:aws:logs:eu-west-1:mock-account:log-group:parley",
        secret_arn,
    )


def test_execution_policy_star_is_only_the_registry_login() -> None:
    document = _execution()
    statements = document["Statement"]
    assert isinstance(statements, list)
    on_star = [s for s in statements if s["Resource"] == "*"]
    assert on_star == [
        {
            "Sid": "EcrLogin",
            "Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken"],
            "Resource": "*",
        }
    ]
    for statement in statements:
        for action in statement["Action"]:
            assert "*" not in action
    logs = next(s for s in statements if s["Sid"] == "Logs")
    assert logs["Resource"] == ["arn:aws:logs:eu-west-1:mock-account:log-group:parley:log-stream:*"]


def test_execution_role_reads_exactly_one_secret() -> None:
    statements = _execution()["Statement"]
    assert isinstance(statements, list)
    secret = [s for s in statements if any("secretsmanager" in a for a in s["Action"])]
    assert secret == [
        {
            "Sid": "SecretKey",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [SECRET_ARN],
        }
    ]


@pytest.mark.parametrize(
    "widened",
    [
        "*",
        "arn:aws:secretsmanager:eu-west-1:mock-account:secret:*",
        "arn:aws:secretsmanager:eu-west-1:mock-account:secret:parley-?",
        "arn:aws:secretsmanager:eu-west-1:*:secret:parley-key-AbC123",
        "arn:aws:ssm:eu-west-1:mock-account:parameter/parley",
    ],
)
def test_execution_policy_refuses_a_wider_secret_resource(widened: str) -> None:
    with pytest.raises(ValueError, match="secret ARN"):
        _execution(widened)


def test_assume_role_is_ecs_tasks_only() -> None:
    document = assume_role_policy()
    assert document["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


def test_media_policy_is_the_prefix_and_the_bucket_only() -> None:
    arn = "arn:aws:s3:::parley-media-abc123"
    document = media_policy(arn)
    objects, listing = document["Statement"]  # type: ignore[misc]
    assert objects["Resource"] == [f"{arn}/media/*"]
    assert set(objects["Action"]) == {
        "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"
    }  # fmt: skip
    assert listing["Action"] == ["s3:ListBucket"] and listing["Resource"] == [arn]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["media/*"]}}


@pytest.mark.parametrize(
    "bad",
    ["*", "arn:aws:s3:::*", "arn:aws:s3:::bucket/*", "arn:aws:dynamodb:eu-west-1:1:table/t", ""],
)
def test_media_policy_refuses_widened_inputs(bad: str) -> None:
    with pytest.raises(ValueError):
        media_policy(bad)
    with pytest.raises(ValueError):
        media_policy("arn:aws:s3:::parley-media", prefix="*")
