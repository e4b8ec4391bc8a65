"""Settings, read once from ``PARLEY_*`` environment variables into typed groups.

The command line (``parley serve --port 9000``) writes its flags into the same variables,
so server worker processes, the CLI and tests all build from one place:
:func:`Settings.from_env`. Every setting, its variable and its default is listed in
``SETTINGS`` (the README's table is generated from the same facts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from parley.domain.rules import Limits
from parley.storage.dynamodb_tables import table_names


class SettingsError(ValueError):
    """A setting has a value Parley cannot use; the message names the variable."""


STORAGE_KINDS = ("sqlite", "memory", "postgres", "dynamodb")
AUTH_MODES = ("token", "none")
CACHE_MODES = ("auto", "none")


@dataclass(frozen=True, slots=True)
class RateLimits:
    enabled: bool = True
    requests_per_minute: int = 6000  # per token, all calls
    address_per_minute: int = 12000  # per client address, all calls
    creates_per_hour: int = 600  # account and group creations per address
    sends_per_minute: int = 1200  # sends per token
    # long-polls (wait > 0) and live streams open at once in one process; 0 = no cap
    waiting_per_user: int = 20
    waiting_per_address: int = 200


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # the stream port (0: none): held connections, live streams above all, on a listener
    # that keeps no buffer per idle connection (parley.http.streamport)
    stream_port: int = 0
    workers: int = 1
    data_dir: Path = Path("parley-data")
    auth: str = "token"
    allow_auth_change: bool = False  # start with another auth mode than the data was served with
    # Signs stream tickets; "" = generated into the data directory (SQLite) or per process
    # (memory). PostgreSQL and DynamoDB processes must share one: see parley.startup.
    secret_key: str = field(default="", repr=False)
    storage: str = "sqlite"
    sqlite_synchronous: str = "FULL"
    database_url: str = ""
    database_schema: str = ""  # PostgreSQL schema to use (created if missing); "" = default
    database_pool: int = 10  # PostgreSQL connections per process
    database_timeout: float = 10.0  # seconds a storage call may take before it answers 503
    redis_url: str = ""
    redis_prefix: str = "parley:"
    redis_timeout_ms: int = 50  # every Redis call gives up after this (twice, at most)
    # "auto": memberships, blocks and stream changes cached in Redis (PARLEY_REDIS_URL) or
    # in this process's memory; "none": every rule check and every check reads storage
    cache: str = "auto"
    # DynamoDB (PARLEY_STORAGE=dynamodb); region and credentials: the standard AWS chain
    dynamodb_endpoint: str = ""  # e.g. http://127.0.0.1:8000; "" = AWS's regional endpoint
    dynamodb_table_prefix: str = "parley-"
    # attachments: "" = files under data_dir/media; s3://bucket/prefix = an S3 bucket
    media_url: str = ""
    s3_endpoint: str = ""  # e.g. http://127.0.0.1:9000; "" = AWS's regional endpoint
    max_media: int = 25 * 1024 * 1024  # bytes per uploaded file
    log_level: str = "info"
    access_log: bool = False
    request_timeout: float = 30.0
    # a live stream writes a keep-alive comment this often; an idle stream does nothing else
    keepalive_seconds: int = 15
    # TLS terminated by Parley itself (both, or neither: plain HTTP behind a proxy)
    tls_cert: str = ""
    tls_key: str = ""
    max_concurrency: int = 10_000
    # open connections per process (idle, keep-alive and in progress); above
    # max_concurrency, so a full process can still answer 503 and /healthz
    max_connections: int = 20_000
    limits: Limits = field(default_factory=Limits)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # password attempts (sign-in throttle, on whatever PARLEY_RATE_LIMITS says)
    signin_per_user: int = 10
    signin_per_address: int = 100
    signin_window: int = 900  # seconds

    @property
    def token_mode(self) -> bool:
        return self.auth == "token"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "parley.db"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        read = _Reader(env)
        settings = cls(
            host=read.text("PARLEY_HOST", "127.0.0.1"),
            port=read.integer("PARLEY_PORT", 8080, 0, 65535),
            stream_port=read.integer("PARLEY_STREAM_PORT", 0, 0, 65535),
            workers=read.integer("PARLEY_WORKERS", 1, 1, 64),
            data_dir=Path(read.text("PARLEY_DATA_DIR", "parley-data")),
            auth=read.choice("PARLEY_AUTH", "token", AUTH_MODES),
            allow_auth_change=read.flag("PARLEY_ALLOW_AUTH_CHANGE", False),
            secret_key=read.text("PARLEY_SECRET_KEY", ""),
            storage=read.choice("PARLEY_STORAGE", "sqlite", STORAGE_KINDS),
            sqlite_synchronous=read.choice(
                "PARLEY_SQLITE_SYNCHRONOUS", "FULL", ("FULL", "NORMAL", "EXTRA")
            ),
            database_url=read.text("PARLEY_DATABASE_URL", ""),
            database_schema=read.text("PARLEY_DATABASE_SCHEMA", ""),
            database_pool=read.integer("PARLEY_DATABASE_POOL", 10, 1, 1000),
            database_timeout=float(read.integer("PARLEY_DATABASE_TIMEOUT", 10, 1, 600)),
            redis_url=read.text("PARLEY_REDIS_URL", ""),
            redis_prefix=read.text("PARLEY_REDIS_PREFIX", "parley:"),
            redis_timeout_ms=read.integer("PARLEY_REDIS_TIMEOUT_MS", 50, 1, 10_000),
            cache=read.choice("PARLEY_CACHE", "auto", CACHE_MODES),
            dynamodb_endpoint=read.text("PARLEY_DYNAMODB_ENDPOINT", ""),
            dynamodb_table_prefix=read.text("PARLEY_DYNAMODB_TABLE_PREFIX", "parley-"),
            media_url=read.text("PARLEY_MEDIA_URL", ""),
            s3_endpoint=read.text("PARLEY_S3_ENDPOINT", ""),
            max_media=read.integer("PARLEY_MAX_MEDIA", 25 * 1024 * 1024, 1, 5 * 1024**3),
            log_level=read.choice(
                "PARLEY_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ),
            access_log=read.flag("PARLEY_ACCESS_LOG", False),
            request_timeout=float(read.integer("PARLEY_REQUEST_TIMEOUT", 30, 1, 3600)),
            keepalive_seconds=read.integer("PARLEY_KEEPALIVE_SECONDS", 15, 1, 3600),
            tls_cert=read.text("PARLEY_TLS_CERT", ""),
            tls_key=read.text("PARLEY_TLS_KEY", ""),
            max_concurrency=read.integer("PARLEY_MAX_CONCURRENCY", 10_000, 16, 1_000_000),
            max_connections=read.integer("PARLEY_MAX_CONNECTIONS", 0, 0, 2_000_000),
            limits=Limits(
                username_max=read.integer("PARLEY_MAX_USERNAME", 64, 1, 10_000),
                group_name_max=read.integer("PARLEY_MAX_GROUP_NAME", 128, 1, 10_000),
                group_members_max=read.integer("PARLEY_MAX_GROUP_MEMBERS", 1024, 1, 100_000),
                message_max=read.integer("PARLEY_MAX_MESSAGE", 4096, 1, 1_000_000),
                body_max_bytes=read.integer("PARLEY_MAX_BODY", 64 * 1024, 256, 16 * 1024 * 1024),
                page_default=read.integer("PARLEY_PAGE_DEFAULT", 500, 1, 1000),
                page_max=read.integer("PARLEY_PAGE_MAX", 1000, 1, 10_000),
            ),
            rate_limits=RateLimits(
                enabled=read.flag("PARLEY_RATE_LIMITS", True),
                requests_per_minute=read.integer("PARLEY_RATE_TOKEN_PER_MINUTE", 6000, 1, 10**9),
                address_per_minute=read.integer("PARLEY_RATE_ADDRESS_PER_MINUTE", 12000, 1, 10**9),
                creates_per_hour=read.integer("PARLEY_RATE_CREATES_PER_HOUR", 600, 1, 10**9),
                sends_per_minute=read.integer("PARLEY_RATE_SENDS_PER_MINUTE", 1200, 1, 10**9),
                waiting_per_user=read.integer("PARLEY_MAX_WAITING_PER_USER", 20, 0, 10**6),
                waiting_per_address=read.integer("PARLEY_MAX_WAITING_PER_ADDRESS", 200, 0, 10**6),
            ),
            signin_per_user=read.integer("PARLEY_SIGNIN_PER_USER", 10, 1, 10**6),
            signin_per_address=read.integer("PARLEY_SIGNIN_PER_ADDRESS", 100, 1, 10**6),
            signin_window=read.integer("PARLEY_SIGNIN_WINDOW", 900, 1, 86400),
        )
        settings = _with_connections(settings)
        if settings.storage == "postgres" and not settings.database_url:
            raise SettingsError("PARLEY_STORAGE=postgres needs PARLEY_DATABASE_URL")
        if settings.database_url and not settings.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise SettingsError("PARLEY_DATABASE_URL must start with postgresql://")
        if settings.redis_url and not settings.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise SettingsError("PARLEY_REDIS_URL must start with redis://, rediss:// or unix://")
        if settings.cache == "none" and settings.redis_url:
            raise SettingsError("PARLEY_CACHE=none and PARLEY_REDIS_URL exclude each other")
        _check_dynamodb(settings)
        _check_secret_key(settings)
        _check_tls(settings)
        if settings.stream_port and settings.stream_port == settings.port:
            raise SettingsError("PARLEY_STREAM_PORT must differ from PARLEY_PORT")
        if settings.media_url and not settings.media_url.startswith("s3://"):
            raise SettingsError("PARLEY_MEDIA_URL must look like s3://bucket/prefix")
        if settings.s3_endpoint and not settings.s3_endpoint.startswith(("http://", "https://")):
            raise SettingsError("PARLEY_S3_ENDPOINT must start with http:// or https://")
        return settings


def _with_connections(settings: Settings) -> Settings:
    """PARLEY_MAX_CONNECTIONS defaults to twice PARLEY_MAX_CONCURRENCY and must exceed it:
    the connections beyond it are what lets a full process still answer."""
    if settings.max_connections == 0:
        return replace(settings, max_connections=2 * settings.max_concurrency)
    if settings.max_connections <= settings.max_concurrency:
        raise SettingsError(
            f"PARLEY_MAX_CONNECTIONS ({settings.max_connections}) must be above "
            f"PARLEY_MAX_CONCURRENCY ({settings.max_concurrency})"
        )
    return settings


SECRET_KEY_MIN = 32  # characters of PARLEY_SECRET_KEY


def _check_tls(settings: Settings) -> None:
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError("PARLEY_TLS_CERT and PARLEY_TLS_KEY go together: set both or neither")
    for name, path in (
        ("PARLEY_TLS_CERT", settings.tls_cert),
        ("PARLEY_TLS_KEY", settings.tls_key),
    ):
        if path and not Path(path).is_file():
            raise SettingsError(f"{name}: no such file: {path}")


def _check_secret_key(settings: Settings) -> None:
    if settings.secret_key and len(settings.secret_key) < SECRET_KEY_MIN:
        raise SettingsError(
            f"PARLEY_SECRET_KEY must be at least {SECRET_KEY_MIN} characters"
            " (e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )


def _check_dynamodb(settings: Settings) -> None:
    if settings.dynamodb_endpoint and not settings.dynamodb_endpoint.startswith(
        ("http://", "https://")
    ):
        raise SettingsError("PARLEY_DYNAMODB_ENDPOINT must start with http:// or https://")
    try:
        table_names(settings.dynamodb_table_prefix)
    except ValueError as exc:
        raise SettingsError(f"PARLEY_DYNAMODB_TABLE_PREFIX: {exc}") from None


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        return self.env.get(name, default).strip() or default

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, not {value}")
        return value

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in options:
            raise SettingsError(f"{name} must be one of {', '.join(options)}, not {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "on", "yes"):
            return True
        if raw in ("0", "false", "off", "no"):
            return False
        raise SettingsError(f"{name} must be on or off, not {raw!r}")
