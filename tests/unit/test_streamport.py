"""The stream port: a small HTTP/1.1 listener that answers GET and HEAD for an ASGI app.

The tests start a :class:`StreamPort` in the test's own event loop against small ASGI apps
written here and talk to it over raw sockets, asserting on the exact bytes that come back.
Nothing waits on luck: every wait is for a condition, bounded by a generous time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import http
import json
import re
import shutil
import socket
import ssl
import subprocess
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from parley.http.asgi import ASGIApp, Receive, Scope, Send
from parley.http.streamport import (
    HEAD_MAX,
    HEADERS_MAX,
    StreamPort,
    _Connection,
    _Refused,
    parse_head,
    tls_context,
)

LIMIT = 5.0  # seconds: the bound on any wait for something that is certain to happen
HOST = b"Host: test\r\n"
CHUNK = 65536  # bytes of one large write
CHUNKS = 200  # large writes in a flood: far more than the kernel buffers hold
SECURITY = (
    b"x-content-type-options: nosniff\r\n"
    b"x-frame-options: DENY\r\n"
    b"referrer-policy: no-referrer\r\n"
    b"cache-control: no-store\r\n"
)


# --- helpers ------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes  # decoded: the chunks joined when the answer was chunked
    raw: bytes  # every byte of the answer as it came

    def header(self, name: bytes) -> bytes | None:
        values = [value for key, value in self.headers if key == name]
        assert len(values) <= 1, f"{name!r} given {len(values)} times"
        return values[0] if values else None


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> Response:
    """One answer: its head, then its body by content-length, chunks or the end of the
    connection (none at all for a HEAD request)."""
    raw = undated(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), LIMIT))
    lines = raw[:-4].split(b"\r\n")
    version, status, _ = lines[0].split(b" ", 2)
    assert version == b"HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b": ")
        assert sep, line
        headers.append((name, value))
    answer = Response(int(status), headers, b"", raw)
    if head:
        return answer
    length = answer.header(b"content-length")
    if length is not None:
        answer.body = await asyncio.wait_for(reader.readexactly(int(length)), LIMIT)
        answer.raw += answer.body
    elif answer.header(b"transfer-encoding") == b"chunked":
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), LIMIT)
            size = int(size_line[:-2], 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), LIMIT)
            assert chunk.endswith(b"\r\n")
            answer.raw += size_line + chunk
            answer.body += chunk[:-2]
            if size == 0:
                break
    else:
        answer.body = await asyncio.wait_for(reader.read(), LIMIT)
        answer.raw += answer.body
    return answer


STATUS_LINE = re.compile(rb"HTTP/1\.1 \d\d\d ")
DATE = re.compile(rb"date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n")


def undated(raw: bytes) -> bytes:
    """``raw`` without the Date header of each answer in it: every answer has exactly one
    (RFC 9110 asks an origin server with a clock for it), and the other bytes are exact."""
    heads = len(STATUS_LINE.findall(raw))
    undated, found = DATE.subn(b"", raw)
    assert found == heads, f"{found} Date headers in {heads} answers: {raw[:300]!r}"
    return undated


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection (Date headers taken out)."""
    return undated(await asyncio.wait_for(reader.read(), LIMIT))


async def closed_or_reset(reader: asyncio.StreamReader) -> bytes:
    """What comes before the end of the connection; b"" if it was reset."""
    try:
        return undated(await asyncio.wait_for(reader.read(), LIMIT))
    except ConnectionResetError:
        return b""


async def until(condition: Callable[[], object], limit: float = LIMIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, **options: Any) -> AsyncIterator[tuple[StreamPort, int]]:
    port = StreamPort(app, **options)
    try:
        number = await port.start("127.0.0.1", 0)
        yield port, number
    finally:
        await port.close()


@contextlib.asynccontextmanager
async def connected(
    number: int, *, ssl_context: ssl.SSLContext | None = None, small_window: bool = False
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    if small_window:  # a small receive buffer, so that the server's writes back up soon
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHUNK)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", number)), LIMIT)
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
    else:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", number, ssl=ssl_context), LIMIT
        )
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), LIMIT)


def text_app(body: bytes = b"hello", status: int = 200) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def path_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the path it was asked for."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def streaming_app(chunks: list[bytes], last: bytes = b"") -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": last})

    return app


