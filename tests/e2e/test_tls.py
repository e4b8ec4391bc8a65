"""``parley serve`` with a certificate answers HTTPS, streams included, and nothing in plain
HTTP; a certificate without its key is refused at start."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parley.bench.tls import self_signed as certificate
from tests.conftest import unavailable
from tests.e2e.server import Server

pytestmark = pytest.mark.slow


def self_signed(folder: Path) -> tuple[Path, Path]:
    made = certificate(folder)
    if made is None:
        unavailable("openssl is not installed: no certificate to serve")
    return made


async def test_https_with_a_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = Server(
        tmp_path / "data", PARLEY_AUTH="token", PARLEY_TLS_CERT=str(cert), PARLEY_TLS_KEY=str(key)
    )
    assert server.url.startswith("https://")
    server.start()
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=server.url, verify=trusted, timeout=10) as client:
            r = await client.post("/v1/users/create", json={"username": "alice"})
            assert r.status_code == 200, r.text
            alice, token = r.json()["userId"], r.json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            url = f"/v1/messages/{alice}/stream"
            async with client.stream("GET", url, headers=headers) as stream:
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                assert await anext(lines) == "retry: 2000"
        # plain HTTP on the same port gets no answer
        async with httpx.AsyncClient(timeout=3) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{server.port}/healthz")
    finally:
        server.stop()


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "parley", "serve", "--tls-cert", str(cert)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PARLEY_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert done.returncode == 2
    assert "PARLEY_TLS_CERT and PARLEY_TLS_KEY go together" in done.stderr
