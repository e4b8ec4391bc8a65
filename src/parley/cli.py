"""The ``parley`` command: serve, migrate, and the client, bench and cost tools.

Flags are written into the ``PARLEY_*`` environment variables before anything is built, so
the server's worker processes read exactly what the command line said.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parley.settings import AUTH_MODES, STORAGE_KINDS, Settings, SettingsError

# Open long-polls and streams are cut after this long on shutdown; clients resume from
# their cursor, so nothing is lost.
SHUTDOWN_GRACE_SECONDS = 3

FLAGS: tuple[tuple[str, str, str], ...] = (
    # flag, environment variable, help
    ("--host", "PARLEY_HOST", "address to listen on (default 127.0.0.1)"),
    ("--port", "PARLEY_PORT", "port to listen on (default 8080)"),
    (
        "--stream-port",
        "PARLEY_STREAM_PORT",
        "also serve GET requests (live streams) on this port, light per held connection",
    ),
    ("--workers", "PARLEY_WORKERS", "server worker processes (default 1)"),
    ("--data-dir", "PARLEY_DATA_DIR", "folder of the SQLite database (default ./parley-data)"),
    ("--auth", "PARLEY_AUTH", "token (default) or none: the original API, no tokens"),
    (
        "--allow-auth-change",
        "PARLEY_ALLOW_AUTH_CHANGE",
        "serve data recorded with the other --auth mode, and record this one",
    ),
    ("--storage", "PARLEY_STORAGE", f"one of {', '.join(STORAGE_KINDS)} (default sqlite)"),
    ("--database-url", "PARLEY_DATABASE_URL", "postgresql://... for --storage postgres"),
    ("--redis-url", "PARLEY_REDIS_URL", "redis://... shared cache and wake-ups"),
    (
        "--media-url",
        "PARLEY_MEDIA_URL",
        "s3://bucket/prefix for uploaded files (default: data dir)",
    ),
    ("--s3-endpoint", "PARLEY_S3_ENDPOINT", "http(s)://... an S3-compatible endpoint"),
    ("--rate-limits", "PARLEY_RATE_LIMITS", "on (default) or off"),
    ("--request-timeout", "PARLEY_REQUEST_TIMEOUT", "seconds for a request's head and body (30)"),
    ("--tls-cert", "PARLEY_TLS_CERT", "PEM certificate (chain): serve HTTPS (with --tls-key)"),
    ("--tls-key", "PARLEY_TLS_KEY", "PEM private key of --tls-cert"),
    ("--log-level", "PARLEY_LOG_LEVEL", "debug, info (default), warning, error"),
)
SWITCHES = ("--allow-auth-change",)  # flags without a value: they set their variable to 1


def _add_settings(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for flag, env, help_text in FLAGS:
        if flag not in names:
            continue
        if flag in SWITCHES:
            parser.add_argument(flag, dest=env, help=help_text, action="store_const", const="1")
            continue
        choices = AUTH_MODES if flag == "--auth" else STORAGE_KINDS if flag == "--storage" else None
        parser.add_argument(flag, dest=env, help=help_text, choices=choices)


def _apply(args: argparse.Namespace) -> Settings:
    for _, env, _ in FLAGS:
        value = getattr(args, env, None)
        if value is not None:
            os.environ[env] = str(value)
    return Settings.from_env()


def _refuse(problem: object, code: int = 2) -> int:
    print(f"parley: {problem}", file=sys.stderr)
    return code


def serve(settings: Settings) -> int:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    from parley.errors import Unavailable
    from parley.http.server import connection_limit
    from parley.logs import configure_logging
    from parley.startup import (
        DataDirLock,
        StartupRefused,
        check_processes,
        open_mode_warning,
        server_secret,
    )

    configure_logging(settings.log_level)
    warning = open_mode_warning(settings)
    if warning:
        logging.getLogger("parley.startup").warning(warning)
        print(warning, file=sys.stderr)
    try:
        check_processes(settings)
        # Held until this process ends; the workers it forks inherit it.
        lock = DataDirLock(settings.data_dir).acquire() if settings.storage == "sqlite" else None
    except StartupRefused as exc:
        return _refuse(exc)
    for port in (settings.port, settings.stream_port) if settings.stream_port else (settings.port,):
        problem = _port_taken(settings.host, port)
        if problem:
            return _refuse(f"cannot listen on {settings.host}:{port}: {problem}", 1)
    try:
        server_secret(settings)  # SQLite: generated into the data directory on first start
        asyncio.run(_check_storage(settings))
    except StartupRefused as exc:
        return _refuse(exc)
    except Unavailable as exc:
        return _refuse(f"storage {settings.storage} is unavailable: {exc}", 1)
    url = f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}"
    print(f"Parley listening on {url}  (storage: {settings.storage}, auth: {settings.auth})")
    print(f"API docs: {url}/docs   web chat: {url}/")
    if settings.stream_port:
        scheme = "https" if settings.tls_cert else "http"
        print(f"stream port: {scheme}://{settings.host}:{settings.stream_port} (GET requests)")
    sys.stdout.flush()
    connections = connection_limit(settings)
    if connections < settings.max_connections:
        print(
            f"note: at most {connections} open connections per process (the open-file "
            f"limit, ulimit -n, is below PARLEY_MAX_CONNECTIONS={settings.max_connections})"
        )
    server = Granian(
        "parley.http.server:app_factory",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        log_enabled=True,
        log_access=False,  # Parley writes JSON access lines itself (PARLEY_ACCESS_LOG)
        backlog=2048,
        # Open connections per worker. Requests in progress are capped lower, by the app
        # (PARLEY_MAX_CONCURRENCY), so a full worker still accepts and answers 503.
        backpressure=connections,
        # HTTP/1 only: in auto mode a connection that never sends a byte waits for the
        # protocol sniff forever; in HTTP/1 mode the head timeout below closes it.
        http=HTTPModes.http1,
        workers_kill_timeout=SHUTDOWN_GRACE_SECONDS,
        respawn_failed_workers=True,  # a worker that dies is replaced, not left missing
        # A client that has not sent a whole request head within the request timeout is
        # cut off (slow-loris, a socket that never sends, an idle keep-alive); a slow body
        # is bounded by the app (``Call.body``).
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.request_timeout * 1000)),
        # HTTPS when a certificate is given: behind a TCP load balancer (or none), Parley
        # terminates TLS itself; TLS 1.2 at least.
        **_tls(settings),
    )
    try:
        server.serve()
    finally:
        if lock is not None:
            lock.release()
    return 0


def _tls(settings: Settings) -> dict[str, Any]:
    from granian.constants import SSLProtocols

    if not settings.tls_cert:
        return {}
    return {
        "ssl_cert": Path(settings.tls_cert),
        "ssl_key": Path(settings.tls_key),
        "ssl_protocol_min": SSLProtocols.tls12,
    }


async def _check_storage(settings: Settings) -> None:
    """Open the storage once before any worker starts: migrate it, and record or check
    the auth mode it is served with (workers check again, and then agree)."""
    from parley.app import make_storage
    from parley.startup import check_auth_mode

    storage = make_storage(settings)
    await storage.open()
    try:
        await check_auth_mode(storage, settings)
    finally:
        await storage.close()


def _port_taken(host: str, port: int) -> str | None:
    """Why the address cannot be bound, if it cannot (the server itself reuses ports, so
    without this check a second server would silently share the port with the first).

    ``SO_REUSEADDR``, as the server sets it: connections of a server that just died
    (``kill -9``) linger in TIME_WAIT for a minute and must not block a restart, while a
    live listener still does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


