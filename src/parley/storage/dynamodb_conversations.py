"""Conversations on DynamoDB: history, unread counts, read markers (mixed into
``DynamoStorage``).

* A group's history is its stream in ``messages`` (strongly consistent Query, newest first).
* A private conversation is two directions, each one key of the sparse ``by_pair`` index
  (the receiver's item of a private message carries ``pair``): a history page is two
  Queries, whatever else either user has. Global secondary indexes are eventually
  consistent: a message sent a moment ago may be missing from the newest page for the
  index's propagation delay (typically well under a second); older pages are complete.
* ``conversations`` holds per user ``p#<peer>`` items (the private conversations it has;
  written in the send's own BatchWriteItem the first time a process sees the pair) and
  ``r#<conversation>`` read markers, each moved by one UpdateItem with a condition on the
  stored value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from parley.domain.models import Message
from parley.storage.base import Conversation
from parley.storage.dynamodb_client import ConditionFailed, DynamoClient
from parley.storage.dynamodb_clock import ClockState
from parley.storage.dynamodb_items import (
    Item,
    pair_key,
    parse_message,
    s,
    ts_ceiling,
    ts_floor,
    ts_prefix,
)

PEER = "p#"
READ = "r#"
BATCH_GET_MAX = 100  # keys per BatchGetItem (DynamoDB's limit)


def peer_items(pairs: Sequence[tuple[str, str]]) -> list[Item]:
    """The ``conversations`` items recording private messages given as (sender, recipient)."""
    rows = {(a, b) for a, b in pairs} | {(b, a) for a, b in pairs}
    return [{"user_id": s(u), "conversation": s(PEER + p)} for u, p in sorted(rows)]


def _directions(conv: Conversation) -> list[str]:
    keys = [pair_key(conv.user_id, conv.other), pair_key(conv.other, conv.user_id)]
    return list(dict.fromkeys(keys))


class DynamoConversations:
    """Needs the adapter's ``client``, ``tables``, ``_query``, ``_ready``, ``_frontier``
    and ``_aborted``."""

    client: DynamoClient
    tables: dict[str, str]
    _query: Callable[..., Awaitable[list[Item]]]
    _ready: Callable[[], None]
    _frontier: Callable[[], Awaitable[ClockState]]
    _aborted: set[int]

    async def _history_frontier(self) -> int:
        return (await self._frontier()).frontier

    async def _newest(self, below: int, limit: int, **key: Any) -> list[Message]:
        """Up to ``limit`` shown messages under one key with ts < below, newest first."""
        rows: list[Message] = []
        start: Item | None = None
        for _ in range(1_000):
            extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = await self.client.call(
                "query",
                ScanIndexForward=False,
                Limit=limit - len(rows),
                **key,
                **extra,
            )
            rows += [
                m
                for m in map(parse_message, response.get("Items", []))
                if m.ts < below and m.ts not in self._aborted
            ]
            start = response.get("LastEvaluatedKey")
            if start is None or len(rows) >= limit:
                break
        return rows

    def _keys(self, conv: Conversation, condition: str, values: dict[str, Any]) -> list[Item]:
        """Query arguments for each index range of the conversation."""
        if conv.type == "group":
            return [
                {
                    "TableName": self.tables["messages"],
                    "KeyConditionExpression": f"recipient_id = :k AND {condition}",
                    "ExpressionAttributeValues": {":k": s(conv.other), **values},
                    "ConsistentRead": True,
                }
            ]
        return [
            {
                "TableName": self.tables["messages"],
                "IndexName": "by_pair",
                "KeyConditionExpression": f"pair = :k AND {condition}",
                "ExpressionAttributeValues": {":k": s(key), **values},
            }
            for key in _directions(conv)
        ]

    async def _history_rows(self, conv: Conversation, below: int, limit: int) -> list[Message]:
        self._ready()
        keys = self._keys(conv, "sk < :hi", {":hi": s(ts_floor(below))})
        parts = await asyncio.gather(*(self._newest(below, limit, **key) for key in keys))
        merged = {m.id: m for part in parts for m in part}
        ordered = sorted(merged.values(), key=lambda m: (m.ts, m.seq, m.id), reverse=True)
        return ordered[:limit]

    async def _history_at(self, conv: Conversation, ts: int) -> list[Message]:
        self._ready()
        keys = self._keys(conv, "begins_with(sk, :p)", {":p": s(ts_prefix(ts))})
        rows: dict[str, Message] = {}
        for key in keys:
            table = key.pop("TableName")
            for item in await self._query_table(table, key):
                message = parse_message(item)
                rows.setdefault(message.id, message)
        return sorted(rows.values(), key=lambda m: (m.seq, m.id))

    async def _query_table(self, table: str, key: Item) -> list[Item]:
        items: list[Item] = []
        start: Item | None = None
        for _ in range(1_000):
            extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = await self.client.call("query", TableName=table, **key, **extra)
            items += response.get("Items", [])
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        return items

    async def unread_count(self, conv: Conversation, after: int, cap: int) -> int:
        self._ready()
        values: dict[str, Any] = {":lo": s(ts_ceiling(after))}
        if conv.type == "private":
            if conv.other == conv.user_id:
                return 0
            key = self._keys(conv, "sk > :lo", values)[0]  # the peer -> user direction
            key["FilterExpression"] = "attribute_not_exists(#del)"
        else:
            key = self._keys(conv, "sk > :lo", values)[0]
            key["FilterExpression"] = "sender_id <> :me AND attribute_not_exists(#del)"
            key["ExpressionAttributeValues"][":me"] = s(conv.user_id)
        key["ExpressionAttributeNames"] = {"#del": "deleted"}
        count = 0
        start: Item | None = None
        for _ in range(1_000):
            extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = await self.client.call(
                "query", Select="COUNT", Limit=cap + 1, **key, **extra
            )
            count += int(response.get("Count", 0))
            start = response.get("LastEvaluatedKey")
            if start is None or count >= cap:
                break
        return min(count, cap)

    async def private_peers(self, user_id: str) -> list[str]:
        items = await self._query(
            "conversations",
            KeyConditionExpression="user_id = :u AND begins_with(conversation, :p)",
            ExpressionAttributeValues={":u": s(user_id), ":p": s(PEER)},
            ConsistentRead=True,
        )
        return sorted(item["conversation"]["S"][len(PEER) :] for item in items)

    async def mark_read(self, user_id: str, conversation_id: str, ts: int) -> tuple[bool, int]:
        self._ready()
        try:
            await self.client.call(
                "update_item",
                TableName=self.tables["conversations"],
                Key={"user_id": s(user_id), "conversation": s(READ + conversation_id)},
                UpdateExpression="SET #ts = :t",
                ConditionExpression="attribute_not_exists(#ts) OR #ts < :t",
                ExpressionAttributeNames={"#ts": "ts"},
                ExpressionAttributeValues={":t": {"N": str(ts)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ConditionFailed as failed:
            stored = failed.item["ts"]["N"] if failed.item and "ts" in failed.item else ts
            return False, int(stored)
        return True, ts

    async def _markers(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Read markers by (user, conversation id), in BatchGetItem calls."""
        self._ready()
        table = self.tables["conversations"]
        found: dict[tuple[str, str], int] = {}
        for start in range(0, len(keys), BATCH_GET_MAX):
            chunk = keys[start : start + BATCH_GET_MAX]
            request: dict[str, Any] = {
                table: {
                    "Keys": [{"user_id": s(u), "conversation": s(READ + c)} for u, c in chunk],
                    "ConsistentRead": True,
                }
            }
            for attempt in range(8):
                response = await self.client.call("batch_get_item", RequestItems=request)
                for item in response.get("Responses", {}).get(table, []):
                    conversation = item["conversation"]["S"][len(READ) :]
                    found[(item["user_id"]["S"], conversation)] = int(item["ts"]["N"])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                await asyncio.sleep(0.01 * 2**attempt)
        return found

    async def read_markers(self, user_id: str, conversation_ids: Sequence[str]) -> dict[str, int]:
        found = await self._markers([(user_id, c) for c in dict.fromkeys(conversation_ids)])
        return {c: ts for (_, c), ts in found.items()}

    async def peer_read_markers(self, user_id: str, peers: Sequence[str]) -> dict[str, int]:
        found = await self._markers([(p, user_id) for p in dict.fromkeys(peers)])
        return {p: ts for (p, _), ts in found.items()}
