"""Uploads against a real server process: the body is streamed to disk, never held in
memory (peak RSS), and a server killed mid-upload leaves no partial file under a name."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.e2e.server import Server

MiB = 1024 * 1024


def peak_rss(server: Server) -> int:
    """The highest resident set size the server's processes reached so far (VmHWM)."""
    total = 0
    for pid in server.pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def user(url: str) -> dict[str, str]:
    r = httpx.post(f"{url}/v1/users/create", json={"username": "up"}, timeout=10)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['token']}"}


def pieces(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    block = bytes(range(256)) * (size // 256)
    sent = 0
    while sent < total:
        yield block[: min(size, total - sent)]
        sent += size


def test_a_25_mib_upload_does_not_sit_in_memory(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", PARLEY_STORAGE="sqlite", PARLEY_SECRET_KEY="").start()
    try:
        auth = user(server.url)
        with httpx.Client(base_url=server.url, timeout=60, headers=auth) as client:
            # warm up: the upload path's code and buffers are loaded once
            r = client.post(
                "/v1/media", content=pieces(2 * MiB), headers={"Content-Length": str(2 * MiB)}
            )
            assert r.status_code == 200, r.text
            before = peak_rss(server)
            r = client.post(
                "/v1/media", content=pieces(25 * MiB), headers={"Content-Length": str(25 * MiB)}
            )
            assert r.status_code == 200, r.text
            after = peak_rss(server)
            assert r.json()["size"] == 25 * MiB
            r = client.get(f"/v1/media/{r.json()['mediaId']}")
            assert len(r.content) == 25 * MiB
            downloaded = peak_rss(server)
    finally:
        server.kill()
    grew, grew_download = (after - before) / MiB, (downloaded - after) / MiB
    print(f"\npeak RSS {before / MiB:.1f} MiB -> {after / MiB:.1f} MiB after a 25 MiB upload "
          f"(+{grew:.1f} MiB), +{grew_download:.1f} MiB more after downloading it")  # fmt: skip
    assert grew < 6, f"a 25 MiB upload raised peak RSS by {grew:.1f} MiB"
    assert grew_download < 6, f"a 25 MiB download raised peak RSS by {grew_download:.1f} MiB"


def test_a_server_killed_mid_upload_leaves_no_partial_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, PARLEY_STORAGE="sqlite", PARLEY_SECRET_KEY="").start()
    media = data / "media"
    payload = bytes(range(256)) * (4 * MiB // 256)
    try:
        auth = user(server.url)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            head = (
                f"POST /v1/media HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {auth['Authorization']}\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            )
            conn.sendall(head.encode() + payload[: 2 * MiB])  # half of it, then nothing
            spools: list[Path] = []
            for _ in range(200):  # until the server has written some of it (bounded)
                spools = [p for p in (media / "tmp").glob("upload-*.part") if p.stat().st_size]
                if spools:
                    break
                time.sleep(0.05)
            assert spools, "the server never started writing the upload"
            server.kill()  # SIGKILL, mid-upload
    finally:
        server.kill()
    named = [p for p in media.rglob("*") if p.is_file() and p.parent.name != "tmp"]
    assert named == []  # no blob under its name: only the spool file is left
    # a restart serves, and the whole upload works; the leftover is the collector's
    server = Server(data, PARLEY_STORAGE="sqlite", PARLEY_SECRET_KEY="").start()
    try:
        auth = user(server.url)
        r = httpx.post(f"{server.url}/v1/media", content=payload, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        sha = hashlib.sha256(payload).hexdigest()
        assert r.json()["sha256"] == sha
        stored = media / sha[:2] / sha[2:4] / sha
        assert stored.read_bytes() == payload
        r = httpx.get(f"{server.url}/v1/media/{r.json()['mediaId']}", headers=auth, timeout=30)
        assert r.content == payload
    finally:
        server.kill()
    leftovers = list((media / "tmp").glob("upload-*.part"))
    assert len(leftovers) == 1 and leftovers[0] == spools[0]
    assert os.path.getsize(leftovers[0]) <= 2 * MiB
