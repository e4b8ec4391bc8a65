"""The DynamoDB adapter: the AWS deployment shape, any number of processes on one set of tables.

Tables come from :mod:`parley.storage.dynamodb_tables` (the same specs the Pulumi program
deploys). Every write that can conflict is one conditional single-item write:

* users, groups: one item each (``PutItem``);
* memberships: one item per (user, group), added with ``attribute_not_exists`` and removed
  with ``attribute_exists`` — exactly one of many concurrent identical requests succeeds;
* blocks: one item per (blocker, blocked), the same way;
* messages: one item per stream (``dynamodb_items``), under a timestamp reserved from the
  shared commit clock (``dynamodb_clock``), which is what keeps the polling contract across
  processes: readers never go past a reservation that has not finished;
* idempotent sends: a conditional put on ``sends`` claims the key before the message is
  written; a retry finds the claim and waits for the first attempt's outcome.

Appends are group-committed: while ``max_inflight`` batches are being written, new appends
queue and the next batch carries them all under one reservation (one clock update to take
it and one to release it, however many messages). Only group membership changes use a
transaction (``dynamodb_groups``: the roster, its counter and the membership item).
``docs/dynamodb.md`` has the table design, every access path and its measured cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from parley.domain.models import Event, GroupRecord, Message, TokenRecord, UserRecord
from parley.domain.roles import GroupWrite, Member, Outcome, Role
from parley.errors import ParleyError, Unavailable
from parley.storage.base import (
    BulkData,
    EventDraft,
    GroupEvents,
    MessageDraft,
    Storage,
    counted,
    decode_fields,
    edited_fields,
    encode_fields,
    scrubbed,
)
from parley.storage.dynamodb_accounts import DynamoAccounts, token_item, user_status
from parley.storage.dynamodb_client import ConditionFailed, DynamoClient, DynamoUnavailable
from parley.storage.dynamodb_clock import Clock, ClockState, Reservation
from parley.storage.dynamodb_conversations import DynamoConversations, peer_items
from parley.storage.dynamodb_groups import Rosters, roster_group_item
from parley.storage.dynamodb_items import (
    LOCATOR_PREFIX,
    Item,
    claim_item,
    event_items,
    event_stream,
    locator_item,
    message_items,
    n,
    parse_group,
    parse_message,
    parse_user,
    s,
    sent_stream,
    sort_key,
    ts_ceiling,
    ts_floor,
    ts_prefix,
    user_item,
)
from parley.storage.dynamodb_items import (
    send_key as claim_key,
)
from parley.storage.dynamodb_pending import PendingEvents
from parley.storage.dynamodb_tables import TABLES, TableSpec, create_table_kwargs, table_names
from parley.storage.media_dynamodb import DynamoMedia

log = logging.getLogger("parley.storage.dynamodb")
R = TypeVar("R")

BATCH_WRITE_MAX = 25  # items per BatchWriteItem call (DynamoDB's limit)
SEND_KEY_TTL = 7 * 24 * 3600  # idempotency claims expire after a week (seconds)
KNOWN_PEERS_MAX = 100_000  # pairs remembered per process as already recorded
READ_YOUR_WRITES = 0.05  # a reader waits at most this long for this process's own writes


class _Append:
    __slots__ = ("draft", "future", "replaces")

    def __init__(self, draft: MessageDraft, future: asyncio.Future[tuple[Message, bool]]) -> None:
        self.draft = draft
        self.future = future
        self.replaces: int | None = None  # timestamp of an aborted claim this one replaces


@counted
class DynamoStorage(DynamoConversations, DynamoMedia, DynamoAccounts, Storage):
    name = "dynamodb"

    def __init__(
        self,
        *,
        table_prefix: str = "parley-",
        endpoint: str | None = None,
        region: str | None = None,
        create_tables: bool | None = None,
        lease_ms: int = 15_000,
        max_batch: int = 100,
        max_inflight: int = 4,
        timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.table_prefix = table_prefix
        self.tables = table_names(table_prefix)
        self.endpoint = endpoint
        # With an explicit endpoint (DynamoDB Local, moto, a test) start-up creates missing
        # tables; on AWS the Pulumi program (or `parley migrate`) does.
        self.create_missing = endpoint is not None if create_tables is None else create_tables
        self.client = DynamoClient(endpoint=endpoint, region=region, timeout=timeout)
        self.clock = Clock(self.client, self.tables["streams"], lease_ms=lease_ms)
        self.pending = PendingEvents(
            self.client, self.tables["messages"], self.clock, self._released_to
        )
        self.rosters = Rosters(
            self.client, self.tables["groups"], self.tables["members"], self.pending
        )
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.batches = 0
        self._open = False
        self._queue: list[_Append] = []
        self._running: set[asyncio.Task[None]] = set()  # batches being written
        self._followers: set[asyncio.Task[None]] = set()  # retries waiting for a first try
        self._keyed: dict[tuple[str, str], asyncio.Future[tuple[Message, bool]]] = {}
        self._released = 0  # the largest timestamp this process released
        self._aborted: set[int] = set()  # aborted timestamps seen (the set only grows)
        self._known_peers: set[tuple[str, str]] = set()  # peer items this process wrote

    # lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        await self.client.open()
        try:
            if self.create_missing:
                await self.create_tables()
            await self.clock.ensure()
        except BaseException:
            await self.client.close()
            raise
        self._open = True

    async def close(self) -> None:
        self._open = False
        for _ in range(200):  # let running batches finish (bounded)
            if not self._running and not self._followers:
                break
            await asyncio.sleep(0.01)
        for task in [*self._running, *self._followers]:
            task.cancel()
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(Unavailable("storage is closing"))
        self._queue.clear()
        await self.client.close()

    async def create_tables(self) -> list[str]:
        """Create the tables this prefix lacks (``parley migrate``); return their names."""

        async def create(spec: TableSpec) -> str | None:
            kwargs = create_table_kwargs(spec, self.table_prefix)
            try:
                await self.client.call("create_table", **kwargs)
            except DynamoUnavailable as exc:
                if exc.aws_code != "ResourceInUseException":  # it exists (or is being made)
                    raise
                return None
            return spec.suffix

        made = await asyncio.gather(*(create(spec) for spec in TABLES))
        await asyncio.gather(*(self._wait_active(name) for name in self.tables.values()))
        for spec in TABLES:
            if spec.ttl_attribute is not None and spec.suffix in made:
                await self.client.call(
                    "update_time_to_live",
                    TableName=self.tables[spec.suffix],
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
                )
        created = [self.tables[suffix] for suffix in made if suffix is not None]
        if created:
            log.info("dynamodb tables created: %s", ", ".join(created))
        return created

    async def _wait_active(self, name: str) -> None:
        for _ in range(240):  # AWS takes seconds to create a table; a local endpoint none
            response = await self.client.call("describe_table", TableName=name)
            if response["Table"]["TableStatus"] == "ACTIVE":
                return
            await asyncio.sleep(0.5)
        raise Unavailable(f"DynamoDB table {name} did not become active")

    # plumbing --------------------------------------------------------------------------
    def _ready(self) -> None:
        if not self._open:
            raise Unavailable("storage is not open")

    async def _get(self, table: str, key: Item) -> Item | None:
        self._ready()
        response = await self.client.call(
            "get_item", TableName=self.tables[table], Key=key, ConsistentRead=True
        )
        item: Item | None = response.get("Item")
        return item

    async def _query(self, table: str, limit: int | None = None, **kwargs: Any) -> list[Item]:
        """Every item a Query matches (or the first ``limit``), following pages (bounded)."""
        self._ready()
        items: list[Item] = []
        start: Item | None = None
        for _ in range(10_000):
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            if limit is not None:
                kwargs["Limit"] = limit - len(items)
            response = await self.client.call("query", TableName=self.tables[table], **kwargs)
            items += response.get("Items", [])
            start = response.get("LastEvaluatedKey")
            if start is None or (limit is not None and len(items) >= limit):
                break
        return items

    async def _write_items(self, writes: Sequence[tuple[str, Item]]) -> None:
        """Put items (table suffix, item), 25 per BatchWriteItem, a lone one by PutItem."""
        self._ready()
        if len(writes) == 1:
            table, item = writes[0]
            await self.client.call("put_item", TableName=self.tables[table], Item=item)
            return
        chunks = [writes[i : i + BATCH_WRITE_MAX] for i in range(0, len(writes), BATCH_WRITE_MAX)]
        await asyncio.gather(*(self._batch_write(chunk) for chunk in chunks))

    async def _batch_write(self, chunk: Sequence[tuple[str, Item]]) -> None:
        requests: dict[str, list[Item]] = {}
        for table, item in chunk:
            requests.setdefault(self.tables[table], []).append({"PutRequest": {"Item": item}})
        for attempt in range(8):
            response = await self.client.call("batch_write_item", RequestItems=requests)
            requests = response.get("UnprocessedItems") or {}
            if not requests:
                return
            await asyncio.sleep(0.01 * 2**attempt)  # throttled: back off and retry the rest
        raise Unavailable("storage is throttling writes")

    async def ping(self) -> None:
        self._ready()
        await self.clock.read()

    async def last_position(self) -> int:
        """The commit frontier: no message at or below it is unknown to storage."""
        self._ready()
        return (await self.clock.read()).frontier

    # the shared cache's anchor (parley.cache.redis_link.EpochSource) ------------------
    async def cache_state(self) -> tuple[int, int]:
        """The cache epoch and the commit frontier, from one reading of the clock item."""
        self._ready()
        state = await self.clock.read()
        return state.epoch, state.frontier

    async def bump_cache_epoch(self) -> int:
        self._ready()
        return await self.clock.bump_epoch()

    # facts about the data: items "meta:<key>" beside the clock item --------------------
    async def record_meta(self, key: str, value: str, *, replace: bool = False) -> str | None:
        self._ready()
        item_key = {"stream_id": s(f"meta:{key}")}
        item = {**item_key, "value": s(value)}
        if replace:
            response = await self.client.call(
                "put_item", TableName=self.tables["streams"], Item=item, ReturnValues="ALL_OLD"
            )
            old: Item | None = response.get("Attributes")
            return old["value"]["S"] if old else None
        if await self._conditional("put_item", "streams", item, "attribute_not_exists(stream_id)"):
            return None
        kept = await self._get("streams", item_key)
        return kept["value"]["S"] if kept else None

    # users and groups ------------------------------------------------------------------
    async def create_user(self, user: UserRecord, token: TokenRecord | None = None) -> None:
        # One BatchWriteItem (no transactions, see docs/dynamodb.md): were it cut short, a
        # user without its first token is an account nobody holds, harmless.
        writes = [("users", user_item(user))]
        if token is not None:
            writes.append(("tokens", token_item(token)))
        await self._write_items(writes)

    async def get_user(self, user_id: str) -> UserRecord | None:
        item = await self._get("users", {"user_id": s(user_id)})
        return parse_user(item) if item and user_status(item) == "active" else None

    async def create_group(self, group: GroupRecord, first_member: str | None) -> None:
        first: list[tuple[str, Role]] = [] if first_member is None else [(first_member, "owner")]
        writes: list[tuple[str, Item]] = [("groups", roster_group_item(group, first))]
        if first_member is not None:
            writes.append(("members", {"user_id": s(first_member), "group_id": s(group.id)}))
        await self._write_items(writes)  # one call; a membership is harmless without its group

    async def get_group(self, group_id: str) -> GroupRecord | None:
        item = await self._get("groups", {"group_id": s(group_id)})
        return parse_group(item) if item else None

    async def _conditional(self, operation: str, table: str, key: Item, condition: str) -> bool:
        self._ready()
        try:
            if operation == "put_item":
                await self.client.call(
                    operation,
                    TableName=self.tables[table],
                    Item=key,
                    ConditionExpression=condition,
                )
            else:
                await self.client.call(
                    operation, TableName=self.tables[table], Key=key, ConditionExpression=condition
                )
        except ConditionFailed:
            return False
        return True

    # roles: parley.storage.dynamodb_groups; their events: parley.storage.dynamodb_pending
    async def join_group(
        self,
        group_id: str,
        user_id: str,
        *,
        by: str | None,
        cap: int | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        self._ready()
        return await self.rosters.join(group_id, user_id, by, cap, events)

    async def leave_group(
        self, group_id: str, user_id: str, *, by: str | None, events: GroupEvents | None = None
    ) -> GroupWrite:
        self._ready()
        return await self.rosters.leave(group_id, user_id, by, events)

    async def set_role(
        self,
        group_id: str,
        user_id: str,
        role: Role,
        *,
        by: str | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        self._ready()
        return await self.rosters.set_role(group_id, user_id, role, by, events)

    async def rename_group(
        self, group_id: str, name: str, *, by: str | None, events: GroupEvents | None = None
    ) -> Outcome:
        self._ready()
        return await self.rosters.rename(group_id, name, by, events)

    async def finish_group_events(self) -> list[tuple[Event, tuple[str, ...]]]:
        self._ready()
        return await self.pending.finish_all()

    def _released_to(self, ts: int) -> None:
        self._released = max(self._released, ts)

    async def group_roster(self, group_id: str) -> list[Member]:
        self._ready()
        return await self.rosters.roster(group_id)

    async def group_members(self, group_id: str) -> list[str]:
        """From the by_group index: eventually consistent (listings only, never a rule)."""
        items = await self._query(
            "members",
            IndexName="by_group",
            KeyConditionExpression="group_id = :g",
            ExpressionAttributeValues={":g": s(group_id)},
        )
        return sorted(item["user_id"]["S"] for item in items)

    async def user_groups(self, user_id: str) -> list[str]:
        items = await self._query(
            "members",
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": s(user_id)},
            ConsistentRead=True,
        )
        return sorted(item["group_id"]["S"] for item in items)

    # blocks ----------------------------------------------------------------------------
    async def add_block(self, blocker_id: str, blocked_id: str) -> bool:
        key = {"blocker_id": s(blocker_id), "blocked_id": s(blocked_id)}
        return await self._conditional(
            "put_item", "blocks", key, "attribute_not_exists(blocker_id)"
        )

    async def remove_block(self, blocker_id: str, blocked_id: str) -> bool:
        key = {"blocker_id": s(blocker_id), "blocked_id": s(blocked_id)}
        return await self._conditional("delete_item", "blocks", key, "attribute_exists(blocker_id)")

    async def blocked_by(self, blocker_id: str) -> list[str]:
        items = await self._query(
            "blocks",
            KeyConditionExpression="blocker_id = :b",
            ExpressionAttributeValues={":b": s(blocker_id)},
            ConsistentRead=True,
        )
        return sorted(item["blocked_id"]["S"] for item in items)

    # messages: appends -----------------------------------------------------------------
    async def append_message(self, draft: MessageDraft) -> tuple[Message, bool]:
        self._ready()
        key = None if draft.send_key is None else (draft.sender_id, draft.send_key)
        if key is not None:
            earlier = self._keyed.get(key)
            if earlier is not None:  # the same key is being written by this process
                with contextlib.suppress(ParleyError):
                    message, _ = await asyncio.shield(earlier)
                    return message, False
        future: asyncio.Future[tuple[Message, bool]] = asyncio.get_running_loop().create_future()
        if key is not None:
            self._keyed[key] = future
            future.add_done_callback(lambda done: self._forget_key(key, done))
        self._enqueue(_Append(draft, future))
        return await future

    @staticmethod
    def _locator(job: _Append, message: Message) -> Item:
        key = job.draft.send_key
        return locator_item(message, None if key is None else claim_key(message.sender_id, key))

    def _forget_key(self, key: tuple[str, str], done: asyncio.Future[Any]) -> None:
        if self._keyed.get(key) is done:
            del self._keyed[key]

    def _enqueue(self, job: _Append) -> None:
        if not self._open:
            if not job.future.done():
                job.future.set_exception(Unavailable("storage is closing"))
            return
        self._queue.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and len(self._running) < self.max_inflight and self._open:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            task = asyncio.create_task(self._run_batch(batch), name="parley-dynamodb-batch")
            self._running.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._dispatch()

    async def _run_batch(self, batch: list[_Append]) -> None:
        try:
            await self._write_batch(batch)
        except BaseException as exc:
            failure = exc if isinstance(exc, ParleyError) else Unavailable("storage write failed")
            if not isinstance(exc, ParleyError | asyncio.CancelledError):
                log.exception("dynamodb batch failed")
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(failure)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _write_batch(self, batch: list[_Append]) -> None:
        """Reserve a timestamp, claim idempotency keys, write every item, release."""
        reservation = await self.clock.reserve()
        try:
            messages = [
                Message(
                    d.id,
                    d.type,
                    d.sender_id,
                    d.recipient_id,
                    d.body,
                    reservation.ts,
                    seq,
                    attachments=d.attachments,
                )
                for seq, d in enumerate(job.draft for job in batch)
            ]
            claimed = await self._claim(batch, messages)
            writes = [
                ("messages", item)
                for job, message in zip(batch, messages, strict=True)
                if job in claimed
                for item in [*message_items(message), self._locator(job, message)]
            ]
            pairs = {
                (m.sender_id, m.recipient_id)
                for job, m in zip(batch, messages, strict=True)
                if job in claimed and m.type == "private"
            } - self._known_peers
            writes += [("conversations", item) for item in peer_items(sorted(pairs))]
            if writes:
                await self._write_items(writes)
            if len(self._known_peers) > KNOWN_PEERS_MAX:
                self._known_peers.clear()
            self._known_peers |= pairs
        except BaseException:
            # Some items may have been written: hide them all for good, then report.
            await asyncio.shield(self._abort_quietly(reservation))
            raise
        try:
            released = await self.clock.release(reservation)
        except BaseException:
            await asyncio.shield(self._abort_quietly(reservation))
            raise
        if not released:  # it outlived its lease and a reader aborted it
            raise Unavailable("storage write timed out")
        self.batches += 1
        self._released = max(self._released, reservation.ts)
        for job, message in zip(batch, messages, strict=True):
            if job in claimed and not job.future.done():
                job.future.set_result((message, True))

    async def _abort_quietly(self, reservation: Reservation) -> None:
        try:
            await self.clock.abort(reservation)
        except ParleyError:  # a reader aborts it when its lease runs out
            log.warning("dynamodb reservation %s left to expire", reservation.key)

    async def _claim(self, batch: list[_Append], messages: list[Message]) -> set[_Append]:
        """Claim the batch's idempotency keys; return the jobs whose messages to write."""
        keyed = [
            (job, m)
            for job, m in zip(batch, messages, strict=True)
            if job.draft.send_key is not None
        ]
        outcomes = await asyncio.gather(*(self._claim_one(job, m) for job, m in keyed))
        lost = {job for (job, _), ok in zip(keyed, outcomes, strict=True) if not ok}
        return {job for job in batch if job not in lost}

    async def _claim_one(self, job: _Append, message: Message) -> bool:
        key = claim_key(message.sender_id, job.draft.send_key or "")
        expires = int(time.time()) + SEND_KEY_TTL
        condition = "attribute_not_exists(send_key)"
        values: dict[str, Any] = {}
        if job.replaces is not None:  # the earlier attempt was aborted: take its place
            condition = "attribute_not_exists(send_key) OR #ts = :old"
            values = {":old": n(job.replaces)}
        try:
            await self.client.call(
                "put_item",
                TableName=self.tables["sends"],
                Item=claim_item(message, key, expires),
                ConditionExpression=condition,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **({"ExpressionAttributeNames": {"#ts": "ts"}} if values else {}),
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ConditionFailed as failed:
            if failed.item is None:
                raise Unavailable("idempotency claim vanished") from None
            earlier = parse_message(failed.item)
            if earlier.id == message.id:  # our own claim, applied by a retried request
                return True
            task = asyncio.create_task(self._follow(job, earlier))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)
            return False
        return True

    async def _follow(self, job: _Append, earlier: Message) -> None:
        """Another attempt holds this key: answer with its message once it has finished,
        or, if it was aborted, append again in its place."""
        try:
            if await self.clock.settled(earlier.ts):
                if not job.future.done():
                    job.future.set_result((earlier, False))
                return
            job.replaces = earlier.ts
            self._enqueue(job)
        except ParleyError as exc:
            if not job.future.done():
                job.future.set_exception(exc)

    async def find_send(self, sender_id: str, send_key: str) -> Message | None:
        item = await self._get("sends", {"send_key": s(claim_key(sender_id, send_key))})
        if item is None:
            return None
        earlier = parse_message(item)
        return earlier if await self.clock.settled(earlier.ts) else None

    # messages: reads -------------------------------------------------------------------
    async def _frontier(self) -> ClockState:
        """A clock reading that covers this process's released writes (waits briefly)."""
        self._ready()
        state = await self.clock.fresh()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_YOUR_WRITES
        while state.frontier < self._released and loop.time() < deadline:
            await asyncio.sleep(0.002)  # an older reservation of another writer is finishing
            state = await self.clock.fresh()
        self._aborted |= state.aborted
        return state

    @staticmethod
    def _streams(recipients: Sequence[str], sent_by: str | None) -> list[str]:
        streams = list(dict.fromkeys(recipients))
        if sent_by is not None:
            streams.append(sent_stream(sent_by))
        return streams

    async def _stream_rows(self, stream: str, low: str, high: str, limit: int) -> list[Message]:
        """Up to ``limit`` shown messages of one stream with low <= sk <= high, in order."""
        return await self._stream_items(stream, low, high, limit, parse_message)

    async def _stream_items(
        self, stream: str, low: str, high: str, limit: int, parse: Callable[[Item], R]
    ) -> list[R]:
        rows: list[R] = []
        start: Item | None = None
        for _ in range(10_000):
            kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = await self.client.call(
                "query",
                TableName=self.tables["messages"],
                KeyConditionExpression="recipient_id = :r AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={":r": s(stream), ":lo": s(low), ":hi": s(high)},
                ConsistentRead=True,
                Limit=limit - len(rows),
                **kwargs,
            )
            rows += [
                row
                for row in map(parse, response.get("Items", []))
                if getattr(row, "ts", 0) not in self._aborted
            ]
            start = response.get("LastEvaluatedKey")
            if start is None or len(rows) >= limit:
                break
        return rows

    @staticmethod
    def _merge(parts: Sequence[list[Message]]) -> list[Message]:
        merged: dict[str, Message] = {}
        for rows in parts:
            for message in rows:
                merged.setdefault(message.id, message)  # a message to oneself is in two streams
        return sorted(merged.values(), key=lambda m: (m.ts, m.seq, m.id))  # as sort keys do

    async def _page_rows(
        self, recipients: Sequence[str], sent_by: str | None, after: int, limit: int
    ) -> tuple[list[Message], int]:
        state = await self._frontier()
        frontier = state.frontier
        streams = self._streams(recipients, sent_by)
        if frontier <= after or not streams:
            return [], frontier
        low, high = ts_floor(max(after + 1, 0)), ts_ceiling(frontier)
        parts = await asyncio.gather(*(self._stream_rows(st, low, high, limit) for st in streams))
        return self._merge(parts)[:limit], frontier

    async def _rows_at(
        self, recipients: Sequence[str], sent_by: str | None, ts: int
    ) -> list[Message]:
        self._ready()
        prefix = ts_prefix(ts)
        parts = await asyncio.gather(
            *(
                self._query(
                    "messages",
                    KeyConditionExpression="recipient_id = :r AND begins_with(sk, :p)",
                    ExpressionAttributeValues={":r": s(stream), ":p": s(prefix)},
                    ConsistentRead=True,
                )
                for stream in self._streams(recipients, sent_by)
            )
        )
        shown = [[parse_message(i) for i in items] for items in parts]
        return [m for m in self._merge(shown) if m.ts not in self._aborted]

    # change events -----------------------------------------------------------------------
    async def append_event(self, draft: EventDraft) -> Event:
        """Reserve a position, write one item per stream (``ev:<stream>`` partitions of
        the messages table), release: three requests, like a batch of messages."""
        self._ready()
        reservation = await self.clock.reserve()
        event = Event(draft.id, draft.type, dict(draft.fields), reservation.ts, 0)
        try:
            items = event_items(event, draft.streams, encode_fields(draft.fields))
            await self._write_items([("messages", item) for item in items])
        except BaseException:
            await asyncio.shield(self._abort_quietly(reservation))
            raise
        await self._release(reservation)
        return event

    async def get_message(self, message_id: str) -> Message | None:
        found = await self._located(message_id)
        return None if found is None else found[0]

    async def _located(self, message_id: str) -> tuple[Message, Item] | None:
        """The message (its recipient stream's item) and its locator."""
        self._ready()
        locator = await self._get(
            "messages", {"recipient_id": s(LOCATOR_PREFIX + message_id), "sk": s("id")}
        )
        if locator is None:
            return None
        item = await self._get("messages", {"recipient_id": locator["to"], "sk": locator["msk"]})
        if item is None:
            return None
        message = parse_message(item)
        if message.ts in self._aborted:
            return None
        return message, locator

    async def edit_message(
        self, message_id: str, sender_id: str, body: str | None, events: Sequence[EventDraft]
    ) -> tuple[Message, list[Event]] | None:
        """Under one clock reservation: a conditional update of the message's item (sender,
        not deleted), the same change to its sent: copy, the event's items, release.

        A crash after the message changed but before the release leaves the reservation
        to expire: readers abort it, the event items (if any) stay hidden, the message
        shows its new state; retrying the edit or delete converges (a second delete finds
        it deleted, finishes erasing what the first may have left — the sent: copy, the
        edits' texts — and changes nothing else)."""
        found = await self._located(message_id)
        if found is None:
            return None
        current, locator = found
        if body is None and current.deleted and current.sender_id == sender_id:
            await self._finish_erasing(current, locator)
            return None
        if current.sender_id != sender_id or current.deleted:
            return None
        reservation = await self.clock.reserve()
        ts = reservation.ts
        stored = [
            Event(e.id, e.type, edited_fields(e, body, ts), ts, seq) for seq, e in enumerate(events)
        ]
        keys = [{"recipient_id": locator["to"], "sk": locator["msk"]}]
        if current.type == "private":
            keys.append({"recipient_id": s(sent_stream(current.sender_id)), "sk": locator["msk"]})
        if body is None:
            update = "SET body = :b, deleted = :d REMOVE attachments"
            values: dict[str, Any] = {":b": s(""), ":d": {"BOOL": True}}
        else:
            update = (
                "SET body = :b, edited_at = :t, edits = list_append(if_not_exists(edits, :e), :k)"
            )
            edit_keys = [
                {"L": [s(event_stream(st)), s(sort_key(ts, e.seq, e.id))]}
                for e, draft in zip(stored, events, strict=True)
                for st in dict.fromkeys(draft.streams)
            ]
            values = {":b": s(body), ":t": n(ts), ":e": {"L": []}, ":k": {"L": edit_keys}}
        try:
            try:
                response = await self.client.call(
                    "update_item",
                    TableName=self.tables["messages"],
                    Key=keys[0],
                    UpdateExpression=update,
                    ConditionExpression="sender_id = :s AND attribute_not_exists(deleted)",
                    ExpressionAttributeValues={**values, ":s": s(sender_id)},
                    ReturnValues="ALL_OLD",
                )
            except ConditionFailed:
                await self._abort_quietly(reservation)
                return None
            for key in keys[1:]:
                await self.client.call(
                    "update_item",
                    TableName=self.tables["messages"],
                    Key=key,
                    UpdateExpression=update,
                    ExpressionAttributeValues=values,
                )
            await self._write_items(
                [
                    ("messages", item)
                    for e, draft in zip(stored, events, strict=True)
                    for item in event_items(e, draft.streams, encode_fields(scrubbed(e.fields)))
                ]
            )
            if body is None:
                await self._erase_edits(response.get("Attributes", {}), locator)
        except BaseException:
            await asyncio.shield(self._abort_quietly(reservation))
            raise
        await self._release(reservation)
        if body is None:
            changed = msgspec.structs.replace(current, body="", deleted=True, attachments=())
        else:
            changed = msgspec.structs.replace(current, body=body, edited_at=ts)
        return changed, stored

    async def _finish_erasing(self, message: Message, locator: Item) -> None:
        """A deleted message's text gone from every item that may still hold it (a delete
        that died after its first write left the others). Idempotent."""
        if message.type == "private":
            with contextlib.suppress(ConditionFailed):
                await self.client.call(
                    "update_item",
                    TableName=self.tables["messages"],
                    Key={"recipient_id": s(sent_stream(message.sender_id)), "sk": locator["msk"]},
                    UpdateExpression="SET body = :b, deleted = :d REMOVE attachments",
                    ConditionExpression="attribute_exists(id)",
                    ExpressionAttributeValues={":b": s(""), ":d": {"BOOL": True}},
                )
        item = await self._get("messages", {"recipient_id": locator["to"], "sk": locator["msk"]})
        await self._erase_edits(item or {}, locator)

    async def _erase_edits(self, old: Item, locator: Item) -> None:
        """A delete: remove the text from the message's earlier edit events and from its
        idempotency claim."""
        for entry in old.get("edits", {}).get("L", []):
            stream, key = (part["S"] for part in entry["L"])
            with contextlib.suppress(ConditionFailed):
                await self.client.call(
                    "update_item",
                    TableName=self.tables["messages"],
                    Key={"recipient_id": s(stream), "sk": s(key)},
                    UpdateExpression="REMOVE message",
                    ConditionExpression="attribute_exists(id)",
                )
        if "claim" in locator:
            with contextlib.suppress(ConditionFailed):
                await self.client.call(
                    "update_item",
                    TableName=self.tables["sends"],
                    Key={"send_key": locator["claim"]},
                    UpdateExpression="SET body = :b",
                    ConditionExpression="attribute_exists(send_key)",
                    ExpressionAttributeValues={":b": s("")},
                )

    async def _release(self, reservation: Reservation) -> None:
        try:
            released = await self.clock.release(reservation)
        except BaseException:
            await asyncio.shield(self._abort_quietly(reservation))
            raise
        if not released:  # it outlived its lease and a reader aborted it
            raise Unavailable("storage write timed out")
        self._released = max(self._released, reservation.ts)

    async def _event_rows(
        self, streams: Sequence[str], after: int, upto: int, limit: int
    ) -> list[Event]:
        if upto <= after or not streams:
            return []
        low, high = ts_floor(max(after + 1, 0)), ts_ceiling(upto)
        parts = await asyncio.gather(
            *(
                self._stream_items(event_stream(st), low, high, limit, _parse_event)
                for st in dict.fromkeys(streams)
            )
        )
        return _merge_events(parts)[:limit]

    async def _event_rows_at(self, streams: Sequence[str], ts: int) -> list[Event]:
        low, high = ts_floor(ts), ts_ceiling(ts)
        parts = await asyncio.gather(
            *(
                self._stream_items(event_stream(st), low, high, 10_000, _parse_event)
                for st in dict.fromkeys(streams)
            )
        )
        return _merge_events(parts)

    # bulk ------------------------------------------------------------------------------
    async def bulk_load(self, data: BulkData) -> None:
        """Load an idle store: BatchWriteItem throughout, then move the clock past it."""
        writes: list[tuple[str, Item]] = [("users", user_item(u)) for u in data.users]
        members = list(dict.fromkeys(data.members))
        rosters: dict[str, list[tuple[str, Role]]] = {g.id: [] for g in data.groups}
        for g, u in members:
            rosters.setdefault(g, []).append((u, "member"))
        writes += [("groups", roster_group_item(g, rosters[g.id])) for g in data.groups]
        writes += [("members", {"user_id": s(u), "group_id": s(g)}) for g, u in members]
        for seq, m in enumerate(data.messages):
            message = msgspec.structs.replace(m, seq=seq)
            writes += [("messages", item) for item in message_items(message)]
        pairs = {(m.sender_id, m.recipient_id) for m in data.messages if m.type == "private"}
        writes += [("conversations", item) for item in peer_items(sorted(pairs))]
        for start in range(0, len(writes), 20 * BATCH_WRITE_MAX):
            await self._write_items(writes[start : start + 20 * BATCH_WRITE_MAX])
        if data.messages:
            await self.clock.advance_to(max(m.ts for m in data.messages))


def _parse_event(item: Item) -> Event:
    fields = decode_fields(item["fields"]["S"])
    if "message" in item:  # an edit's text, kept apart (erased when the message is deleted)
        fields["message"] = item["message"]["S"]
    return Event(
        item["id"]["S"], item["etype"]["S"], fields, int(item["ts"]["N"]), int(item["seq"]["N"])
    )


def _merge_events(parts: Sequence[list[Event]]) -> list[Event]:
    merged: dict[str, Event] = {}
    for rows in parts:
        for event in rows:
            merged.setdefault(event.id, event)  # one event addressed to several streams
    return sorted(merged.values(), key=lambda e: (e.ts, e.seq, e.id))
