"""The server's CPU per TLS handshake it terminates (``PARLEY_TLS_CERT``).

Behind a TCP load balancer Parley terminates TLS itself, and every new connection costs it a
handshake. Two servers on the same machine, one plain and one with a self-signed P-256
certificate, each get ``count`` connections that send one request (``/healthz``) and close;
the handshake's cost is the difference of the servers' CPU per connection. Needs the
``openssl`` command for the certificate (without it: not measured).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

from parley.bench.procs import Server

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
    await _connections(server.port, WARM, context)
    before = server.cpu_seconds()
    answered = await _connections(server.port, count, context)
    if answered < count:
        raise RuntimeError(f"{count - answered} of {count} connections got no answer")
    return (server.cpu_seconds() - before) / count


async def measure_handshakes(workdir: Path, count: int) -> dict[str, Any]:
    """``tls_handshake_cpu_seconds`` and how it was measured (None: not measured)."""
    made = self_signed(workdir / "tls")
    if made is None:
        return {"tls_handshake_cpu_seconds": None, "why": "openssl is not installed"}
    cert, key = made
    context = ssl.create_default_context(cafile=str(cert))
    servers = {
        "plain": Server(workdir / "plain", PARLEY_AUTH="token"),
        "tls": Server(
            workdir / "tls", PARLEY_AUTH="token", PARLEY_TLS_CERT=str(cert), PARLEY_TLS_KEY=str(key)
        ),
    }
    per: dict[str, float] = {}
    for name, server in servers.items():
        server.start()
        try:
            per[name] = await _cpu_per_connection(server, count, context if name == "tls" else None)
        finally:
            server.stop()
    handshake = max(0.0, per["tls"] - per["plain"])
    return {
        "tls_handshake_cpu_seconds": round(handshake, 7),
        "connections": count,
        "cpu_seconds_per_connection": {k: round(v, 7) for k, v in per.items()},
        "method": (
            "server CPU per connection (one /healthz request, then close) with TLS minus "
            "without, self-signed P-256 certificate, TLS 1.3, "
            f"{CONCURRENCY} clients at once"
        ),
    }
