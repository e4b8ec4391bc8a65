"""Route handlers. Each one parses, calls one service method and returns a schema.

``ROUTES`` (at the end, after the handlers it names) is the single table of the API: the
router, the OpenAPI document and the authorization tests are all generated from it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec

from parley import errors
from parley.app import Parley
from parley.cache.base import Watch
from parley.domain.models import Page
from parley.domain.positions import wall_clock_ms
from parley.domain.validation import check_send_key
from parley.http import media as media_routes
from parley.http import schemas as s
from parley.http.asgi import Call, EventStream, Reply
from parley.http.errors import error_body, retry_after, status_of
from parley.http.ratelimit import RateLimiter, SharedRateLimiter, Waiting
from parley.http.streaming import JsonStream
from parley.services.access import Actor
from parley.services.accounts import Caller, Export
from parley.services.messages import Resume
from parley.services.passwords import PARAMETERS

log = logging.getLogger("parley.http")

B = TypeVar("B", bound=msgspec.Struct)
Auth = Literal["public", "token", "self", "member", "sender", "viewer"]
Handler = Callable[[Call, Actor], Awaitable[Reply]]
encode = msgspec.json.Encoder().encode


def ok(value: msgspec.Struct) -> Reply:
    return Reply(encode(value))


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True, kw_only=True)
class RouteSpec:
    """One route: where it is, who may call it, what it takes and answers, and its handler.

    ``auth`` says who may call it in token mode (open mode lets anyone act as anyone):
    ``public`` needs no token; ``token`` any signed-in user; ``self`` only the user named in
    the path; ``member`` only a member of the group named in the path or body; ``sender``
    only the user named as ``senderId``; ``viewer`` only who may see the thing named in the
    path (an attachment: 404 to anyone else, as for an id that does not exist). The token
    is checked here; the rest by the service
    the handler calls (tests/e2e/test_authz_matrix.py checks every route against this).
    """

    handler: Callable[[Api, Call, Actor], Awaitable[Reply]]
    method: str
    path: str
    summary: str
    auth: Auth
    request: type[msgspec.Struct] | None = None
    response: type[msgspec.Struct] | None = None
    query: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()  # every status the route can answer besides 200
    content_type: str = "application/json"
    tickets: bool = False  # also accepts ?ticket= instead of the Authorization header
    # Of ``errors``, those that happen in one auth mode only (401 is always token-only): in
    # token mode a route that acts as the caller never finds the caller missing (404); in
    # open mode nobody is refused for acting as someone else (403).
    token_only: tuple[int, ...] = ()
    open_only: tuple[int, ...] = ()
    # Checks a password: 401 ``bad_credentials`` can happen in open mode too.
    checks_password: bool = False
    # Takes a raw body of any type (a file upload) instead of JSON ``request``.
    upload: bool = False

    @property
    def name(self) -> str:
        """The operation's name (its handler's): the OpenAPI operationId and metrics label."""
        return self.handler.__name__

    def statuses(self, token_mode: bool) -> tuple[int, ...]:
        """The error statuses this route can answer in one auth mode."""
        no_401 = () if self.checks_password else (401,)
        skip = self.open_only if token_mode else (*no_401, *self.token_only)
        return tuple(status for status in self.errors if status not in skip)


ID_PATTERN_NOTE = "Opaque id returned by the server."
TIMESTAMP = Param(
    "timestamp",
    "Only messages with a timestamp greater than this (unix ms). Pass the previous "
    "answer's nextTimestamp.",
    {"type": "string", "pattern": "^[0-9]{1,18}$"},
)
LIMIT = Param("limit", "Page size, 1-1000 (default 500).", {"type": "integer", "minimum": 1})
INCLUDES = ("sent", "events", "sent,events", "events,sent")
INCLUDE = Param(
    "include",
    "`sent` also returns private messages the user sent to others; `events` adds the change "
    "events (edits, deletes, read markers, group changes) through the same cursor; "
    "`sent,events` both.",
    {"type": "string", "enum": list(INCLUDES)},
)
WAIT = Param(
    "wait",
    "Long-poll: seconds (0-60) to wait for a message newer than `timestamp`.",
    {"type": "integer", "minimum": 0, "maximum": 60},
)
TICKET = Param(
    "ticket",
    "A ticket from POST /v1/messages/{userId}/ticket, for clients that cannot send an "
    "Authorization header (a browser's EventSource).",
)
BEFORE = Param(
    "before",
    "Only items older than this (unix ms): pass the previous page's nextBefore (history) "
    "or the last conversation's activity timestamp (list).",
    {"type": "string", "pattern": "^[0-9]{1,18}$"},
)
HISTORY_LIMIT = Param(
    "limit", "Page size, 1-{page_max} (default 50).", {"type": "integer", "minimum": 1}
)
LIST_LIMIT = Param(
    "limit",
    "Conversations per page, 1-200 (default 50).",
    {"type": "integer", "minimum": 1, "maximum": 200},
)
USER_OP = Param("op", "block or unblock", {"type": "string", "enum": ["block", "unblock"]}, True)
GROUP_OPS = ("add", "remove", "promote", "demote", "rename")
GROUP_OP = Param(
    "op",
    "add or remove a member (`userId`; anyone may remove themselves, in token mode only the "
    "owner and admins others); promote a member to admin or demote an admin (`userId`, the "
    "owner only); rename the group (`groupName`, the owner and admins)",
    {"type": "string", "enum": list(GROUP_OPS)},
    True,
)
MESSAGE_OP = Param(
    "op",
    "edit (the new text in `message`) or delete; only the message's sender",
    {"type": "string", "enum": ["edit", "delete"]},
    True,
)
SEND_TYPE = Param(
    "type", "private or group", {"type": "string", "enum": ["private", "group"]}, True
)


CONVERSATIONS_MAX = 200  # conversations per page of the list
MAX_TIMESTAMP = 10**18 - 1  # cursors are unix milliseconds: at most 18 digits
RECHECK_TOKEN_SECONDS = 1.0  # waiters re-check their token this often without reliable wake-ups
TOKEN_ID = "parley.token_id"  # where the calling token's id is kept in the request scope
PASSWORD_NOTE = ", ".join(f"{k} {v}" for k, v in PARAMETERS.items())
_request_ids = itertools.count(1)
_process_tag = os.urandom(3).hex()  # request ids: "<process tag>-<n>", unique per process


def _new_process_tag() -> None:
    """A forked worker gets a tag of its own (the server may import Parley before it
    forks its workers, which would share the parent's)."""
    global _process_tag, _request_ids
    _process_tag = os.urandom(3).hex()
    _request_ids = itertools.count(1)


os.register_at_fork(after_in_child=_new_process_tag)


def _query(call: Call, name: str, options: tuple[str, ...], code: errors.Code) -> str:
    value = call.query(name)
    if value not in options:
        raise errors.InvalidInput(
            f"query parameter {name} must be one of: {', '.join(options)}", code
        )
    return value


def _number(call: Call, name: str, low: int, high: int, code: errors.Code) -> int | None:
    raw = call.query(name)
    if raw is None or raw == "":
        return None
    return _digits(raw, name, low, high, code)


def _digits(raw: str, name: str, low: int, high: int, code: errors.Code) -> int:
    """A whole number written in ASCII digits only (``int()`` also takes ``²`` and other
    scripts' digits, and ``str.isdigit()`` even more), between ``low`` and ``high``."""
    if not raw.isascii() or not raw.isdigit():
        raise errors.InvalidInput(f"{name} must be a non-negative whole number", code)
    if len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise errors.InvalidInput(f"{name} must be between {low} and {high}", code)
    return int(raw)


def _fresh(signals: list[dict[str, str]]) -> list[dict[str, str]]:
    """Typing notices that have not expired yet."""
    now = wall_clock_ms()
    return [f for f in signals if int(f.get("expiresAt", "0")) > now]


def _include(call: Call) -> tuple[bool, bool]:
    """``include``: (sent, events)."""
    include = call.query("include")
    if include in (None, ""):
        return False, False
    if include not in INCLUDES:
        raise errors.InvalidInput(
            "include must be sent, events or sent,events", errors.Code.BAD_INCLUDE
        )
    return "sent" in include, "events" in include


def _one_of(name: str, value: str | None, alias: str, alias_value: str | None) -> str | None:
    """A field that has an alias: either may be given, or both with the same value."""
    if value is None:
        return alias_value
    if alias_value is not None and alias_value != value:
        raise errors.InvalidInput(
            f"{name} and {alias} name the same thing but differ: send only one",
            errors.Code.CONFLICTING_FIELDS,
        )
    return value


class _Events:
    """A live stream's chunks, made one at a time when the stream asks: ``retry``, then one
    ``messages`` event per page, its id the page's nextTimestamp (pages never split a
    timestamp, so resuming from the last id neither skips nor repeats), and a keep-alive
    comment at first and after ``keepalive`` seconds without a chunk.

    Between chunks the stream sleeps until it is woken (a message or event on one of its
    streams, a typing notice, its token revoked) or its keep-alive is due; it re-checks
    its token every time it wakes, before it writes anything. While the process's
    wake-ups are not reliable it also wakes every second. Small, because a process holds
    one per open stream."""

    __slots__ = (
        "actor",
        "api",
        "call",
        "cursor",
        "due",
        "first",
        "include_events",
        "include_sent",
        "resume",
        "user_id",
        "watch",
    )

    def __init__(
        self,
        api: Api,
        call: Call,
        actor: Actor,
        user_id: str,
        first: Page,
        include: bool,
        include_events: bool = False,
    ) -> None:
        self.api = api
        self.call = call
        self.actor = actor
        self.user_id = user_id
        self.first: Page | None = first
        self.cursor = first.next_ts
        self.include_sent = include
        self.include_events = include_events
        self.due = -1.0  # loop time the next keep-alive is due; -1: ``retry`` not sent yet
        self.watch: Watch | None = None
        self.resume = Resume()  # an idle stream's keep-alive needs no look

    async def next_chunk(self, watch: Watch) -> bytes | None:
        clock = asyncio.get_running_loop().time
        if self.due < 0:
            self.due = 0.0  # the first keep-alive goes out with the first page
            watch.typing = self.include_events
            self.watch = watch
            self.api.messages.listen(self.user_id, watch)
            return b"retry: 2000\n\n"
        page = self.first
        self.first = None
        keepalive = self.api.keepalive
        while True:
            if page is not None:
                self.cursor = page.next_ts
                if page.messages or page.events:
                    self.due = clock() + keepalive
                    data = encode(s.MessagesOut.of(page, self.include_events))
                    return b"id: %d\nevent: messages\ndata: %s\n\n" % (page.next_ts, data)
            if clock() >= self.due:
                self.due = clock() + keepalive
                return b": keep-alive\n\n"
            if watch.poked:
                typing = _fresh(watch.take_signals())
                if typing:
                    self.due = clock() + keepalive
                    data = encode(s.MessagesOut([], str(self.cursor), False, typing))
                    return b"id: %d\nevent: messages\ndata: %s\n\n" % (self.cursor, data)
            page = await self.api.messages.check(
                self.actor,
                self.user_id,
                self.cursor,
                None,
                self.include_sent,
                self.api.slice(self.due - clock()),
                watch,
                self.include_events,
                patient=True,
                resume=self.resume,
            )
            if watch.gone or not await self.api._signed_in(self.call, self.actor):
                return None

    def close(self) -> None:
        """The stream is over: stop passing it signals."""
        if self.watch is not None:
            self.api.messages.unlisten(self.user_id, self.watch)
            self.watch = None


class Api:
    """The handlers, bound to one Parley instance."""

    def __init__(self, parley: Parley) -> None:
        self.parley = parley
        self.users = parley.users
        self.groups = parley.groups
        self.messages = parley.messages
        self.accounts = parley.accounts
        self.conversations = parley.conversations
        self.stats = parley.metrics
        self.token_mode = parley.settings.token_mode
        self.body_max = parley.settings.limits.body_max_bytes
        self.body_timeout = parley.settings.request_timeout
        self.page_max = parley.settings.limits.page_max
        self.keepalive = float(parley.settings.keepalive_seconds)
        self.wakeups = parley.notifier
        limits = parley.settings.rate_limits
        self.limiter: RateLimiter | None = None
        self.waiting: Waiting | None = None
        if limits.enabled:
            redis = parley.redis
            self.limiter = SharedRateLimiter(limits, redis) if redis else RateLimiter(limits)
            self.waiting = Waiting(limits.waiting_per_user, limits.waiting_per_address)

    # plumbing --------------------------------------------------------------------------
    def endpoint(self, spec: RouteSpec, handler: Handler) -> Callable[[Call], Awaitable[Reply]]:
        needs_token = self.token_mode and spec.auth != "public"
        observe = self.stats.observe
        name = spec.name
        limiter = self.limiter if spec.path.startswith("/v1/") else None
        # A write's answer waits until its wake-ups have left for the other processes.
        writes = spec.method not in ("GET", "HEAD")
        wakeups = self.wakeups

        async def run(call: Call) -> Reply:
            started = time.perf_counter()
            request_id = f"{_process_tag}-{next(_request_ids)}"
            try:
                if limiter is not None:
                    await limiter.before_auth(call.client, name)
                actor = await self._actor(call, spec.tickets, name) if needs_token else None
                if limiter is not None and actor is not None:
                    await limiter.after_auth(actor, name)
                reply = await handler(call, actor)
            except errors.ParleyError as exc:
                reply = self.error_reply(exc)
            except Exception:
                log.exception(
                    "unhandled error in %s", name, extra={"request_id": request_id, "route": name}
                )
                reply = Reply(error_body(errors.Code.INTERNAL_ERROR, "internal error"), 500)
            if writes:
                await wakeups.flushed()
            reply.headers.append((b"x-request-id", request_id.encode()))
            observe(name, reply.status, time.perf_counter() - started)
            return reply

        return run

    @staticmethod
    def error_reply(exc: errors.ParleyError) -> Reply:
        extra = []
        after = retry_after(exc)
        if after is not None:
            extra.append((b"retry-after", str(after).encode()))
        return Reply(error_body(exc.code, exc.message), status_of(exc), extra)

    async def _actor(self, call: Call, tickets: bool = False, route: str = "") -> str:
        """The calling user; its token's id goes into the scope (``TOKEN_ID``)."""
        header = call.header(b"authorization")
        if not header and tickets and call.query("ticket"):
            user_id, token_id = await self.users.authenticate_ticket(call.query("ticket") or "")
            call.scope[TOKEN_ID] = token_id
            return user_id
        if not header:
            raise errors.Unauthenticated("missing bearer token", errors.Code.MISSING_TOKEN)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated("malformed authorization header", errors.Code.BAD_TOKEN)
        caller: Caller
        if route == "delete_user":  # may finish a deletion a crash interrupted
            caller = await self.accounts.authenticate_for_deletion(token.strip())
        else:
            caller = await self.accounts.authenticate(token.strip())
        call.scope[TOKEN_ID] = caller.token_id
        return caller.user_id

    def slice(self, left: float) -> float:
        """How long a waiter may sleep before it re-checks its token on its own: until its
        deadline while wake-ups are reliable (a revocation pokes it), else a second."""
        left = max(left, 0.0)
        return left if self.wakeups.reliable else min(left, RECHECK_TOKEN_SECONDS)

    async def _signed_in(self, call: Call, actor: Actor) -> bool:
        """Is the token of an open long-poll or stream still live? (Open mode: always.)"""
        token_id = call.scope.get(TOKEN_ID)
        if actor is None or token_id is None:
            return True
        return await self.accounts.still_signed_in(actor, token_id)

    async def _optional_body(self, call: Call, kind: type[B]) -> B:
        """A body whose fields are all optional: an empty one means ``{}``."""
        raw = await call.body(self.body_max, self.body_timeout)
        return s.decode(raw if raw.strip() else b"{}", kind)

    async def _body(self, call: Call, kind: type[B]) -> B:
        return s.decode(await call.body(self.body_max, self.body_timeout), kind)

    def _wait_slot(self, call: Call, actor: Actor, user_id: str) -> None:
        """Count a long-poll or stream in for its user (the caller in token mode) and
        address; the server counts it out when the answer is over."""
        if self.waiting is not None:
            call.release = self.waiting.enter(actor or user_id, call.client)

    # users -----------------------------------------------------------------------------
    async def create_user(self, call: Call, actor: Actor) -> Reply:
        body = await self._body(call, s.CreateUserIn)
        name = _one_of("username", body.username, "userName", body.userName)
        if name is None:
            raise errors.InvalidInput("username is required", errors.Code.MISSING_FIELD)
        created = await self.users.create(name)
        return ok(s.UserOut.of(created.user, created.token))

    async def user_op(self, call: Call, actor: Actor) -> Reply:
        op = _query(call, "op", ("block", "unblock"), errors.Code.BAD_OP)
        body = await self._body(call, s.BlockIn)
        user_id = call.params["userId"]
        if op == "block":
            await self.users.block(actor, user_id, body.blockedUserId)
        else:
            await self.users.unblock(actor, user_id, body.blockedUserId)
        return ok(s.BlockOut(user_id, body.blockedUserId, op == "block"))

    async def get_user(self, call: Call, actor: Actor) -> Reply:
        user = await self.users.get(actor, call.params["userId"])
        return ok(s.UserOut.of(user))

    async def user_groups(self, call: Call, actor: Actor) -> Reply:
        user_id = call.params["userId"]
        groups = await self.groups.of_user(actor, user_id)
        return ok(s.UserGroupsOut(user_id, [s.GroupOut.of(g) for g in groups]))

    async def user_blocked(self, call: Call, actor: Actor) -> Reply:
        user_id = call.params["userId"]
        return ok(s.BlockedOut(user_id, await self.users.blocked(actor, user_id)))

    # groups ----------------------------------------------------------------------------
    async def create_group(self, call: Call, actor: Actor) -> Reply:
        body = await self._body(call, s.CreateGroupIn)
        group = await self.groups.create(actor, body.groupName)
        return ok(s.GroupOut.of(group))

    async def group_op(self, call: Call, actor: Actor) -> Reply:
        op = _query(call, "op", GROUP_OPS, errors.Code.BAD_OP)
        group_id = call.params["groupId"]
        if op == "rename":
            renamed = await self.groups.rename(
                actor, group_id, (await self._body(call, s.RenameIn)).groupName
            )
            return ok(s.MembershipOut(group_id, groupName=renamed.name))
        body = await self._body(call, s.MemberIn)
        if op == "add":
            await self.groups.add(actor, group_id, body.userId)
        elif op == "remove":
            await self.groups.remove(actor, group_id, body.userId)
        else:
            role: Literal["admin", "member"] = "admin" if op == "promote" else "member"
            await self.groups.set_role(actor, group_id, body.userId, role)
            return ok(s.MembershipOut(group_id, body.userId, True, role))
        return ok(s.MembershipOut(group_id, body.userId, op == "add"))

    async def get_group(self, call: Call, actor: Actor) -> Reply:
        view = await self.groups.view(actor, call.params["groupId"])
        return ok(s.GroupDetailsOut(view.group.id, view.group.name, view.members, view.roles))

    # messages --------------------------------------------------------------------------
    async def send_message(self, call: Call, actor: Actor) -> Reply:
        kind = _query(call, "type", ("private", "group"), errors.Code.BAD_TYPE)
        body = await self._body(call, s.SendIn)
        if kind == "private":
            recipient = _one_of("receiverId", body.receiverId, "recipientId", body.recipientId)
            field_name = "receiverId"
        else:
            recipient = _one_of("groupId", body.groupId, "recipientId", body.recipientId)
            field_name = "groupId"
        if recipient is None:
            raise errors.InvalidInput(f"{field_name} is required", errors.Code.MISSING_FIELD)
        check_send_key(body.clientMessageId)  # checked even when the header wins
        key = call.header(b"idempotency-key") or body.clientMessageId
        message = await self.messages.send(
            actor,
            "private" if kind == "private" else "group",
            body.senderId,
            recipient,
            body.message,
            key,
            body.attachments or (),
        )
        return ok(s.MessageOut.of(message))

    async def message_op(self, call: Call, actor: Actor) -> Reply:
        op = _query(call, "op", ("edit", "delete"), errors.Code.BAD_OP)
        message_id = call.params["messageId"]
        if op == "edit":
            body = await self._body(call, s.EditIn)
            if body.message is None:
                raise errors.InvalidInput("message is required", errors.Code.MISSING_FIELD)
            changed = await self.messages.change(actor, message_id, body.message, body.senderId)
        else:
            body = await self._optional_body(call, s.EditIn)
            changed = await self.messages.change(actor, message_id, None, body.senderId)
        return ok(s.MessageOut.of(changed))

    async def typing(self, call: Call, actor: Actor) -> Reply:
        body = await self._body(call, s.TypingIn)
        user_id = call.params["userId"]
        expires = await self.messages.typing(actor, user_id, body.conversationId)
        return ok(s.TypingOut(body.conversationId, str(expires)))

    async def get_messages(self, call: Call, actor: Actor) -> Reply:
        user_id = call.params["userId"]
        after = _number(call, "timestamp", 0, MAX_TIMESTAMP, errors.Code.BAD_TIMESTAMP)
        limit = _number(call, "limit", 1, self.page_max, errors.Code.BAD_LIMIT)
        wait = _number(call, "wait", 0, 60, errors.Code.BAD_WAIT)
        sent, events = _include(call)
        if wait:
            self._wait_slot(call, actor, user_id)
        page = await self.messages.check(actor, user_id, after, limit, sent, include_events=events)
        left = float(wait or 0)
        if not (page.messages or page.events) and left > 0 and after is not None:
            # A revocation pokes the poll through its watch; with events, typing notices
            # answer it early too.
            watch = Watch(typing=events)
            self.messages.listen(user_id, watch)
            try:
                page = await self._long_poll(call, actor, user_id, page, limit, sent, left, watch)
            finally:
                self.messages.unlisten(user_id, watch)
            if events and watch.poked and not (page.messages or page.events):
                typing = _fresh(watch.take_signals())
                out = s.MessagesOut([], str(page.next_ts), page.has_more, typing)
                return ok(out)
        return ok(s.MessagesOut.of(page, events))

    async def _long_poll(
        self,
        call: Call,
        actor: Actor,
        user_id: str,
        page: Page,
        limit: int | None,
        sent: bool,
        left: float,
        watch: Watch,
    ) -> Page:
        """Wait until there is something to answer, re-checking the token whenever the wait
        ends: a revoked token's poll ends (401) as soon as the revocation pokes it (within
        a second without reliable wake-ups)."""
        events = watch.typing
        clock = asyncio.get_running_loop().time
        deadline = clock() + left
        while not page.messages and not page.events and left > 0:
            page = await self.messages.check(
                actor, user_id, page.next_ts, limit, sent, self.slice(left), watch,
                include_events=events,
            )  # fmt: skip
            left = deadline - clock()
            if not await self._signed_in(call, actor):
                raise errors.Unauthenticated("the token was revoked", errors.Code.BAD_TOKEN)
            if watch.poked:
                if _fresh(list(watch.signals)):
                    break
                watch.take_signals()  # only expired ones, or a poke: wait on
        return page

    # conversations ---------------------------------------------------------------------
    async def list_conversations(self, call: Call, actor: Actor) -> Reply:
        before = _number(call, "before", 0, MAX_TIMESTAMP, errors.Code.BAD_TIMESTAMP)
        limit = _number(call, "limit", 1, CONVERSATIONS_MAX, errors.Code.BAD_LIMIT)
        listing = await self.conversations.list(actor, call.params["userId"], before, limit)
        items = [s.ConversationOut.of(c) for c in listing.conversations]
        return ok(s.ConversationsOut(items, listing.has_more, str(listing.cursor)))

    async def conversation_history(self, call: Call, actor: Actor) -> Reply:
        before = _number(call, "before", 0, MAX_TIMESTAMP, errors.Code.BAD_TIMESTAMP)
        limit = _number(call, "limit", 1, self.page_max, errors.Code.BAD_LIMIT)
        page = await self.conversations.history(
            actor, call.params["userId"], call.params["conversationId"], before, limit
        )
        return ok(s.HistoryOut.of(page))

    async def mark_read(self, call: Call, actor: Actor) -> Reply:
        body = await self._body(call, s.ReadIn)
        raw = body.timestamp
        if isinstance(raw, float):  # JSON has one number type: 213.0 is the integer 213
            raw = int(raw) if raw.is_integer() and 0 <= raw <= MAX_TIMESTAMP else -1
        raw = str(raw)
        ts = _digits(raw, "timestamp", 0, MAX_TIMESTAMP, errors.Code.BAD_TIMESTAMP)
        marked = await self.conversations.mark_read(
            actor, call.params["userId"], body.conversationId, ts
        )
        return ok(s.ReadOut(marked.conversation_id, str(marked.read_up_to)))

    async def stream_ticket(self, call: Call, actor: Actor) -> Reply:
        user_id = call.params["userId"]
        ticket, seconds = await self.users.issue_ticket(actor, user_id, call.scope.get(TOKEN_ID))
        return ok(s.TicketOut(ticket, seconds))

    # devices, passwords, deletion, export ----------------------------------------------
    async def delete_user(self, call: Call, actor: Actor) -> Reply:
        body = await self._optional_body(call, s.DeleteUserIn)
        user_id = call.params["userId"]
        await self.accounts.delete(actor, user_id, body.password, call.client)
        return ok(s.DeletedOut(user_id, True))

    async def create_token(self, call: Call, actor: Actor) -> Reply:
        body = await self._optional_body(call, s.TokenIn)
        new = await self.accounts.create_token(actor, call.params["userId"], body.deviceName)
        return ok(s.NewTokenOut.of(new.record, new.token))

    async def list_tokens(self, call: Call, actor: Actor) -> Reply:
        user_id = call.params["userId"]
        tokens = await self.accounts.list_tokens(actor, user_id)
        current = call.scope.get(TOKEN_ID)
        return ok(s.TokensOut(user_id, [s.TokenOut.of(t, current) for t in tokens]))

    async def revoke_token(self, call: Call, actor: Actor) -> Reply:
        user_id, token_id = call.params["userId"], call.params["tokenId"]
        await self.accounts.revoke(actor, user_id, token_id)
        return ok(s.RevokedOut(user_id, token_id, True))

    async def set_password(self, call: Call, actor: Actor) -> Reply:
        body = await self._body(call, s.PasswordIn)
        user_id = call.params["userId"]
        await self.accounts.set_password(
            actor, user_id, body.password, body.currentPassword, call.client
        )
        return ok(s.PasswordOut(user_id, True))

    async def sign_in(self, call: Call, actor: Actor) -> Reply:
        body = await self._body(call, s.SignInIn)
        new = await self.accounts.sign_in(body.userId, body.password, body.deviceName, call.client)
        return ok(s.NewTokenOut.of(new.record, new.token))

    async def export_user(self, call: Call, actor: Actor) -> Reply:
        export = await self.accounts.export(actor, call.params["userId"])
        return JsonStream(_export_chunks(export), [(b"content-disposition", b"attachment")])

    async def stream_messages(self, call: Call, actor: Actor) -> Reply:
        user_id = call.params["userId"]
        after = _number(call, "timestamp", 0, MAX_TIMESTAMP, errors.Code.BAD_TIMESTAMP)
        last_event = call.header(b"last-event-id")
        if last_event:  # a reconnecting EventSource resumes from its last event id
            after = _digits(
                last_event, "Last-Event-ID", 0, MAX_TIMESTAMP, errors.Code.BAD_TIMESTAMP
            )
        sent, with_events = _include(call)
        self._wait_slot(call, actor, user_id)
        # The first page is read now, so authorization and lookups fail before streaming.
        first = await self.messages.check(
            actor, user_id, after, None, sent, include_events=with_events
        )
        events = _Events(self, call, actor, user_id, first, sent, with_events)
        return EventStream(events.next_chunk, call.receive, events.close)

    # operations ------------------------------------------------------------------------
    async def healthz(self, call: Call, actor: Actor) -> Reply:
        return ok(s.HealthOut("ok"))

    async def readyz(self, call: Call, actor: Actor) -> Reply:
        checks = await self.parley.readiness()
        ready = "unavailable" not in checks.values()  # "degraded": slower, still right
        healthy = all(v == "ok" for v in checks.values())
        body = s.HealthOut("ok" if healthy else "degraded" if ready else "unavailable", checks)
        if ready:
            return ok(body)
        return Reply(encode(body), 503, [(b"retry-after", b"1")])

    async def metrics(self, call: Call, actor: Actor) -> Reply:
        text = self.stats.render().encode()
        return Reply(text, content_type=b"text/plain; version=0.0.4")

    def handler(self, spec: RouteSpec) -> Handler:
        """The route's handler, bound to this instance."""
        return functools.partial(spec.handler, self)


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        handler=Api.create_user,
        method="POST",
        path="/v1/users/create",
        summary="Create a user",
        auth="public",
        request=s.CreateUserIn,
        response=s.UserOut,
        errors=(400, 408, 413, 429, 503),
    ),
    RouteSpec(
        handler=Api.user_op,
        method="POST",
        path="/v1/users/{userId}",
        summary="Block or unblock a user",
        auth="self",
        request=s.BlockIn,
        response=s.BlockOut,
        query=(USER_OP,),
        errors=(400, 401, 403, 404, 408, 409, 413, 429, 503),
        token_only=(403,),
    ),
    RouteSpec(
        handler=Api.get_user,
        method="GET",
        path="/v1/users/{userId}",
        summary="A user's id and name",
        auth="token",
        response=s.UserOut,
        errors=(401, 404, 429, 503),
    ),
    RouteSpec(
        handler=Api.user_groups,
        method="GET",
        path="/v1/users/{userId}/groups",
        summary="Groups a user belongs to",
        auth="self",
        response=s.UserGroupsOut,
        errors=(401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.user_blocked,
        method="GET",
        path="/v1/users/{userId}/blocked",
        summary="Users a user blocks",
        auth="self",
        response=s.BlockedOut,
        errors=(401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.create_group,
        method="POST",
        path="/v1/groups/create",
        summary="Create a group",
        auth="token",
        request=s.CreateGroupIn,
        response=s.GroupOut,
        errors=(400, 401, 408, 413, 429, 503),
    ),
    RouteSpec(
        handler=Api.group_op,
        method="POST",
        path="/v1/groups/{groupId}",
        summary="Add, remove, promote or demote a member, or rename the group",
        auth="member",
        request=s.MemberIn,
        response=s.MembershipOut,
        query=(GROUP_OP,),
        errors=(400, 401, 403, 404, 408, 409, 413, 429, 503),
        token_only=(403,),
    ),
    RouteSpec(
        handler=Api.get_group,
        method="GET",
        path="/v1/groups/{groupId}",
        summary="A group's name, members and their roles",
        auth="member",
        response=s.GroupDetailsOut,
        errors=(401, 403, 404, 429, 503),
        token_only=(403,),
    ),
    RouteSpec(
        handler=Api.send_message,
        method="POST",
        path="/v1/messages/send",
        summary="Send a private or group message",
        auth="sender",
        request=s.SendIn,
        response=s.MessageOut,
        query=(SEND_TYPE,),
        errors=(400, 401, 403, 404, 408, 413, 429, 503),
    ),
    RouteSpec(
        handler=Api.message_op,
        method="POST",
        path="/v1/messages/{messageId}",
        summary="Edit or delete a message (its sender only); the change reaches every device "
        "as a message_edited or message_deleted event (include=events)",
        auth="sender",
        request=s.EditIn,
        response=s.MessageOut,
        query=(MESSAGE_OP,),
        errors=(400, 401, 403, 404, 408, 409, 413, 429, 503),
    ),
    RouteSpec(
        handler=Api.typing,
        method="POST",
        path="/v1/users/{userId}/typing",
        summary="Say the user is typing in a conversation (a user or group id): a typing "
        "event on the live streams (include=events) of its other members, for 5 seconds; "
        "never stored",
        auth="self",
        request=s.TypingIn,
        response=s.TypingOut,
        errors=(400, 401, 403, 404, 408, 413, 429, 503),
        token_only=(403,),
    ),
    RouteSpec(
        handler=Api.get_messages,
        method="GET",
        path="/v1/messages/{userId}",
        summary="Check a user's messages",
        auth="self",
        response=s.MessagesOut,
        query=(TIMESTAMP, LIMIT, INCLUDE, WAIT),
        errors=(400, 401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.stream_ticket,
        method="POST",
        path="/v1/messages/{userId}/ticket",
        summary="A 60-second ticket for the live stream",
        auth="self",
        response=s.TicketOut,
        errors=(400, 401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(400, 404),
    ),
    RouteSpec(
        handler=Api.stream_messages,
        method="GET",
        path="/v1/messages/{userId}/stream",
        summary="Live stream of a user's messages (Server-Sent Events)",
        auth="self",
        query=(TIMESTAMP, INCLUDE, TICKET),
        errors=(400, 401, 403, 404, 429, 503),
        content_type="text/event-stream",
        tickets=True,
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.delete_user,
        checks_password=True,
        method="DELETE",
        path="/v1/users/{userId}",
        summary="Delete the account: tokens revoked, memberships and blocks removed, "
        'messages erased (tombstones). Needs {"password"} when one is set. Repeating it '
        "finishes an interrupted deletion.",
        auth="self",
        request=s.DeleteUserIn,
        response=s.DeletedOut,
        errors=(400, 401, 403, 404, 408, 413, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.create_token,
        method="POST",
        path="/v1/users/{userId}/tokens",
        summary="Link a device: a new token for this account (the secret is shown once)",
        auth="self",
        request=s.TokenIn,
        response=s.NewTokenOut,
        errors=(400, 401, 403, 404, 408, 413, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.list_tokens,
        method="GET",
        path="/v1/users/{userId}/tokens",
        summary="Signed-in devices (never their secrets); `current` marks the calling token",
        auth="self",
        response=s.TokensOut,
        errors=(400, 401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(400, 404),
    ),
    RouteSpec(
        handler=Api.revoke_token,
        method="DELETE",
        path="/v1/users/{userId}/tokens/{tokenId}",
        summary="Sign a device out: its token gets 401 at once on every process, and its "
        "open long-polls and live streams end within a second",
        auth="self",
        response=s.RevokedOut,
        errors=(400, 401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(400,),
    ),
    RouteSpec(
        handler=Api.set_password,
        checks_password=True,
        method="POST",
        path="/v1/users/{userId}/password",
        summary="Set or change the account's password (8-1024 characters; changing it needs "
        "currentPassword). Stored as argon2id: " + PASSWORD_NOTE,
        auth="self",
        request=s.PasswordIn,
        response=s.PasswordOut,
        errors=(400, 401, 403, 404, 408, 413, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.sign_in,
        method="POST",
        path="/v1/sessions",
        summary="Sign in with a password: a new token for this device. Wrong credentials: "
        "401 bad_credentials, after the same work as right ones; attempts are limited per "
        "user and per address (429 with Retry-After), whatever PARLEY_RATE_LIMITS says.",
        auth="public",
        request=s.SignInIn,
        response=s.NewTokenOut,
        errors=(400, 401, 404, 408, 413, 429, 503),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.export_user,
        method="GET",
        path="/v1/users/{userId}/export",
        summary="Everything stored about the account and every message it can see or sent, "
        "as one JSON document (streamed)",
        auth="self",
        response=s.ExportOut,
        errors=(401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.list_conversations,
        method="GET",
        path="/v1/users/{userId}/conversations",
        summary="The user's conversations, most recent activity first: each with its newest "
        "message, unread count (messages from others after readUpTo, counted up to 1000; "
        "unreadCapped when there are more) and, for private ones, the peer's read marker",
        auth="self",
        response=s.ConversationsOut,
        query=(BEFORE, LIST_LIMIT),
        errors=(400, 401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        handler=Api.conversation_history,
        method="GET",
        path="/v1/users/{userId}/conversations/{conversationId}/messages",
        summary="A conversation's history (conversationId: the peer's user id or a group id), "
        "newest page first, ascending within a page; pages never split one millisecond. "
        "A group's history is for its current members only",
        auth="self",
        response=s.HistoryOut,
        query=(BEFORE, HISTORY_LIMIT),
        errors=(400, 401, 403, 404, 429, 503),
    ),
    RouteSpec(
        handler=Api.mark_read,
        method="POST",
        path="/v1/users/{userId}/read",
        summary="Move the read marker of a conversation forward (never back: an older "
        "timestamp changes nothing; never past the conversation's newest message). Raises "
        "a read event for the user's devices and, in a private conversation, a receipt "
        "event for the peer (not when the reader blocks the peer)",
        auth="self",
        request=s.ReadIn,
        response=s.ReadOut,
        errors=(400, 401, 403, 404, 408, 413, 429, 503),
    ),
    RouteSpec(
        handler=media_routes.upload_media,
        method="POST",
        path="/v1/media",
        summary="Upload a file (the raw body, with its Content-Type; at least 1 and at most "
        "PARLEY_MAX_MEDIA bytes: 400 `empty_file` below, 413 above). Attach it to a send "
        "with `attachments: [mediaId]`.",
        auth="token",
        response=s.MediaOut,
        errors=(400, 401, 408, 413, 429, 503),
        upload=True,
    ),
    RouteSpec(
        handler=media_routes.get_media,
        method="GET",
        path="/v1/media/{mediaId}",
        summary="Download a file: its uploader, and whoever can see a message carrying it "
        "(404 to anyone else). Supports Range (206, 416) and If-None-Match (304).",
        auth="viewer",
        errors=(401, 404, 416, 429, 503),
        content_type="application/octet-stream",
    ),
    RouteSpec(
        handler=Api.healthz,
        method="GET",
        path="/healthz",
        summary="The process is alive",
        auth="public",
        response=s.HealthOut,
    ),
    RouteSpec(
        handler=Api.readyz,
        method="GET",
        path="/readyz",
        summary="Storage is reachable",
        auth="public",
        response=s.HealthOut,
        errors=(503,),
    ),
    RouteSpec(
        handler=Api.metrics,
        method="GET",
        path="/metrics",
        summary="Prometheus metrics",
        auth="public",
        content_type="text/plain",
    ),
)


async def _export_chunks(export: Export) -> AsyncIterator[bytes]:
    """The export document, written piece by piece: the head, then each page of messages."""
    user = export.user
    head = {
        "userId": user.id,
        "username": user.username,
        "exportedAt": str(int(time.time() * 1000)),
        "devices": [
            s.ExportDeviceOut(t.id, t.device_name, str(t.created_at), str(t.last_used_at))
            for t in export.tokens
        ],
        "groups": [s.GroupOut.of(g) for g in export.groups],
        "blockedUserIds": export.blocked,
    }
    yield encode(head)[:-1] + b',"messages":['
    first = True
    async for page in export.messages():
        parts = [encode(s.MessageOut.of(m)) for m in page]
        yield (b"" if first else b",") + b",".join(parts)
        first = False
    yield b"]}"