def get(path: bytes = b"/", *extra: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"".join(extra) + b"\r\n"


HELLO = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"


# --- plain answers and keep-alive ---------------------------------------------------------
async def test_get_is_answered_and_the_connection_kept() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(get())
        first = await read_response(reader)
        assert first.raw == HELLO
        writer.write(get(b"/again"))
        second = await read_response(reader)
        assert second.raw == HELLO


async def test_http_1_0_is_answered_then_closed() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(b"GET / HTTP/1.0\r\n\r\n")  # HTTP/1.0 needs no Host
        assert await read_to_end(reader) == (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n"
            b"connection: close\r\n\r\nhello"
        )


async def test_connection_close_is_answered_then_closed() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(get(b"/", b"Connection: Keep-Alive, CLOSE\r\n"))
        assert await read_to_end(reader) == (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n"
            b"connection: close\r\n\r\nhello"
        )


async def test_empty_lines_before_a_request_and_content_length_zero_are_fine() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(b"\r\n\r\n" + get(b"/", b"Content-Length: 0\r\n"))
        assert (await read_response(reader)).raw == HELLO


async def test_a_head_arriving_byte_by_byte_is_answered() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        for byte in get(b"/slowly", b"X-A: b\r\n"):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        assert (await read_response(reader)).raw == HELLO


async def test_unknown_status_has_an_empty_reason() -> None:
    async with serving(text_app(b"", 599)) as (_, number), connected(number) as (r, w):
        w.write(get())
        assert (await read_response(r)).raw == (
            b"HTTP/1.1 599 \r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n"
        )


# --- pipelining ---------------------------------------------------------------------------
async def test_two_pipelined_requests_are_answered_in_order() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/one":
            await asyncio.sleep(0.05)  # the second must still wait for the first
        await path_app(scope, receive, send)

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get(b"/one") + get(b"/two"))
        first = await read_response(reader)
        second = await read_response(reader)
        assert first.raw == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n/one"
        assert second.raw == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n/two"


async def test_a_request_sent_during_an_answer_waits_for_it() -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.append(scope["path"])
        if scope["path"] == "/one":
            await release.wait()
        await path_app(scope, receive, send)

    async with serving(app) as (port, number), connected(number) as (reader, writer):
        writer.write(get(b"/one"))
        await until(lambda: started == ["/one"])
        writer.write(get(b"/two"))
        await until(lambda: any(c.pending for c in port.connections))  # queued, not started
        assert started == ["/one"]
        release.set()
        assert (await read_response(reader)).body == b"/one"
        assert (await read_response(reader)).body == b"/two"
        assert started == ["/one", "/two"]


async def test_nothing_pipelined_behind_connection_close_is_answered() -> None:
    async with serving(path_app) as (_, number), connected(number) as (reader, writer):
        writer.write(get(b"/one") + get(b"/two", b"Connection: close\r\n") + get(b"/three"))
        assert (await read_response(reader)).body == b"/one"
        assert await read_to_end(reader) == (
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\n/two"
        )


# --- streamed answers ---------------------------------------------------------------------
async def test_a_streamed_answer_is_chunked() -> None:
    app = streaming_app([b"ab", b"", b"cdefghijklmnopq"])
    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get())
        answer = await read_response(reader)
        assert answer.raw == (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            b"2\r\nab\r\nf\r\ncdefghijklmnopq\r\n0\r\n\r\n"
        )
        # a last message with a body: its chunk, then the end
        writer.write(get())
        assert (await read_response(reader)).body == b"abcdefghijklmnopq"


async def test_a_streamed_answer_with_a_last_chunk_and_keep_alive_after_it() -> None:
    app = streaming_app([b"x" * 300], last=b"yz")
    async with serving(app) as (_, number), connected(number) as (reader, writer):
        for _ in range(2):
            writer.write(get())
            answer = await read_response(reader)
            assert answer.raw.endswith(
                b"\r\n\r\n12c\r\n" + b"x" * 300 + b"\r\n2\r\nyz\r\n0\r\n\r\n"
            )
            assert answer.header(b"content-length") is None


_LENGTH6 = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef"


async def test_a_streamed_answer_with_its_own_length_is_not_chunked() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"Content-Length", b"6")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get() + get())
        for _ in range(2):
            date_line = len(b"date: Wed, 02 Dec 2026 12:00:00 GMT\r\n")
            answer = await asyncio.wait_for(reader.readexactly(len(_LENGTH6) + date_line), LIMIT)
            assert undated(answer) == _LENGTH6


async def test_a_streamed_answer_to_http_1_0_ends_with_the_connection() -> None:
    app = streaming_app([b"ab", b"cd"], last=b"ef")
    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert await read_to_end(reader) == (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nabcdef"
        )


# --- HEAD ---------------------------------------------------------------------------------
async def test_head_has_headers_but_no_body() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\n")
        answer = await read_response(reader, head=True)
        assert answer.raw == (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
        )
        writer.write(get())  # no body bytes went out before this answer
        assert (await read_response(reader)).raw == HELLO


