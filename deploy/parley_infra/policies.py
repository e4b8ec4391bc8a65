"""IAM policy documents for the service, and a checker that proves they stay narrow.

Everything here is pure: documents are plain dicts built from resolved ARNs, so tests can
build them with any input and feed any document (including deliberately widened ones) to
:func:`task_policy_violations`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

PolicyDocument = dict[str, object]

POLICY_VERSION: Final = "2012-10-17"

# Exactly what Parley's DynamoDB adapter calls. Transactions are authorised per item by the
# item-level actions, which are all here as well.
DYNAMODB_ACTIONS: Final[tuple[str, ...]] = (
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:TransactWriteItems",
    "dynamodb:UpdateItem",
)

ECR_PULL_ACTIONS: Final[tuple[str, ...]] = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
)

LOG_ACTIONS: Final[tuple[str, ...]] = ("logs:CreateLogStream", "logs:PutLogEvents")

# ECS reads the secret key (PARLEY_SECRET_KEY) into the container at start. The secret is
# encrypted with the account's AWS-managed key, whose use needs no grant of its own.
SECRET_ACTIONS: Final[tuple[str, ...]] = ("secretsmanager:GetSecretValue",)
_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[^:*?]+:secret:[^*?]+$")

# Exactly what Parley's S3 blob store calls (media/s3.py): objects under its prefix, and
# listing the bucket (for `parley media gc`, and so a missing object is a 404, not a 403).
S3_OBJECT_ACTIONS: Final[tuple[str, ...]] = (
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:PutObject",
)
S3_BUCKET_ACTIONS: Final[tuple[str, ...]] = ("s3:ListBucket",)
MEDIA_PREFIX: Final = "media"
_BUCKET_ARN = re.compile(r"^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

_TABLE_ARN = re.compile(r"^arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:[^:*?]+:table/[A-Za-z0-9_.-]{3,255}$")
_WILDCARD = re.compile(r"[*?]")


def assume_role_policy(service: str = "ecs-tasks.amazonaws.com") -> PolicyDocument:
    """Trust policy letting an AWS service (by default ECS tasks) assume the role."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def _check_table_arn(arn: str) -> None:
    if not _TABLE_ARN.match(arn):
        raise ValueError(f"not a single DynamoDB table ARN: {arn!r}")


def table_resources(table_arns: Iterable[str]) -> list[str]:
    """Each table ARN followed by the ARN pattern of that table's indexes."""
    resources: list[str] = []
    for arn in table_arns:
        _check_table_arn(arn)
        resources.extend([arn, f"{arn}/index/*"])
    return resources


def task_policy(table_arns: Sequence[str]) -> PolicyDocument:
    """The task role's only permissions: Parley's DynamoDB calls on its own tables.

    Raises ``ValueError`` if any input is not one concrete table ARN (a ``*`` or a
    ``table/*`` pattern is refused), so the document cannot be widened through its inputs.
    """
    if not table_arns:
        raise ValueError("the task policy needs at least one table ARN")
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ParleyTables",
                "Effect": "Allow",
                "Action": list(DYNAMODB_ACTIONS),
                "Resource": table_resources(table_arns),
            }
        ],
    }


def media_policy(bucket_arn: str, prefix: str = MEDIA_PREFIX) -> PolicyDocument:
    """The task role's permissions on the uploaded files' bucket: its objects under
    ``prefix`` and listing that prefix. A pattern or another service's ARN is refused."""
    if not _BUCKET_ARN.match(bucket_arn):
        raise ValueError(f"not a single S3 bucket ARN: {bucket_arn!r}")
    if not prefix or _WILDCARD.search(prefix) or prefix.startswith("/"):
        raise ValueError(f"not a plain key prefix: {prefix!r}")
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ParleyMediaObjects",
                "Effect": "Allow",
                "Action": list(S3_OBJECT_ACTIONS),
                "Resource": [f"{bucket_arn}/{prefix}/*"],
            },
            {
                "Sid": "ParleyMediaList",
                "Effect": "Allow",
                "Action": list(S3_BUCKET_ACTIONS),
                "Resource": [bucket_arn],
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}},
            },
        ],
    }


