"""Bytes of storage per stored message, per deployment shape.

- PostgreSQL: ``pg_total_relation_size`` of the ``messages`` table (its heap, TOAST and every
  index on it: by recipient, by pair, sent, send key, by timestamp, the id and the primary
  key) in the run's schema, divided by its rows. Nothing else is kept per message: peers
  are kept per conversation, change events per edit or delete.
- SQLite: the pages of the ``messages`` table and its indexes from the ``dbstat`` virtual
  table, divided by the rows; where SQLite lacks ``dbstat``, the whole file's used pages
  ((page_count - freelist_count) x page_size), an upper bound (it holds every other table).
- DynamoDB: the items a send writes (``message_items`` and the locator, as the adapter
  builds them), sized by DynamoDB's published rules: attribute names' UTF-8 bytes plus
  values' sizes plus 100 bytes per item, and again per global secondary index entry (the
  receiver's item of a private message is also in ``by_pair``, which projects every
  attribute). A private and a group message are weighted by the workload's share of group
  sends.
"""

from __future__ import annotations

import math
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from parley.domain.models import Message, new_id
from parley.storage.dynamodb_items import locator_item, message_items

__all__ = [
    "GROUP_SEND_SHARE",
    "ITEM_OVERHEAD",
    "attribute_bytes",
    "dynamodb_message_bytes",
    "item_bytes",
    "postgres_stored_bytes",
    "sqlite_stored_bytes",
]

ITEM_OVERHEAD = 100  # bytes DynamoDB counts per item and per index entry
GROUP_SEND_SHARE = 0.5  # the workload's share of sends addressed to a group
BY_PAIR = "pair"  # the attribute that puts a message item in the by_pair index (ALL)


def _number_bytes(text: str) -> int:
    """A number: 1 byte per two significant digits, plus 1 (DynamoDB's rule)."""
    digits = Decimal(text).normalize().as_tuple().digits
    significant = len(digits) or 1
    return math.ceil(significant / 2) + 1


def attribute_bytes(value: dict[str, Any]) -> int:
    """The size of one attribute value in DynamoDB's wire form (``{"S": ...}``, ...)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return _number_bytes(str(inner))
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":  # 3 bytes, plus 1 per element and its size
        return 3 + sum(1 + attribute_bytes(v) for v in inner)
    if kind == "M":  # 3 bytes, plus 1 per element, its name and its size
        return 3 + sum(1 + len(k.encode()) + attribute_bytes(v) for k, v in inner.items())
    if kind in ("SS", "NS", "BS"):
        part = {"SS": "S", "NS": "N", "BS": "B"}[kind]
        return sum(attribute_bytes({part: v}) for v in inner)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_bytes(item: dict[str, dict[str, Any]]) -> int:
    """An item's stored size: names and values, plus the per-item overhead."""
    return ITEM_OVERHEAD + sum(len(k.encode()) + attribute_bytes(v) for k, v in item.items())


def message_items_bytes(message: Message) -> int:
    """Everything one message stores in the messages table and its index."""
    items = [*message_items(message), locator_item(message, None)]
    return sum(item_bytes(i) * (2 if BY_PAIR in i else 1) for i in items)


TYPICAL_TS = 1_796_196_616_259


def dynamodb_message_bytes(
    body_length: int, group_share: float = GROUP_SEND_SHARE
) -> dict[str, float]:
    """Stored bytes of a private and of a group message with a body of ``body_length``
    characters, as the adapter builds their items, and their weighted mean."""
    body = "x" * max(1, body_length)
    # A millisecond timestamp of this era with no trailing zero (13 significant digits, as
    # nine in ten are): the same size on every call (a number's size follows its digits).
    ts = TYPICAL_TS
    private = Message(new_id("m_"), "private", new_id("u_"), new_id("u_"), body, ts, 3)
    group = Message(new_id("m_"), "group", new_id("u_"), new_id("g_"), body, ts, 3)
    p, g = message_items_bytes(private), message_items_bytes(group)
    return {
        "private": float(p),
        "group": float(g),
        "mean": round(p * (1 - group_share) + g * group_share, 1),
    }


async def postgres_stored_bytes(database_url: str, schema: str) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        table = f'"{schema}".messages'
        size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
        rows, body = await conn.fetchrow(f"SELECT count(*), avg(length(body)) FROM {table}")
    finally:
        await conn.close()
    return {
        "stored_bytes_per_message": round(size / rows, 1) if rows else None,
        "bytes": int(size),
        "messages": int(rows),
        "mean_body_chars": None if body is None else round(float(body), 1),
        "method": "pg_total_relation_size(messages) (heap, TOAST, every index) / rows",
    }


def sqlite_stored_bytes(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows, body = conn.execute("SELECT count(*), avg(length(body)) FROM messages").fetchone()
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE tbl_name = 'messages' "
                "AND type IN ('table', 'index')"
            )
        ]
        try:
            marks = ",".join("?" * len(names))
            size = conn.execute(
                f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})", names
            ).fetchone()[0]
            method = "dbstat: pages of messages and its indexes / rows"
        except sqlite3.OperationalError:  # built without dbstat
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            size = (pages - free) * page
            method = "(page_count - freelist_count) x page_size / rows: an upper bound"
    finally:
        conn.close()
    return {
        "stored_bytes_per_message": round(size / rows, 1) if rows else None,
        "bytes": int(size),
        "messages": int(rows),
        "mean_body_chars": None if body is None else round(float(body), 1),
        "method": method,
        "indexes": names,
    }


def dynamodb_stored_bytes(body_chars: float | None) -> dict[str, Any]:
    length = round(body_chars or 0) or len("bench message")
    sizes = dynamodb_message_bytes(length)
    return {
        "stored_bytes_per_message": sizes["mean"],
        "private_message_bytes": sizes["private"],
        "group_message_bytes": sizes["group"],
        "group_send_share": GROUP_SEND_SHARE,
        "body_chars": length,
        "method": (
            "DynamoDB item sizes (names + values + 100 B per item and per by_pair index "
            "entry) of message_items + locator_item as the adapter builds them; peers items "
            "(one per conversation) not counted"
        ),
    }
