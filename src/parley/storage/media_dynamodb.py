"""Media records in DynamoDB: the ``media`` table (``dynamodb_tables``).

Per media id: the record item (``sk = "record"``) and one item per message carrying the
file (``sk = "ref#" + message id``). Requests: an upload is one PutItem; a send with
attachments one BatchWriteItem (up to 10 refs) on top of the message's writes, plus one
GetItem per attachment to check its uploader; a download one strongly consistent Query
(record and refs together) plus the membership reads of group refs. The garbage collector
Scans the table and Queries the ``by_sha`` index once per blob it considers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from parley.domain.models import MediaRecord, MediaRef, MessageType
from parley.storage.dynamodb_client import ConditionFailed, DynamoClient
from parley.storage.dynamodb_items import Item, n, s
from parley.storage.media_port import MediaPort

RECORD = "record"
REF = "ref#"


def _record_item(record: MediaRecord) -> Item:
    return {
        "media_id": s(record.id),
        "sk": s(RECORD),
        "uploader_id": s(record.uploader_id),
        "content_type": s(record.content_type),
        "size": n(record.size),
        "sha256": s(record.sha256),
        "created_at": n(record.created_at),
    }


def _parse_record(item: Item) -> MediaRecord:
    return MediaRecord(
        item["media_id"]["S"],
        item["uploader_id"]["S"],
        item["content_type"]["S"],
        int(item["size"]["N"]),
        item["sha256"]["S"],
        int(item["created_at"]["N"]),
    )


def _ref_item(ref: MediaRef) -> Item:
    return {
        "media_id": s(ref.media_id),
        "sk": s(REF + ref.message_id),
        "type": s(ref.type),
        "sender_id": s(ref.sender_id),
        "recipient_id": s(ref.recipient_id),
    }


def _parse_ref(item: Item) -> MediaRef:
    kind: MessageType = "private" if item["type"]["S"] == "private" else "group"
    return MediaRef(
        item["media_id"]["S"],
        item["sk"]["S"][len(REF) :],
        kind,
        item["sender_id"]["S"],
        item["recipient_id"]["S"],
    )


class DynamoMedia(MediaPort):
    """Needs the adapter's ``client``, ``tables``, ``_get``, ``_query``, ``_write_items``."""

    client: DynamoClient
    tables: dict[str, str]
    _get: Callable[[str, Item], Awaitable[Item | None]]
    _query: Callable[..., Awaitable[list[Item]]]
    _write_items: Callable[[Sequence[tuple[str, Item]]], Awaitable[None]]
    _ready: Callable[[], None]

    async def add_media(self, record: MediaRecord) -> None:
        await self._write_items([("media", _record_item(record))])

    async def get_media(self, media_id: str) -> MediaRecord | None:
        item = await self._get("media", {"media_id": s(media_id), "sk": s(RECORD)})
        return _parse_record(item) if item else None

    async def add_media_refs(self, refs: Sequence[MediaRef]) -> None:
        if refs:
            await self._write_items([("media", _ref_item(r)) for r in refs])

    async def media_refs(self, media_id: str) -> list[MediaRef]:
        items = await self._query(
            "media",
            KeyConditionExpression="media_id = :m AND begins_with(sk, :r)",
            ExpressionAttributeValues={":m": s(media_id), ":r": s(REF)},
            ConsistentRead=True,
        )
        return [_parse_ref(i) for i in items]

    async def _scan_media(self) -> dict[str, list[Item]]:
        """Every item of the table, by media id (the garbage collector's pass)."""
        self._ready()
        found: dict[str, list[Item]] = {}
        start: Item | None = None
        for _ in range(100_000):
            extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            page = await self.client.call(
                "scan", TableName=self.tables["media"], ConsistentRead=True, **extra
            )
            for item in page.get("Items", []):
                found.setdefault(item["media_id"]["S"], []).append(item)
            start = page.get("LastEvaluatedKey")
            if start is None:
                break
        return found

    async def unreferenced_media(self, created_before: int, limit: int) -> list[MediaRecord]:
        records = []
        for items in (await self._scan_media()).values():
            kinds = [i["sk"]["S"] for i in items]
            if RECORD in kinds and not any(k.startswith(REF) for k in kinds):
                record = _parse_record(items[kinds.index(RECORD)])
                if record.created_at < created_before:
                    records.append(record)
        return sorted(records, key=lambda r: r.created_at)[:limit]

    async def delete_media(self, media_id: str) -> bool:
        if await self.media_refs(media_id):
            return False
        try:
            await self.client.call(
                "delete_item",
                TableName=self.tables["media"],
                Key={"media_id": s(media_id), "sk": s(RECORD)},
                ConditionExpression="attribute_exists(media_id)",
            )
        except ConditionFailed:
            return False
        return True

    async def media_with_sha(self, sha256: str) -> bool:
        items = await self._query(
            "media",
            limit=1,
            IndexName="by_sha",
            KeyConditionExpression="sha256 = :h",
            ExpressionAttributeValues={":h": s(sha256)},
        )
        return bool(items)
