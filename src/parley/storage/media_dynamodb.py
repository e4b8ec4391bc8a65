"""Media records in DynamoDB: the ``media`` table (``dynamodb_tables``), one item per upload.

The item holds the record (``uploader_id``, ``content_type``, ``size``, ``sha256``,
``created_at``) and, as one attribute each, the messages carrying the file: ``r#<message
id>`` = ``<type> <sender id> <recipient id>``. While no message carries it, the item also
has ``gc = "unattached"``, which puts it in the sparse ``by_age`` index the garbage
collector reads; attaching the file removes ``gc`` in the same conditional UpdateItem that
adds the reference (conditional on the record existing), and the collector deletes an item
only on the condition that ``gc`` is still there. So a send and the collector can never
both win: either the send fails (400: the upload is gone) or the file stays.

Requests: an upload is one PutItem; each attachment of a send one GetItem (its uploader)
and one UpdateItem; a download one GetItem (the record and its references together) plus,
for group references, the membership reads the directory does not answer from memory. The
collector Queries ``by_age`` and ``by_sha``; it never Scans. An item holds at most 400 KB:
a file can be carried by some thousands of messages (a reference is under 300 bytes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from parley.domain.models import MediaRecord, MediaRef, MessageType
from parley.storage.dynamodb_client import ConditionFailed, DynamoClient
from parley.storage.dynamodb_items import Item, n, s
from parley.storage.media_port import MediaPort, gone

UNATTACHED = "unattached"
REF = "r#"


def _record_item(record: MediaRecord) -> Item:
    return {
        "media_id": s(record.id),
        "uploader_id": s(record.uploader_id),
        "content_type": s(record.content_type),
        "size": n(record.size),
        "sha256": s(record.sha256),
        "created_at": n(record.created_at),
        "gc": s(UNATTACHED),
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


def _parse_refs(item: Item) -> list[MediaRef]:
    refs = []
    for name, value in item.items():
        if not name.startswith(REF):
            continue
        kind_text, sender, recipient = value["S"].split(" ")
        kind: MessageType = "private" if kind_text == "private" else "group"
        refs.append(MediaRef(item["media_id"]["S"], name[len(REF) :], kind, sender, recipient))
    return refs


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
        item = await self._get("media", {"media_id": s(media_id)})
        return _parse_record(item) if item else None

    async def add_media_refs(self, refs: Sequence[MediaRef]) -> None:
        self._ready()
        for ref in refs:
            try:
                await self.client.call(
                    "update_item",
                    TableName=self.tables["media"],
                    Key={"media_id": s(ref.media_id)},
                    UpdateExpression="SET #r = :v REMOVE gc",
                    ConditionExpression="attribute_exists(media_id)",
                    ExpressionAttributeNames={"#r": REF + ref.message_id},
                    ExpressionAttributeValues={
                        ":v": s(f"{ref.type} {ref.sender_id} {ref.recipient_id}")
                    },
                )
            except ConditionFailed:
                raise gone(ref.media_id) from None

    async def media_refs(self, media_id: str) -> list[MediaRef]:
        item = await self._get("media", {"media_id": s(media_id)})
        return _parse_refs(item) if item else []

    async def media_and_refs(self, media_id: str) -> tuple[MediaRecord | None, list[MediaRef]]:
        item = await self._get("media", {"media_id": s(media_id)})
        return (_parse_record(item), _parse_refs(item)) if item else (None, [])

    async def unreferenced_media(self, created_before: int, limit: int) -> list[MediaRecord]:
        items = await self._query(
            "media",
            limit=limit,
            IndexName="by_age",
            KeyConditionExpression="gc = :g AND created_at < :c",
            ExpressionAttributeValues={":g": s(UNATTACHED), ":c": n(created_before)},
        )
        return [_parse_record(i) for i in items]

    async def delete_media(self, media_id: str) -> bool:
        self._ready()
        try:
            await self.client.call(
                "delete_item",
                TableName=self.tables["media"],
                Key={"media_id": s(media_id)},
                ConditionExpression="gc = :g",
                ExpressionAttributeValues={":g": s(UNATTACHED)},
            )
        except ConditionFailed:
            return False
        return True

    async def media_with_sha(self, sha256: str) -> bool:
        items: list[Any] = await self._query(
            "media",
            limit=1,
            IndexName="by_sha",
            KeyConditionExpression="sha256 = :h",
            ExpressionAttributeValues={":h": s(sha256)},
        )
        return bool(items)