async def test_head_of_a_streamed_answer_has_no_body_and_no_chunks() -> None:
    app = streaming_app([b"ab", b"cd"], last=b"ef")
    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\n" + get())
        answer = await read_response(reader, head=True)
        assert answer.raw == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n"
        assert (await read_response(reader)).body == b"abcdef"


# --- refusals -----------------------------------------------------------------------------
def refusal(status: bytes, code: bytes, message: bytes, allow: bool = False) -> bytes:
    body = b'{"error":{"code":"%s","message":"%s"}}' % (code, message)
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%s%s\r\n%s"
        % (status, len(body), SECURITY, b"allow: GET, HEAD\r\n" if allow else b"", body)
    )


BAD = (b"400 Bad Request", b"bad_request")
NO_BODY = (*BAD, b"the stream port takes no request bodies")
LINE = (*BAD, b"malformed request line")
HEADER = (*BAD, b"malformed header line")
CONTROL = (*BAD, b"control character in a header")
HOST_ONCE = (*BAD, b"an HTTP/1.1 request names its host once")
TOO_MANY = (b"431 Request Header Fields Too Large", b"headers_too_large")
MANY_HEADERS = b"".join(b"X-%d: v\r\n" % i for i in range(HEADERS_MAX))  # with Host: 65


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        pytest.param(
            b"POST / HTTP/1.1\r\n" + HOST + b"\r\n",
            (
                b"405 Method Not Allowed",
                b"method_not_allowed",
                b"the stream port serves GET and HEAD",
            ),
            id="post",
        ),
        pytest.param(get(b"/", b"Content-Length: 5\r\n"), NO_BODY, id="content-length"),
        pytest.param(get(b"/", b"Transfer-Encoding: chunked\r\n"), NO_BODY, id="chunked"),
        pytest.param(b"GET /\r\n\r\n", LINE, id="two-part-line"),
        pytest.param(b"GET / HTTP/1.1 x\r\n" + HOST + b"\r\n", LINE, id="four-part-line"),
        pytest.param(b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n", LINE, id="double-space"),
        pytest.param(b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n", LINE, id="method-not-a-token"),
        pytest.param(
            b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",
            (
                b"505 HTTP Version Not Supported",
                b"bad_request",
                b"only HTTP/1.1 and HTTP/1.0 are served",
            ),
            id="http-2",
        ),
        pytest.param(
            b"GET http://x/ HTTP/1.1\r\n" + HOST + b"\r\n",
            (*BAD, b"malformed request target"),
            id="absolute-target",
        ),
        pytest.param(get(b"/", b"X-Name : v\r\n"), HEADER, id="space-before-colon"),
        pytest.param(get(b"/", b"X-Name: v\r\n folded\r\n"), HEADER, id="obs-fold"),
        pytest.param(get(b"/", b"X-Name v\r\n"), HEADER, id="no-colon"),
        pytest.param(get(b"/", b"X-Name: a\x01b\r\n"), CONTROL, id="control-char"),
        pytest.param(get(b"/", b"X-Name: a\rb\r\n"), CONTROL, id="bare-cr"),
        pytest.param(get(b"/", b"X-Name: a\nb\r\n"), CONTROL, id="bare-lf"),
        pytest.param(b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", HOST_ONCE, id="no-host"),
        pytest.param(get(b"/", b"host: other\r\n"), HOST_ONCE, id="two-hosts"),
        pytest.param(
            get(b"/", MANY_HEADERS),
            (*TOO_MANY, b"more than 64 headers"),
            id="65-headers",
        ),
        pytest.param(
            (get(b"/", b"X-Big: ") + b"v" * HEAD_MAX)[:HEAD_MAX],
            (*TOO_MANY, b"request head over 8 KiB"),
            id="8-KiB-without-end",
        ),
    ],
)
async def test_refusals_are_answered_then_closed(
    request_bytes: bytes, expected: tuple[bytes, bytes, bytes]
) -> None:
    status, code, message = expected
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(request_bytes)
        raw = await read_to_end(reader)  # the answer, then the end of the connection
    assert raw == refusal(status, code, message, allow=status.startswith(b"405"))
    body = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert body == {"error": {"code": code.decode(), "message": message.decode()}}


async def test_a_refusal_after_a_good_request_on_the_same_connection() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(get())
        assert (await read_response(reader)).raw == HELLO
        writer.write(b"DELETE / HTTP/1.1\r\n" + HOST + b"\r\n")
        answer = await read_response(reader)
        assert answer.status == 405 and answer.header(b"allow") == b"GET, HEAD"
        assert await read_to_end(reader) == b""


async def test_64_headers_are_served() -> None:
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(HEADERS_MAX - 1))  # with Host: 64
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(get(b"/", headers))
        assert (await read_response(reader)).raw == HELLO


