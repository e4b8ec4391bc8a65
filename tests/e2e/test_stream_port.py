"""The stream port (``PARLEY_STREAM_PORT``) of a real server: live streams held there get
every message sent through the main port, in order, without loss across a reconnect, with
the same authorization; TLS works there with the main port's certificate; a request the
port does not serve is refused without disturbing the streams held on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from parley.bench.tls import self_signed
from tests.e2e.server import Server, free_port
from tests.e2e.test_stream import create, events, send

pytestmark = pytest.mark.slow


def _server(tmp_path: Path, **env: str) -> Server:
    port = free_port()
    server = Server(tmp_path / "data", PARLEY_AUTH="token", PARLEY_STREAM_PORT=str(port), **env)
    assert server.stream_port == port
    return server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    running = _server(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


async def _collect(stream: AsyncIterator[dict[str, str]], want: int, got: list[str]) -> str:
    """Read events until ``got`` holds ``want`` message ids; the last event id."""
    last = ""
    while len(got) < want:
        event = await asyncio.wait_for(anext(stream), 10)
        if "data" in event:
            assert event["event"] == "messages"
            got += [m["messageId"] for m in json.loads(event["data"])["messages"]]
            last = event["id"]
    return last


@contextlib.asynccontextmanager
async def two_ports(server: Server) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A client of the main port and one of the stream port."""
    stream_url = f"http://127.0.0.1:{server.stream_port}"
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as main,
        httpx.AsyncClient(base_url=stream_url, timeout=30) as streams,
    ):
        yield main, streams


async def test_streams_on_the_stream_port_get_every_message_once(server: Server) -> None:
    async with two_ports(server) as (main, streams):
        alice, ha = await create(main, "alice")
        bob, hb = await create(main, "bob")
        received: list[str] = []
        async with streams.stream("GET", f"/v1/messages/{bob}/stream", headers=hb) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["transfer-encoding"] == "chunked"
            stream = events(r)
            assert "comment" in await anext(stream)  # connected
            live = [await send(main, alice, bob, ha, f"live {i}") for i in range(5)]
            last = await _collect(stream, 5, received)
        offline = [await send(main, alice, bob, ha, f"offline {i}") for i in range(4)]
        headers = {**hb, "Last-Event-ID": last}
        async with streams.stream("GET", f"/v1/messages/{bob}/stream", headers=headers) as r:
            stream = events(r)
            await _collect(stream, 9, received)
            later = await send(main, alice, bob, ha, "after resume")
            await _collect(stream, 10, received)
        assert received == [*live, *offline, later]  # nothing lost or repeated
        # the same authorization as on the main port
        assert (await streams.get(f"/v1/messages/{alice}/stream")).status_code == 401
        r = await streams.get(f"/v1/messages/{alice}/stream", headers=hb)
        assert r.status_code == 403
        # other GET routes answer there too, on a kept connection
        for _ in range(3):
            r = await streams.get("/healthz")
            assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_refused_requests_leave_held_streams_alone(server: Server) -> None:
    async with two_ports(server) as (main, streams):
        alice, ha = await create(main, "alice")
        bob, hb = await create(main, "bob")
        async with streams.stream("GET", f"/v1/messages/{bob}/stream", headers=hb) as r:
            stream = events(r)
            await anext(stream)
            # writes go to the main port; the stream port refuses them before any body
            refused = await streams.post(
                "/v1/messages/send?type=private",
                json={"senderId": alice, "receiverId": bob, "message": "x"},
                headers=ha,
            )
            assert refused.status_code == 405
            assert refused.headers["allow"] == "GET, HEAD"
            assert refused.json()["error"]["code"] == "method_not_allowed"
            for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"x" * 9000):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.stream_port)
                writer.write(raw)
                answer = await asyncio.wait_for(reader.read(), 10)
                writer.close()
                assert answer.split(b" ", 2)[1] in (b"400", b"431")
            metrics = (await main.get("/metrics")).text
            held = [line for line in metrics.splitlines() if line.startswith("parley_stream_port_")]
            assert "parley_stream_port_connections 1" in held, held  # the stream itself
            assert "parley_stream_port_refused_total 0" in held, held
            got: list[str] = []
            sent = await send(main, alice, bob, ha, "still here")
            await _collect(stream, 1, got)
            assert got == [sent]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_the_stream_port_speaks_tls_with_the_main_certificate(tmp_path: Path) -> None:
    made = self_signed(tmp_path / "tls")
    assert made is not None
    cert, key = made
    server = _server(tmp_path, PARLEY_TLS_CERT=str(cert), PARLEY_TLS_KEY=str(key)).start()
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        stream_url = f"https://127.0.0.1:{server.stream_port}"
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30, verify=trust) as main,
            httpx.AsyncClient(base_url=stream_url, timeout=30, verify=trust) as streams,
        ):
            alice, ha = await create(main, "alice")
            bob, hb = await create(main, "bob")
            async with streams.stream("GET", f"/v1/messages/{bob}/stream", headers=hb) as r:
                assert r.status_code == 200
                stream = events(r)
                await anext(stream)
                sent = [await send(main, alice, bob, ha, f"secret {i}") for i in range(3)]
                got: list[str] = []
                await _collect(stream, 3, got)
                assert got == sent
            # plain HTTP on the TLS port is not answered in clear
            reader, writer = await asyncio.open_connection("127.0.0.1", server.stream_port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = await asyncio.wait_for(reader.read(), 10)
            except ConnectionResetError:
                answer = b""
            writer.close()
            assert b"HTTP/1.1 200" not in answer
            assert (await streams.get("/healthz")).status_code == 200
    finally:
        server.stop()


async def test_shutdown_ends_streams_on_the_stream_port(tmp_path: Path) -> None:
    """SIGTERM: the stream port's streams end within the shutdown grace and the server
    exits by itself (not killed after the harness's 15 s wait)."""
    server = _server(tmp_path).start()
    process = server.proc
    assert process is not None
    try:
        async with two_ports(server) as (main, streams):
            bob, hb = await create(main, "bob")
            async with streams.stream("GET", f"/v1/messages/{bob}/stream", headers=hb) as r:
                stream = events(r)
                await anext(stream)
                stopping = asyncio.create_task(asyncio.to_thread(server.stop))
                with contextlib.suppress(httpx.HTTPError, StopAsyncIteration):
                    async with asyncio.timeout(10):
                        async for _ in stream:
                            pass
                await asyncio.wait_for(stopping, 20)
    finally:
        server.stop()
    assert process.returncode is not None and process.returncode >= 0, process.returncode
