"""A lean ASGI layer for the API routes: matching, request access and replies.

The API's routes come from one table (``api.ROUTES``); matching a path is a dict lookup by
method and segment count followed by a literal comparison per segment. A handler receives a
:class:`Call` (path parameters, lazily parsed query string, header lookup, bounded body) and
returns a :class:`Reply`. Everything that is not an API route (docs, the web page, lifespan)
goes on to the Starlette application behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from parley import errors
from parley.cache.base import Watch

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPE = (b"content-type", b"application/json")
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class Reply:
    """A finished answer: status, body bytes, content type and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = b"application/json",
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers if headers is not None else []
        self.content_type = content_type

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class EventStream(Reply):
    """A Server-Sent Events answer: chunks from ``next_chunk`` until it gives None or the
    client goes away. Chunks are produced on demand (pull), one after the previous one was
    written, so a slow client holds at most one chunk here and never slows anything else
    down.

    An open stream is mostly idle, and a process holds tens of thousands of them, so it
    holds little: its own coroutine and the one future it waits on. The client leaving is
    noticed by a callback on the server's ``receive`` (:class:`_Departure`), not by a task
    of its own, and it ends the wait through the stream's :class:`Watch`."""

    def __init__(
        self,
        next_chunk: Callable[[Watch], Awaitable[bytes | None]],
        receive: Receive,
        close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(b"", 200, content_type=b"text/event-stream")
        self.next_chunk = next_chunk
        self.receive = receive
        self.close = close

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"x-accel-buffering", b"no"),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        del headers
        watch = Watch()
        departure = _Departure(self.receive, watch)
        try:
            while not watch.gone:
                chunk = await self.next_chunk(watch)
                if chunk is None or watch.gone:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not watch.gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            departure.close()
            if self.close is not None:
                self.close()


class _Departure:
    """Listens on ``receive`` for the client going away and then stops ``watch``. One
    receive is pending at a time, with a callback instead of a task waiting on it."""

    __slots__ = ("pending", "receive", "watch")

    def __init__(self, receive: Receive, watch: Watch) -> None:
        self.receive = receive
        self.watch = watch
        self.pending: asyncio.Future[dict[str, Any]] | None = None
        self._listen()

    def _listen(self) -> None:
        pending = asyncio.ensure_future(self.receive())
        self.pending = pending
        pending.add_done_callback(self._heard)

    def _heard(self, done: asyncio.Future[dict[str, Any]]) -> None:
        self.pending = None
        if self.watch.gone:
            return
        failed = done.cancelled() or done.exception() is not None
        if failed or done.result()["type"] == "http.disconnect":
            self.watch.stop()
        else:
            self._listen()

    def close(self) -> None:
        self.watch.gone = True
        if self.pending is not None:
            self.pending.remove_done_callback(self._heard)
            self.pending.cancel()
            self.pending = None


class Call:
    """One request, as handlers see it. ``release``, when a handler sets it, is run once
    the answer is over (sent, failed or cut off): it frees what the request held."""

    __slots__ = ("_query", "params", "receive", "release", "scope")

    def __init__(self, scope: Scope, receive: Receive, params: dict[str, str]) -> None:
        self.scope = scope
        self.receive = receive
        self.params = params
        self._query: dict[str, str] | None = None
        self.release: Callable[[], None] | None = None

    def query(self, name: str) -> str | None:
        if self._query is None:
            self._query = parse_query(self.scope.get("query_string", b""))
        return self._query.get(name)

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None

    @property
    def client(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else "-"

    async def body(self, limit: int, timeout: float | None = None) -> bytes:
        """The request body: 413 past ``limit`` bytes (from Content-Length before reading
        anything, else as chunks arrive) and 408 if it takes longer than ``timeout``
        seconds to arrive (the server itself bounds only the request head)."""
        length = self.header(b"content-length")
        if length is not None:
            if not length.isascii() or not length.isdigit():
                raise errors.InvalidInput("bad content-length", errors.Code.BAD_REQUEST)
            if len(length) > 18 or int(length) > limit:
                raise errors.PayloadTooLarge(f"body is larger than {limit} bytes")
        try:
            async with asyncio.timeout(timeout):
                return await self._read_body(limit)
        except TimeoutError:
            raise BodyTimeout("the request body took too long to arrive") from None

    async def _read_body(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise errors.InvalidInput("client disconnected", errors.Code.BAD_REQUEST)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise errors.PayloadTooLarge(f"body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class BodyTimeout(errors.InvalidInput):
    """The client sent its request head but not its body in time (HTTP 408)."""

    code = errors.Code.BODY_TIMEOUT


def parse_query(raw: bytes) -> dict[str, str]:
    """First value wins; ``+`` and percent escapes decoded only when present."""
    result: dict[str, str] = {}
    if not raw:
        return result
    for part in raw.decode("latin-1").split("&"):
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name = unquote(name.replace("+", " "), errors="replace")
            value = unquote(value.replace("+", " "), errors="replace")
        if name and name not in result:
            result[name] = value
    return result


Endpoint = Callable[[Call], Awaitable[Reply]]


class Router:
    """Matches ``(method, path)`` against route templates like ``/v1/users/{userId}``."""

    def __init__(self) -> None:
        # segment count -> [(segments, {method: endpoint})], literal routes first
        self._table: dict[int, list[tuple[list[str], dict[str, Endpoint]]]] = {}

    def add(self, method: str, path: str, endpoint: Endpoint) -> None:
        segments = path.strip("/").split("/")
        routes = self._table.setdefault(len(segments), [])
        for existing, methods in routes:
            if existing == segments:
                methods[method] = endpoint
                return
        routes.append((segments, {method: endpoint}))
        routes.sort(key=lambda r: sum(s.startswith("{") for s in r[0]))

    def allowed(self, path: str) -> list[str]:
        """The methods ``path`` answers (the Allow header of a 405); GET brings HEAD."""
        segments = path.strip("/").split("/")
        found: set[str] = set()
        for template, methods in self._table.get(len(segments), ()):
            pairs = zip(template, segments, strict=True)
            if all((want[0] == "{" and bool(got)) or want == got for want, got in pairs):
                found |= set(methods) | ({"HEAD"} if "GET" in methods else set())
        return sorted(found)

    def match(self, method: str, path: str) -> tuple[Endpoint | None, dict[str, str], bool]:
        """The endpoint and path parameters; the flag says the path exists (for 405)."""
        segments = path.strip("/").split("/")
        found_path = False
        for template, methods in self._table.get(len(segments), ()):
            params: dict[str, str] = {}
            for want, got in zip(template, segments, strict=True):
                if want[0] == "{":
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                endpoint = methods.get(method)
                if endpoint is None and method == "HEAD":
                    endpoint = methods.get("GET")
                if endpoint is not None:
                    return endpoint, params, True
                if not params:  # a literal path (``/v1/users/create``) is not an id: 405
                    return None, {}, True
                found_path = True
        return None, {}, found_path