async def test_a_head_of_exactly_8_kib_is_served() -> None:
    start = get(b"/", b"X-Big: ")[:-2]
    head = start + b"v" * (HEAD_MAX - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == HEAD_MAX
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(head)
        assert (await read_response(reader)).raw == HELLO


# --- time limits --------------------------------------------------------------------------
async def test_half_a_head_is_closed_after_head_seconds() -> None:
    async with (
        serving(text_app(), head_seconds=0.3) as (port, number),
        connected(number) as (reader, writer),
    ):
        writer.write(b"GET / HTTP/1.1\r\nHost: te")
        assert await read_to_end(reader) == b""  # closed without an answer
        await until(lambda: not port.connections)


async def test_a_silent_connection_is_closed_after_head_seconds() -> None:
    async with (
        serving(text_app(), head_seconds=0.3) as (port, number),
        connected(number) as (reader, _),
    ):
        assert await read_to_end(reader) == b""
        await until(lambda: not port.connections)


async def test_an_idle_keep_alive_connection_is_closed_after_head_seconds() -> None:
    async with (
        serving(text_app(), head_seconds=0.3) as (port, number),
        connected(number) as (reader, writer),
    ):
        writer.write(get())
        assert (await read_response(reader)).raw == HELLO
        assert await read_to_end(reader) == b""
        await until(lambda: not port.connections)


async def test_a_long_answer_is_not_cut_by_head_seconds() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await asyncio.sleep(0.3)  # together longer than head_seconds
            await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with (
        serving(app, head_seconds=0.2) as (_, number),
        connected(number) as (reader, writer),
    ):
        writer.write(get())
        assert (await read_response(reader)).body == b"tick" * 3


# --- the client going away ----------------------------------------------------------------
async def test_the_app_sees_the_client_go_away() -> None:
    received: list[dict[str, Any]] = []
    waiting = asyncio.Event()
    saw = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        waiting.set()
        received.append(await receive())
        saw.set()

    async with serving(app) as (port, number):
        async with connected(number) as (_, writer):
            writer.write(get())
            await asyncio.wait_for(waiting.wait(), LIMIT)
        await asyncio.wait_for(saw.wait(), LIMIT)
        assert received == [
            {"type": "http.request", "body": b"", "more_body": False},
            {"type": "http.disconnect"},
        ]
        await until(lambda: not port.connections)


async def test_receive_after_the_client_left_says_disconnect_at_once() -> None:
    gone = asyncio.Event()
    received: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        await gone.wait()
        received.append(await receive())
        received.append(await receive())

    async with serving(app) as (port, number):
        async with connected(number) as (_, writer):
            writer.write(get())
            await until(lambda: len(received) == 1)
        await until(lambda: not port.connections)
        gone.set()
        await until(lambda: len(received) == 3)
        assert received[1:] == [{"type": "http.disconnect"}] * 2


# --- connections_max ----------------------------------------------------------------------
async def test_connections_over_the_maximum_are_closed_at_once() -> None:
    async with serving(text_app(), connections_max=2) as (port, number):
        async with connected(number) as (r1, w1), connected(number) as (r2, w2):
            await until(lambda: len(port.connections) == 2)
            async with connected(number) as (r3, _):
                assert await closed_or_reset(r3) == b""
            assert port.refused == 1
            for reader, writer in ((r1, w1), (r2, w2)):  # the first two are still served
                writer.write(get())
                assert (await read_response(reader)).raw == HELLO
        await until(lambda: not port.connections)
        async with connected(number) as (reader, writer):  # room again
            writer.write(get())
            assert (await read_response(reader)).raw == HELLO
        assert port.refused == 1


# --- flow control -------------------------------------------------------------------------


def flooding_app(progress: dict[str, int], finished: asyncio.Event) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", b"%d" % (CHUNK * CHUNKS))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            for i in range(CHUNKS):
                more = i < CHUNKS - 1
                body = b"x" * CHUNK
                await send({"type": "http.response.body", "body": body, "more_body": more})
                progress["sent"] += 1
            finished.set()
        finally:
            progress["over"] = 1  # returned or raised: the answer holds nothing more

    return app


async def test_a_client_that_does_not_read_pauses_the_answer() -> None:
    progress = {"sent": 0}
    finished = asyncio.Event()
    async with (
        serving(flooding_app(progress, finished)) as (port, number),
        connected(number, small_window=True) as (reader, writer),
    ):
        writer.write(get())
        await until(lambda: any(c.writable is not None for c in port.connections))
        await asyncio.sleep(1.0)  # the app stays paused: the client reads nothing
        assert not finished.is_set()
        assert progress["sent"] < CHUNKS
        answer = await read_response(reader)
        assert answer.status == 200
        assert len(answer.body) == CHUNK * CHUNKS and answer.body == b"x" * len(answer.body)
        await asyncio.wait_for(finished.wait(), LIMIT)
        assert progress["sent"] == CHUNKS
        writer.write(get())  # and the connection still serves
        assert len((await read_response(reader)).body) == CHUNK * CHUNKS


async def test_a_paused_answer_ends_when_the_client_leaves() -> None:
    progress = {"sent": 0}
    finished = asyncio.Event()
    async with serving(flooding_app(progress, finished)) as (port, number):
        async with connected(number, small_window=True) as (_, writer):
            writer.write(get())
            await until(lambda: any(c.writable is not None for c in port.connections))
        # unread bytes in the client's buffer: closing resets the connection; the next
        # send raises (the client is gone) and the answer ends
        await until(lambda: progress.get("over") == 1)
        assert progress["sent"] < CHUNKS
        await until(lambda: not port.connections)


async def test_closing_the_port_drops_a_client_that_does_not_read() -> None:
    progress = {"sent": 0}
    port = StreamPort(flooding_app(progress, asyncio.Event()))
    try:
        number = await port.start("127.0.0.1", 0)
        async with connected(number, small_window=True) as (_, writer):
            writer.write(get())
            await until(lambda: any(c.writable is not None for c in port.connections))
            await port.close(grace=0.5)
            await until(lambda: not port.connections)  # still held while the client is
    finally:
        await port.close()


# --- errors in the app --------------------------------------------------------------------
def five_hundred() -> bytes:
    body = b'{"error":{"code":"internal_error","message":"internal error"}}'
    return (
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n%s"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (SECURITY, len(body), body)
    )


async def test_an_app_that_raises_before_answering_gives_500() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get())
        raw = await read_to_end(reader)
    assert raw == five_hundred()


