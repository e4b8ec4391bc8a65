"""Start-up checks: set-ups Parley refuses, and what a server keeps beside its database.

- **One server per data directory.** ``parley serve`` on SQLite takes an exclusive lock
  (``flock``) on ``<data dir>/parley.lock`` for as long as it runs; a second server on the
  same directory is refused with the first one's pid. The operating system releases the
  lock when the process ends, however it ends (``kill -9`` included).
- **More than one process needs a shared cache.** Each process caches users, memberships
  and blocks; without Redis a change made through one process is not seen by the others.
- **The server secret** (``PARLEY_SECRET_KEY``) signs stream tickets. SQLite keeps a
  generated one in ``<data dir>/secret.key`` (mode 0600); PostgreSQL and DynamoDB
  processes have no directory of their own and must all be given the same one.
- **The auth mode is recorded with the data.** Serving token-mode data in open mode would
  make every account's messages readable without a token, so switching needs
  ``--allow-auth-change``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import secrets
import stat
import time
from pathlib import Path

from parley.settings import SECRET_KEY_MIN, Settings
from parley.storage.base import Storage

log = logging.getLogger("parley.startup")

LOCK_FILE = "parley.lock"
SECRET_FILE = "secret.key"
AUTH_MODE_KEY = "auth_mode"


class StartupRefused(Exception):
    """A set-up Parley will not serve; the message tells the operator what to change."""


# --- one server per data directory ----------------------------------------------------------


class DataDirLock:
    """An exclusive lock on a data directory, held until :meth:`release` or process exit.

    Worker processes forked by the server inherit the lock's descriptor, so the lock stays
    taken while any of them still serves the directory.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(self.path)
            who = f"pid {holder}" if holder else "another process"
            raise StartupRefused(
                f"the data directory {self.path.parent} is in use by another Parley server"
                f" ({who}); stop it first, or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def _holder(path: Path) -> int | None:
    """The pid the lock's holder wrote (it writes it just after taking the lock)."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip()
            if text:
                return int(text)
        time.sleep(0.01)
    return None


# --- processes and caches -----------------------------------------------------------------


def check_processes(settings: Settings) -> None:
    """Refuse worker counts the storage and cache cannot serve correctly."""
    if settings.workers <= 1:
        return
    if settings.storage == "sqlite":
        raise StartupRefused(
            "SQLite serves one process; use --storage postgres for several workers"
        )
    if settings.storage == "memory":
        raise StartupRefused("memory storage lives in one process; use --workers 1")
    if not settings.redis_url and settings.cache != "none":
        raise StartupRefused(
            f"--workers {settings.workers} on {settings.storage} needs a shared cache: each"
            " process caches users, memberships and blocks, and without Redis a block or a"
            " removal made through one process is not seen by the others. Set --redis-url"
            " (PARLEY_REDIS_URL), or PARLEY_CACHE=none to read the database for every rule"
            " check"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def open_mode_warning(settings: Settings) -> str | None:
    """The warning to give when open mode listens beyond this machine."""
    if settings.token_mode or is_loopback(settings.host):
        return None
    return (
        f"WARNING: open mode (--auth none) on {settings.host}: anyone who can reach this"
        " address can act as any user and read every user's messages, without a token"
    )


# --- the server secret --------------------------------------------------------------------


def server_secret(settings: Settings) -> bytes:
    """The key stream tickets are signed with.

    ``PARLEY_SECRET_KEY`` when set; otherwise SQLite's ``secret.key`` in the data
    directory (generated on first use) and a fresh key per process for memory storage.
    PostgreSQL and DynamoDB processes must share a key, so there it must be set.
    """
    if settings.secret_key:
        return settings.secret_key.encode()
    if settings.storage in ("postgres", "dynamodb"):
        raise StartupRefused(
            f"PARLEY_SECRET_KEY is required with --storage {settings.storage}: every process"
            " must sign stream tickets with the same secret (at least"
            f" {SECRET_KEY_MIN} characters, e.g. from"
            " python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    if settings.storage == "memory":
        return secrets.token_urlsafe(48).encode()
    return stored_secret(settings.data_dir)


def stored_secret(data_dir: Path) -> bytes:
    """The secret in ``<data_dir>/secret.key``, created (mode 0600) if missing."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_secret(path)
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StartupRefused(
            f"{path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o});"
            f" run: chmod 600 {path}"
        )
    secret = path.read_text().strip()
    if len(secret) < SECRET_KEY_MIN:
        raise StartupRefused(f"{path} holds no usable secret; delete it to generate a new one")
    return secret.encode()


def _create_secret(path: Path) -> None:
    """Write a new secret atomically: a complete file appears under ``path`` or none."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (secrets.token_urlsafe(48) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        temp.unlink()


# --- the auth mode recorded with the data --------------------------------------------------


async def check_auth_mode(storage: Storage, settings: Settings) -> None:
    """Record the auth mode with the data on first start; refuse to serve it in the other
    mode unless ``allow_auth_change`` (then the new mode is recorded)."""
    mode = settings.auth
    recorded = await storage.record_meta(AUTH_MODE_KEY, mode, replace=settings.allow_auth_change)
    if recorded is None or recorded == mode:
        return
    if settings.allow_auth_change:
        log.warning("auth mode of the %s data changed from %s to %s", storage.name, recorded, mode)
        return
    if mode == "none":
        why = "anyone could then read every account's messages without a token"
    else:
        why = "accounts created without tokens could not sign in"
    raise StartupRefused(
        f"this {storage.name} data was served with --auth {recorded}, not --auth {mode}:"
        f" {why}. Use another --data-dir (or database), or pass --allow-auth-change"
        " (PARLEY_ALLOW_AUTH_CHANGE=1) to switch it on purpose"
    )
