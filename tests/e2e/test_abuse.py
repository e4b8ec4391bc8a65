"""Abuse limits, proven over HTTP.

* Rate limits: 429 with Retry-After for each budget (per address, per token, creations per
  address, sends per token), with small budgets set through the environment; other
  addresses and tokens are not affected.
* Body size: 413 from Content-Length before the body is read, and from a chunked body as
  soon as it grows past the limit (a real server and a raw socket: the answer arrives while
  the client is still sending, and the server stops reading).
* Slow clients: a request head or body that does not arrive within the request timeout is
  cut off (granian bounds the head, Parley the body with 408), so is an idle keep-alive.
* A worker process that dies is replaced.
* Security headers on every kind of response; no internal detail in any error body, while
  the log keeps the traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.errors import Unavailable
from parley.storage.memory import MemoryStorage
from parley.storage.sqlite import SqliteStorage
from tests.e2e.server import Server
from tests.e2e.test_authz_matrix import Result, world
from tests.e2e.test_fuzz_statuses import FaultyStorage

LIMITS_ON = {"PARLEY_RATE_LIMITS": "on"}


def _is_429(r: Result, window: int) -> None:
    assert r.status == 429, r
    assert r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= window


# rate limits ---------------------------------------------------------------------------
async def test_per_address_budget() -> None:
    async with world(
        "token", MemoryStorage(), **LIMITS_ON, PARLEY_RATE_ADDRESS_PER_MINUTE="5"
    ) as w:
        for _ in range(5):
            assert (await w.call("GET", "/v1/users/u_nobody")).status == 404  # counted too
        _is_429(await w.call("GET", f"/v1/users/{w.me}"), 60)
        _is_429(await w.call("POST", "/v1/users/create", "none", {"username": "x"}), 60)
        # another address still gets through; operations endpoints are never limited
        assert (await w.call("GET", f"/v1/users/{w.me}", fresh_address=True)).status == 200
        assert (await w.call("GET", "/healthz")).status == 200
        assert (await w.call("GET", "/metrics")).status == 200


async def test_per_token_budget() -> None:
    env = {**LIMITS_ON, "PARLEY_RATE_TOKEN_PER_MINUTE": "3"}
    async with world("token", MemoryStorage(), **env) as w:
        url = f"/v1/messages/{w.me}"
        for _ in range(3):  # each from a new address: the token is what is counted
            assert (await w.call("GET", url, fresh_address=True)).status == 200
        _is_429(await w.call("GET", url, fresh_address=True), 60)
        _is_429(await w.call("GET", f"/v1/users/{w.me}/groups", fresh_address=True), 60)
        r = await w.call("GET", f"/v1/messages/{w.other}", "other", fresh_address=True)
        assert r.status == 200  # another token has its own budget


async def test_creations_budget() -> None:
    env = {**LIMITS_ON, "PARLEY_RATE_CREATES_PER_HOUR": "2"}
    async with world("token", MemoryStorage(), **env) as w:
        assert (await w.call("POST", "/v1/users/create", "none", {"username": "a"})).status == 200
        assert (await w.call("POST", "/v1/groups/create", "me", {"groupName": "g"})).status == 200
        _is_429(await w.call("POST", "/v1/users/create", "none", {"username": "b"}), 3600)
        _is_429(await w.call("POST", "/v1/groups/create", "other", {"groupName": "g"}), 3600)
        # reading and sending are not creations
        assert (await w.call("GET", f"/v1/users/{w.me}")).status == 200
        r = await w.call("POST", "/v1/users/create", "none", {"username": "c"}, fresh_address=True)
        assert r.status == 200


async def test_sends_budget() -> None:
    env = {**LIMITS_ON, "PARLEY_RATE_SENDS_PER_MINUTE": "3"}
    async with world("token", MemoryStorage(), **env) as w:
        body = {"senderId": w.me, "receiverId": w.other, "message": "hi"}
        url = "/v1/messages/send?type=private"
        for _ in range(3):
            assert (await w.call("POST", url, "me", body, fresh_address=True)).status == 200
        _is_429(await w.call("POST", url, "me", body, fresh_address=True), 60)
        assert (await w.call("GET", f"/v1/messages/{w.me}")).status == 200  # reads go on
        theirs = {"senderId": w.other, "receiverId": w.me, "message": "hi"}
        assert (await w.call("POST", url, "other", theirs)).status == 200


async def test_limits_off_lets_bursts_through() -> None:
    env = {"PARLEY_RATE_LIMITS": "off", "PARLEY_RATE_ADDRESS_PER_MINUTE": "1"}
    async with world("token", MemoryStorage(), **env) as w:
        for _ in range(20):
            assert (await w.call("GET", f"/v1/users/{w.me}")).status == 200


# a real server, spoken to over a raw socket -----------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("abuse"), PARLEY_AUTH="none", PARLEY_REQUEST_TIMEOUT="1"
    ).start()
    try:
        yield running
    finally:
        running.stop()


def _connect(server: Server) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    return conn


def _read_answer(conn: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes or ``seconds`` pass."""
    conn.settimeout(0.2)
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            part = conn.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not part:
            break
        out += part
    return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.slow