async def test_an_app_that_raises_mid_answer_closes_the_connection() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("boom")

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get())
        assert await read_to_end(reader) == (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\npart\r\n"
        )  # cut short: no last chunk, so the client knows


async def test_an_app_that_raises_after_start_sends_nothing_broken() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get())
        raw = await read_to_end(reader)
    assert raw == five_hundred()  # nothing went out yet: a whole 500


async def test_an_app_that_answers_nothing_closes_the_connection() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get())
        assert await read_to_end(reader) == b""


# --- the scope ----------------------------------------------------------------------------
async def test_the_scope_the_app_sees() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await text_app()(scope, receive, send)

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(
            b"GET /a%20b/c%2Fd?x=1&y=%20 HTTP/1.1\r\nHost: example\r\nX-Custom: \t Value \r\n"
            b"ACCEPT:\r\n\r\n"
        )
        assert (await read_response(reader)).raw == HELLO
        writer.write(b"HEAD /h HTTP/1.0\r\n\r\n")
        await read_response(reader, head=True)
        client = writer.get_extra_info("sockname")
    assert scopes[0] == {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/a b/c/d",
        "raw_path": b"/a%20b/c%2Fd",
        "query_string": b"x=1&y=%20",
        "root_path": "",
        "headers": [(b"host", b"example"), (b"x-custom", b"Value"), (b"accept", b"")],
        "client": (client[0], client[1]),
        "server": ("127.0.0.1", number),
    }
    assert scopes[1]["method"] == "HEAD" and scopes[1]["http_version"] == "1.0"
    assert scopes[1]["path"] == "/h" and scopes[1]["query_string"] == b""
    assert scopes[1]["headers"] == []


# --- TLS ----------------------------------------------------------------------------------
@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


