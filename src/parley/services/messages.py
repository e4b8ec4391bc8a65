"""Sending and checking messages: the two hot paths.

Checking answers "what is new for me since T". When the change cache knows that none of
the caller's streams (private inbox, each current group, and with ``include=sent`` its own
sent messages) changed after T, the answer is an empty page with ``nextTimestamp = T``,
built without touching storage or taking a lock. Echoing T is always safe: it hands out no
position the client did not already hold.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet

import msgspec

from parley.cache.base import (
    Changes,
    Directory,
    Look,
    Wakeups,
    Watch,
    sent_stream,
    streams_of,
)
from parley.domain.models import Message, MessageType, Page, new_id
from parley.domain.positions import wall_clock_ms
from parley.domain.rules import Limits, check_id, check_message_text
from parley.domain.validation import check_send_key, check_text, well_formed_id
from parley.errors import Code, Conflict, Forbidden, InvalidInput, NotFound
from parley.services.access import Actor, require_self
from parley.services.events import EventService
from parley.services.groups import GroupService
from parley.services.media import MediaService
from parley.services.users import UserService
from parley.storage.base import EventDraft, MessageDraft, Storage

# Fault tests: with ``send_marked`` in PARLEY_TEST_EXIT_AFTER_COMMIT, the process exits
# after a send raised its watermarks and before it published the wake-ups.
EXIT_AFTER_MARK = "send_marked" in os.environ.get("PARLEY_TEST_EXIT_AFTER_COMMIT", "").split(",")
EXIT_AFTER_MARK_STATUS = 87
RECHECK_SECONDS = 5.0  # a long-poll re-checks at least this often, woken or not
# Idle polls remembered per process (about 250 bytes each); beyond it the oldest go.
POLL_RESUMES_MAX = 250_000
TYPING_MS = 5_000  # a typing notice expires this long after it was sent


class Resume:
    """What a live stream keeps between its checks: the cursor and groups of its last look
    that found nothing, and the notifier's ``mark`` taken just before that look. While the
    wake-ups are reliable and the mark is unchanged, every change to those streams since
    then was notified to this process; so a check at the same cursor, none of whose
    streams was notified since (``Wakeups.heard_since``: also while the stream was busy
    writing), can skip the look: an idle stream's keep-alive costs no Redis call."""

    __slots__ = ("after", "groups", "mark", "serial")

    def __init__(self) -> None:
        self.after: int | None = None
        self.groups: AbstractSet[str] = frozenset()
        self.mark: Hashable | None = None
        self.serial = 0  # the notifier's serial just before the look

    def forget(self) -> None:
        self.mark = None


