"""The in-memory adapter: the reference behaviour every other adapter must match.

Nothing survives a restart. Writes commit instantly, so positions finish in the order they
begin; the tracker still bounds reads by the frontier, exactly as the SQLite adapter does.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

import msgspec

from parley.domain.models import Event, GroupRecord, Message, TokenRecord, UserRecord
from parley.domain.positions import PositionTracker
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
from parley.storage.base import (
    AccountState,
    Conversation,
    EventDraft,
    GroupEvents,
    MessageDraft,
    Storage,
    counted,
    edited_fields,
    scrubbed,
)
from parley.storage.media_memory import MemoryMedia


@counted
class MemoryStorage(MemoryMedia, Storage):
    name = "memory"

    def __init__(self, positions: PositionTracker | None = None) -> None:
        super().__init__()
        self.positions = positions or PositionTracker()
        self._users: dict[str, UserRecord] = {}
        self._groups: dict[str, GroupRecord] = {}
        self._members: dict[str, dict[str, Member]] = {}
        self._joins = itertools.count(1)
        self._memberships: dict[str, set[str]] = {}
        self._blocks: dict[str, set[str]] = {}
        self._inbox: dict[str, list[Message]] = {}  # recipient id -> messages by (ts, seq)
        self._sent: dict[str, list[Message]] = {}  # sender id -> private messages sent
        self._sends: dict[tuple[str, str], Message] = {}
        # private messages by (recipient, sender): one conversation's direction, as
        # positions in the recipient's inbox (so edits there show here too)
        self._pairs: dict[tuple[str, str], list[int]] = {}
        self._peers: dict[str, set[str]] = {}
        self._read: dict[tuple[str, str], int] = {}  # (user, conversation) -> read up to
        self._seq = itertools.count(1)
        self._last_ts = 0
        self._tokens: dict[str, dict[str, TokenRecord]] = {}  # user id -> token id -> token
        self._passwords: dict[str, str] = {}
        self._states: dict[str, AccountState] = {}
        self._events: dict[str, list[Event]] = {}  # stream -> events by (ts, seq)
        self._where: dict[str, tuple[str, int]] = {}  # message id -> (recipient, ts)
        self._edits: dict[str, list[Event]] = {}  # message id -> its message_edited events

    async def ping(self) -> None:
        return None

    async def last_position(self) -> int:
        return self._last_ts

    async def create_user(self, user: UserRecord, token: TokenRecord | None = None) -> None:
        self._users[user.id] = user
        self._states[user.id] = "active"
        if token is not None:
            await self.add_token(token)

    async def get_user(self, user_id: str) -> UserRecord | None:
        if self._states.get(user_id) != "active":
            return None
        return self._users.get(user_id)

    # devices, passwords and account deletion -------------------------------------------
    async def add_token(self, token: TokenRecord) -> None:
        self._tokens.setdefault(token.user_id, {})[token.id] = token

    async def user_tokens(self, user_id: str) -> list[TokenRecord]:
        tokens = self._tokens.get(user_id, {}).values()
        return sorted(tokens, key=lambda t: (t.created_at, t.id))

    async def delete_token(self, user_id: str, token_id: str) -> bool:
        return self._tokens.get(user_id, {}).pop(token_id, None) is not None

    async def touch_token(self, user_id: str, token_id: str, at: int) -> None:
        tokens = self._tokens.get(user_id, {})
        token = tokens.get(token_id)
        if token is not None and at > token.last_used_at:
            tokens[token_id] = msgspec.structs.replace(token, last_used_at=at)

    async def get_password(self, user_id: str) -> str | None:
        if self._states.get(user_id) != "active":
            return None
        return self._passwords.get(user_id)

    async def set_password(self, user_id: str, password_hash: str) -> bool:
        if self._states.get(user_id) != "active":
            return False
        self._passwords[user_id] = password_hash
        return True

    async def account_state(self, user_id: str) -> AccountState | None:
        return self._states.get(user_id)

    async def begin_deletion(self, user_id: str) -> bool:
        if self._states.get(user_id) not in ("active", "deleting"):
            return False
        self._states[user_id] = "deleting"
        return True

    async def erase_account(self, user_id: str) -> None:
        if self._states.get(user_id) != "deleting":
            return
        self._users[user_id] = UserRecord(user_id, "")
        self._passwords.pop(user_id, None)
        for group_id in sorted(self._memberships.get(user_id, set())):
            await self.leave_group(group_id, user_id, by=None)  # an owner hands over
        self._memberships.pop(user_id, None)
        self._blocks.pop(user_id, None)
        for blocked in self._blocks.values():
            blocked.discard(user_id)
        for stream in (*self._inbox.values(), *self._sent.values()):
            for i, message in enumerate(stream):
                if message.sender_id == user_id and message.body:
                    stream[i] = msgspec.structs.replace(message, body="")
                if message.sender_id == user_id:
                    for edit in self._edits.pop(message.id, []):  # earlier texts go too
                        kept = scrubbed(edit.fields)
                        edit.fields.clear()
                        edit.fields.update(kept)
        for key, message in list(self._sends.items()):
            if message.sender_id == user_id:
                self._sends[key] = msgspec.structs.replace(message, body="")
        self._tokens.pop(user_id, None)

    async def finish_deletion(self, user_id: str) -> None:
        if self._states.get(user_id) == "deleting":
            self._states[user_id] = "deleted"

    async def deleting_users(self) -> list[str]:
        return sorted(u for u, state in self._states.items() if state == "deleting")

    async def create_group(self, group: GroupRecord, first_member: str | None) -> None:
        self._groups[group.id] = group
        self._members[group.id] = {}
        if first_member is not None:
            self._add(group.id, first_member, "owner")

    async def get_group(self, group_id: str) -> GroupRecord | None:
        return self._groups.get(group_id)

    def _add(self, group_id: str, user_id: str, role: Role) -> None:
        self._members[group_id][user_id] = Member(user_id, role, next(self._joins))
        self._memberships.setdefault(user_id, set()).add(group_id)

    async def join_group(
        self,
        group_id: str,
        user_id: str,
        *,
        by: str | None,
        cap: int | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        roster = self._members.get(group_id)
        if roster is None:
            return "no_group"
        outcome = decide_add(roster, user_id, by, cap)
        if outcome == "done":
            self._add(group_id, user_id, "member")
        await self._group_events(events, GroupWrite(outcome))
        return outcome

    async def _group_events(self, events: GroupEvents | None, write: GroupWrite) -> None:
        """A group change's events, stored right after it (nothing in between can fail)."""
        if events is not None:
            for draft in events.drafts(write):
                events.stored.append((await self.append_event(draft), draft.streams))

    async def leave_group(
        self, group_id: str, user_id: str, *, by: str | None, events: GroupEvents | None = None
    ) -> GroupWrite:
        roster = self._members.get(group_id)
        if roster is None:
            return GroupWrite("no_group")
        write = decide_remove(roster, user_id, by)
        if write.outcome == "done":
            del roster[user_id]
            self._memberships.get(user_id, set()).discard(group_id)
            if write.new_owner is not None:
                heir = roster[write.new_owner]
                roster[heir.user_id] = Member(heir.user_id, "owner", heir.joined)
        await self._group_events(events, write)
        return write

    async def set_role(
        self,
        group_id: str,
        user_id: str,
        role: Role,
        *,
        by: str | None,
        events: GroupEvents | None = None,
    ) -> Outcome:
        roster = self._members.get(group_id)
        if roster is None:
            return "no_group"
        outcome = decide_role(roster, user_id, role, by)
        if outcome == "done":
            roster[user_id] = Member(user_id, role, roster[user_id].joined)
        await self._group_events(events, GroupWrite(outcome))
        return outcome

    async def rename_group(
        self, group_id: str, name: str, *, by: str | None, events: GroupEvents | None = None
    ) -> Outcome:
        roster = self._members.get(group_id)
        if roster is None:
            return "no_group"
        if not may_rename(roster, by):
            return "denied"
        self._groups[group_id] = GroupRecord(group_id, name)
        await self._group_events(events, GroupWrite("done"))
        return "done"

    async def group_roster(self, group_id: str) -> list[Member]:
        return in_order(self._members.get(group_id, {}))

    async def group_members(self, group_id: str) -> list[str]:
        return sorted(self._members.get(group_id, ()))

    async def user_groups(self, user_id: str) -> list[str]:
        return sorted(self._memberships.get(user_id, ()))

    async def add_block(self, blocker_id: str, blocked_id: str) -> bool:
        blocked = self._blocks.setdefault(blocker_id, set())
        if blocked_id in blocked:
            return False
        blocked.add(blocked_id)
        return True

    async def remove_block(self, blocker_id: str, blocked_id: str) -> bool:
        blocked = self._blocks.get(blocker_id, set())
        if blocked_id not in blocked:
            return False
        blocked.discard(blocked_id)
        return True

    async def blocked_by(self, blocker_id: str) -> list[str]:
        return sorted(self._blocks.get(blocker_id, ()))

    async def append_message(self, draft: MessageDraft) -> tuple[Message, bool]:
        if draft.send_key is not None:
            earlier = self._sends.get((draft.sender_id, draft.send_key))
            if earlier is not None:
                return earlier, False
        async with self.positions.writing() as ts:
            message = Message(
                id=draft.id,
                type=draft.type,
                sender_id=draft.sender_id,
                recipient_id=draft.recipient_id,
                body=draft.body,
                ts=ts,
                seq=next(self._seq),
                attachments=draft.attachments,
            )
            self._inbox.setdefault(message.recipient_id, []).append(message)
            self._where[message.id] = (message.recipient_id, ts)
            if message.type == "private":
                self._sent.setdefault(message.sender_id, []).append(message)
                pair = (message.recipient_id, message.sender_id)
                inbox = self._inbox[message.recipient_id]
                self._pairs.setdefault(pair, []).append(len(inbox) - 1)
                self._peers.setdefault(message.sender_id, set()).add(message.recipient_id)
                self._peers.setdefault(message.recipient_id, set()).add(message.sender_id)
            if draft.send_key is not None:
                self._sends[(draft.sender_id, draft.send_key)] = message
            self._last_ts = max(self._last_ts, ts)
        return message, True

    async def find_send(self, sender_id: str, send_key: str) -> Message | None:
        return self._sends.get((sender_id, send_key))

    def _streams(self, recipients: Sequence[str], sent_by: str | None) -> list[list[Message]]:
        streams = [self._inbox.get(r, []) for r in dict.fromkeys(recipients)]
        if sent_by is not None:
            streams.append(self._sent.get(sent_by, []))
        return streams

    def _merged(
        self, recipients: Sequence[str], sent_by: str | None, after: int
    ) -> Iterator[Message]:
        parts = []
        for stream in self._streams(recipients, sent_by):
            start = bisect_right(stream, after, key=lambda m: m.ts)
            parts.append(itertools.islice(stream, start, None))
        seen: set[int] = set()
        for message in heapq.merge(*parts, key=lambda m: (m.ts, m.seq)):
            if message.seq not in seen:  # a private message to oneself is in both streams
                seen.add(message.seq)
                yield message

    async def _page_rows(
        self, recipients: Sequence[str], sent_by: str | None, after: int, limit: int
    ) -> tuple[list[Message], int]:
        frontier = await self.positions.caught_up()
        rows: list[Message] = []
        for message in self._merged(recipients, sent_by, after):
            if message.ts > frontier or len(rows) >= limit:
                break
            rows.append(message)
        return rows, frontier

    async def _rows_at(
        self, recipients: Sequence[str], sent_by: str | None, ts: int
    ) -> list[Message]:
        merged = self._merged(recipients, sent_by, ts - 1)
        return list(itertools.takewhile(lambda m: m.ts == ts, merged))

    # conversations -----------------------------------------------------------------------
    def _conversation_streams(self, conv: Conversation) -> list[list[Message]]:
        if conv.type == "group":
            return [self._inbox.get(conv.other, [])]
        pairs = dict.fromkeys([(conv.user_id, conv.other), (conv.other, conv.user_id)])
        streams = []
        for recipient, sender in pairs:
            inbox = self._inbox.get(recipient, [])
            streams.append([inbox[i] for i in self._pairs.get((recipient, sender), [])])
        return streams

    async def _history_frontier(self) -> int:
        return await self.positions.caught_up()

    async def _history_rows(self, conv: Conversation, below: int, limit: int) -> list[Message]:
        parts = []
        for stream in self._conversation_streams(conv):
            end = bisect_right(stream, below - 1, key=lambda m: m.ts)
            parts.append(reversed(stream[max(end - limit, 0) : end]))
        merged = heapq.merge(*parts, key=lambda m: (m.ts, m.seq), reverse=True)
        return list(itertools.islice(merged, limit))

    async def _history_at(self, conv: Conversation, ts: int) -> list[Message]:
        rows = [
            m
            for stream in self._conversation_streams(conv)
            for m in stream[bisect_right(stream, ts - 1, key=lambda m: m.ts) :]
            if m.ts == ts
        ]
        return sorted(rows, key=lambda m: m.seq)

    async def unread_count(self, conv: Conversation, after: int, cap: int) -> int:
        if conv.type == "private":
            if conv.other == conv.user_id:
                return 0
            inbox = self._inbox.get(conv.user_id, [])
            pair = self._pairs.get((conv.user_id, conv.other), [])
            start = bisect_right(pair, after, key=lambda i: inbox[i].ts)
            stream: Iterator[Message] = (inbox[i] for i in itertools.islice(pair, start, None))
        else:
            group = self._inbox.get(conv.other, [])
            start = bisect_right(group, after, key=lambda m: m.ts)
            stream = itertools.islice(group, start, None)
        count = 0
        for message in stream:
            if message.sender_id != conv.user_id and not message.deleted:
                count += 1
                if count >= cap:
                    break
        return count

    async def private_peers(self, user_id: str) -> list[str]:
        return sorted(self._peers.get(user_id, ()))

    async def mark_read(self, user_id: str, conversation_id: str, ts: int) -> tuple[bool, int]:
        key = (user_id, conversation_id)
        stored = self._read.get(key)
        if stored is not None and stored >= ts:
            return False, stored
        self._read[key] = ts
        return True, ts

    async def read_markers(self, user_id: str, conversation_ids: Sequence[str]) -> dict[str, int]:
        found = ((c, self._read.get((user_id, c))) for c in conversation_ids)
        return {c: ts for c, ts in found if ts is not None}

    async def peer_read_markers(self, user_id: str, peers: Sequence[str]) -> dict[str, int]:
        found = ((p, self._read.get((p, user_id))) for p in peers)
        return {p: ts for p, ts in found if ts is not None}

    # change events ---------------------------------------------------------------------
    async def append_event(self, draft: EventDraft) -> Event:
        async with self.positions.writing() as ts:
            event = Event(draft.id, draft.type, dict(draft.fields), ts, next(self._seq))
            for stream in dict.fromkeys(draft.streams):
                self._events.setdefault(stream, []).append(event)
            self._last_ts = max(self._last_ts, ts)
        return event

    @staticmethod
    def _index(stream: list[Message], message_id: str, ts: int) -> int | None:
        start = bisect_left(stream, ts, key=lambda m: m.ts)
        for i in range(start, len(stream)):
            if stream[i].id == message_id:
                return i
            if stream[i].ts > ts:
                break
        return None

    async def get_message(self, message_id: str) -> Message | None:
        where = self._where.get(message_id)
        if where is None:
            return None
        stream = self._inbox.get(where[0], [])
        i = self._index(stream, message_id, where[1])
        return None if i is None else stream[i]

    async def edit_message(
        self, message_id: str, sender_id: str, body: str | None, events: Sequence[EventDraft]
    ) -> tuple[Message, list[Event]] | None:
        current = await self.get_message(message_id)
        if current is None or current.sender_id != sender_id or current.deleted:
            return None
        async with self.positions.writing() as ts:
            if body is None:
                changed = msgspec.structs.replace(current, body="", deleted=True, attachments=())
                for edit in self._edits.pop(message_id, []):
                    scrubbed_fields = scrubbed(edit.fields)
                    edit.fields.clear()
                    edit.fields.update(scrubbed_fields)
            else:
                changed = msgspec.structs.replace(current, body=body, edited_at=ts)
            streams = [self._inbox.get(current.recipient_id, [])]
            if current.type == "private":
                streams.append(self._sent.get(current.sender_id, []))
            for stream in streams:
                i = self._index(stream, message_id, current.ts)
                if i is not None:
                    stream[i] = changed
            for key, sent in self._sends.items():
                if sent.id == message_id:
                    self._sends[key] = changed
            stored = []
            for event in events:
                fields = edited_fields(event, body, ts)
                one = Event(event.id, event.type, fields, ts, next(self._seq))
                for stream_id in dict.fromkeys(event.streams):
                    self._events.setdefault(stream_id, []).append(one)
                if body is not None:
                    self._edits.setdefault(message_id, []).append(one)
                stored.append(one)
            self._last_ts = max(self._last_ts, ts)
        return changed, stored

    def _merged_events(self, streams: Sequence[str], after: int) -> Iterator[Event]:
        parts = []
        for stream in dict.fromkeys(streams):
            events = self._events.get(stream, [])
            start = bisect_right(events, after, key=lambda e: e.ts)
            parts.append(itertools.islice(events, start, None))
        seen: set[int] = set()
        for event in heapq.merge(*parts, key=lambda e: (e.ts, e.seq)):
            if event.seq not in seen:  # one event addressed to several streams
                seen.add(event.seq)
                yield event

    async def _event_rows(
        self, streams: Sequence[str], after: int, upto: int, limit: int
    ) -> list[Event]:
        rows: list[Event] = []
        for event in self._merged_events(streams, after):
            if event.ts > upto or len(rows) >= limit:
                break
            rows.append(event)
        return rows

    async def _event_rows_at(self, streams: Sequence[str], ts: int) -> list[Event]:
        merged = self._merged_events(streams, ts - 1)
        return list(itertools.takewhile(lambda e: e.ts == ts, merged))
