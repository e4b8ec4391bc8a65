"""The client's saved identity: server URL, user id, username and bearer token.

Stored as JSON at the first of:

1. ``--config PATH`` on the command line;
2. ``$PARLEY_CLIENT_CONFIG``;
3. ``$XDG_CONFIG_HOME/parley/client.json``;
4. ``~/.config/parley/client.json``.

The file holds a secret, so it is written with mode 0600 (its directory, when created,
with 0700), atomically: a reader sees the old file or the new one, never half of one.

    {"server": "http://127.0.0.1:8080", "userId": "u_...", "username": "alice", "token": "..."}
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_SERVER", "Config", "ConfigError", "default_path", "load", "save"]

DEFAULT_SERVER = "http://127.0.0.1:8080"


class ConfigError(Exception):
    """The config file exists but cannot be read, parsed or written."""


@dataclass(frozen=True)
class Config:
    server: str | None = None
    user_id: str | None = None
    username: str | None = None
    token: str | None = None

    @property
    def server_url(self) -> str:
        return self.server or DEFAULT_SERVER


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    explicit = env.get("PARLEY_CLIENT_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "parley" / "client.json"


def _optional_str(data: Mapping[str, object], key: str, path: Path) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value or None
    raise ConfigError(f"{path}: {key!r} must be a string")


def load(path: Path) -> Config:
    """The config at ``path``; an empty one if the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return Config(
        server=_optional_str(data, "server", path),
        user_id=_optional_str(data, "userId", path),
        username=_optional_str(data, "username", path),
        token=_optional_str(data, "token", path),
    )


def save(path: Path, config: Config) -> None:
    """Write ``config`` to ``path`` with mode 0600, replacing any earlier file atomically."""
    data = {
        "server": config.server,
        "userId": config.user_id,
        "username": config.username,
        "token": config.token,
    }
    text = json.dumps({k: v for k, v in data.items() if v is not None}, indent=2) + "\n"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 before anything is written to it.
        fd, tmp = tempfile.mkstemp(prefix=".client-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
