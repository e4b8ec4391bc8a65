"""One client cannot stop the server for everyone: real server processes, real sockets.

* Sockets that connect and never send a byte do not take the server's capacity: with 2,000
  of them open, ``/healthz`` and the API still answer, and the server closes every one of
  them after the request timeout (granian's head timeout; HTTP/1 mode makes it start at
  the connection's first moment).
* A process whose request slots (``PARLEY_MAX_CONCURRENCY``) are all held by long-polls
  answers new requests 503 with ``Retry-After`` at once, instead of leaving them hanging,
  while ``/healthz``, ``/readyz`` and ``/metrics`` still answer; once the long-polls are
  over it serves again.
* With rate limits on, one user holds at most ``PARLEY_MAX_WAITING_PER_USER`` long-polls and
  streams and one address ``PARLEY_MAX_WAITING_PER_ADDRESS``: the rest get 429
  ``too_many_waiting`` with ``Retry-After`` at once; others are not affected, and a slot is
  free again as soon as its long-poll is answered or its stream is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.http.server import FILE_RESERVE, connection_limit
from parley.settings import Settings, SettingsError
from tests.e2e.server import Server

pytestmark = pytest.mark.slow

IDLE_SOCKETS = 2000


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return str(self.json()["error"]["code"])


async def ask(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float = 10.0,
) -> Answer:
    """One request on its own connection, over a plain socket (HTTP/1.1)."""
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(payload)}")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            await writer.drain()
            return await _read_answer(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Answer(int(status_line.split(" ")[1]), headers, body)


@contextlib.asynccontextmanager
async def open_stream(port: int, path: str, headers: dict[str, str]) -> Any:
    """A live stream held open until the block ends; yields its answer's head (and the
    error body when it was refused)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        async with asyncio.timeout(10):
            head = await _read_answer(reader)
        yield head
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _files_for(count: int) -> None:
    """Raise this process's open-file limit to fit ``count`` sockets, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the open-file limit ({hard}) is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def start(servers: list[Server], tmp_path: Path, **env: str) -> Server:
    server = Server(tmp_path / f"data{len(servers)}", **env).start()
    servers.append(server)
    return server


def _still_open(conn: socket.socket) -> bool:
    """The server has not closed this (idle, non-blocking) connection yet."""
    try:
        return conn.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read, not closed
    except OSError:
        return False  # reset


# sockets that never send a byte -------------------------------------------------------
def test_idle_sockets_neither_block_the_server_nor_stay_open(
    servers: list[Server], tmp_path: Path
) -> None:
    _files_for(IDLE_SOCKETS)
    server = start(
        servers,
        tmp_path,
        PARLEY_AUTH="none",
        PARLEY_MAX_CONCURRENCY="16",
        PARLEY_MAX_CONNECTIONS=str(IDLE_SOCKETS + 1000),
        PARLEY_REQUEST_TIMEOUT="6",
    )
    user = httpx.post(f"{server.url}/v1/users/create", json={"username": "u"}).json()["userId"]
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE_SOCKETS):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            conn.setblocking(False)
            idle.append(conn)
        opened = time.monotonic()
        # Far more idle connections than request slots: the server still answers.
        assert httpx.get(f"{server.url}/healthz", timeout=4).status_code == 200
        r = httpx.get(f"{server.url}/v1/users/{user}", timeout=4)
        assert r.status_code == 200, r.text
        answered = time.monotonic() - opened
        # ... while the idle sockets were still open (they are closed only after 6 s).
        still_open = sum(_still_open(conn) for conn in idle)
        assert answered < 6 and still_open > IDLE_SOCKETS * 0.9, (answered, still_open)
        # The server closes every connection that sent nothing within the timeout.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_still_open(conn) for conn in idle):
            time.sleep(0.5)
        assert not [conn for conn in idle if _still_open(conn)]
        assert time.monotonic() - opened >= 5  # by the timeout, not before it
    finally:
        for conn in idle:
            conn.close()
    assert httpx.get(f"{server.url}/healthz", timeout=4).status_code == 200


# every request slot held -----------------------------------------------------------------
async def settle(
    requests: list[asyncio.Future[Answer]], expected: int, seconds: float = 20
) -> tuple[list[Answer], list[asyncio.Future[Answer]]]:
    """Wait until ``expected`` of ``requests`` are answered (or ``seconds`` pass); the
    answers, and the requests still open."""
    pending = set(requests)
    answered: list[Answer] = []
    deadline = time.monotonic() + seconds
    while len(answered) < expected and pending and time.monotonic() < deadline:
        done, pending = await asyncio.wait(pending, timeout=1)
        answered += [future.result() for future in done]
    return answered, [future for future in requests if future in pending]


async def eventually_ok(port: int, path: str, headers: dict[str, str] | None = None) -> Answer:
    """A request that must be served once what held the slots is over (the server counts
    a request out right after its answer is written: allow it that moment)."""
    deadline = time.monotonic() + 5
    while True:
        answer = await ask(port, "GET", path, headers, timeout=2)
        if answer.status == 200 or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)


async def cancel(requests: list[asyncio.Future[Answer]]) -> None:
    for request in requests:
        request.cancel()
    await asyncio.gather(*requests, return_exceptions=True)


async def test_a_full_process_answers_503_at_once_and_health_still_answers(
    servers: list[Server], tmp_path: Path
) -> None:
    slots, extra = 16, 4
    server = start(servers, tmp_path, PARLEY_AUTH="none", PARLEY_MAX_CONCURRENCY=str(slots))
    port = server.port
    user = (await ask(port, "POST", "/v1/users/create", body={"username": "u"})).json()["userId"]
    url = f"/v1/messages/{user}?timestamp=0&wait=10"
    polls = [asyncio.ensure_future(ask(port, "GET", url, timeout=20)) for _ in range(slots + extra)]
    try:
        # 16 long-polls hold every slot; the others are refused at once, not left hanging.
        refused, held = await settle(polls, extra)
        assert len(refused) == extra and len(held) == slots, [a.status for a in refused]
        for answer in refused:
            assert answer.status == 503 and answer.code == "overloaded", answer
            assert answer.headers["retry-after"] == "1"
        # While full: the operations endpoints answer, everything else is refused at once.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await ask(port, "GET", path, timeout=2)).status == 200, path
        r = await ask(port, "POST", "/v1/users/create", body={"username": "v"}, timeout=2)
        assert r.status == 503 and r.code == "overloaded", r
        r = await ask(port, "GET", "/docs", timeout=2)
        assert r.status == 503 and r.code == "overloaded", r
        # The held long-polls are answered (an empty page after their wait) ...
        answers = await asyncio.gather(*held)
        assert [a.status for a in answers] == [200] * slots
        assert all(a.json()["messages"] == [] for a in answers)
    finally:
        await cancel(polls)
    # ... and then the slots are free again.
    assert (await eventually_ok(port, f"/v1/users/{user}")).status == 200


# one user, one address -------------------------------------------------------------------
async def test_one_user_cannot_hold_every_slot(servers: list[Server], tmp_path: Path) -> None:
    """2,000 long-polls of one user (rate limits on, as in production): 20 are held, the
    rest refused at once; the server goes on serving everyone else."""
    sent, per_user = 2000, 20
    _files_for(sent + 100)
    server = start(
        servers,
        tmp_path,
        PARLEY_AUTH="token",
        PARLEY_RATE_LIMITS="on",
        PARLEY_MAX_CONCURRENCY="256",
        PARLEY_MAX_CONNECTIONS=str(sent + 500),
    )
    port = server.port
    a = (await ask(port, "POST", "/v1/users/create", body={"username": "a"})).json()
    b = (await ask(port, "POST", "/v1/users/create", body={"username": "b"})).json()
    a_auth = {"Authorization": f"Bearer {a['token']}"}
    b_auth = {"Authorization": f"Bearer {b['token']}"}
    url = f"/v1/messages/{a['userId']}?timestamp=0&wait=50"
    polls = [asyncio.ensure_future(ask(port, "GET", url, a_auth, timeout=60)) for _ in range(sent)]
    b_polls: list[asyncio.Future[Answer]] = []
    try:
        refused, held = await settle(polls, sent - per_user, seconds=40)
        assert len(refused) == sent - per_user and len(held) == per_user, len(refused)
        for r in refused:
            assert r.status == 429 and r.code == "too_many_waiting", r
            assert r.headers["retry-after"] == "5"
        # Everyone else is served: health, and another user's long-poll is admitted.
        assert (await ask(port, "GET", "/healthz", timeout=2)).status == 200
        b_url = f"/v1/messages/{b['userId']}?timestamp=0&wait=50"
        b_polls.append(asyncio.ensure_future(ask(port, "GET", b_url, b_auth, timeout=60)))
        # b's message to a wakes a's held long-polls: they answer with it.
        body = {"senderId": b["userId"], "receiverId": a["userId"], "message": "wake up"}
        r = await ask(port, "POST", "/v1/messages/send?type=private", b_auth, body)
        assert r.status == 200, r
        woken = await asyncio.gather(*held)
        assert all(w.status == 200 and len(w.json()["messages"]) == 1 for w in woken)
        # Answered long-polls are counted out: a may wait again.
        again = await eventually_ok(port, url.replace("wait=50", "wait=1"), a_auth)
        assert again.status == 200, again
        # b's long-poll was held all along, and is answered by a's message.
        body = {"senderId": a["userId"], "receiverId": b["userId"], "message": "hi"}
        r = await ask(port, "POST", "/v1/messages/send?type=private", a_auth, body)
        assert r.status == 200, r
        b_answer = await b_polls[0]
        assert b_answer.status == 200 and len(b_answer.json()["messages"]) == 1, b_answer
    finally:
        await cancel(polls + b_polls)


async def test_one_address_cannot_hold_every_slot(servers: list[Server], tmp_path: Path) -> None:
    """Open mode: any caller may poll any user, so the address is what is capped."""
    server = start(
        servers,
        tmp_path,
        PARLEY_AUTH="none",
        PARLEY_RATE_LIMITS="on",
        PARLEY_MAX_WAITING_PER_ADDRESS="10",
    )
    port = server.port
    users = [
        (await ask(port, "POST", "/v1/users/create", body={"username": f"u{i}"})).json()["userId"]
        for i in range(12)
    ]
    polls = [
        asyncio.ensure_future(ask(port, "GET", f"/v1/messages/{u}?timestamp=0&wait=30"))
        for u in users[:11]
    ]
    try:
        refused, held = await settle(polls, 1)
        assert len(refused) == 1 and len(held) == 10, refused
        assert refused[0].status == 429 and refused[0].code == "too_many_waiting"
        assert refused[0].headers["retry-after"] == "5"
        # A plain check (no wait) holds nothing and is not capped.
        r = await ask(port, "GET", f"/v1/messages/{users[11]}?timestamp=0")
        assert r.status == 200, r
        assert not any(p.done() for p in held)
    finally:
        await cancel(polls)


async def test_streams_count_per_user_until_closed(servers: list[Server], tmp_path: Path) -> None:
    server = start(
        servers,
        tmp_path,
        PARLEY_AUTH="token",
        PARLEY_RATE_LIMITS="on",
        PARLEY_MAX_WAITING_PER_USER="3",
    )
    port = server.port
    me = (await ask(port, "POST", "/v1/users/create", body={"username": "me"})).json()
    auth = {"Authorization": f"Bearer {me['token']}"}
    path = f"/v1/messages/{me['userId']}/stream"
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(3):
            head = await streams.enter_async_context(open_stream(port, path, auth))
            assert head.status == 200, head
        async with open_stream(port, path, auth) as refused:
            assert refused.status == 429 and refused.code == "too_many_waiting"
        # A long-poll counts with the streams; a plain check does not.
        r = await ask(port, "GET", f"/v1/messages/{me['userId']}?wait=5", auth)
        assert r.status == 429 and r.code == "too_many_waiting"
        assert (await ask(port, "GET", f"/v1/messages/{me['userId']}", auth)).status == 200
    # Every stream closed: once the server has seen the disconnects, streams open again.
    deadline = time.monotonic() + 10
    status = 0
    while status != 200 and time.monotonic() < deadline:
        async with open_stream(port, path, auth) as head:
            status = head.status
        if status != 200:
            await asyncio.sleep(0.2)
    assert status == 200


# settings ----------------------------------------------------------------------------------
def test_connections_exceed_request_slots_and_fit_the_file_limit() -> None:
    settings = Settings.from_env({"PARLEY_MAX_CONCURRENCY": "100"})
    assert settings.max_connections == 200  # twice the request slots by default
    with pytest.raises(SettingsError, match="PARLEY_MAX_CONNECTIONS"):
        Settings.from_env({"PARLEY_MAX_CONCURRENCY": "100", "PARLEY_MAX_CONNECTIONS": "100"})
    huge = Settings.from_env({"PARLEY_MAX_CONNECTIONS": "2000000"})
    allowed = connection_limit(huge)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert allowed <= soft - FILE_RESERVE or soft == resource.RLIM_INFINITY
    assert connection_limit(settings) == 200  # what fits is left as it is
