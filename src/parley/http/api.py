"""Route handlers. Each one parses, calls one service method and returns a schema.

``ROUTES`` is the single table of the API: the router, the OpenAPI document and the
authorization tests are all generated from it.
"""

from __future__ import annotations

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
from parley.domain.models import Page
from parley.domain.validation import check_send_key
from parley.http import schemas as s
from parley.http.asgi import Call, EventStream, Reply
from parley.http.errors import error_body, retry_after, status_of
from parley.http.ratelimit import RateLimiter, SharedRateLimiter, Waiting
from parley.services.access import Actor

log = logging.getLogger("parley.http")

B = TypeVar("B", bound=msgspec.Struct)
Auth = Literal["public", "token", "self", "member", "sender"]
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


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    name: str
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

    def statuses(self, token_mode: bool) -> tuple[int, ...]:
        """The error statuses this route can answer in one auth mode."""
        skip = self.open_only if token_mode else (401, *self.token_only)
        return tuple(status for status in self.errors if status not in skip)


ID_PATTERN_NOTE = "Opaque id returned by the server."
TIMESTAMP = Param(
    "timestamp",
    "Only messages with a timestamp greater than this (unix ms). Pass the previous "
    "answer's nextTimestamp.",
    {"type": "string", "pattern": "^[0-9]{1,18}$"},
)
LIMIT = Param("limit", "Page size, 1-1000 (default 500).", {"type": "integer", "minimum": 1})
INCLUDE = Param(
    "include",
    "`sent` also returns private messages the user sent to others.",
    {"type": "string", "enum": ["sent"]},
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
SEND_TYPE = Param(
    "type", "private or group", {"type": "string", "enum": ["private", "group"]}, True
)

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "POST",
        "/v1/users/create",
        "create_user",
        "Create a user",
        "public",
        s.CreateUserIn,
        s.UserOut,
        errors=(400, 408, 413, 429, 503),
    ),
    RouteSpec(
        "POST",
        "/v1/users/{userId}",
        "user_op",
        "Block or unblock a user",
        "self",
        s.BlockIn,
        s.BlockOut,
        (USER_OP,),
        (400, 401, 403, 404, 408, 409, 413, 429, 503),
        token_only=(403,),
    ),
    RouteSpec(
        "GET",
        "/v1/users/{userId}",
        "get_user",
        "A user's id and name",
        "token",
        None,
        s.UserOut,
        errors=(401, 404, 429, 503),
    ),
    RouteSpec(
        "GET",
        "/v1/users/{userId}/groups",
        "user_groups",
        "Groups a user belongs to",
        "self",
        None,
        s.UserGroupsOut,
        errors=(401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        "GET",
        "/v1/users/{userId}/blocked",
        "user_blocked",
        "Users a user blocks",
        "self",
        None,
        s.BlockedOut,
        errors=(401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        "POST",
        "/v1/groups/create",
        "create_group",
        "Create a group",
        "token",
        s.CreateGroupIn,
        s.GroupOut,
        errors=(400, 401, 408, 413, 429, 503),
    ),
    RouteSpec(
        "POST",
        "/v1/groups/{groupId}",
        "group_op",
        "Add, remove, promote or demote a member, or rename the group",
        "member",
        s.MemberIn,
        s.MembershipOut,
        (GROUP_OP,),
        (400, 401, 403, 404, 408, 409, 413, 429, 503),
        token_only=(403,),
    ),
    RouteSpec(
        "GET",
        "/v1/groups/{groupId}",
        "get_group",
        "A group's name, members and their roles",
        "member",
        None,
        s.GroupDetailsOut,
        errors=(401, 403, 404, 429, 503),
        token_only=(403,),
    ),
    RouteSpec(
        "POST",
        "/v1/messages/send",
        "send_message",
        "Send a private or group message",
        "sender",
        s.SendIn,
        s.MessageOut,
        (SEND_TYPE,),
        (400, 401, 403, 404, 408, 413, 429, 503),
    ),
    RouteSpec(
        "GET",
        "/v1/messages/{userId}",
        "get_messages",
        "Check a user's messages",
        "self",
        None,
        s.MessagesOut,
        (TIMESTAMP, LIMIT, INCLUDE, WAIT),
        (400, 401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec(
        "POST",
        "/v1/messages/{userId}/ticket",
        "stream_ticket",
        "A 60-second ticket for the live stream",
        "self",
        None,
        s.TicketOut,
        errors=(400, 401, 403, 404, 429, 503),
        token_only=(403,),
        open_only=(400, 404),  # tickets are made from tokens: open mode has none
    ),
    RouteSpec(
        "GET",
        "/v1/messages/{userId}/stream",
        "stream_messages",
        "Live stream of a user's messages (Server-Sent Events)",
        "self",
        None,
        None,
        (TIMESTAMP, INCLUDE, TICKET),
        (400, 401, 403, 404, 429, 503),
        content_type="text/event-stream",
        tickets=True,
        token_only=(403,),
        open_only=(404,),
    ),
    RouteSpec("GET", "/healthz", "healthz", "The process is alive", "public", None, s.HealthOut),
    RouteSpec(
        "GET",
        "/readyz",
        "readyz",
        "Storage is reachable",
        "public",
        None,
        s.HealthOut,
        errors=(503,),
    ),
    RouteSpec(
        "GET", "/metrics", "metrics", "Prometheus metrics", "public", content_type="text/plain"
    ),
)

MAX_TIMESTAMP = 10**18 - 1  # cursors are unix milliseconds: at most 18 digits
HEARTBEAT_SECONDS = 15.0  # a live stream sends a comment at least this often
_request_ids = itertools.count(1)
_process_tag = os.urandom(3).hex()


def _query(call: Call, name: str, options: tuple[str, ...]) -> str:
    value = call.query(name)
    if value not in options:
        raise errors.InvalidInput(
            f"query parameter {name} must be one of: {', '.join(options)}", f"bad_{name}"
        )
    return value


def _number(call: Call, name: str, low: int, high: int) -> int | None:
    raw = call.query(name)
    if raw is None or raw == "":
        return None
    return _digits(raw, name, low, high, f"bad_{name}")


def _digits(raw: str, name: str, low: int, high: int, code: str) -> int:
    """A whole number written in ASCII digits only (``int()`` also takes ``²`` and other
    scripts' digits, and ``str.isdigit()`` even more), between ``low`` and ``high``."""
    if not raw.isascii() or not raw.isdigit():
        raise errors.InvalidInput(f"{name} must be a non-negative whole number", code)
    if len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise errors.InvalidInput(f"{name} must be between {low} and {high}", code)
    return int(raw)


def _one_of(name: str, value: str | None, alias: str, alias_value: str | None) -> str | None:
    """A field that has an alias: either may be given, or both with the same value."""
    if value is None:
        return alias_value
    if alias_value is not None and alias_value != value:
        raise errors.InvalidInput(
            f"{name} and {alias} name the same thing but differ: send only one",
            "conflicting_fields",
        )
    return value


class Api:
    """The handlers, bound to one Parley instance."""

    def __init__(self, parley: Parley) -> None:
        self.parley = parley
        self.users = parley.users
        self.groups = parley.groups
        self.messages = parley.messages
        self.stats = parley.metrics
        self.token_mode = parley.settings.token_mode
        self.body_max = parley.settings.limits.body_max_bytes
        self.body_timeout = parley.settings.request_timeout
        self.page_max = parley.settings.limits.page_max
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

        async def run(call: Call) -> Reply:
            started = time.perf_counter()
            request_id = f"{_process_tag}-{next(_request_ids)}"
            try:
                if limiter is not None:
                    await limiter.before_auth(call.client, name)
                actor = await self._actor(call, spec.tickets) if needs_token else None
                if limiter is not None and actor is not None:
                    await limiter.after_auth(actor, name)
                reply = await handler(call, actor)
            except errors.ParleyError as exc:
                reply = self.error_reply(exc)
            except Exception:
                log.exception(
                    "unhandled error in %s", name, extra={"request_id": request_id, "route": name}
                )
                reply = Reply(error_body("internal_error", "internal error"), 500)
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

    async def _actor(self, call: Call, tickets: bool = False) -> str:
        header = call.header(b"authorization")
        if not header and tickets and call.query("ticket"):
            return await self.users.authenticate_ticket(call.query("ticket") or "")
        if not header:
            raise errors.Unauthenticated("missing bearer token", "missing_token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated("malformed authorization header", "bad_token")
        return await self.users.authenticate(token.strip())

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
            raise errors.InvalidInput("username is required", "missing_field")
        created = await self.users.create(name)
        return ok(s.UserOut.of(created.user, created.token))

    async def user_op(self, call: Call, actor: Actor) -> Reply:
        op = _query(call, "op", ("block", "unblock"))
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
        op = _query(call, "op", GROUP_OPS)
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
        kind = _query(call, "type", ("private", "group"))
        body = await self._body(call, s.SendIn)
        if kind == "private":
            recipient = _one_of("receiverId", body.receiverId, "recipientId", body.recipientId)
            field_name = "receiverId"
        else:
            recipient = _one_of("groupId", body.groupId, "recipientId", body.recipientId)
            field_name = "groupId"
        if recipient is None:
            raise errors.InvalidInput(f"{field_name} is required", "missing_field")
        check_send_key(body.clientMessageId)  # checked even when the header wins
        key = call.header(b"idempotency-key") or body.clientMessageId
        message = await self.messages.send(
            actor,
            "private" if kind == "private" else "group",
            body.senderId,
            recipient,
            body.message,
            key,
        )
        return ok(s.MessageOut.of(message))

    async def get_messages(self, call: Call, actor: Actor) -> Reply:
        user_id = call.params["userId"]
        after = _number(call, "timestamp", 0, MAX_TIMESTAMP)
        limit = _number(call, "limit", 1, self.page_max)
        wait = _number(call, "wait", 0, 60)
        include = call.query("include")
        if include not in (None, "", "sent"):
            raise errors.InvalidInput("include must be sent", "bad_include")
        if wait:
            self._wait_slot(call, actor, user_id)
        page = await self.messages.check(
            actor, user_id, after, limit, include == "sent", float(wait or 0)
        )
        return ok(s.MessagesOut.of(page))

    async def stream_ticket(self, call: Call, actor: Actor) -> Reply:
        ticket, seconds = await self.users.issue_ticket(actor, call.params["userId"])
        return ok(s.TicketOut(ticket, seconds))

    async def stream_messages(self, call: Call, actor: Actor) -> Reply:
        user_id = call.params["userId"]
        after = _number(call, "timestamp", 0, MAX_TIMESTAMP)
        last_event = call.header(b"last-event-id")
        if last_event:  # a reconnecting EventSource resumes from its last event id
            after = _digits(last_event, "Last-Event-ID", 0, MAX_TIMESTAMP, "bad_timestamp")
        include = call.query("include")
        if include not in (None, "", "sent"):
            raise errors.InvalidInput("include must be sent", "bad_include")
        self._wait_slot(call, actor, user_id)
        # The first page is read now, so authorization and lookups fail before streaming.
        first = await self.messages.check(actor, user_id, after, None, include == "sent")
        return EventStream(self._events(actor, user_id, first, include == "sent"), call.receive)

    async def _events(
        self, actor: Actor, user_id: str, page: Page, include_sent: bool
    ) -> AsyncIterator[bytes]:
        """One ``messages`` event per page, its id the page's nextTimestamp (pages never
        split a timestamp, so resuming from the last id neither skips nor repeats)."""
        yield b"retry: 2000\n\n"
        while True:
            if page.messages:
                data = encode(s.MessagesOut.of(page))
                yield b"id: %d\nevent: messages\ndata: %s\n\n" % (page.next_ts, data)
            else:
                yield b": keep-alive\n\n"
            page = await self.messages.check(
                actor, user_id, page.next_ts, None, include_sent, HEARTBEAT_SECONDS
            )

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
        method: Handler = getattr(self, spec.name)
        return method
