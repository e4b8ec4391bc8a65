"""The commit clock of the DynamoDB adapter: positions shared by every process.

One item in the ``streams`` table (``stream_id = "clock"``) orders every message write of
every Parley process, as a Synapse stream-id generator does, with the set of unfinished
writes kept in the same item::

    {"stream_id": "clock",
     "ts":      1764412345678,                 the largest timestamp handed out
     "pending": {"9f3ac1.17": 1764412345677},  unfinished reservations: key -> timestamp - 1
     "aborted": {1764412301000},               reservations given up (their writes hidden)
     "epoch":   3}                             the shared cache's epoch (parley.cache.redis_link)

A writer **reserves** a timestamp ``t`` with one conditional update that raises ``ts`` to
``max(ts + 1, now)`` and records ``t - 1`` under a key of its own in ``pending``; writes its
message items with timestamp ``t``; then **releases** by removing its key (conditionally:
only if it is still there). A reader reads the item (strongly consistent) and takes::

    frontier = min(ts, every value in pending)

Every message that becomes visible later has a timestamp above that frontier: a reservation
made after the read gets ``t > ts``; one pending at the read has ``t - 1 >= frontier``; one
released before the read had all its items written before the release, so a consistent
Query after the read sees them. A reservation pending for longer than the lease (its
writer crashed or hangs) is **aborted** by whichever reader notices: its key moves to
``aborted`` in one conditional update. Items carrying an aborted timestamp are never shown,
and the writer's own release then fails, so it reports failure to its client. Every change
is a single-item conditional update; nothing here is a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parley.domain.positions import wall_clock_ms
from parley.errors import Unavailable
from parley.storage.dynamodb_client import ConditionFailed, DynamoClient

CLOCK_KEY = {"stream_id": {"S": "clock"}}
SETTLE_POLL = 0.02  # seconds between clock reads while waiting for a reservation to end


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


@dataclass(frozen=True, slots=True)
class Reservation:
    key: str
    ts: int


@dataclass(frozen=True, slots=True)
class ClockState:
    """One consistent reading of the clock item."""

    ts: int
    pending: dict[str, int]  # reservation key -> its timestamp - 1
    aborted: frozenset[int]
    epoch: int

    @property
    def frontier(self) -> int:
        """The largest timestamp at or below which every write has finished."""
        return min(self.ts, *self.pending.values()) if self.pending else self.ts

    def is_pending(self, ts: int) -> bool:
        return ts - 1 in self.pending.values()

    @classmethod
    def parse(cls, item: dict[str, Any]) -> ClockState:
        pending = item.get("pending", {}).get("M", {})
        return cls(
            ts=int(item.get("ts", {"N": "0"})["N"]),
            pending={key: int(value["N"]) for key, value in pending.items()},
            aborted=frozenset(int(v) for v in item.get("aborted", {}).get("NS", ())),
            epoch=int(item.get("epoch", {"N": "1"})["N"]),
        )


class Clock:
    def __init__(
        self,
        client: DynamoClient,
        table: str,
        *,
        lease_ms: int = 15_000,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.client = client
        self.table = table
        self.lease_ms = lease_ms
        self.clock = clock
        self.writer = secrets.token_hex(4)  # this process's prefix for reservation keys
        self._count = 0
        self._last_seen = 0  # the largest clock value this process has seen
        self._started = 0  # readings started by fresh()
        self._reading: asyncio.Task[ClockState] | None = None
        self._reading_number = 0

    async def ensure(self) -> None:
        """Create the clock item if the table has none yet."""
        with contextlib.suppress(ConditionFailed):
            await self.client.call(
                "put_item",
                TableName=self.table,
                Item={**CLOCK_KEY, "ts": _n(0), "pending": {"M": {}}, "epoch": _n(1)},
                ConditionExpression="attribute_not_exists(stream_id)",
            )

    async def read(self) -> ClockState:
        """A strongly consistent reading; reservations older than the lease are aborted."""
        state = await self._get()
        for _ in range(3):
            now = self.clock()
            stale = {k: v for k, v in state.pending.items() if now - (v + 1) > self.lease_ms}
            if not stale:
                break
            await asyncio.gather(*(self.abort(Reservation(k, v + 1)) for k, v in stale.items()))
            state = await self._get()
        return state

    async def fresh(self) -> ClockState:
        """A reading that started after this call did; concurrent callers share one.

        Any reading gives a safe frontier; one that started after the caller's request
        arrived also covers every write acknowledged before it (read-your-writes, across
        processes). Sharing keeps a busy process at one clock read in flight, however many
        checks it serves.
        """
        need = self._started + 1  # the first reading to start from now on
        for _ in range(1000):
            task = self._reading
            if task is not None and self._reading_number >= need:
                return await asyncio.shield(task)
            if task is None:
                self._started += 1
                self._reading_number = self._started
                task = asyncio.ensure_future(self.read())
                self._reading = task
                task.add_done_callback(self._reading_done)
                continue
            await asyncio.wait([task])  # began before this call: wait, then take the next
        raise Unavailable("clock readings did not settle")

    def _reading_done(self, task: asyncio.Task[ClockState]) -> None:
        if self._reading is task:
            self._reading = None
        if not task.cancelled():
            task.exception()  # retrieved here; every caller awaiting it gets it too

    async def _get(self) -> ClockState:
        response = await self.client.call(
            "get_item", TableName=self.table, Key=CLOCK_KEY, ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:
            raise Unavailable("the DynamoDB clock item is missing: run parley migrate")
        state = ClockState.parse(item)
        self._last_seen = max(self._last_seen, state.ts)
        return state

    async def reserve(self) -> Reservation:
        """A timestamp no other reservation has or will have, above every frontier."""
        self._count += 1
        key = f"{self.writer}.{self._count}"
        try:
            return await self._reserve(key)
        except Unavailable:
            # The update may have applied with its answer lost. No item carries the
            # timestamp it would have reserved, so dropping the key is safe (best effort:
            # otherwise a reader aborts it when the lease runs out).
            with contextlib.suppress(Unavailable):
                await self.client.call(
                    "update_item",
                    TableName=self.table,
                    Key=CLOCK_KEY,
                    UpdateExpression="REMOVE #p.#k",
                    ExpressionAttributeNames={"#p": "pending", "#k": key},
                )
            raise

    async def _reserve(self, key: str) -> Reservation:
        names = {"#ts": "ts", "#p": "pending", "#k": key}
        now = self.clock()
        if now > self._last_seen:
            # Usually the wall clock is ahead of the shared clock: move it there.
            try:
                await self.client.call(
                    "update_item",
                    TableName=self.table,
                    Key=CLOCK_KEY,
                    UpdateExpression="SET #ts = :t, #p.#k = :v",
                    ConditionExpression="#ts < :t",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={":t": _n(now), ":v": _n(now - 1)},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return self._reserved(key, now)
            except ConditionFailed as failed:
                state = ClockState.parse(failed.item or {})
                if key in state.pending:  # a retried request that had applied
                    return self._reserved(key, state.pending[key] + 1)
                self._last_seen = max(self._last_seen, state.ts)
        # Another writer got there first (or this clock is behind): take the next one.
        response = await self.client.call(
            "update_item",
            TableName=self.table,
            Key=CLOCK_KEY,
            UpdateExpression="SET #ts = #ts + :one, #p.#k = #ts",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":one": _n(1)},
            ReturnValues="UPDATED_NEW",
        )
        return self._reserved(key, int(response["Attributes"]["ts"]["N"]))

    def _reserved(self, key: str, ts: int) -> Reservation:
        self._last_seen = max(self._last_seen, ts)
        return Reservation(key, ts)

    async def release(self, reservation: Reservation) -> bool:
        """End a reservation whose writes all succeeded; False if it had been aborted."""
        try:
            await self.client.call(
                "update_item",
                TableName=self.table,
                Key=CLOCK_KEY,
                UpdateExpression="REMOVE #p.#k",
                ConditionExpression="attribute_exists(#p.#k)",
                ExpressionAttributeNames={"#p": "pending", "#k": reservation.key},
            )
        except ConditionFailed:
            # Gone already: released by a retried request, or aborted by a reader.
            state = await self._get()
            return reservation.ts not in state.aborted
        return True

    async def abort(self, reservation: Reservation) -> None:
        """Give a reservation up: its timestamp's items are hidden for good."""
        with contextlib.suppress(ConditionFailed):
            await self.client.call(
                "update_item",
                TableName=self.table,
                Key=CLOCK_KEY,
                UpdateExpression="REMOVE #p.#k ADD #a :t",
                ConditionExpression="#p.#k = :v",
                ExpressionAttributeNames={"#p": "pending", "#a": "aborted", "#k": reservation.key},
                ExpressionAttributeValues={
                    ":v": _n(reservation.ts - 1),
                    ":t": {"NS": [str(reservation.ts)]},
                },
            )

    async def settled(self, ts: int) -> bool:
        """Wait until the reservation of ``ts`` has ended; True if released, False if aborted.

        Bounded: a reservation cannot outlive the lease, after which a reading aborts it.
        """
        for _ in range(self.lease_ms // int(SETTLE_POLL * 1000) + 100):
            state = await self.read()
            if ts in state.aborted:
                return False
            if not state.is_pending(ts):
                return True
            await asyncio.sleep(SETTLE_POLL)
        raise Unavailable("an earlier write is still unfinished")

    async def advance_to(self, ts: int) -> None:
        """Never hand out a timestamp at or below ``ts`` (after a bulk load)."""
        with contextlib.suppress(ConditionFailed):
            await self.client.call(
                "update_item",
                TableName=self.table,
                Key=CLOCK_KEY,
                UpdateExpression="SET #ts = :t",
                ConditionExpression="#ts < :t",
                ExpressionAttributeNames={"#ts": "ts"},
                ExpressionAttributeValues={":t": _n(ts)},
            )

    async def bump_epoch(self) -> int:
        response = await self.client.call(
            "update_item",
            TableName=self.table,
            Key=CLOCK_KEY,
            UpdateExpression="ADD #e :one",
            ExpressionAttributeNames={"#e": "epoch"},
            ExpressionAttributeValues={":one": _n(1)},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["epoch"]["N"])