async def _migrate(settings: Settings) -> None:
    from parley.app import make_storage
    from parley.storage.dynamodb import DynamoStorage

    storage = make_storage(settings)
    if isinstance(storage, DynamoStorage):  # start-up creates tables only at explicit endpoints
        storage.create_missing = True
    await storage.open()
    await storage.close()


async def _media_gc(settings: Settings, grace_hours: float) -> str:
    """Remove uploads no message carries, older than the grace period (``parley media gc``)."""
    from parley.app import make_blobs, make_storage
    from parley.services.media import MediaService
    from parley.storage.base import Storage
    from parley.storage.media_port import MediaPort
    from parley.storage.media_sqlite import SqliteMediaFile

    if settings.storage == "memory":
        raise SettingsError("memory storage keeps nothing between runs: nothing to collect")
    records: MediaPort
    storage: Storage | None = None
    sqlite_file: SqliteMediaFile | None = None
    if settings.storage == "sqlite":  # not the adapter: a server may be using the file
        sqlite_file = SqliteMediaFile(settings.sqlite_path)
        sqlite_file.open()
        records = sqlite_file
    else:
        storage = make_storage(settings)
        await storage.open()
        records = storage
    blobs = make_blobs(settings)
    try:
        await blobs.open()
        service = MediaService(records, blobs, None, settings.max_media)
        report = await service.collect(grace_hours * 3600)
    finally:
        await blobs.close()
        if storage is not None:
            await storage.close()
        if sqlite_file is not None:
            sqlite_file.close()
    return (
        f"removed {report.records} unattached upload(s), {report.blobs} file(s) and "
        f"{report.spools} unfinished upload(s) older than {grace_hours:g} h"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Tools with their own argument parsers get the rest of the line untouched.
    if argv and argv[0] == "client":
        from parley.client.cli import main as client_main

        return client_main(argv[1:])
    if argv and argv[0] == "cost":
        from parley.cost.cli import main as cost_main

        return cost_main(argv[1:])
    if argv and argv[0] == "bench":
        from parley.bench.cli import main as bench_main

        return bench_main(argv[1:])

    parser = argparse.ArgumentParser(prog="parley", description="Parley messaging backend.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP service")
    _add_settings(serve_cmd, [flag for flag, _, _ in FLAGS])
    migrate_cmd = commands.add_parser("migrate", help="create or upgrade the storage schema")
    _add_settings(migrate_cmd, ["--data-dir", "--storage", "--database-url"])
    media_cmd = commands.add_parser("media", help="uploaded files: parley media gc")
    media_commands = media_cmd.add_subparsers(dest="media_command", required=True)
    gc_cmd = media_commands.add_parser(
        "gc", help="remove uploads no message carries, older than a grace period"
    )
    _add_settings(
        gc_cmd, ["--data-dir", "--storage", "--database-url", "--media-url", "--s3-endpoint"]
    )
    gc_cmd.add_argument(
        "--grace",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="keep uploads and files younger than this (default 24): a client uploads "
        "first and sends after",
    )
    commands.add_parser("client", help="command-line client (parley client --help)")
    commands.add_parser("bench", help="workload benchmark (parley bench --help)")
    commands.add_parser("cost", help="capacity and cost model (parley cost --help)")
    args = parser.parse_args(argv)
    try:
        settings = _apply(args)
    except SettingsError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    if args.command == "media":
        if args.grace < 0:
            return _refuse("--grace must not be negative")
        try:
            print(asyncio.run(_media_gc(settings, args.grace)))
        except (SettingsError, FileNotFoundError) as exc:
            return _refuse(exc)
        return 0
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        print(f"storage {settings.storage}: schema is up to date")
        return 0
    return 2