def client_context(cert: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cert)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def test_tls_get_and_streamed_answer(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        if scope["path"] == "/stream":
            await streaming_app([b"a" * 40000, b"bc"], last=b"d")(scope, receive, send)
        else:
            await text_app()(scope, receive, send)

    context = client_context(cert)
    async with (
        serving(app, tls=tls_context(cert, key)) as (_, number),
        connected(number, ssl_context=context) as (reader, writer),
    ):
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        writer.write(get())
        assert (await read_response(reader)).raw == HELLO
        writer.write(get(b"/stream"))
        answer = await read_response(reader)
        assert answer.header(b"transfer-encoding") == b"chunked"
        assert answer.raw.endswith(b"\r\n2\r\nbc\r\n1\r\nd\r\n0\r\n\r\n")
        assert answer.body == b"a" * 40000 + b"bcd"
        writer.write(get(b"/", b"Connection: close\r\n"))
        assert (await read_response(reader)).header(b"connection") == b"close"
        assert await closed_or_reset(reader) == b""
    assert [s["scheme"] for s in scopes] == ["https"] * 3


async def test_tls_refusal(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    context = client_context(cert)
    async with (
        serving(text_app(), tls=tls_context(cert, key)) as (_, number),
        connected(number, ssl_context=context) as (reader, writer),
    ):
        writer.write(b"POST / HTTP/1.1\r\n" + HOST + b"\r\n")
        answer = await read_response(reader)
        assert answer.raw == refusal(
            b"405 Method Not Allowed",
            b"method_not_allowed",
            b"the stream port serves GET and HEAD",
            allow=True,
        )


async def test_tls_garbage_instead_of_a_hello_is_closed(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    async with serving(text_app(), tls=tls_context(cert, key)) as (port, number):
        async with connected(number) as (reader, writer):  # no TLS on the client's side
            writer.write(get())
            assert await closed_or_reset(reader) == b""
        await until(lambda: not port.connections)
        async with connected(number, ssl_context=client_context(cert)) as (reader, writer):
            writer.write(get(b"/", b"Connection: close\r\n"))
            assert (await read_response(reader)).body == b"hello"
            assert await closed_or_reset(reader) == b""


async def test_tls_close_by_the_client_ends_the_connection(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    port = StreamPort(text_app(), tls=tls_context(cert, key), head_seconds=60)
    try:
        number = await port.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", number, ssl=client_context(cert)
        )
        try:
            writer.write(get())
            assert (await read_response(reader)).raw == HELLO
            writer.close()  # sends close_notify, then waits for the server's answer to it
            await until(lambda: not port.connections)
        finally:
            writer.close()
            await port.close()
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), LIMIT)
    finally:
        await port.close()


async def test_tls_slow_handshake_is_closed_after_head_seconds(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    tls = tls_context(cert, key)
    async with (
        serving(text_app(), tls=tls, head_seconds=0.3) as (port, number),
        connected(number) as (reader, writer),
    ):
        writer.write(b"\x16\x03\x01")  # the start of a record, then nothing
        assert await closed_or_reset(reader) == b""
        await until(lambda: not port.connections)


# --- parse_head ---------------------------------------------------------------------------
def test_parse_head_of_a_good_request() -> None:
    assert parse_head(b"GET /x?y=1 HTTP/1.0\r\nA-B:  c d \t\r\nHOST: h\r\nEmpty:") == (
        "GET",
        b"/x?y=1",
        "1.0",
        [(b"a-b", b"c d"), (b"host", b"h"), (b"empty", b"")],
    )
    assert parse_head(b"HEAD / HTTP/1.1\r\nHost: h\r\nContent-Length: 0")[0] == "HEAD"


@pytest.mark.parametrize(
    ("head", "status", "message"),
    [
        (b"", 400, "malformed request line"),
        (b"GET", 400, "malformed request line"),
        (b"GET / HTTP/1.1 ", 400, "malformed request line"),
        (b"GET\t/ HTTP/1.1", 400, "malformed request line"),
        (b"G\x00T / HTTP/1.1", 400, "malformed request line"),
        (b"GET /a b HTTP/1.1\r\nHost: h", 400, "malformed request line"),
        (b"GET / http/1.1\r\nHost: h", 505, "only HTTP/1.1 and HTTP/1.0 are served"),
        (b"PRI * HTTP/2.0", 505, "only HTTP/1.1 and HTTP/1.0 are served"),
        (b"GET / HTTP/1.1\r\n", 400, "malformed header line"),  # an empty header line
        (b"get / HTTP/1.1\r\nHost: h", 405, "the stream port serves GET and HEAD"),
        (b"OPTIONS * HTTP/1.1\r\nHost: h", 405, "the stream port serves GET and HEAD"),
        (b"GET * HTTP/1.1\r\nHost: h", 400, "malformed request target"),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h", 400, "malformed request target"),
        (b"GET /\x7f HTTP/1.1\r\nHost: h", 400, "malformed request target"),
        (b"GET //x:y@z HTTP/1.1\r\nHost: h\r\nX: \x00", 400, "control character in a header"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n: v", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX\x00: v", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\tX: v", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f", 400, "control character in a header"),
        (b"GET / HTTP/1.1\r\nHost: h\nX: a", 400, "control character in a header"),
        (b"GET / HTTP/1.1\r\nhOsT: a\r\nHOST: a", 400, "an HTTP/1.1 request names its host once"),
        (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b", 400, "an HTTP/1.1 request names its host once"),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nTransfer-Encoding: identity",
            400,
            "the stream port takes no request bodies",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 00",
            400,
            "the stream port takes no request bodies",
        ),
        (
            b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * HEADERS_MAX + b"Host: h",
            431,
            "more than 64 headers",
        ),
    ],
)
def test_parse_head_refuses(head: bytes, status: int, message: str) -> None:
    with pytest.raises(_Refused) as refused:
        parse_head(head)
    assert refused.value.status == status
    assert str(refused.value) == message
    assert refused.value.allow == (status == 405)


# --- the head limit, byte exact (a connection on a fake transport) ----------------------
class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("10.0.0.1", 5555), "sockname": ("10.0.0.2", 443)}.get(name)


async def fake_connection(app: ASGIApp) -> tuple[_Connection, FakeTransport]:
    connection = _Connection(StreamPort(app))
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


async def finish(connection: _Connection) -> None:
    if connection.task is not None:
        await asyncio.wait_for(asyncio.shield(connection.task), LIMIT)


def head_of(size: int) -> bytes:
    start = get(b"/", b"X-Big: ")[:-2]
    head = start + b"v" * (size - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == size
    return head


async def test_a_head_of_8_kib_plus_one_is_refused_whole_or_in_pieces() -> None:
    too_big = refusal(*TOO_MANY, b"request head over 8 KiB")
    connection, transport = await fake_connection(text_app())
    connection.data_received(head_of(HEAD_MAX + 1))
    assert undated(transport.written) == too_big and transport.closing
    connection.connection_lost(None)
    connection, transport = await fake_connection(text_app())
    head = head_of(HEAD_MAX + 1)
    connection.data_received(head[: HEAD_MAX - 1])
    assert undated(transport.written) == b""
    connection.data_received(head[HEAD_MAX - 1 :])
    assert undated(transport.written) == too_big and transport.closing
    connection.connection_lost(None)


async def test_a_head_of_8_kib_in_pieces_is_served() -> None:
    connection, transport = await fake_connection(text_app())
    head = head_of(HEAD_MAX)
    connection.data_received(head[:5000])
    connection.data_received(head[5000:])
    await finish(connection)
    assert undated(transport.written) == HELLO and not transport.closing
    connection.connection_lost(None)


async def test_pipelining_more_than_a_head_during_an_answer_aborts() -> None:
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await text_app()(scope, receive, send)

    connection, transport = await fake_connection(app)
    connection.data_received(get())
    assert connection.task is not None
    connection.data_received(b"GET /" + b"a" * (HEAD_MAX - 5))  # exactly one head's worth
    assert not transport.aborted
    connection.data_received(b"a")
    assert transport.aborted
    connection.connection_lost(None)
    release.set()
    await finish(connection)


# --- what a review found: each of these failed before its fix ---------------------------
async def test_a_client_that_reads_nothing_is_cut_off_and_frees_its_answer() -> None:
    progress = {"sent": 0}
    finished = asyncio.Event()
    app = flooding_app(progress, finished)
    async with (
        serving(app, head_seconds=0.5) as (port, number),
        connected(number, small_window=True) as (_, writer),
    ):
        writer.write(get())
        await until(lambda: any(c.writable is not None for c in port.connections))
        await until(lambda: progress.get("over") == 1)  # its answer ended: the slot is free
        await until(lambda: not port.connections)
        assert progress["sent"] < CHUNKS and not finished.is_set()


async def test_empty_lines_count_against_the_head_limit() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(b"\r\n" * (HEAD_MAX // 2 + 1) + get())
        raw = await closed_or_reset(reader)
        assert raw == b"" or raw.startswith(b"HTTP/1.1 431 ")


async def test_more_than_a_head_pipelined_in_one_read_is_not_kept() -> None:
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await streaming_app([b"x"])(scope, receive, send)

    async with serving(app) as (port, number), connected(number) as (reader, writer):
        writer.write(get() + b"A" * (HEAD_MAX + 1))
        assert await closed_or_reset(reader) == b""
        await until(lambda: not port.connections)
        assert not started.is_set()


async def test_an_answer_shorter_than_its_length_closes_the_connection() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"12345"})

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get() + get())  # the second must not be read as the first's rest
        raw = await read_to_end(reader)
        assert raw == b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345"  # then closed


async def test_an_answer_longer_than_its_length_is_cut_to_it() -> None:
    forged = b"12345HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": forged})

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get())
        answer = await read_response(reader)
        assert answer.body == b"12345"
        writer.write(get(b"/", b"Connection: close\r\n"))
        assert (await read_response(reader)).body == b"12345"
        assert await read_to_end(reader) == b""  # nothing forged follows


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses_get_no_framing(status: int) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b"ignored"})

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get() + get(b"/", b"Connection: close\r\n"))
        raw = await read_to_end(reader)
        line = _status_line_of(status)
        assert raw == line + b"\r\n" + line + b"connection: close\r\n\r\n"


