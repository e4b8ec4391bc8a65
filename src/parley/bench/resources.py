"""What the servers behind Parley spend during a run: PostgreSQL backends' and Redis's CPU.

- PostgreSQL: the backends serving Parley's own connections, found by matching the client
  ports of the server processes' sockets (``/proc/<pid>/fd`` and ``/proc/net/tcp``) against
  ``pg_stat_activity.client_port``; their CPU is ``utime + stime`` from ``/proc/<pid>/stat``
  (the database must run on this machine). Background processes (WAL writer, checkpointer,
  autovacuum) are not counted: on a shared server they work for everyone.
- Redis: ``INFO cpu`` (``used_cpu_sys + used_cpu_user``) and ``INFO stats``
  (``total_commands_processed``) deltas. They cover the whole Redis server: on a shared Redis
  they include other clients' work, so measure on a quiet one.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "cpu_seconds",
    "parse_proc_net_tcp",
    "parse_redis_info",
    "postgres_backend_pids",
    "redis_figures",
    "socket_ports",
]

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the given processes (those that have exited count nothing)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def parse_proc_net_tcp(text: str) -> dict[int, tuple[int, int]]:
    """``/proc/net/tcp`` (or tcp6) rows as inode -> (local port, remote port)."""
    found: dict[int, tuple[int, int]] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local, remote, inode = parts[1], parts[2], int(parts[9])
        found[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return found


def _socket_inodes(pids: Iterable[int]) -> set[int]:
    inodes: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    return inodes


def socket_ports(pids: Iterable[int], remote_port: int) -> set[int]:
    """Local ports of the processes' TCP connections to ``remote_port``."""
    inodes = _socket_inodes(pids)
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for inode, (local, remote) in parse_proc_net_tcp(Path(table).read_text()).items():
                if inode in inodes and remote == remote_port:
                    ports.add(local)
    return ports


async def postgres_backend_pids(database_url: str, server_pids: Iterable[int]) -> list[int]:
    """PIDs of the PostgreSQL backends serving the given server processes' connections."""
    import asyncpg

    port = urlsplit(database_url).port or 5432
    ports = socket_ports(server_pids, port)
    if not ports:
        return []
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", sorted(ports)
        )
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


def parse_redis_info(text: str) -> dict[str, str]:
    """``INFO`` output as field -> value (sections and comments dropped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def _redis_command(url: str, *words: str, timeout: float = 5.0) -> str:
    """One command over RESP on a plain socket (the bench needs no Redis client library)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if parts.password:
            user = parts.username or "default"
            auth = ("AUTH", user, parts.password)
            sock.sendall(("*3\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in auth)).encode())
            if not sock.recv(1024).startswith(b"+"):
                raise OSError("Redis AUTH failed")
        sock.sendall(payload.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("Redis closed the connection")
            data += chunk
        head, _, rest = data.partition(b"\r\n")
        if not head.startswith(b"$"):
            raise OSError(f"unexpected Redis reply {head[:40]!r}")
        size = int(head[1:])
        while len(rest) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("Redis closed the connection")
            rest += chunk
        return rest[:size].decode()


def redis_figures(url: str) -> tuple[float, float] | None:
    """(CPU seconds, commands processed) of the whole Redis server; None if unreachable."""
    try:
        info = parse_redis_info(
            _redis_command(url, "INFO", "cpu") + _redis_command(url, "INFO", "stats")
        )
        cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return cpu, float(info["total_commands_processed"])
    except (OSError, KeyError, ValueError):
        return None
