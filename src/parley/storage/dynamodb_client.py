"""A narrow, counted face of aiobotocore's DynamoDB client.

aiobotocore has no type information of its own, so the DynamoDB adapter never touches it
directly: it calls :meth:`DynamoClient.call` with an operation name and botocore's keyword
arguments and gets botocore's response dict back. This module is the only place that
knows about botocore's exceptions:

    ConditionalCheckFailedException     -> ConditionFailed (carries the item, if returned)
    throttling, 5xx, network, timeouts  -> parley.errors.Unavailable (retry_after 1)
    missing table                       -> Unavailable ("run parley migrate")
    anything else                       -> Unavailable, logged with its code

Every call is counted by operation in :attr:`Usage.calls`, and the capacity DynamoDB says it
consumed (``ReturnConsumedCapacity=INDEXES``) in :attr:`Usage.read_units` and
:attr:`Usage.write_units` — the figures ``docs/dynamodb.md`` reports per Parley operation.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from parley.errors import Unavailable

log = logging.getLogger("parley.storage.dynamodb")

READS = frozenset({"get_item", "query", "batch_get_item"})
WRITES = frozenset(
    {"put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items"}
)
THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)

# Codes the adapter expects and handles itself (not worth an error log).
EXPECTED = frozenset(
    {"ResourceInUseException", "ResourceNotFoundException", "TransactionCanceledException"}
)


class DynamoUnavailable(Unavailable):
    """Unavailable, with DynamoDB's error code (``ResourceInUseException``, ...) if any."""

    def __init__(self, message: str, aws_code: str = "") -> None:
        super().__init__(message)
        self.aws_code = aws_code


class ConditionFailed(Exception):
    """A conditional write did not apply; ``item`` is the item as it was, when returned."""

    def __init__(self, item: dict[str, Any] | None) -> None:
        super().__init__("condition failed")
        self.item = item


@dataclass
class Usage:
    """What this client asked of DynamoDB: calls, and capacity units DynamoDB reported."""

    calls: Counter[str] = field(default_factory=Counter)
    read_units: dict[str, float] = field(default_factory=dict)
    write_units: dict[str, float] = field(default_factory=dict)

    def snapshot(self) -> tuple[dict[str, int], float, float]:
        return dict(self.calls), sum(self.read_units.values()), sum(self.write_units.values())

    def record(self, operation: str, consumed: Any) -> None:
        self.calls[operation] += 1
        entries = consumed if isinstance(consumed, list) else [consumed] if consumed else []
        units = sum(float(entry.get("CapacityUnits", 0.0)) for entry in entries)
        if not units:
            return
        bucket = self.read_units if operation in READS else self.write_units
        bucket[operation] = bucket.get(operation, 0.0) + units


_sessions: list[Any] = []


def _session() -> Any:
    """One aiobotocore session per process: it loads DynamoDB's API model once."""
    if not _sessions:
        from aiobotocore.session import get_session

        _sessions.append(get_session())
    return _sessions[0]


class DynamoClient:
    """One aiobotocore client, opened and closed with the adapter."""

    def __init__(
        self,
        *,
        endpoint: str | None,
        region: str | None,
        timeout: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        self.endpoint = endpoint
        self.region = region
        self.timeout = timeout
        self.max_connections = max_connections
        self.usage = Usage()
        self._context: Any = None
        self._client: Any = None

    async def open(self) -> None:
        from aiobotocore.config import AioConfig

        session = _session()
        region = self.region or session.get_config_variable("region")
        if not region:
            if self.endpoint is None:
                raise Unavailable("no AWS region configured: set AWS_REGION")
            region = "us-east-1"  # a local endpoint ignores it
        config = AioConfig(
            connect_timeout=min(self.timeout, 2.0),
            read_timeout=self.timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=self.max_connections,
        )
        self._context = session.create_client(
            "dynamodb", region_name=region, endpoint_url=self.endpoint, config=config
        )
        try:
            self._client = await self._context.__aenter__()
        except Exception as exc:
            self._context = None
            raise Unavailable(f"DynamoDB client could not start: {exc}") from exc

    async def close(self) -> None:
        context, self._context, self._client = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """Run one DynamoDB API call (botocore's snake_case name) and return its response."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            raise Unavailable("storage is not open")
        if operation in READS or operation in WRITES:
            kwargs.setdefault("ReturnConsumedCapacity", "INDEXES")
        try:
            response: dict[str, Any] = await getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            self.usage.record(operation, None)
            if code == "ConditionalCheckFailedException":
                raise ConditionFailed(exc.response.get("Item")) from None
            if code == "ResourceNotFoundException" and operation != "describe_table":
                log.error("dynamodb %s: %s", operation, error.get("Message"))
                raise DynamoUnavailable("DynamoDB table missing: run parley migrate", code) from exc
            if code in THROTTLED:
                log.warning("dynamodb %s throttled or failed: %s", operation, code)
            elif code not in EXPECTED:
                log.error("dynamodb %s failed: %s %s", operation, code, error.get("Message"))
            raise DynamoUnavailable("storage unavailable", code) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            self.usage.record(operation, None)
            log.error("dynamodb %s failed: %s", operation, exc)
            raise DynamoUnavailable("storage unavailable") from exc
        except Exception as exc:  # aiohttp's errors, if one escapes aiobotocore's wrapping
            if type(exc).__module__.split(".")[0] != "aiohttp":
                raise
            self.usage.record(operation, None)
            log.error("dynamodb %s failed: %s", operation, exc)
            raise DynamoUnavailable("storage unavailable") from exc
        self.usage.record(operation, response.get("ConsumedCapacity"))
        return response
