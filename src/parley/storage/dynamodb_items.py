"""How Parley's records look as DynamoDB items.

Message items, one per stream a message belongs to::

    recipient_id  "u_…" (a user's inbox), "g_…" (a group), "sent:u_…" (include=sent copy)
    sk            "0001764412345678.000000003#m_9f3a…"   timestamp . position # message id
    id, type, sender_id, body, ts (N), seq (N), and "to" (the real recipient) in sent: copies
    pair          on the receiver's item of a private message: ``pair_key(receiver, sender)``

Two messages never share a sort key, by construction: the key ends with the message's id,
which is unique. (The commit clock also hands every timestamp out once and positions within
a commit are distinct, but that relies on the clock item's conditional updates; the id tail
keeps a message from overwriting another even if two writers ever got one timestamp.) The
key sorts as ``(ts, seq, id)`` because the numbers are zero-padded, and every key of
timestamp ``ts`` starts with ``ts_prefix(ts)``, so a read by timestamp range or of one
timestamp never needs the tail. Items written before the tail existed (``<ts>.<seq>``) sort
and read the same way.

Keys hold only what ``parley.domain.validation`` lets through: ids of at most 128 and
idempotency keys of at most 255 ASCII characters, well inside DynamoDB's key sizes
(a message sort key is at most 27 + 128 bytes).
"""

from __future__ import annotations

from typing import Any, cast

from parley.domain.models import Event, GroupRecord, Message, MessageType, UserRecord

SENT_PREFIX = "sent:"
EVENT_PREFIX = "ev:"

Item = dict[str, Any]


def sent_stream(user_id: str) -> str:
    return SENT_PREFIX + user_id


def sort_key(ts: int, seq: int, message_id: str) -> str:
    return f"{ts:016d}.{seq:09d}#{message_id}"


def ts_prefix(ts: int) -> str:
    """Every sort key of timestamp ``ts`` starts with this."""
    return f"{ts:016d}."


def ts_floor(ts: int) -> str:
    """Sorts before every sort key of timestamp ``ts`` and after all earlier ones."""
    return f"{ts:016d}"


def ts_ceiling(ts: int) -> str:
    """Sorts after every sort key of timestamp ``ts`` and before all later ones."""
    return f"{ts:016d}/"  # "/" follows "."


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def send_key(sender_id: str, key: str) -> str:
    """The idempotency key of a send, unambiguous whatever either part contains."""
    return f"{len(sender_id)}:{sender_id}{key}"


def _message_fields(message: Message) -> Item:
    fields: Item = {
        "id": s(message.id),
        "type": s(message.type),
        "sender_id": s(message.sender_id),
        "body": s(message.body),
        "ts": n(message.ts),
        "seq": n(message.seq),
    }
    if message.attachments:  # media ids, only when there are some
        fields["attachments"] = {"L": [s(m) for m in message.attachments]}
    return fields


def pair_key(recipient_id: str, sender_id: str) -> str:
    """One direction of a private conversation (the by_pair index's key), unambiguous
    whatever either id contains."""
    return f"{len(recipient_id)}:{recipient_id}{sender_id}"


def message_items(message: Message) -> list[Item]:
    """The items of one message: its recipient's stream, and the sender's sent: stream."""
    key = sort_key(message.ts, message.seq, message.id)
    items = [{"recipient_id": s(message.recipient_id), "sk": s(key), **_message_fields(message)}]
    if message.type == "private":
        items[0]["pair"] = s(pair_key(message.recipient_id, message.sender_id))
        items.append(
            {
                "recipient_id": s(sent_stream(message.sender_id)),
                "sk": s(key),
                "to": s(message.recipient_id),
                **_message_fields(message),
            }
        )
    return items


LOCATOR_PREFIX = "id:"


def locator_item(message: Message, claim: str | None) -> Item:
    """Where a message's items are, by its id (edits and deletes address it by id)."""
    item: Item = {
        "recipient_id": s(LOCATOR_PREFIX + message.id),
        "sk": s("id"),
        "to": s(message.recipient_id),
        "msk": s(sort_key(message.ts, message.seq, message.id)),
        "type": s(message.type),
        "sender_id": s(message.sender_id),
    }
    if claim is not None:
        item["claim"] = s(claim)
    return item


def event_stream(stream: str) -> str:
    """The partition of a stream's change events (beside its messages, never mixed)."""
    return EVENT_PREFIX + stream


def event_items(event: Event, streams: tuple[str, ...], fields_json: str) -> list[Item]:
    """The items of one event: one per stream it is addressed to. An edit's new text is
    kept apart (``message``), so a later delete erases it with one REMOVE."""
    key = sort_key(event.ts, event.seq, event.id)
    text = {"message": s(event.fields["message"])} if "message" in event.fields else {}
    return [
        {
            **text,
            "recipient_id": s(event_stream(stream)),
            "sk": s(key),
            "id": s(event.id),
            "etype": s(event.type),
            "fields": s(fields_json),
            "ts": n(event.ts),
            "seq": n(event.seq),
        }
        for stream in dict.fromkeys(streams)
    ]


def parse_message(item: Item) -> Message:
    recipient = item["to"]["S"] if "to" in item else item["recipient_id"]["S"]
    return Message(
        id=item["id"]["S"],
        type=cast(MessageType, item["type"]["S"]),
        sender_id=item["sender_id"]["S"],
        recipient_id=recipient,
        body=item["body"]["S"],
        ts=int(item["ts"]["N"]),
        seq=int(item["seq"]["N"]),
        edited_at=int(item["edited_at"]["N"]) if "edited_at" in item else 0,
        deleted="deleted" in item,
        attachments=tuple(a["S"] for a in item["attachments"]["L"])
        if "attachments" in item
        else (),
    )


def claim_item(message: Message, key: str, expires_at: int) -> Item:
    """An idempotency claim: the key and the message it stored (or is storing)."""
    return {
        "send_key": s(key),
        "to": s(message.recipient_id),
        **_message_fields(message),
        "expires_at": n(expires_at),
    }


def user_item(user: UserRecord) -> Item:
    item: Item = {"user_id": s(user.id), "username": s(user.username)}
    if user.token_hash is not None:
        item["token_hash"] = {"B": user.token_hash}
    return item


def parse_user(item: Item) -> UserRecord:
    token = item.get("token_hash")
    return UserRecord(item["user_id"]["S"], item["username"]["S"], token["B"] if token else None)


def group_item(group: GroupRecord) -> Item:
    return {"group_id": s(group.id), "name": s(group.name)}


def parse_group(item: Item) -> GroupRecord:
    return GroupRecord(item["group_id"]["S"], item["name"]["S"])