class MessageService:
    def __init__(
        self,
        storage: Storage,
        directory: Directory,
        users: UserService,
        groups: GroupService,
        changes: Changes,
        limits: Limits,
        notifier: Wakeups,
        events: EventService | None = None,
    ) -> None:
        self.storage = storage
        self.directory = directory
        self.users = users
        self.groups = groups
        self.changes = changes
        self.limits = limits
        self.notifier = notifier
        self.events = events or EventService(storage, changes, notifier)
        groups.membership_listeners.append(lambda user_id: notifier.notify_all([user_id]))
        self.idle_checks = 0
        self.looks_skipped = 0  # live streams' keep-alives that needed no look
        self.polls_skipped = 0  # polls answered from the wake-ups, with no look
        self._polls: dict[str, Resume] = {}  # user (and flags) -> its last idle poll's look
        self.media: MediaService | None = None  # attachments (set by parley.app.build)

    # send ------------------------------------------------------------------------------
    async def send(
        self,
        actor: Actor,
        kind: MessageType,
        sender_id: str,
        recipient_id: str,
        text: str,
        send_key: str | None = None,
        attachments: Sequence[str] = (),
    ) -> Message:
        check_id(sender_id, "senderId")
        check_id(recipient_id, "groupId" if kind == "group" else "receiverId")
        check_message_text(check_text(text, "message"), self.limits.message_max)
        check_send_key(send_key)
        files = MediaService.check_count(attachments)
        require_self(actor, sender_id)
        if send_key is not None and well_formed_id(sender_id):  # else: unknown sender below
            earlier = await self.storage.find_send(sender_id, send_key)
            if earlier is not None:
                # A retry: replay the first answer and store nothing, but mark and wake
                # again (idempotent): the first attempt may have died before it did.
                await self._stored(earlier)
                return earlier
        await self.users.require(sender_id, "sender")
        if kind == "private":
            await self.users.require(recipient_id, "receiver")
            if sender_id in await self.directory.blocked_by(recipient_id):
                raise Forbidden("the receiver has blocked you", Code.BLOCKED)
        else:
            await self.groups.require(recipient_id)
            if not await self.directory.is_member(recipient_id, sender_id):
                raise Forbidden("you are not a member of this group", Code.NOT_A_MEMBER)
        draft = MessageDraft(new_id("m_"), kind, sender_id, recipient_id, text, send_key)
        if files:
            if self.media is None:
                raise InvalidInput("this server keeps no attachments", Code.BAD_ATTACHMENT)
            await self.media.check_owned(actor, sender_id, files)
            await self.media.attach(draft.id, kind, sender_id, recipient_id, files)
            draft = msgspec.structs.replace(draft, attachments=files)
        message, _ = await self.storage.append_message(draft)
        await self._stored(message)  # a replayed key too (see above)
        return message

    async def _stored(self, message: Message) -> None:
        streams = [message.recipient_id]
        if message.type == "private":
            streams.append(sent_stream(message.sender_id))
        await self.changes.marked([(stream, message.ts) for stream in streams])
        if EXIT_AFTER_MARK:
            os._exit(EXIT_AFTER_MARK_STATUS)  # a fault test: dies before the wake-ups
        self.notifier.notify_all(streams)

    # edit and delete -------------------------------------------------------------------
    async def change(
        self, actor: Actor, message_id: str, text: str | None, sender_id: str | None = None
    ) -> Message:
        """Edit (``text``) or delete (None) a message: only its sender (403), and 404 for
        a message the caller cannot see. In open mode nobody is checked unless the body
        names a ``senderId``. Deleting a deleted message changes nothing; editing one is
        409. Every device of everyone concerned gets a ``message_edited`` or
        ``message_deleted`` event through the cursor."""
        check_id(message_id, "messageId")
        if text is not None:
            check_message_text(check_text(text, "message"), self.limits.message_max)
        if sender_id is not None:
            check_id(sender_id, "senderId")
            require_self(actor, sender_id)
        found = await self.storage.get_message(message_id) if well_formed_id(message_id) else None
        if found is None or (actor is not None and not await self._sees(actor, found)):
            raise NotFound("message not found", Code.MESSAGE_NOT_FOUND)
        claimed = actor if actor is not None else sender_id
        if claimed is not None and claimed != found.sender_id:
            raise Forbidden("only its sender may change a message", Code.NOT_SENDER)
        if found.deleted or not found.body:
            if text is None:
                return found  # deleted already: nothing to do
            raise Conflict("the message was deleted", Code.MESSAGE_DELETED)
        kind = "message_edited" if text is not None else "message_deleted"
        drafts = [
            EventDraft(new_id("e_"), kind, (reader,), self._about(found, conversation, text))
            for reader, conversation in self._readers(found)
        ]
        result = await self.storage.edit_message(found.id, found.sender_id, text, drafts)
        if result is None:  # changed meanwhile (deleted by a concurrent request)
            current = await self.storage.get_message(message_id)
            if text is None and current is not None and current.deleted:
                return current
            raise Conflict("the message was deleted", Code.MESSAGE_DELETED)
        changed, stored = result
        for draft, event in zip(drafts, stored, strict=True):
            await self.events.stored(event, draft.streams)
        return changed

    @staticmethod
    def _readers(message: Message) -> list[tuple[str, str]]:
        """Who learns of a change, each with the conversation's id as they see it."""
        if message.type == "group":
            return [(message.recipient_id, message.recipient_id)]
        if message.sender_id == message.recipient_id:
            return [(message.sender_id, message.sender_id)]
        return [
            (message.sender_id, message.recipient_id),
            (message.recipient_id, message.sender_id),
        ]

    @staticmethod
    def _about(message: Message, conversation: str, text: str | None) -> dict[str, str]:
        fields = {"messageId": message.id, "conversationId": conversation}
        if text is not None:
            fields["message"] = text
        return fields

    async def _sees(self, user_id: str, message: Message) -> bool:
        if message.type == "private":
            return user_id in (message.sender_id, message.recipient_id)
        return await self.directory.is_member(message.recipient_id, user_id)

    # typing ----------------------------------------------------------------------------
    async def typing(self, actor: Actor, user_id: str, conversation_id: str) -> int:
        """Tell the conversation's other members' live streams that ``user_id`` is typing;
        never stored, never shown to someone who blocked the typer. Returns when the
        notice expires (unix ms)."""
        check_id(user_id, "userId")
        check_id(conversation_id, "conversationId")
        require_self(actor, user_id)
        await self.users.require(user_id)
        known = well_formed_id(conversation_id)
        group = await self.directory.group(conversation_id) if known else None
        if group is not None:
            if actor is not None and not await self.directory.is_member(group.id, user_id):
                raise Forbidden("you are not a member of this group", Code.NOT_A_MEMBER)
            readers = sorted(set(await self.directory.members_of(group.id)) - {user_id})
            seen_as = group.id
        elif known and await self.directory.user(conversation_id) is not None:
            readers = [] if conversation_id == user_id else [conversation_id]
            seen_as = user_id  # the peer sees the conversation under the typer's id
        else:
            raise NotFound("no such user or group", Code.CONVERSATION_NOT_FOUND)
        now = wall_clock_ms()
        expires = now + TYPING_MS
        allowed = [r for r in readers if user_id not in await self.directory.blocked_by(r)]
        if allowed:
            fields = {
                "eventId": new_id("e_"),
                "type": "typing",
                "timestamp": str(now),
                "conversationId": seen_as,
                "userId": user_id,
                "expiresAt": str(expires),
            }
            self.notifier.signal(allowed, fields)
        return expires

    def listen(self, user_id: str, watch: Watch) -> None:
        """A live stream with events: pass it the user's typing notices."""
        self.notifier.listen(user_id, watch)

    def unlisten(self, user_id: str, watch: Watch) -> None:
        self.notifier.unlisten(user_id, watch)

    # check -----------------------------------------------------------------------------
    async def check(
        self,
        actor: Actor,
        user_id: str,
        after: int | None,
        limit: int | None = None,
        include_sent: bool = False,
        wait: float = 0.0,
        watch: Watch | None = None,
        include_events: bool = False,
        patient: bool = False,
        resume: Resume | None = None,
    ) -> Page:
        """Messages newer than ``after``; with ``wait``, hold the answer up to that many
        seconds until there is one (long-poll). ``watch`` ends the wait early, with an
        empty page, once its client has gone or it was poked. ``include_events``: the
        change events of the user and its groups too, through the same cursor.

        A waiter re-checks every ``RECHECK_SECONDS`` even when nobody woke it, since a
        wake-up from another process can be lost; a ``patient`` one (a live stream, whose
        ``wait`` ends at its next keep-alive) sleeps through while the wake-ups are
        reliable (``Wakeups.reliable``), so an idle stream costs nothing between its
        keep-alives. A live stream passes the same ``resume`` to each of its checks."""
        require_self(actor, user_id)
        page_size = self._page_size(limit)
        await self.users.require(user_id)
        ev = include_events
        reused = None if resume is None else self._reuse(resume, user_id, after, include_sent, ev)
        if reused is not None:
            self.looks_skipped += 1
            look = reused
        elif resume is None:  # a poll: one look, or the last one if nothing happened since
            look = await self._poll_look(user_id, after, include_sent, ev)
        else:
            look = await self._look_into(resume, user_id, after, include_sent, ev)
        page = await self._check_once(user_id, after, page_size, include_sent, look, ev)
        if page.messages or page.events or wait <= 0 or after is None:
            return page
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pause = 0.002
        while (left := deadline - loop.time()) > 0 and not (watch and (watch.gone or watch.poked)):
            if not look.changed:
                # Wake-ups are hints (one from another process can be lost): re-check now
                # and then even without one.
                streams = streams_of(user_id, look.groups, include_sent, ev)
                whole = patient and self.notifier.reliable
                woken = await self.notifier.wait(
                    streams, left if whole else min(left, RECHECK_SECONDS), watch
                )
                if resume is not None and (woken or not whole):
                    resume.forget()  # woken, or re-checking on its own: look next time
                if watch is not None and (watch.gone or watch.poked):
                    if resume is not None:
                        resume.forget()
                    break
                if whole and not woken:  # the deadline (a stream's keep-alive)
                    break
            else:
                # Stored but not yet below the frontier (it trails the clock by 1 ms), or
                # the change cache cannot tell (shared cache down): back off, read again.
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, 0.25)
            look = await self.changes.look(user_id, after, include_sent, ev)
            page = await self._check_once(user_id, after, page_size, include_sent, look, ev)
            if page.messages or page.events:
                return page
            if page.next_ts > after:  # nothing up to next_ts: wait for newer only
                after = page.next_ts
                look = await self.changes.look(user_id, after, include_sent, ev)
        return page

    def _reuse(
        self,
        resume: Resume,
        user_id: str,
        after: int | None,
        include_sent: bool,
        include_events: bool,
    ) -> Look | None:
        """The last look of a stream, if nothing it reads was notified since."""
        notifier = self.notifier
        if (
            resume.mark is None
            or after is None
            or resume.after != after
            or not notifier.reliable
            or notifier.mark is None
            or notifier.mark() != resume.mark
        ):
            return None
        streams = streams_of(user_id, resume.groups, include_sent, include_events)
        if notifier.heard_since(resume.serial, streams):
            return None
        return Look(resume.groups, False)

    async def _look_into(
        self,
        resume: Resume,
        user_id: str,
        after: int | None,
        include_sent: bool,
        include_events: bool,
    ) -> Look:
        """Look, and record in ``resume`` what a later check may reuse (``_reuse``): only
        a look that found nothing, with the notifier's mark and serial taken before it."""
        notifier = self.notifier
        mark = notifier.mark() if notifier.mark is not None else None
        serial = notifier.serial
        look = await self.changes.look(user_id, after, include_sent, include_events)
        resume.after, resume.groups, resume.serial = after, look.groups, serial
        resume.mark = mark if after is not None and not look.changed else None
        return look

    async def _poll_look(
        self, user_id: str, after: int | None, include_sent: bool, include_events: bool
    ) -> Look:
        """A poll's look. Where the wake-ups can vouch for it (``Wakeups.settled``: this
        process applied the wake-ups of every write answered so far) the last look of the
        same user and cursor that found nothing still holds while none of its streams was
        notified and the ``mark`` is unchanged: the same argument as a live stream's
        ``Resume``. A write's answer waits for that (``Wakeups.flushed``), so a poll after
        it, anywhere, finds it or looks again."""
        settled = self.notifier.settled
        if settled is None or after is None or self.notifier.mark is None:
            return await self.changes.look(user_id, after, include_sent, include_events)
        key = user_id
        if include_sent or include_events:
            key = f"{user_id}/{include_sent:d}{include_events:d}"
        polls = self._polls
        resume = polls.get(key)
        if resume is not None and settled():
            reused = self._reuse(resume, user_id, after, include_sent, include_events)
            if reused is not None:
                self.polls_skipped += 1
                return reused
        fresh = resume is None
        if resume is None:
            resume = Resume()
        look = await self._look_into(resume, user_id, after, include_sent, include_events)
        if resume.mark is None:
            polls.pop(key, None)
        elif fresh:
            if len(polls) >= POLL_RESUMES_MAX:  # forget the longest-remembered tenth
                for old in list(itertools.islice(polls, POLL_RESUMES_MAX // 10)):
                    del polls[old]
            polls[key] = resume
        return look

    async def _check_once(
        self,
        user_id: str,
        after: int | None,
        page_size: int,
        include_sent: bool,
        look: Look,
        include_events: bool = False,
    ) -> Page:
        """One check, given the change cache's answer for ``after``."""
        if after is not None and not look.changed:
            self.idle_checks += 1
            return Page([], after, False)
        recipients = [user_id, *look.groups]
        sent_by = user_id if include_sent else None
        if include_events:
            return await self.storage.read_messages(
                recipients, sent_by, after, page_size, recipients
            )
        return await self.storage.read_messages(recipients, sent_by, after, page_size)

    def _page_size(self, limit: int | None) -> int:
        if limit is None:
            return self.limits.page_default
        if not 1 <= limit <= self.limits.page_max:
            raise InvalidInput(
                f"limit must be between 1 and {self.limits.page_max}", Code.BAD_LIMIT
            )
        return limit