def execution_policy(repository_arn: str, log_group_arn: str, secret_arn: str) -> PolicyDocument:
    """What ECS itself needs to start a task: pull the image, write its logs, and read the
    one secret the container gets (the server secret that signs stream tickets).

    ``ecr:GetAuthorizationToken`` has no resource-level permissions in AWS, so it is the one
    statement on ``*``; the pull actions are limited to the stack's repository, the log
    actions to the stack's log group, and the secret read to the stack's secret (a pattern
    or wildcard is refused, so no other secret of the account can be read).
    """
    if not _SECRET_ARN.match(secret_arn):
        raise ValueError(f"not a single Secrets Manager secret ARN: {secret_arn!r}")
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": "*",
            },
            {
                "Sid": "EcrPull",
                "Effect": "Allow",
                "Action": list(ECR_PULL_ACTIONS),
                "Resource": [repository_arn],
            },
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": list(LOG_ACTIONS),
                "Resource": [f"{log_group_arn}:log-stream:*"],
            },
            {
                "Sid": "SecretKey",
                "Effect": "Allow",
                "Action": list(SECRET_ACTIONS),
                "Resource": [secret_arn],
            },
        ],
    }


def _as_list(value: object) -> list[object]:
    if isinstance(value, list):
        return list(value)
    return [value]


def task_policy_violations(document: Mapping[str, object], table_arns: Sequence[str]) -> list[str]:
    """Every way ``document`` is wider than Parley's task policy may be; empty if none.

    Allowed: ``Allow`` statements whose actions are all in :data:`DYNAMODB_ACTIONS` and
    whose resources are exactly the given table ARNs or ``<table ARN>/index/*``. Also
    reported: tables the document does not cover (Parley would fail at run time).
    """
    problems: list[str] = []
    allowed_actions = set(DYNAMODB_ACTIONS)
    allowed_resources = set(table_arns) | {f"{arn}/index/*" for arn in table_arns}
    covered: set[str] = set()
    if document.get("Version") != POLICY_VERSION:
        problems.append(f"Version is {document.get('Version')!r}, not {POLICY_VERSION!r}")
    statements = document.get("Statement")
    if not isinstance(statements, list) or not statements:
        return [*problems, "no Statement list"]
    for position, statement in enumerate(statements):
        where = f"statement {position}"
        if not isinstance(statement, Mapping):
            problems.append(f"{where}: not an object")
            continue
        for key in ("NotAction", "NotResource", "NotPrincipal", "Principal"):
            if key in statement:
                problems.append(f"{where}: uses {key}")
        if statement.get("Effect") != "Allow":
            # A Deny only narrows; it is not a widening, but it is not expected either.
            problems.append(f"{where}: Effect is {statement.get('Effect')!r}")
        for action in _as_list(statement.get("Action")):
            if not isinstance(action, str):
                problems.append(f"{where}: action {action!r} is not a string")
            elif _WILDCARD.search(action):
                problems.append(f"{where}: wildcard action {action!r}")
            elif action not in allowed_actions:
                problems.append(f"{where}: action {action!r} is not one Parley needs")
        for resource in _as_list(statement.get("Resource")):
            if not isinstance(resource, str):
                problems.append(f"{where}: resource {resource!r} is not a string")
            elif resource not in allowed_resources:
                problems.append(f"{where}: resource {resource!r} is not one of Parley's tables")
            else:
                covered.add(resource)
    for arn in table_arns:
        if arn not in covered:
            problems.append(f"table {arn} is not covered")
        if f"{arn}/index/*" not in covered:
            problems.append(f"indexes of {arn} are not covered")
    return problems
