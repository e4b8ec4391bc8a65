"""What terminating TLS (``PARLEY_TLS_CERT``) costs the server, on its stream port.

Behind a TCP load balancer Parley terminates TLS itself: every new connection costs it a
handshake, and every held one the TLS library's state. Two servers on the same machine, one
plain and one with a self-signed P-256 certificate, each get ``count`` connections on the
stream port that send one request (``/healthz``) and close; the handshake's cost is the
difference of the servers' CPU per connection. Then the TLS server holds ``idle`` live
streams over TLS: its memory per idle stream. Needs the ``openssl`` command for the
certificate (without it: not measured).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

from parley.bench.latency import idle_streams, stream_concurrency
from parley.bench.procs import Server, free_port

CONCURRENCY = 8  # clients connecting at once
WARM = 100  # connections before measuring


def self_signed(folder: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1 and its key (None without ``openssl``)."""
    if shutil.which("openssl") is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def _connections(port: int, count: int, context: ssl.SSLContext | None) -> int:
    """``count`` connections, each one request and close; how many got an answer."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    answered = 0
    left = count

    async def client() -> None:
        nonlocal answered, left
        while left > 0:
            left -= 1
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context), 10
            )
            try:
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), 10)
                answered += answer.startswith(b"HTTP/1.1 200")
            finally:
                writer.close()

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return answered


async def _cpu_per_connection(server: Server, count: int, context: ssl.SSLContext | None) -> float:
    await _connections(server.stream_port, WARM, context)
    before = server.cpu_seconds()
    answered = await _connections(server.stream_port, count, context)
    if answered < count:
        raise RuntimeError(f"{count - answered} of {count} connections got no answer")
    return (server.cpu_seconds() - before) / count


async def measure_handshakes(workdir: Path, count: int, idle: int = 0) -> dict[str, Any]:
    """``tls_handshake_cpu_seconds``, ``idle_stream_tls_bytes`` and how they were measured
    (None: not measured)."""
    made = self_signed(workdir / "tls")
    if made is None:
        return {"tls_handshake_cpu_seconds": None, "why": "openssl is not installed"}
    cert, key = made
    context = ssl.create_default_context(cafile=str(cert))
    concurrency = stream_concurrency(idle)
    servers = {
        "plain": Server(workdir / "plain", PARLEY_AUTH="token", PARLEY_MAX_CONCURRENCY=concurrency),
        "tls": Server(
            workdir / "tls",
            PARLEY_AUTH="token",
            PARLEY_MAX_CONCURRENCY=concurrency,
            PARLEY_TLS_CERT=str(cert),
            PARLEY_TLS_KEY=str(key),
        ),
    }
    per: dict[str, float] = {}
    streams: dict[str, float] = {}
    for name, server in servers.items():
        server.stream_port = free_port()
        server.env["PARLEY_STREAM_PORT"] = str(server.stream_port)
        server.start()
        try:
            per[name] = await _cpu_per_connection(server, count, context if name == "tls" else None)
            if name == "tls" and idle > 0:
                streams = await idle_streams(server, idle, context)
        finally:
            server.stop()
    handshake = max(0.0, per["tls"] - per["plain"])
    per_stream = streams.get("kib_per_connection")
    return {
        "tls_handshake_cpu_seconds": round(handshake, 7),
        "idle_stream_tls_bytes": None if per_stream is None else round(per_stream * 1024),
        "idle_streams": streams.get("connections"),
        "connections": count,
        "cpu_seconds_per_connection": {k: round(v, 7) for k, v in per.items()},
        "method": (
            "on the stream port: server CPU per connection (one /healthz request, then "
            "close) with TLS minus without, self-signed P-256 certificate, TLS 1.3, "
            f"{CONCURRENCY} clients at once; then resident memory per idle live stream "
            "held over TLS"
        ),
    }
