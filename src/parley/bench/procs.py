"""Server processes for benchmarks and end-to-end tests, and their CPU and memory."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

TICKS = os.sysconf("SC_CLK_TCK")
# One ticket-signing secret for every server this process starts: PostgreSQL and DynamoDB
# servers require one, and servers of one deployment share it. Pass PARLEY_SECRET_KEY=""
# for SQLite's own key file in the data directory.
SHARED_SECRET = secrets.token_urlsafe(48)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process group on 127.0.0.1: ``parley serve`` or any command."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        command: list[str] | None = None,
        health: str = "/healthz",
        **env: str,
    ) -> None:
        self.port = port or free_port()
        # where live streams are held: the stream port when the server is given one
        self.stream_port = int(env.get("PARLEY_STREAM_PORT") or self.port)
        # HTTPS when the server is given a certificate (a test's own: not verified)
        self.scheme = "https" if env.get("PARLEY_TLS_CERT") else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.command = command or [sys.executable, "-m", "parley", "serve"]
        self.health = health
        self.env = {
            **os.environ,
            "PARLEY_HOST": "127.0.0.1",
            "PARLEY_PORT": str(self.port),
            "PARLEY_DATA_DIR": str(data_dir),
            "PARLEY_RATE_LIMITS": "off",
            "PARLEY_LOG_LEVEL": "warning",
            "PARLEY_SECRET_KEY": os.environ.get("PARLEY_SECRET_KEY") or SHARED_SECRET,
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in self.command],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches the workers too
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                answer = httpx.get(self.url + self.health, timeout=0.5, verify=False)
                if answer.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log_path.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def pids(self) -> list[int]:
        """Every live process of the server's process group."""
        if self.proc is None:
            return []
        group = self.proc.pid
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group:  # field 5 of stat: process group id
                found.append(int(entry.name))
        return found

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / TICKS

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total