def _status_line_of(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())


async def test_close_in_any_connection_header_closes() -> None:
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(get(b"/", b"Connection: close\r\n", b"Connection: keep-alive\r\n"))
        answer = await read_response(reader)
        assert answer.header(b"connection") == b"close"
        assert await read_to_end(reader) == b""
    async with serving(text_app()) as (_, number), connected(number) as (reader, writer):
        writer.write(get(b"/", b"Connection: x-closed\r\n"))  # not the close option
        assert (await read_response(reader)).header(b"connection") is None
        writer.write(get())
        assert (await read_response(reader)).raw == HELLO


async def test_a_pipelined_request_does_not_see_the_previous_ones_context() -> None:
    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="-")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        before = seen.get()
        seen.set(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": before.encode()})

    async with serving(app) as (_, number), connected(number) as (reader, writer):
        writer.write(get(b"/alice") + get(b"/bob"))
        assert (await read_response(reader)).body == b"-"
        assert (await read_response(reader)).body == b"-"


async def test_closing_the_port_waits_for_the_answers_it_cancelled() -> None:
    cleaned = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await asyncio.sleep(60)  # ignores the client leaving
        finally:
            await asyncio.sleep(0.05)
            cleaned.set()

    port = StreamPort(app)
    number = await port.start("127.0.0.1", 0)
    async with connected(number) as (_, writer):
        writer.write(get())
        await until(lambda: any(c.task is not None for c in port.connections))
        await port.close(grace=0.2)
        assert cleaned.is_set()


async def test_tls_large_answers_and_a_close_notify_at_the_end(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    big = bytes(range(256)) * 1024  # 256 KiB, in one send

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": big, "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})

    def fetch(number: int) -> bytes:
        raw = socket.create_connection(("127.0.0.1", number), timeout=LIMIT)
        context = client_context(cert)
        with context.wrap_socket(
            raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
        ) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")  # the body ends with the connection
            got = b""
            while chunk := tls.recv(65536):  # SSLEOFError without a close_notify
                got += chunk
            return got

    async with serving(app, tls=tls_context(cert, key)) as (_, number):
        raw = await asyncio.to_thread(fetch, number)
    head, _, body = undated(raw).partition(b"\r\n\r\n")
    assert head == b"HTTP/1.1 200 OK\r\nconnection: close"
    assert body == big + b"end"