def test_413_from_content_length_before_the_body(server: Server) -> None:
    with _connect(server) as conn:
        started = time.monotonic()
        conn.sendall(
            b"POST /v1/users/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        answer = _read_answer(conn, 5)  # the server answers without waiting for 50 MB
    assert _status(answer) == 413, answer[:200]
    assert b'"payload_too_large"' in answer
    assert time.monotonic() - started < 4


@pytest.mark.slow
def test_413_from_a_chunked_body_that_keeps_growing(server: Server) -> None:
    chunk = b"x" * 4096
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    answer = b""
    with _connect(server) as conn:
        conn.sendall(
            b"POST /v1/users/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        conn.settimeout(0.05)
        deadline = time.monotonic() + 20
        while sent < 64 * 1024 * 1024 and time.monotonic() < deadline:
            try:
                conn.sendall(frame)
                sent += len(chunk)
            except (BlockingIOError, TimeoutError):
                pass  # the server stopped reading: our buffers are full
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                part = conn.recv(65536)
            except (BlockingIOError, TimeoutError):
                continue
            except ConnectionResetError:
                break
            answer += part
            if not part or b"\r\n\r\n" in answer:
                break
        answer += _read_answer(conn, 2)
    assert _status(answer) == 413, answer[:200]
    # The answer came once the body passed 64 KiB, while the client was far from done (what
    # it sent beyond that sits in socket buffers: the server stopped reading).
    assert sent < 16 * 1024 * 1024, sent


@pytest.mark.slow
def test_request_head_that_never_ends_is_cut_off(server: Server) -> None:
    with _connect(server) as conn:
        started = time.monotonic()
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line, ever
        assert _read_answer(conn, 10) == b""
        assert time.monotonic() - started < 5  # closed after ~1 s, not held


@pytest.mark.slow
def test_head_dribbled_byte_by_byte_is_cut_off(server: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    started = time.monotonic()
    cut = False
    with _connect(server) as conn:
        for byte in request:
            try:
                conn.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 8:
                break
        answer = b"" if cut else _read_answer(conn, 3)
    assert cut or not answer.startswith(b"HTTP/1.1 200"), answer[:100]
    assert time.monotonic() - started < 8


@pytest.mark.slow
def test_body_that_never_ends_is_408(server: Server) -> None:
    with _connect(server) as conn:
        started = time.monotonic()
        conn.sendall(
            b"POST /v1/users/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"username'
        )
        answer = _read_answer(conn, 10)
    assert _status(answer) == 408, answer[:200]
    assert b'"body_timeout"' in answer
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_idle_keep_alive_connection_is_closed(server: Server) -> None:
    with _connect(server) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer = _read_answer(conn, 10)  # the answer, then the close
    assert _status(answer) == 200
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    """kill -9 of the worker process (a crash, the OOM killer): the server answers again
    within seconds, with its data, instead of staying up with nobody serving."""
    running = Server(tmp_path / "data", PARLEY_AUTH="none").start()
    try:
        user = httpx.post(f"{running.url}/v1/users/create", json={"username": "a"}).json()
        assert running.proc is not None
        workers = [pid for pid in running.pids() if pid != running.proc.pid]
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{running.url}/v1/users/{user['userId']}", timeout=1)
                status = r.status_code
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert status == 200
        assert not set(workers) & set(running.pids())
    finally:
        running.stop()


# security headers ------------------------------------------------------------------------
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


async def test_security_headers_on_every_kind_of_response(tmp_path: Path) -> None:
    async with world("token", SqliteStorage(tmp_path / "parley.db"), **LIMITS_ON,
                     PARLEY_RATE_CREATES_PER_HOUR="1") as w:  # fmt: skip
        answers = {
            "api": await w.call("GET", f"/v1/users/{w.me}"),
            "api 400": await w.call("POST", "/v1/groups/create", "me", body=b"{"),
            "api 401": await w.call("GET", f"/v1/users/{w.me}", "none"),
            "api 403": await w.call("GET", f"/v1/messages/{w.me}", "other"),
            "api 404": await w.call("GET", "/v1/groups/g_nothing"),
            "api 413": await w.call("POST", "/v1/groups/create", "me", body=b"x" * 70_000),
            "stream": await w.call("GET", f"/v1/messages/{w.me}/stream"),
            "openapi": await w.call("GET", "/openapi.json"),
            "docs": await w.call("GET", "/docs"),
            "docs asset": await w.call("GET", "/docs/assets/swagger-ui.css"),
            "docs script": await w.call("GET", "/docs/assets/docs.js"),
            "docs 404": await w.call("GET", "/docs/assets/nope.js"),
            "web page": await w.call("GET", "/"),
            "web script": await w.call("GET", "/app.js"),
            "unknown route": await w.call("GET", "/v2/nothing"),
            "unknown file": await w.call("GET", "/nothing.html"),
            "405 api": await w.call("DELETE", "/v1/users/create"),
            "405 docs": await w.call("POST", "/docs"),
            "metrics": await w.call("GET", "/metrics"),
            "health": await w.call("GET", "/healthz"),
        }
        await w.call("POST", "/v1/users/create", "none", {"username": "a"})
        answers["api 429"] = await w.call("POST", "/v1/users/create", "none", {"username": "b"})
    statuses = {name: r.status for name, r in answers.items()}
    assert statuses["api 429"] == 429 and statuses["405 docs"] == 405, statuses
    assert statuses["docs 404"] == statuses["unknown file"] == 404, statuses
    for name, r in answers.items():
        for header, value in SECURITY.items():
            assert r.headers.get(header) == value, (name, header, r.headers)
        assert "cache-control" in r.headers, name
    assert "content-security-policy" in answers["web page"].headers
    assert "content-security-policy" in answers["docs"].headers


# errors reveal nothing -----------------------------------------------------------------
class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_internal_error_is_generic_and_logged() -> None:
    storage = FaultyStorage()
    async with world("token", storage) as w:
        me, tokens = w.me, w.tokens
    capture = _Capture()
    logger = logging.getLogger("parley.http")
    logger.addHandler(capture)
    try:
        async with world("token", storage, populate=False) as cold:
            cold.me, cold.tokens = me, tokens
            storage.failure = RuntimeError("disk /var/secret/parley.db: table users is corrupt")
            r = await cold.call("GET", f"/v1/messages/{me}")
            storage.failure = Unavailable("down")
            down = await cold.call("GET", f"/v1/messages/{me}")
            storage.failure = None
    finally:
        logger.removeHandler(capture)
    assert r.status == 500
    assert r.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    for detail in ("secret", "corrupt", "Traceback", "RuntimeError", "parley.db", ".py"):
        assert detail not in r.text
    assert down.status == 503
    assert down.json() == {"error": {"code": "unavailable", "message": "down"}}
    logged = [rec for rec in capture.records if rec.exc_info]
    assert logged, "the failure is logged"
    assert "table users is corrupt" in logging.Formatter().formatException(logged[0].exc_info)  # type: ignore[arg-type]


async def test_no_error_body_carries_internal_detail(tmp_path: Path) -> None:
    """Client errors say what was wrong with the request, in the documented shape, and
    nothing about the server (no paths, no exception names, no SQL)."""
    async with world("token", SqliteStorage(tmp_path / "parley.db")) as w:
        bodies = [
            b"{",
            b"[]",
            b'{"groupName": 7}',
            b'{"groupName": "' + b"x" * 500 + b'"}',
            b"\xff\xfe",
            b'{"groupName": "\\ud800"}',
            b"null",
        ]
        answers: list[Result] = []
        for body in bodies:
            answers.append(await w.call("POST", "/v1/groups/create", "me", body=body))
        answers.append(await w.call("GET", f"/v1/messages/{w.me}?timestamp=1e9&limit=x"))
        answers.append(await w.call("GET", "/v1/users/..%2F..%2Fetc%2Fpasswd"))
        for r in answers:
            text = r.text
            assert 400 <= r.status < 500, text
            assert set(r.json()) == {"error"}, text
            for leak in ("Traceback", 'File "', "sqlite", "SELECT", "/work", "site-packages"):
                assert leak not in text, text
