"""Devices, passwords and account deletion on DynamoDB (mixed into ``DynamoStorage``).

* ``tokens`` table: one item per signed-in device, keyed by (``user_id``, ``token_id``),
  holding the secret's SHA-256 only. A user's devices are one strongly consistent Query.
* ``users`` items gain ``status`` (absent: active; ``deleting``; ``deleted``) and
  ``password_hash`` (argon2id), changed by conditional ``UpdateItem``.
* Erasing an account: its tokens and memberships by Query; blocks *of* it, message texts
  and idempotency claims by a filtered Scan (no index serves "by sender" or "blocked by";
  deletions are rare, and an index would cost every send and every block). Each step is
  idempotent, so a repeated call finishes an interrupted one.
* Deletions under way: one item in ``users`` (key ``PENDING``, which no user id can be)
  holds the ids of the users marked ``deleting`` in a string set. Marking a user and
  adding it to the set is one transaction, and so are ``deleted`` and taking it out, so
  ``deleting_users`` is one strongly consistent read and never misses one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from parley.domain.models import TokenRecord
from parley.errors import Unavailable
from parley.storage.base import AccountState
from parley.storage.dynamodb_client import ConditionFailed, DynamoClient, DynamoUnavailable
from parley.storage.dynamodb_groups import Rosters
from parley.storage.dynamodb_items import Item, n, s
from parley.storage.dynamodb_pending import CANCELLED

SCAN_PAGES_MAX = 100_000


def token_item(token: TokenRecord) -> Item:
    return {
        "user_id": s(token.user_id),
        "token_id": s(token.id),
        "hash": {"B": token.hash},
        "device_name": s(token.device_name),
        "created_at": n(token.created_at),
        "last_used_at": n(token.last_used_at),
    }


def parse_token(item: Item) -> TokenRecord:
    return TokenRecord(
        item["token_id"]["S"],
        item["user_id"]["S"],
        bytes(item["hash"]["B"]),
        item["device_name"]["S"],
        int(item["created_at"]["N"]),
        int(item["last_used_at"]["N"]),
    )


PENDING = "#deleting"  # the users item listing deletions under way (not a user id)
TRANSACTION_TRIES = 5


def user_status(item: Item | None) -> AccountState | None:
    if item is None:
        return None
    return cast(AccountState, item["status"]["S"] if "status" in item else "active")


class DynamoAccounts:
    """Needs the adapter's ``client``, ``tables``, ``rosters``, ``_get``, ``_query``, ``_ready``."""

    client: DynamoClient
    tables: dict[str, str]
    rosters: Rosters
    _get: Callable[[str, Item], Awaitable[Item | None]]
    _query: Callable[..., Awaitable[list[Item]]]
    _ready: Callable[[], None]

    async def _update(self, table: str, key: Item, **kwargs: Any) -> bool:
        self._ready()
        try:
            await self.client.call("update_item", TableName=self.tables[table], Key=key, **kwargs)
        except ConditionFailed:
            return False
        return True

    async def _delete(self, table: str, key: Item) -> None:
        self._ready()
        await self.client.call("delete_item", TableName=self.tables[table], Key=key)

    async def _scan(self, table: str, **kwargs: Any) -> list[Item]:
        self._ready()
        items: list[Item] = []
        for _ in range(SCAN_PAGES_MAX):
            response = await self.client.call("scan", TableName=self.tables[table], **kwargs)
            items += response.get("Items", [])
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
            kwargs["ExclusiveStartKey"] = start
        return items

    async def add_token(self, token: TokenRecord) -> None:
        self._ready()
        await self.client.call("put_item", TableName=self.tables["tokens"], Item=token_item(token))

    async def user_tokens(self, user_id: str) -> list[TokenRecord]:
        items = await self._query(
            "tokens",
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": s(user_id)},
            ConsistentRead=True,
        )
        return sorted(map(parse_token, items), key=lambda t: (t.created_at, t.id))

    async def delete_token(self, user_id: str, token_id: str) -> bool:
        self._ready()
        try:
            await self.client.call(
                "delete_item",
                TableName=self.tables["tokens"],
                Key={"user_id": s(user_id), "token_id": s(token_id)},
                ConditionExpression="attribute_exists(user_id)",
            )
        except ConditionFailed:
            return False
        return True

    async def touch_token(self, user_id: str, token_id: str, at: int) -> None:
        await self._update(
            "tokens",
            {"user_id": s(user_id), "token_id": s(token_id)},
            UpdateExpression="SET last_used_at = :t",
            ConditionExpression="attribute_exists(user_id) AND last_used_at < :t",
            ExpressionAttributeValues={":t": n(at)},
        )

    async def get_password(self, user_id: str) -> str | None:
        item = await self._get("users", {"user_id": s(user_id)})
        if user_status(item) != "active" or item is None or "password_hash" not in item:
            return None
        return str(item["password_hash"]["S"])

    async def set_password(self, user_id: str, password_hash: str) -> bool:
        return await self._update(
            "users",
            {"user_id": s(user_id)},
            UpdateExpression="SET password_hash = :p",
            ConditionExpression="attribute_exists(user_id) AND attribute_not_exists(#st)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={":p": s(password_hash)},
        )

    async def account_state(self, user_id: str) -> AccountState | None:
        return user_status(await self._get("users", {"user_id": s(user_id)}))

    async def begin_deletion(self, user_id: str) -> bool:
        mark = {
            "TableName": self.tables["users"],
            "Key": {"user_id": s(user_id)},
            "UpdateExpression": "SET #st = :d",
            "ConditionExpression": "attribute_exists(user_id) AND (attribute_not_exists(#st)"
            " OR #st = :d)",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":d": s("deleting")},
        }
        for _ in range(TRANSACTION_TRIES):
            if await self._pending(mark, "ADD", user_id):
                return True
            if await self.account_state(user_id) not in ("active", "deleting"):
                return False  # unknown, or deleted (else a conflict: again)
        return await self.account_state(user_id) == "deleting"

    async def _pending(self, update: Item, action: str, user_id: str) -> bool:
        """``update`` on a user item and ``action`` (ADD or DELETE) of its id in the set of
        deletions under way, in one transaction; False if a condition (or a conflict)
        stopped it."""
        self._ready()
        pending = {
            "TableName": self.tables["users"],
            "Key": {"user_id": s(PENDING)},
            "UpdateExpression": f"{action} ids :u",
            "ExpressionAttributeValues": {":u": {"SS": [user_id]}},
        }
        try:
            await self.client.call(
                "transact_write_items", TransactItems=[{"Update": update}, {"Update": pending}]
            )
        except DynamoUnavailable as exc:
            if exc.aws_code in (CANCELLED, "TransactionConflictException"):
                return False
            raise
        return True

    async def deleting_users(self) -> list[str]:
        item = await self._get("users", {"user_id": s(PENDING)})
        return sorted(item["ids"]["SS"]) if item is not None and "ids" in item else []

    async def erase_account(self, user_id: str) -> None:
        if await self.account_state(user_id) != "deleting":
            return
        uid = {":u": s(user_id)}
        await self._update(
            "users",
            {"user_id": s(user_id)},
            UpdateExpression="REMOVE password_hash, token_hash SET username = :e",
            ExpressionAttributeValues={":e": s("")},
        )
        for item in await self._query(
            "members", KeyConditionExpression="user_id = :u", ExpressionAttributeValues=uid,
            ConsistentRead=True,
        ):  # fmt: skip
            # through the roster: an owner hands the group over, the count goes down
            await self.rosters.leave(item["group_id"]["S"], user_id, None, None)
            await self._delete("members", {"user_id": s(user_id), "group_id": item["group_id"]})
        for item in await self._query(
            "blocks", KeyConditionExpression="blocker_id = :u", ExpressionAttributeValues=uid,
            ConsistentRead=True,
        ):  # fmt: skip
            await self._delete(
                "blocks", {"blocker_id": s(user_id), "blocked_id": item["blocked_id"]}
            )
        for item in await self._scan(
            "blocks", FilterExpression="blocked_id = :u", ExpressionAttributeValues=uid,
            ConsistentRead=True,
        ):  # fmt: skip
            await self._delete(
                "blocks", {"blocker_id": item["blocker_id"], "blocked_id": s(user_id)}
            )
        erase = {":u": s(user_id), ":e": s("")}
        for table, keys in (("messages", ("recipient_id", "sk")), ("sends", ("send_key",))):
            for item in await self._scan(
                table, FilterExpression="sender_id = :u AND body <> :e",
                ExpressionAttributeValues=erase, ConsistentRead=True,
            ):  # fmt: skip
                # Earlier texts kept by the message's edit events go first (a retry finds
                # the message again while its body is not yet erased).
                for entry in item.get("edits", {}).get("L", []):
                    stream, key = (part["S"] for part in entry["L"])
                    await self._update(
                        "messages",
                        {"recipient_id": s(stream), "sk": s(key)},
                        UpdateExpression="REMOVE message",
                        ConditionExpression="attribute_exists(id)",
                    )
                await self._update(
                    table,
                    {k: item[k] for k in keys},
                    UpdateExpression="SET body = :e",
                    ConditionExpression="attribute_exists(sender_id)",
                    ExpressionAttributeValues={":e": s("")},
                )

        # Tokens last: until they are gone, repeating the call can authenticate and finish.
        for token in await self.user_tokens(user_id):
            await self._delete("tokens", {"user_id": s(user_id), "token_id": s(token.id)})

    async def finish_deletion(self, user_id: str) -> None:
        done = {
            "TableName": self.tables["users"],
            "Key": {"user_id": s(user_id)},
            "UpdateExpression": "SET #st = :x",
            "ConditionExpression": "#st = :d",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":x": s("deleted"), ":d": s("deleting")},
        }
        for _ in range(TRANSACTION_TRIES):
            if await self._pending(done, "DELETE", user_id):
                return
            if await self.account_state(user_id) != "deleting":
                return  # finished already (else a conflict: again)
        raise Unavailable("the deletion could not be finished; repeating it will")