async def test_a_refused_tls_handshake_gets_its_alert(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.1 on purpose: the port takes 1.2 at least
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    hello = old.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    try:
        hello.do_handshake()
    except ssl.SSLWantReadError:
        pass  # a hello went out: this OpenSSL can still offer TLS 1.1
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot offer TLS 1.1 at all: {exc}")
    async with serving(text_app(), tls=tls_context(cert, key)) as (port, number):
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):  # an alert, not a reset
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", number, ssl=old), LIMIT)
        await until(lambda: not port.connections)


async def test_an_answer_cut_short_over_tls_gets_no_close_notify(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"part": [1,', "more_body": True})
        raise RuntimeError("boom")

    def fetch(number: int) -> tuple[bytes, str]:
        raw = socket.create_connection(("127.0.0.1", number), timeout=LIMIT)
        with client_context(cert).wrap_socket(
            raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
        ) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")  # the body ends with the connection
            got = b""
            try:
                while chunk := tls.recv(65536):
                    got += chunk
            except (ssl.SSLEOFError, ConnectionResetError) as exc:
                return got, type(exc).__name__
            return got, "close_notify"

    async with serving(app, tls=tls_context(cert, key)) as (_, number):
        got, ending = await asyncio.to_thread(fetch, number)
    assert got.endswith(b'{"part": [1,')
    assert ending != "close_notify"  # the client can tell the answer was cut short


async def test_sends_after_the_client_left_end_the_answer() -> None:
    sent = {"n": 0}
    over = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # like an export or a file: it never asks receive() whether the client is there
        headers = [(b"content-length", b"%d" % (CHUNK * CHUNKS))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            for _ in range(CHUNKS):
                await send({"type": "http.response.body", "body": b"y", "more_body": True})
                sent["n"] += 1
                await asyncio.sleep(0.001)
        finally:
            over.set()

    async with serving(app) as (_, number):
        async with connected(number) as (reader, writer):
            writer.write(get())
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), LIMIT)
        await asyncio.wait_for(over.wait(), LIMIT)
    assert sent["n"] < CHUNKS


async def test_a_204_carries_no_length() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"0")]  # as Reply does
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async with (
        serving(app) as (_, number),
        connected(number) as (reader, writer),
    ):
        writer.write(get(b"/", b"Connection: close\r\n"))
        raw = await read_to_end(reader)
    assert (
        raw == b"HTTP/1.1 204 No Content\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n"
    )
