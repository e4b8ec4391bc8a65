"""The stream port: a small HTTP/1.1 listener for connections that stay open.

An idle live stream spends its life waiting, and at a million users the memory of the
waiting connections, not CPU, decides how many processes a deployment needs. The main HTTP
server keeps two 8 KiB buffers per HTTP/1 connection for the connection's life; this
listener keeps none: a connection is its transport, this protocol object and the
request's coroutine. Bytes that arrive are parsed at once and dropped; what is written goes
straight to the socket (the kernel holds what it cannot take yet, and the answer waits
while the transport's buffer is over its high-water mark).

It serves the same application (every route answers here as on the main port), but only
requests without a body: ``GET`` and ``HEAD``. Anything else is answered 405 and the
connection closed, so no request body is ever read, and a request cannot be smuggled in
one. With a certificate configured it speaks TLS itself through memory buffers (the event
loop's own TLS layer allocates a 256 KiB read buffer per connection).

Limits: a request head must arrive whole within ``head_seconds`` of the connection (or of
the previous answer), be at most 8 KiB with at most 64 header lines; a client that sends
more while its answer is going out (pipelining) may queue one head's worth.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import http
import logging
import re
import ssl
import time
from typing import Any, cast
from urllib.parse import unquote

from parley.errors import Code
from parley.http.asgi import SECURITY_HEADERS, ASGIApp, Scope
from parley.http.errors import error_body

log = logging.getLogger("parley.http")

HEAD_MAX = 8192  # bytes of one request head, its blank line included
HEADERS_MAX = 64
READ_CHUNK = 16384  # plaintext read from TLS at once
RECORD = 16384  # bytes handed to TLS at once, either way
BODILESS = frozenset({204, 304})  # statuses without a body (and 1xx)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT = {"type": "http.disconnect"}
_ASGI = {"version": "3.0", "spec_version": "2.3"}


class ClientGone(OSError):
    """``send`` after the client went away (or the port closed): the answer is over."""


class _Refused(Exception):
    """A request this listener answers itself, then closes the connection."""

    def __init__(self, status: int, code: Code, message: str, allow: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.allow = allow


def parse_head(head: bytes) -> tuple[str, bytes, str, list[tuple[bytes, bytes]]]:
    """Method, target, HTTP version ("1.1" or "1.0") and headers (names lower-cased) of
    one request head without its final blank line; :class:`_Refused` if it is not one
    this listener answers."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise _Refused(400, Code.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _Refused(505, Code.BAD_REQUEST, "only HTTP/1.1 and HTTP/1.0 are served")
    if method not in (b"GET", b"HEAD"):
        raise _Refused(405, Code.METHOD_NOT_ALLOWED, "the stream port serves GET and HEAD", True)
    if not _TARGET.fullmatch(target):
        raise _Refused(400, Code.BAD_REQUEST, "malformed request target")
    if len(lines) - 1 > HEADERS_MAX:
        raise _Refused(431, Code.HEADERS_TOO_LARGE, f"more than {HEADERS_MAX} headers")
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also a folded line or a space before ':'
            raise _Refused(400, Code.BAD_REQUEST, "malformed header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise _Refused(400, Code.BAD_REQUEST, "control character in a header")
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            raise _Refused(400, Code.BAD_REQUEST, "the stream port takes no request bodies")
        hosts += name == b"host"
        headers.append((name, value))
    if hosts > 1 or (hosts == 0 and version == b"HTTP/1.1"):
        raise _Refused(400, Code.BAD_REQUEST, "an HTTP/1.1 request names its host once")
    return method.decode(), target, version[5:].decode(), headers


class _Tls:
    """TLS over two memory buffers: bytes from the network in, bytes for it out."""

    __slots__ = ("incoming", "outgoing", "ready", "session")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.session = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.ready = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The plaintext in ``data`` and whether the client closed TLS; raises
        ``ssl.SSLError`` on a broken handshake or record. The bytes go in a record's size
        at a time, each drained before the next: a memory buffer keeps the largest size it
        ever held for the connection's life."""
        chunks: list[bytes] = []
        view = memoryview(data)
        for start in range(0, len(view), RECORD):
            self.incoming.write(view[start : start + RECORD])
            if not self.ready:
                try:
                    self.session.do_handshake()
                except ssl.SSLWantReadError:
                    continue
                self.ready = True
            while True:
                try:
                    chunk = self.session.read(READ_CHUNK)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    return b"".join(chunks), True
                if not chunk:  # the client's close_notify
                    return b"".join(chunks), True
                chunks.append(chunk)
        return b"".join(chunks), False

    def wrap(self, data: bytes) -> bytes:
        """``data`` encrypted, a record's size at a time (see :meth:`feed`)."""
        if len(data) <= RECORD:
            self.session.write(data)
            return self.outgoing.read()
        out: list[bytes] = []
        view = memoryview(data)
        for start in range(0, len(view), RECORD):
            self.session.write(view[start : start + RECORD])
            out.append(self.outgoing.read())
        return b"".join(out)

    def goodbye(self) -> bytes:
        """A close_notify, once the handshake is done (the client's answer is not awaited)."""
        if self.ready:
            with contextlib.suppress(ssl.SSLError):
                self.session.unwrap()
        return self.outgoing.read()


class StreamPort:
    """Listens on one port in the running event loop and serves ``app`` there."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tls: ssl.SSLContext | None = None,
        head_seconds: float = 10.0,
        connections_max: int = 20_000,
    ) -> None:
        self.app = app
        self.tls = tls
        self.head_seconds = head_seconds
        self.connections_max = connections_max
        self.connections: set[_Connection] = set()
        self.refused = 0  # connections closed at once because the port was full
        self.server: asyncio.Server | None = None
        self.context = contextvars.copy_context()  # each request starts from a copy

    async def start(self, host: str, port: int) -> int:
        """Listen (several processes may share the port) and return the port bound."""
        self.context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=True, backlog=2048
        )
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    async def close(self, grace: float = 2.0) -> None:
        """Stop listening, close every connection and give their answers ``grace``
        seconds to end (they see the client gone)."""
        if self.server is not None:
            self.server.close()
        connections = list(self.connections)
        for connection in connections:
            connection.end()  # no new request starts on it after this
        tasks = [c.task for c in connections if c.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=grace)
        for connection in list(self.connections):  # a client that does not read
            connection.transport.abort()


class _Connection(asyncio.Protocol):
    """One client connection: reads request heads, runs the application for each in turn,
    writes its answer. Between requests it holds no buffer at all."""

    __slots__ = (
        "asked",
        "chunked",
        "closed",
        "done",
        "gone",
        "head_only",
        "keep",
        "left",
        "pending",
        "port",
        "response",
        "stall",
        "started",
        "task",
        "timer",
        "tls",
        "transport",
        "writable",
    )

    def __init__(self, port: StreamPort) -> None:
        self.port = port
        self.tls = _Tls(port.tls) if port.tls is not None else None
        self.pending = b""  # bytes of a request head not yet complete (or queued behind one)
        self.timer: asyncio.TimerHandle | None = None  # head due, or the last byte's deadline
        self.stall: asyncio.TimerHandle | None = None  # set while the client reads nothing
        self.task: asyncio.Task[None] | None = None
        self.gone: asyncio.Future[dict[str, Any]] | None = None  # a receive() waiting
        self.writable: asyncio.Future[None] | None = None  # set while writing is paused
        self.closed = False
        self.keep = True  # keep the connection after this answer
        self.head_only = False  # a HEAD request: no body goes out
        self.response: tuple[int, list[tuple[bytes, bytes]]] | None = None  # start, unsent
        self.started = False  # the answer's head went out
        self.chunked = False
        self.left: int | None = None  # body bytes the answer's Content-Length still owes
        self.done = False  # the answer's last byte went out
        self.asked = False  # the application read the (empty) request body

    # transport callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no subclass
        port = self.port
        if len(port.connections) >= port.connections_max:
            port.refused += 1
            self.closed = True
            self.transport.abort()
            return
        port.connections.add(self)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.tls is not None:
            try:
                data, ended = self.tls.feed(data)
            except ssl.SSLError:  # its alert goes out, then the connection ends
                self._flush_tls()
                self.end()
                return
            self._flush_tls()
            if ended:
                self.end()
                return
            if not data:
                return
        if self.task is not None:  # pipelined behind the answer in progress
            if len(self.pending) + len(data) > HEAD_MAX:
                self.transport.abort()
            else:
                self.pending += data
            return
        self.pending += data
        self._next_request()

    def eof_received(self) -> bool:
        self.end()  # a client that stops sending is gone
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.port.connections.discard(self)
        for timer in (self.timer, self.stall):
            if timer is not None:
                timer.cancel()
        self.timer = self.stall = None
        self._stop()

    def pause_writing(self) -> None:
        loop = asyncio.get_running_loop()
        if self.writable is None:
            self.writable = loop.create_future()
        if self.stall is None:  # a client that reads nothing for that long is cut off
            self.stall = loop.call_later(self.port.head_seconds, self.transport.abort)

    def resume_writing(self) -> None:
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        self._resume()

    def _resume(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _stop(self) -> None:
        """Nothing more is read or answered: the application hears the client gone."""
        self.closed = True
        gone, self.gone = self.gone, None
        if gone is not None and not gone.done():
            gone.set_result(_DISCONNECT)
        self._resume()

    def end(self) -> None:
        """Close: what was written goes out first (over TLS, then a close_notify), but a
        client that does not take it is cut off after ``head_seconds``. An answer cut
        short is reset instead, so that no client takes it for whole."""
        if self.closed:
            return
        self._stop()
        if self.started and not self.done:
            self.transport.abort()
            return
        if self.tls is not None:
            with contextlib.suppress(ssl.SSLError):
                goodbye = self.tls.goodbye()
                if goodbye:
                    self.transport.write(goodbye)
        self.transport.close()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(
            self.port.head_seconds, self.transport.abort
        )

    # requests -------------------------------------------------------------------------
    def _await_head(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.port.head_seconds, self._head_timeout)

    def _head_timeout(self) -> None:
        self.timer = None
        if self.task is None:
            self.end()

    def _next_request(self) -> None:
        pending = self.pending.lstrip(b"\r\n")  # empty lines before a request are allowed
        skipped = len(self.pending) - len(pending)  # they count against the limit too
        end = pending.find(b"\r\n\r\n")
        if end < 0:
            self.pending = pending
            if skipped + len(pending) >= HEAD_MAX:
                self._refuse(_Refused(431, Code.HEADERS_TOO_LARGE, "request head over 8 KiB"))
            return
        if skipped + end + 4 > HEAD_MAX:
            self._refuse(_Refused(431, Code.HEADERS_TOO_LARGE, "request head over 8 KiB"))
            return
        self.pending = pending[end + 4 :]
        if len(self.pending) > HEAD_MAX:  # more queued behind it than one head
            self.transport.abort()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            method, target, version, headers = parse_head(pending[:end])
        except _Refused as refused:
            self._refuse(refused)
            return
        path, _, query = target.partition(b"?")
        options = {
            option.strip().lower()
            for name, value in headers
            if name == b"connection"
            for option in value.split(b",")
        }
        self.keep = version == "1.1" and b"close" not in options
        self.head_only = method == "HEAD"
        self.response = None
        self.started = False
        self.chunked = False
        self.left = None
        self.done = False
        self.asked = False
        sock = self.transport.get_extra_info
        scope: Scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "method": method,
            "scheme": "https" if self.tls is not None else "http",
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": _address(sock("peername")),
            "server": _address(sock("sockname")),
        }
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._answer(scope), context=self.port.context.copy())

    async def _answer(self, scope: Scope) -> None:
        try:
            await self.port.app(scope, self._receive, self._send)
        except ClientGone:
            pass
        except Exception:
            log.exception("the stream port's answer failed")
            if not self.started and not self.closed:  # else it is cut short: no last chunk
                body = error_body(Code.INTERNAL_ERROR, "internal error")
                self.keep = False
                headers = [(b"content-type", b"application/json"), *SECURITY_HEADERS]
                await self._send({"type": "http.response.start", "status": 500, "headers": headers})
                await self._send({"type": "http.response.body", "body": body})
        finally:
            self.task = None
        if self.closed:
            return
        if not self.done or not self.keep:
            self.end()
            return
        self._await_head()
        if self.pending:
            self._next_request()

    def _refuse(self, refused: _Refused) -> None:
        """Answer a request this listener does not serve, then close."""
        body = error_body(refused.code, str(refused))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
            *SECURITY_HEADERS,
        ]
        if refused.allow:
            headers.append((b"allow", b"GET, HEAD"))
        headers.append((b"date", _date()))
        self._write(_status_line(refused.status) + _header_lines(headers) + body)
        self.end()

    # the application's side -----------------------------------------------------------
    def _receive(self) -> asyncio.Future[dict[str, Any]]:
        """ASGI ``receive``: the empty body first, then a future that completes when the
        client goes away (a future, not a coroutine: waiting on it needs no task)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        if not self.asked:
            self.asked = True
            future.set_result(_REQUEST)
        elif self.closed:
            future.set_result(_DISCONNECT)
        elif self.gone is not None and not self.gone.done():
            return self.gone  # a second waiter hears the same departure
        else:
            self.gone = future
        return future

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.response = (message["status"], list(message.get("headers", ())))
            return
        if kind != "http.response.body" or self.done:
            return
        if self.closed:
            raise ClientGone("the client is gone")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        out = b""
        if self.response is not None:
            out = self._head(body, more)
        if self.head_only:
            body = b""
        elif self.left is not None:  # never more than the length said, and never less
            body = body[: self.left]
            self.left -= len(body)
            if not more and self.left:
                self.keep = False  # the answer is cut short: the client must see it end
        elif self.chunked:
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + (
                b"" if more else b"0\r\n\r\n"
            )
        if not more:
            self.done = True
        self._write(out + body if out else body)
        writable = self.writable
        if writable is not None:
            await writable

    def _head(self, body: bytes, more: bool) -> bytes:
        assert self.response is not None
        status, headers = self.response
        self.response = None
        self.started = True
        names = {name.lower() for name, _ in headers}
        if status < 200 or status in BODILESS:
            self.head_only = True  # no framing of its own, no body bytes
            if status != 304:  # a 304 may repeat the length of what it stands for
                framing = (b"content-length", b"transfer-encoding")
                headers = [(k, v) for k, v in headers if k.lower() not in framing]
        elif b"content-length" in names:
            self.left = _length(headers)
            if self.left is None:
                self.keep = False  # unreadable: the body ends with the connection
        else:
            if not more:
                headers.append((b"content-length", b"%d" % len(body)))
            elif self.keep:
                self.chunked = not self.head_only
                if self.chunked:
                    headers.append((b"transfer-encoding", b"chunked"))
            # HTTP/1.0 or closing: the body ends with the connection
        if not self.keep:
            headers.append((b"connection", b"close"))
        if b"date" not in names:
            headers.append((b"date", _date()))
        return _status_line(status) + _header_lines(headers)

    def _write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self.tls is not None:
            data = self.tls.wrap(data)
        self.transport.write(data)

    def _flush_tls(self) -> None:
        assert self.tls is not None
        out = self.tls.outgoing.read()
        if out:
            self.transport.write(out)


def _address(address: Any) -> tuple[str, int] | None:
    """(host, port) of a socket address (IPv6 ones have four parts)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


_dates: list[tuple[int, bytes]] = [(0, b"")]


def _date() -> bytes:
    """The Date header's value (RFC 9110 asks an origin server with a clock for it),
    formatted once a second."""
    now = int(time.time())
    second, text = _dates[0]
    if second != now:
        text = email.utils.formatdate(now, usegmt=True).encode()
        _dates[0] = (now, text)
    return text


def _status_line(status: int) -> bytes:
    with contextlib.suppress(ValueError):
        return b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())
    return b"HTTP/1.1 %d \r\n" % status


def _length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The answer's Content-Length, None if it is given twice or is not a number."""
    values = [value for name, value in headers if name.lower() == b"content-length"]
    if len(values) != 1 or not values[0].isdigit() or len(values[0]) > 18:
        return None
    return int(values[0])


def _header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers) + b"\r\n"


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The stream port's TLS: the main port's certificate, TLS 1.2 at least, HTTP/1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context
