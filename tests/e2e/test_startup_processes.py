"""Start-up with real ``parley serve`` processes: set-ups that must be refused, and a
restart right after ``kill -9`` that must not be."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, free_port

pytestmark = pytest.mark.slow

KEY = "k" * 48


@dataclass
class Outcome:
    code: int | None  # None: still running (it started serving) when we gave up waiting
    output: str
    served: bool


def serve_once(data_dir: Path, *args: str, wait: float = 30.0, **env: str) -> Outcome:
    """Run ``parley serve`` and report how it ended. One that starts serving (its
    ``/healthz`` answers) is stopped at once and reported as ``served``."""
    port = free_port()
    log = data_dir.parent / f"serve-{port}.log"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "PARLEY_HOST": "127.0.0.1",
        "PARLEY_PORT": str(port),
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_LOG_LEVEL": "warning",
        "PARLEY_SECRET_KEY": "",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley", "serve", *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        served = False
        deadline = time.monotonic() + wait
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).is_success:
                        served = True
                        break
                time.sleep(0.1)
        finally:
            code = proc.poll()
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
    return Outcome(code, log.read_text(errors="replace"), served)


def test_a_second_server_on_one_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Server(data, PARLEY_SECRET_KEY="").start()
    try:
        assert first.proc is not None
        second = serve_once(data)
        assert not second.served, "two servers share one SQLite data directory"
        assert second.code == 2, second.output
        assert f"in use by another Parley server (pid {first.proc.pid})" in second.output
        assert httpx.get(first.url + "/healthz").status_code == 200  # the first is untouched
    finally:
        first.stop()
    # stopped: the directory is free again
    assert serve_once(data).served


def test_a_restart_right_after_kill_9_starts(tmp_path: Path) -> None:
    """Connections of the killed server linger (TIME_WAIT); neither they nor the dead
    server's lock on the data directory may keep the new one from starting."""
    data = tmp_path / "data"
    first = Server(data, PARLEY_SECRET_KEY="").start()
    clients = []
    for _ in range(8):
        conn = socket.create_connection(("127.0.0.1", first.port), timeout=5)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: parley\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        clients.append(conn)
    first.kill()  # SIGKILL to the whole process group
    for conn in clients:
        conn.close()
    again = Server(data, port=first.port, PARLEY_SECRET_KEY="")
    try:
        again.start(timeout=20)
        assert httpx.get(again.url + "/healthz").status_code == 200
    finally:
        again.kill()


def test_the_auth_mode_of_a_data_directory_cannot_change_silently(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, PARLEY_AUTH="token", PARLEY_SECRET_KEY="").start()
    try:
        r = httpx.post(server.url + "/v1/users/create", json={"username": "alice"})
        assert r.status_code == 200 and r.json()["token"]
    finally:
        server.stop()
    refused = serve_once(data, "--auth", "none")
    assert not refused.served and refused.code == 2, refused.output
    assert "served with --auth token" in refused.output
    assert "--allow-auth-change" in refused.output
    assert serve_once(data, "--auth", "none", "--allow-auth-change").served
    # now recorded as open mode: going back needs the flag too
    back = serve_once(data, "--auth", "token")
    assert not back.served and "served with --auth none" in back.output
    assert serve_once(data, "--auth", "token", PARLEY_ALLOW_AUTH_CHANGE="1").served


def test_tickets_outlive_a_restart_with_the_generated_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, PARLEY_SECRET_KEY="").start()
    try:
        body = httpx.post(server.url + "/v1/users/create", json={"username": "a"}).json()
        headers = {"Authorization": f"Bearer {body['token']}"}
        ticket = httpx.post(
            f"{server.url}/v1/messages/{body['userId']}/ticket", headers=headers
        ).json()["ticket"]
    finally:
        server.stop()
    key_file = data / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    server = Server(data, port=server.port, PARLEY_SECRET_KEY="").start()
    try:
        url = f"{server.url}/v1/messages/{body['userId']}/stream?timestamp=0&ticket={ticket}"
        with httpx.stream("GET", url, timeout=10) as response:
            assert response.status_code == 200
    finally:
        server.stop()


def test_scale_out_without_a_shared_cache_or_secret_is_refused(tmp_path: Path) -> None:
    # Both refusals come before any connection to the database (nothing listens there).
    postgres = {"PARLEY_STORAGE": "postgres", "PARLEY_DATABASE_URL": "postgresql://x@127.0.0.1:9/x"}
    no_cache = serve_once(tmp_path / "a", "--workers", "2", PARLEY_SECRET_KEY=KEY, **postgres)
    assert no_cache.code == 2, no_cache.output
    assert "needs a shared cache" in no_cache.output and "PARLEY_REDIS_URL" in no_cache.output
    no_secret = serve_once(tmp_path / "b", **postgres)
    assert no_secret.code == 2, no_secret.output
    assert "PARLEY_SECRET_KEY is required" in no_secret.output


def test_open_mode_beyond_loopback_is_warned_about_at_start(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is not this machine's: the warning comes, then the bind fails.
    outcome = serve_once(tmp_path / "data", "--auth", "none", "--host", "192.0.2.1")
    assert outcome.code == 1 and not outcome.served
    assert "WARNING: open mode (--auth none) on 192.0.2.1" in outcome.output
    quiet = serve_once(tmp_path / "data", "--auth", "token", "--host", "192.0.2.1")
    assert quiet.code == 1 and "WARNING" not in quiet.output
