"""Group rosters on DynamoDB: roles, the member cap and the owner hand-over.

A group's item carries its roster and two counters beside its name::

    group_id, name
    roster   M  {user_id: {"r": "owner" | "admin" | "member", "j": joined (ns)}}
    n        N  members in the roster
    v        N  bumped by every removal and role change

Each change is conditional on what it relies on, so no read-then-write can be overtaken:

* add: one ``TransactWriteItems`` — the group item's update (``n < cap``, the user not in
  the roster, the adder still owner or admin; ``n`` incremented) and the membership item.
  2,000 concurrent adds to a group capped at 1,024 leave exactly 1,024: the counter's
  condition is checked and incremented atomically.
* remove / leave: the roster is read, the successor picked (``parley.domain.roles``), and
  the update is conditional on ``v`` being unchanged (nobody was promoted, demoted or
  removed meanwhile), in one transaction with the membership item's delete. An owner who
  leaves alone is also conditional on ``n`` (nobody joined meanwhile).
* promote / demote, rename: one conditional ``UpdateItem`` on the roles involved.

Within one process, changes to one group take turns (an asyncio lock per group): they would
only overtake each other and retry. Across processes the conditions decide.

A condition that failed is answered by reading the item again: the change was refused
(already a member, full, denied) or overtaken (then it is tried again, bounded). The
membership items (``members`` table) stay what ``user_groups`` and the cache read; the
roster is what the rules read. A group written before rosters existed gets an empty roster
on its first change (its earlier members keep their membership, as members).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, cast

from parley.domain.models import GroupRecord
from parley.domain.roles import (
    GroupWrite,
    Member,
    Outcome,
    Role,
    decide_add,
    decide_remove,
    decide_role,
    in_order,
    may_rename,
)
from parley.errors import Unavailable
from parley.storage.base import GroupEvents
from parley.storage.dynamodb_client import ConditionFailed, DynamoClient
from parley.storage.dynamodb_items import Item, group_item, n, s
from parley.storage.dynamodb_pending import PendingEvents, transact

log = logging.getLogger("parley.dynamodb")
ATTEMPTS = 200  # tries of a change overtaken by concurrent ones before answering 503


def entry(role: Role, joined: int) -> Item:
    return {"M": {"r": s(role), "j": n(joined)}}


def roster_group_item(group: GroupRecord, members: list[tuple[str, Role]]) -> Item:
    """A new group's item with its first members (joined in list order)."""
    now = time.time_ns()
    roster = {user: entry(role, now + i) for i, (user, role) in enumerate(members)}
    return {**group_item(group), "roster": {"M": roster}, "n": n(len(roster)), "v": n(0)}


def parse_roster(item: Item) -> dict[str, Member] | None:
    raw = item.get("roster")
    if raw is None:
        return None
    return {
        user: Member(user, cast(Role, e["M"]["r"]["S"]), int(e["M"]["j"]["N"]))
        for user, e in raw["M"].items()
    }


