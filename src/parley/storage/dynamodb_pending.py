"""A group change's events on DynamoDB: stored with the change, never lost, never doubled.

A group change (``parley.storage.dynamodb_groups``) reserves a clock position ``t`` first,
then writes in **one** ``TransactWriteItems``: the change itself, its events' items at
``t`` (one per stream, as ``append_event`` writes them) and a **pending record**::

    messages table: recipient_id = "pending-events", sk = <group id>
                    ts = t, drafts = the events as JSON (their ids fixed)

The record is put only if the group has none (``attribute_not_exists``), so a group's
next change cannot commit while an earlier one's events are unfinished: it finishes them
first, and the events keep the order of the changes. After the transaction the writer
releases ``t`` (the events become visible) and deletes the record (conditionally: only if
it still names ``t``).

A process that dies in between leaves the record. Whoever finds it (the group's next
change, start-up, the sweep: ``finish``) waits for ``t`` to settle on the clock:

* released: the events are visible, exactly once; the record is only deleted.
* aborted (the writer died before releasing, and a reader aborted it when the lease ran
  out): the items at ``t`` are hidden for good, so the events are written again at a new
  position ``t2`` in one transaction with the record's move to ``t2`` (conditional on it
  still naming ``t``: of two finishers only one writes), then released and deleted.

Each event is visible at exactly one position: the items of an aborted position never
show, a new position is written only in the same transaction as the record's move away
from the aborted one, and a released position is never written again.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from parley.domain.models import Event
from parley.errors import Unavailable
from parley.storage.base import EventDraft, encode_fields
from parley.storage.dynamodb_client import ConditionFailed, DynamoClient, DynamoUnavailable
from parley.storage.dynamodb_clock import Clock, Reservation
from parley.storage.dynamodb_items import Item, event_items, n, s

PARTITION = "pending-events"  # no stream id has this shape
FAULT = "PARLEY_TEST_EXIT_DURING_GROUP_CHANGE"  # tests only: written | released
ATTEMPTS = 20

Stored = list[tuple[Event, tuple[str, ...]]]
_drafts_encoder = msgspec.json.Encoder()
_drafts_decoder = msgspec.json.Decoder(list[EventDraft])


CANCELLED = "TransactionCanceledException"


async def transact(client: DynamoClient, items: list[Item]) -> bool:
    """True if the transaction committed, False if a condition (or a conflict) stopped it."""
    try:
        await client.call("transact_write_items", TransactItems=items)
    except DynamoUnavailable as exc:
        if exc.aws_code in (CANCELLED, "TransactionConflictException"):
            return False
        raise
    return True


def _fault(step: str) -> None:
    if os.environ.get(FAULT) == step:  # a fault test: kill -9 right after this step,
        os.killpg(os.getpgrp(), signal.SIGKILL)  # the whole server (no worker respawn)


class PendingEvents:
    def __init__(
        self, client: DynamoClient, table: str, clock: Clock, released: Callable[[int], None]
    ) -> None:
        self.client = client
        self.table = table
        self.clock = clock
        self.released = released  # told every position this process released

    def _key(self, group_id: str) -> Item:
        return {"recipient_id": s(PARTITION), "sk": s(group_id)}

    def writes(
        self, group_id: str, ts: int, drafts: Sequence[EventDraft], moved_from: int | None = None
    ) -> tuple[list[Item], Stored]:
        """The transaction items that store ``drafts`` at ``ts`` with the group's pending
        record (new, or moved from the aborted position ``moved_from``), and the events."""
        stored: Stored = []
        puts: list[Item] = []
        for seq, draft in enumerate(drafts):
            event = Event(draft.id, draft.type, dict(draft.fields), ts, seq)
            stored.append((event, draft.streams))
            for item in event_items(event, draft.streams, encode_fields(draft.fields)):
                puts.append({"Put": {"TableName": self.table, "Item": item}})
        record: dict[str, Any] = {
            "TableName": self.table,
            "Item": {
                **self._key(group_id),
                "ts": n(ts),
                "drafts": s(_drafts_encoder.encode(list(drafts)).decode()),
            },
        }
        if moved_from is None:
            record["ConditionExpression"] = "attribute_not_exists(sk)"
        else:
            record["ConditionExpression"] = "#ts = :was"
            record["ExpressionAttributeNames"] = {"#ts": "ts"}
            record["ExpressionAttributeValues"] = {":was": n(moved_from)}
        return [{"Put": record}, *puts], stored

    async def settle(self, group_id: str, reservation: Reservation, stored: Stored) -> Stored:
        """After the change's transaction committed: release its position, delete the
        record. If the position was aborted meanwhile, store the events again."""
        _fault("written")
        if not await self.clock.release(reservation):
            return await self.finish(group_id)
        self.released(reservation.ts)
        _fault("released")
        await self._clear(group_id, reservation.ts)
        return stored

    async def _clear(self, group_id: str, ts: int) -> None:
        with contextlib.suppress(ConditionFailed):  # another finisher did it already
            await self.client.call(
                "delete_item",
                TableName=self.table,
                Key=self._key(group_id),
                ConditionExpression="#ts = :t",
                ExpressionAttributeNames={"#ts": "ts"},
                ExpressionAttributeValues={":t": n(ts)},
            )

    async def _record(self, group_id: str) -> Item | None:
        response = await self.client.call(
            "get_item", TableName=self.table, Key=self._key(group_id), ConsistentRead=True
        )
        item: Item | None = response.get("Item")
        return item

    async def finish(self, group_id: str) -> Stored:
        """Finish the group's pending events, if it has any; return them."""
        record = await self._record(group_id)
        return [] if record is None else await self._finish(record)

    async def finish_all(self) -> Stored:
        """Finish every group's pending events (start-up, the sweep)."""
        stored: Stored = []
        start: Item | None = None
        for _ in range(10_000):
            kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = await self.client.call(
                "query",
                TableName=self.table,
                KeyConditionExpression="recipient_id = :p",
                ExpressionAttributeValues={":p": s(PARTITION)},
                ConsistentRead=True,
                **kwargs,
            )
            for record in response.get("Items", []):
                stored += await self._finish(record)
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        return stored

    async def _finish(self, record: Item) -> Stored:
        group_id = record["sk"]["S"]
        drafts = _drafts_decoder.decode(record["drafts"]["S"])
        ts = int(record["ts"]["N"])
        for _ in range(ATTEMPTS):
            if await self.clock.settled(ts):  # released: the events are visible at ts
                await self._clear(group_id, ts)
                return [
                    (Event(d.id, d.type, dict(d.fields), ts, seq), d.streams)
                    for seq, d in enumerate(drafts)
                ]
            # Aborted: the items at ts never show. Store the events again, moving the record.
            reservation = await self.clock.reserve()
            items, stored = self.writes(group_id, reservation.ts, drafts, moved_from=ts)
            try:
                committed = await transact(self.client, items)
            except BaseException:
                await self.clock.abort(reservation)
                raise
            if not committed:
                # Another finisher moved (or cleared) the record: nothing was written here.
                await self.clock.release(reservation)
                current = await self._record(group_id)
                if current is None:
                    return []
                ts = int(current["ts"]["N"])
                continue
            if await self.clock.release(reservation):
                self.released(reservation.ts)
                await self._clear(group_id, reservation.ts)
                return stored
            ts = reservation.ts  # aborted again (a very slow write): try once more
        raise Unavailable("pending group events could not be stored")