class Rosters:
    def __init__(
        self, client: DynamoClient, groups_table: str, members_table: str, pending: PendingEvents
    ) -> None:
        self.client = client
        self.groups = groups_table
        self.members = members_table
        self.pending = pending
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def _turn(self, group_id: str) -> AsyncIterator[None]:
        """This process's changes to one group, one at a time."""
        lock = self._turns.get(group_id)
        if lock is None:
            lock = self._turns[group_id] = asyncio.Lock()
        async with lock:
            yield

    async def _item(self, group_id: str) -> Item | None:
        response = await self.client.call(
            "get_item", TableName=self.groups, Key={"group_id": s(group_id)}, ConsistentRead=True
        )
        return cast(Item | None, response.get("Item"))

    async def _read(self, group_id: str) -> tuple[Item, dict[str, Member]] | None:
        """The group's item and roster (an empty roster is given to an older group)."""
        for _ in range(2):
            item = await self._item(group_id)
            if item is None:
                return None
            roster = parse_roster(item)
            if roster is not None:
                return item, roster
            with contextlib.suppress(ConditionFailed):  # another process just did it
                await self.client.call(
                    "update_item",
                    TableName=self.groups,
                    Key={"group_id": s(group_id)},
                    UpdateExpression="SET #r = :e, #n = :z, #v = :z",
                    ConditionExpression="attribute_exists(group_id) AND attribute_not_exists(#r)",
                    ExpressionAttributeNames={"#r": "roster", "#n": "n", "#v": "v"},
                    ExpressionAttributeValues={":e": {"M": {}}, ":z": n(0)},
                )
        raise Unavailable("group item could not be read")

    async def _transact(self, items: list[Item]) -> bool:
        """True if the transaction committed, False if a condition (or a conflict) stopped it."""
        return await transact(self.client, items)

    async def _commit(
        self, group_id: str, items: list[Item], events: GroupEvents | None, write: GroupWrite
    ) -> bool:
        """The change's transaction; with events, under a clock reservation, with their
        items and the group's pending record (``parley.storage.dynamodb_pending``)."""
        drafts = events.drafts(write) if events is not None else []
        if events is None or not drafts:
            return await self._transact(items)
        clock = self.pending.clock
        reservation = await clock.reserve()
        extra, stored = self.pending.writes(group_id, reservation.ts, drafts)
        try:
            committed = await self._transact(items + extra)
        except BaseException:  # it may have committed: then the record's finisher stores them
            await asyncio.shield(clock.abort(reservation))
            raise
        if not committed:
            await clock.release(reservation)  # nothing was written under it
            # An earlier change's events may be pending: they go first (the next try).
            events.stored += await self.pending.finish(group_id)
            return False
        try:
            events.stored += await self.pending.settle(group_id, reservation, stored)
        except Exception:  # the change is made; the pending record's finisher does the rest
            log.warning("group %s: its events are left pending", group_id, exc_info=True)
        return True

    @staticmethod
    async def _pause(attempt: int) -> None:
        await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.05)))

    def _membership(self, group_id: str, user_id: str) -> Item:
        return {"group_id": s(group_id), "user_id": s(user_id)}

    async def _join(
        self,
        group_id: str,
        user_id: str,
        by: str | None,
        cap: int | None,
        events: GroupEvents | None,
    ) -> Outcome:
        for attempt in range(ATTEMPTS):
            names = {"#r": "roster", "#u": user_id, "#n": "n"}
            values: dict[str, Any] = {":e": entry("member", time.time_ns()), ":one": n(1)}
            conditions = ["attribute_exists(#r)", "attribute_not_exists(#r.#u)"]
            if cap is not None:
                conditions.append("#n < :cap")
                values[":cap"] = n(cap)
            if by is not None:
                names |= {"#b": by, "#role": "r"}
                values |= {":owner": s("owner"), ":admin": s("admin")}
                conditions.append("#r.#b.#role IN (:owner, :admin)")
            update = {
                "TableName": self.groups,
                "Key": {"group_id": s(group_id)},
                "UpdateExpression": "SET #r.#u = :e ADD #n :one",
                "ConditionExpression": " AND ".join(conditions),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            put = {"TableName": self.members, "Item": self._membership(group_id, user_id)}
            if await self._commit(
                group_id, [{"Update": update}, {"Put": put}], events, GroupWrite("done")
            ):
                return "done"
            read = await self._read(group_id)
            if read is None:
                return "no_group"
            item, roster = read
            outcome = decide_add(roster, user_id, by, None)
            if outcome != "done":
                return outcome
            if cap is not None and int(item["n"]["N"]) >= cap:
                return "full"
            await self._pause(attempt)
        raise Unavailable("too many concurrent changes to this group")

    async def _leave(
        self, group_id: str, user_id: str, by: str | None, events: GroupEvents | None
    ) -> GroupWrite:
        for attempt in range(ATTEMPTS):
            read = await self._read(group_id)
            if read is None:
                return GroupWrite("no_group")
            item, roster = read
            write = decide_remove(roster, user_id, by)
            if write.outcome != "done":
                return write
            names = {"#r": "roster", "#u": user_id, "#n": "n", "#v": "v"}
            values: dict[str, Any] = {":one": n(1), ":v": item["v"]}
            sets = ["#n = #n - :one", "#v = #v + :one"]
            conditions = ["attribute_exists(#r.#u)", "#v = :v"]
            if write.new_owner is not None:
                names |= {"#s": write.new_owner, "#role": "r"}
                values[":owner"] = s("owner")
                sets.append("#r.#s.#role = :owner")
                conditions.append("attribute_exists(#r.#s)")
            elif roster[user_id].role == "owner":
                values[":count"] = item["n"]  # the owner leaves alone: nobody may have joined
                conditions.append("#n = :count")
            update = {
                "TableName": self.groups,
                "Key": {"group_id": s(group_id)},
                "UpdateExpression": f"SET {', '.join(sets)} REMOVE #r.#u",
                "ConditionExpression": " AND ".join(conditions),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            delete = {"TableName": self.members, "Key": self._membership(group_id, user_id)}
            if await self._commit(
                group_id, [{"Update": update}, {"Delete": delete}], events, write
            ):
                return write
            await self._pause(attempt)
        raise Unavailable("too many concurrent changes to this group")

    async def _set_role(
        self, group_id: str, user_id: str, role: Role, by: str | None, events: GroupEvents | None
    ) -> Outcome:
        for attempt in range(ATTEMPTS):
            read = await self._read(group_id)
            if read is None:
                return "no_group"
            _, roster = read
            outcome = decide_role(roster, user_id, role, by)
            if outcome != "done":
                return outcome
            names = {"#r": "roster", "#u": user_id, "#role": "r", "#v": "v"}
            values: dict[str, Any] = {
                ":role": s(role),
                ":was": s(roster[user_id].role),
                ":one": n(1),
            }
            condition = "#r.#u.#role = :was"
            if by is not None:
                names["#b"] = by
                values[":owner"] = s("owner")
                condition += " AND #r.#b.#role = :owner"
            update = "SET #r.#u.#role = :role, #v = #v + :one"
            if await self._update_group(group_id, update, condition, names, values, events):
                return "done"
            await self._pause(attempt)
        raise Unavailable("too many concurrent changes to this group")

    async def _rename(
        self, group_id: str, name: str, by: str | None, events: GroupEvents | None
    ) -> Outcome:
        for attempt in range(ATTEMPTS):
            read = await self._read(group_id)
            if read is None:
                return "no_group"
            if not may_rename(read[1], by):
                return "denied"
            names = {"#name": "name"}
            values: dict[str, Any] = {":name": s(name)}
            condition = "attribute_exists(group_id)"
            if by is not None:
                names |= {"#r": "roster", "#b": by, "#role": "r"}
                values |= {":owner": s("owner"), ":admin": s("admin")}
                condition += " AND #r.#b.#role IN (:owner, :admin)"
            update = "SET #name = :name"
            if await self._update_group(group_id, update, condition, names, values, events):
                return "done"
            await self._pause(attempt)
        raise Unavailable("too many concurrent changes to this group")

    async def _update_group(
        self,
        group_id: str,
        update: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
        events: GroupEvents | None,
    ) -> bool:
        """One conditional write of the group item; False when the condition failed. With
        events, a transaction (``_commit``)."""
        if events is not None:
            change = {
                "TableName": self.groups,
                "Key": {"group_id": s(group_id)},
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            return await self._commit(group_id, [{"Update": change}], events, GroupWrite("done"))
        try:
            await self.client.call(
                "update_item",
                TableName=self.groups,
                Key={"group_id": s(group_id)},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True

    async def join(
        self,
        group_id: str,
        user_id: str,
        by: str | None,
        cap: int | None,
        events: GroupEvents | None,
    ) -> Outcome:
        async with self._turn(group_id):
            return await self._join(group_id, user_id, by, cap, events)

    async def leave(
        self, group_id: str, user_id: str, by: str | None, events: GroupEvents | None
    ) -> GroupWrite:
        async with self._turn(group_id):
            return await self._leave(group_id, user_id, by, events)

    async def set_role(
        self, group_id: str, user_id: str, role: Role, by: str | None, events: GroupEvents | None
    ) -> Outcome:
        async with self._turn(group_id):
            return await self._set_role(group_id, user_id, role, by, events)

    async def rename(
        self, group_id: str, name: str, by: str | None, events: GroupEvents | None
    ) -> Outcome:
        async with self._turn(group_id):
            return await self._rename(group_id, name, by, events)

    async def roster(self, group_id: str) -> list[Member]:
        item = await self._item(group_id)
        return in_order(parse_roster(item) or {}) if item is not None else []
