"""``parley client``: a command-line client for a Parley server.

Every command is a function ``(Session, argparse.Namespace) -> int``. Errors travel as
exceptions up to ``run``, which prints one line on stderr and returns the exit code of the
error's kind (see ``Exit``). Results go to stdout; notes and progress go to stderr, so that
``parley client register alice`` prints nothing but the new id on stdout.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import IntEnum
from pathlib import Path

import httpx
import msgspec

from parley.client import config as config_file
from parley.client.api import (
    ApiError,
    ClientError,
    Message,
    ParleyApi,
    ProtocolError,
    UnreachableError,
)
from parley.client.config import Config, ConfigError

__all__ = ["Exit", "Runtime", "main", "run"]

#: Seconds a ``watch`` long-poll asks the server to hold the request.
WATCH_WAIT = 25
#: ``watch`` backs off 1, 2, 4 ... seconds up to this many while the server is away.
WATCH_BACKOFF_MAX = 30.0


class Exit(IntEnum):
    """Exit codes: one per kind of failure, stable for scripts."""

    OK = 0
    FAILURE = 1  # an unexpected answer or server error
    USAGE = 2  # bad command line (argparse)
    CONFIG = 3  # the config file cannot be read or written, or would lose an identity
    BAD_REQUEST = 4  # 400
    UNAUTHORIZED = 5  # 401, or no identity saved yet
    FORBIDDEN = 6  # 403
    NOT_FOUND = 7  # 404
    CONFLICT = 8  # 409
    TOO_LARGE = 9  # 413
    RATE_LIMITED = 10  # 429
    UNAVAILABLE = 11  # 503
    UNREACHABLE = 12  # no answer from the server
    INTERRUPTED = 130  # Ctrl-C (except in ``watch``, where it is the normal way out)


_EXIT_BY_STATUS = {
    400: Exit.BAD_REQUEST,
    401: Exit.UNAUTHORIZED,
    403: Exit.FORBIDDEN,
    404: Exit.NOT_FOUND,
    409: Exit.CONFLICT,
    413: Exit.TOO_LARGE,
    429: Exit.RATE_LIMITED,
    503: Exit.UNAVAILABLE,
}

_LABEL_BY_STATUS = {
    400: "bad input",
    403: "forbidden",
    404: "not found",
    409: "conflict",
    413: "too large",
    429: "rate limited",
    503: "server unavailable",
}

NOT_SIGNED_IN = "not signed in or token unknown — run `parley client register` or `login`"


class CommandError(Exception):
    """A failure found on this side of the wire, with the exit code to report it by."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Runtime:
    """What the commands take from the outside world; tests replace parts of it."""

    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    now_ms: Callable[[], int] = _now_ms
    environ: Mapping[str, str] | None = None
    read_password: Callable[[str], str] = getpass.getpass


@dataclass
class Session:
    """One invocation: where the config lives, what it says, and a lazily built API client."""

    config_path: Path
    config: Config
    runtime: Runtime
    _api: ParleyApi | None = None
    _users: dict[str, str] = field(default_factory=dict)
    _groups: dict[str, str] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return self.config.server_url

    @property
    def api(self) -> ParleyApi:
        if self._api is None:
            self._api = self.make_api(self.config.token)
        return self._api

    def make_api(self, token: str | None) -> ParleyApi:
        return ParleyApi(
            self.server, token, transport=self.runtime.transport, sleep=self.runtime.sleep
        )

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    def me(self) -> str:
        if not self.config.user_id:
            raise CommandError(NOT_SIGNED_IN, Exit.UNAUTHORIZED)
        return self.config.user_id

    def user_name(self, user_id: str) -> str:
        """The username of ``user_id``, asked once per run; the id itself if unknown."""
        if user_id == self.config.user_id and self.config.username:
            return self.config.username
        if user_id not in self._users:
            try:
                self._users[user_id] = self.api.get_user(user_id).username
            except ApiError:
                self._users[user_id] = user_id
            except ClientError:
                return user_id
        return self._users[user_id]

    def group_name(self, group_id: str) -> str:
        """``#name`` of ``group_id``, asked once per run; the id itself if not visible."""
        if group_id not in self._groups:
            try:
                self._groups[group_id] = "#" + self.api.get_group(group_id).group_name
            except ApiError:
                self._groups[group_id] = group_id
            except ClientError:
                return group_id
        return self._groups[group_id]


# -- output helpers ---------------------------------------------------------------------------


def _out(text: str = "") -> None:
    print(text, flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _local_time(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", " ⏎ ").replace("\t", " ")


def _table(rows: list[list[str]]) -> None:
    """Left-aligned columns, two spaces apart; the last column is never padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        _out("  ".join([*cells, row[-1]]).rstrip())


def _message_row(session: Session, message: Message) -> list[str]:
    to = (
        session.user_name(message.recipient_id)
        if message.type == "private"
        else session.group_name(message.recipient_id)
    )
    return [
        _local_time(message.timestamp_ms),
        message.type,
        session.user_name(message.sender_id),
        to,
        "(deleted)"
        if message.deleted
        else _one_line(message.message)
        + (" (edited)" if message.edited_at else "")
        + "".join(f" [file {m}]" for m in message.attachments),
    ]


def _event_row(session: Session, event: dict[str, str]) -> list[str]:
    """A change event as a line of ``watch``: time, ``event``, type, its fields."""
    stamp = event.get("timestamp", "")
    when = _local_time(int(stamp)) if stamp.isdigit() else "-"
    details = [
        f"{key}={_one_line(value)}"
        for key, value in event.items()
        if key not in ("eventId", "type", "timestamp")
    ]
    return [when, "event", event.get("type", "?"), " ".join(details)]


def _json_line(raw: object) -> str:
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


def _describe(error: ApiError) -> tuple[str, Exit]:
    code = _EXIT_BY_STATUS.get(error.status, Exit.FAILURE)
    if error.status == 401:
        return NOT_SIGNED_IN, code
    message = error.message
    if error.status == 403 and error.code == "blocked":
        message = "you are blocked by this user"
    label = _LABEL_BY_STATUS.get(error.status, f"server error {error.status}")
    text = f"{label}: {message} [{error.code}]"
    if error.retry_after is not None and error.status in (429, 503):
        text += f"; retry after {error.retry_after:g} s"
    return text, code


# -- commands ---------------------------------------------------------------------------------


def _guard_identity(session: Session, new_user_id: str | None, force: bool) -> None:
    """Refuse to overwrite a saved token of another user: tokens are shown only once."""
    old = session.config
    if force or not old.token or old.user_id == new_user_id:
        return
    raise CommandError(
        f"{session.config_path} already holds the token of user {old.user_id}; "
        "use --config PATH for another account or --force to replace it",
        Exit.CONFIG,
    )


def cmd_register(session: Session, args: argparse.Namespace) -> int:
    _guard_identity(session, None, args.force)
    with session.make_api(None) as api:
        registered = api.create_user(args.username)
    session.config = Config(
        server=session.server,
        user_id=registered.user_id,
        username=registered.username,
        token=registered.token,
    )
    config_file.save(session.config_path, session.config)
    _out(registered.user_id)
    _note(f"registered {registered.username}; credentials saved to {session.config_path}")
    return Exit.OK


def cmd_login(session: Session, args: argparse.Namespace) -> int:
    _guard_identity(session, args.user_id, args.force)
    token = args.token
    if args.password:
        if token is not None:
            raise CommandError("give --token or --password, not both", Exit.USAGE)
        password = session.runtime.read_password(f"password for {args.user_id}: ")
        with session.make_api(None) as api:
            try:
                token = api.sign_in(args.user_id, password, args.device or _device_name()).token
            except ApiError as exc:
                if exc.status != 401:
                    raise
                raise CommandError("wrong user id or password", Exit.UNAUTHORIZED) from None
    with session.make_api(token) as api:
        user = api.get_user(args.user_id)
    session.config = Config(
        server=session.server, user_id=user.user_id, username=user.username, token=token
    )
    config_file.save(session.config_path, session.config)
    _out(f"signed in as {user.username} ({user.user_id})")
    return Exit.OK


def _device_name() -> str:
    return f"parley client on {socket.gethostname()}"[:64]


def cmd_devices(session: Session, args: argparse.Namespace) -> int:
    rows = [["", "device", "id", "signed in", "last used"]]
    for device in session.api.devices(session.me()):
        rows.append(
            [
                "*" if device.current else "",
                device.device_name,
                device.token_id,
                _local_time(int(device.created_at)),
                _local_time(int(device.last_used_at)),
            ]
        )
    _table(rows)
    return Exit.OK


def cmd_link(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    new = session.api.link_device(me, args.name)
    _out(new.token)
    _note(
        f"a token for {new.device_name} ({new.token_id}), shown once; on that device run:\n"
        f"  parley client --server {session.server} login --user-id {me} --token <the token>"
    )
    return Exit.OK


def cmd_logout(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    if args.token_id is not None:  # sign another device out
        session.api.revoke(me, args.token_id)
        _out(f"signed out {args.token_id}")
        return Exit.OK
    current = [d for d in session.api.devices(me) if d.current]
    if current:
        session.api.revoke(me, current[0].token_id)
    session.config = replace(session.config, token=None)
    config_file.save(session.config_path, session.config)
    _out("signed out; the saved token was revoked and forgotten")
    return Exit.OK


def cmd_password(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    current = session.runtime.read_password("current password: ") if args.change else None
    password = session.runtime.read_password("new password: ")
    session.api.set_password(me, password, current)
    _out("password set")
    return Exit.OK


def cmd_whoami(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    token = session.config.token
    _table(
        [
            ["server", session.server],
            ["config", str(session.config_path)],
            ["user id", me],
            ["username", session.config.username or "?"],
            ["token", f"{token[:4]}… (saved)" if token else "none (open mode)"],
        ]
    )
    user = session.api.get_user(me)
    _out(f"server knows you as {user.username}")
    return Exit.OK


def cmd_send(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    paths = [Path(p) for p in args.file or []]
    for path in paths:
        if not path.is_file():
            raise CommandError(f"{path}: no such file", Exit.USAGE)
    if not args.text and not paths:
        raise CommandError("give the message text, or --file", Exit.USAGE)
    # A message has text: with files alone, their names.
    text = " ".join(args.text) or ", ".join(p.name for p in paths)
    files = [session.api.upload(path).media_id for path in paths]
    key = uuid.uuid4().hex
    if args.to is not None:
        message = session.api.send_private(me, args.to, text, key, files)
    else:
        message = session.api.send_group(me, args.group, text, key, files)
    _out(message.message_id)
    return Exit.OK


def cmd_edit(session: Session, args: argparse.Namespace) -> int:
    session.me()
    message = session.api.edit_message(args.message_id, " ".join(args.text))
    _out(f"edited {message.message_id}")
    return Exit.OK


def cmd_delete(session: Session, args: argparse.Namespace) -> int:
    session.me()
    message = session.api.delete_message(args.message_id)
    _out(f"deleted {message.message_id}")
    return Exit.OK


def cmd_download(session: Session, args: argparse.Namespace) -> int:
    target = Path(args.output or args.media_id)
    kind = session.api.download(args.media_id, target)
    _out(f"{target} ({kind})")
    return Exit.OK


def cmd_group_create(session: Session, args: argparse.Namespace) -> int:
    group = session.api.create_group(args.name)
    _out(group.group_id)
    return Exit.OK


def cmd_group_add(session: Session, args: argparse.Namespace) -> int:
    session.api.add_member(args.group_id, args.user_id)
    _out(f"added {args.user_id} to {args.group_id}")
    return Exit.OK


def cmd_group_remove(session: Session, args: argparse.Namespace) -> int:
    session.api.remove_member(args.group_id, args.user_id)
    _out(f"removed {args.user_id} from {args.group_id}")
    return Exit.OK


def cmd_group_promote(session: Session, args: argparse.Namespace) -> int:
    session.api.set_role(args.group_id, args.user_id, "admin")
    _out(f"{args.user_id} is an admin of {args.group_id}")
    return Exit.OK


def cmd_group_demote(session: Session, args: argparse.Namespace) -> int:
    session.api.set_role(args.group_id, args.user_id, "member")
    _out(f"{args.user_id} is a member of {args.group_id}")
    return Exit.OK


def cmd_group_rename(session: Session, args: argparse.Namespace) -> int:
    session.api.rename_group(args.group_id, args.name)
    _out(f"renamed {args.group_id}")
    return Exit.OK


def _user_rows(session: Session, user_ids: list[str]) -> list[list[str]]:
    return [[user_id, session.user_name(user_id)] for user_id in user_ids]


def cmd_group_show(session: Session, args: argparse.Namespace) -> int:
    group = session.api.get_group(args.group_id)
    members = group.members or []
    _table([["id", group.group_id], ["name", group.group_name], ["members", str(len(members))]])
    if members:
        roles = group.roles or {}
        _table(
            [
                ["  " + user_id, name, roles.get(user_id, "")]
                for user_id, name in _user_rows(session, members)
            ]
        )
    return Exit.OK


def cmd_groups(session: Session, args: argparse.Namespace) -> int:
    groups = session.api.user_groups(session.me())
    if not groups:
        _note("(no groups)")
        return Exit.OK
    _table([[g.group_id, g.group_name] for g in groups])
    return Exit.OK


def cmd_block(session: Session, args: argparse.Namespace) -> int:
    session.api.block(session.me(), args.user_id)
    _out(f"blocked {args.user_id}")
    return Exit.OK


def cmd_unblock(session: Session, args: argparse.Namespace) -> int:
    session.api.unblock(session.me(), args.user_id)
    _out(f"unblocked {args.user_id}")
    return Exit.OK


def cmd_blocked(session: Session, args: argparse.Namespace) -> int:
    blocked = session.api.blocked(session.me())
    if not blocked:
        _note("(nobody blocked)")
        return Exit.OK
    _table(_user_rows(session, blocked))
    return Exit.OK


def cmd_user(session: Session, args: argparse.Namespace) -> int:
    user = session.api.get_user(args.user_id)
    _table([["id", user.user_id], ["username", user.username]])
    return Exit.OK


def cmd_messages(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    since: str | None = args.since
    messages: list[Message] = []
    raw: list[object] = []
    while True:
        page = session.api.messages(me, since=since, include_sent=args.sent, limit=args.limit)
        messages.extend(page.messages)
        raw.extend(page.raw)
        since = page.next_timestamp
        if not page.has_more:
            break
    if args.json:
        for item in raw:
            _out(_json_line(item))
    elif messages:
        _table(
            [["TIME", "TYPE", "FROM", "TO", "TEXT"]] + [_message_row(session, m) for m in messages]
        )
    else:
        _note("(no messages)")
    _note(f"next: --since {since}")
    return Exit.OK


def cmd_conversations(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    listing = session.api.conversations(me, limit=args.limit)
    if args.json:
        for c in listing.conversations:
            _out(_json_line(msgspec.to_builtins(c)))
        return Exit.OK
    rows = [["CONVERSATION", "NAME", "UNREAD", "LAST"]]
    for c in listing.conversations:
        unread = f"{c.unread_count}+" if c.unread_capped else str(c.unread_count)
        last = _one_line(c.last_message.message) if c.last_message else ""
        name = f"#{c.name}" if c.type == "group" else c.name
        rows.append([c.conversation_id, name, unread, last])
    if len(rows) > 1:
        _table(rows)
    else:
        _note("(no conversations)")
    return Exit.OK


def cmd_history(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    before: str | None = args.before
    pages: list[list[Message]] = []
    for _ in range(args.pages):
        page = session.api.history(me, args.conversation_id, before=before, limit=args.limit)
        pages.append(page.messages)
        before = page.next_before
        if not page.has_more:
            before = None
            break
    messages = [m for page in reversed(pages) for m in page]  # oldest first
    if args.json:
        for m in messages:
            _out(_json_line(msgspec.to_builtins(m)))
    elif messages:
        _table(
            [["TIME", "TYPE", "FROM", "TO", "TEXT"]] + [_message_row(session, m) for m in messages]
        )
    else:
        _note("(no messages)")
    if before is not None:
        _note(f"older: --before {before}")
    return Exit.OK


def cmd_read(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    # Without a timestamp: everything up to now (the server stops at the newest message).
    stamp = args.timestamp or str(_now_ms())
    upto = session.api.mark_read(me, args.conversation_id, stamp)
    _out(f"read up to {upto}")
    return Exit.OK


def _retry_delay(error: ClientError, backoff: float) -> float | None:
    """How long ``watch`` waits after ``error``, or ``None`` if it should give up."""
    if isinstance(error, UnreachableError):
        return backoff
    if isinstance(error, ApiError) and error.status in (429, 503):
        return min(max(backoff, error.retry_after or 0.0), WATCH_BACKOFF_MAX)
    return None


def cmd_watch(session: Session, args: argparse.Namespace) -> int:
    me = session.me()
    clock = session.runtime.monotonic
    since: str = args.since if args.since is not None else str(session.runtime.now_ms())
    deadline = None if args.max_seconds is None else clock() + args.max_seconds
    received = 0
    backoff = 1.0
    failing = False
    _note(f"watching messages for {session.config.username or me} (Ctrl-C to stop)")
    try:
        while True:
            wait = WATCH_WAIT
            if deadline is not None:
                remaining = deadline - clock()
                if remaining <= 0:
                    return Exit.OK
                wait = max(1, min(WATCH_WAIT, math.ceil(remaining)))
            started = clock()
            try:
                page = session.api.messages(
                    me, since=since, include_sent=True, wait=wait, include_events=True
                )
            except (ApiError, UnreachableError) as exc:
                delay = _retry_delay(exc, backoff)
                if delay is None:
                    raise
                if deadline is not None:
                    delay = max(0.0, min(delay, deadline - clock()))
                reason = exc if isinstance(exc, UnreachableError) else _describe(exc)[0]
                _note(f"watch: {reason}; retrying in {delay:g} s")
                session.runtime.sleep(delay)
                backoff = min(backoff * 2, WATCH_BACKOFF_MAX)
                failing = True
                continue
            if failing:
                _note("watch: reconnected")
                failing, backoff = False, 1.0
            for message, raw in zip(page.messages, page.raw, strict=True):
                _out(_json_line(raw) if args.json else "  ".join(_message_row(session, message)))
                received += 1
                if args.max_messages is not None and received >= args.max_messages:
                    return Exit.OK
            for event in page.events:  # edits, deletes, group changes (not counted)
                _out(_json_line(event) if args.json else "  ".join(_event_row(session, event)))
            since = page.next_timestamp
            if not page.messages and not page.events and clock() - started < 1.0:
                # A server that ignores ``wait`` must not turn the loop into a busy poll.
                session.runtime.sleep(1.0)
    except KeyboardInterrupt:
        return Exit.OK


# -- argument parsing -------------------------------------------------------------------------


def _timestamp(value: str) -> str:
    """``--since``: unix milliseconds, or an ISO 8601 date/time (local time if naive)."""
    if value.isascii() and value.isdigit():
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a timestamp: {value!r} (unix milliseconds or ISO 8601)"
        ) from None
    return str(int(moment.astimezone().timestamp() * 1000))


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    # --server and --config are accepted before or after the command; the copies on the
    # subcommands default to SUPPRESS so they never overwrite a value given earlier.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=argparse.SUPPRESS, metavar="URL", help="server URL")
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH", help="config file")

    parser = argparse.ArgumentParser(
        prog="parley client", description="Talk to a Parley server from the command line."
    )
    parser.add_argument("--server", metavar="URL", help="server URL (overrides the config)")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $PARLEY_CLIENT_CONFIG, else "
        "$XDG_CONFIG_HOME/parley/client.json, else ~/.config/parley/client.json)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[Session, argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("register", cmd_register, "create a user and save its id and token")
    sub.add_argument("username", metavar="USERNAME")
    sub.add_argument("--force", action="store_true", help="replace a saved identity")

    sub = command("login", cmd_login, "sign in: save an existing account's id and token")
    sub.add_argument("--user-id", required=True, metavar="ID")
    sub.add_argument("--token", metavar="TOKEN", help="bearer token (omit in open mode)")
    sub.add_argument(
        "--password", action="store_true", help="sign in with the account's password (prompted)"
    )
    sub.add_argument("--device", metavar="NAME", help="this device's name (with --password)")
    sub.add_argument("--force", action="store_true", help="replace a saved identity")

    command("devices", cmd_devices, "list the devices signed in to your account")
    sub = command("link", cmd_link, "make a token for another device (shown once)")
    sub.add_argument("--name", metavar="NAME", help="the other device's name")
    sub = command("logout", cmd_logout, "sign this device out (or another one, by its id)")
    sub.add_argument("token_id", nargs="?", metavar="TOKEN_ID", help="another device's id")
    sub = command("password", cmd_password, "set your password (prompted), for signing in")
    sub.add_argument("--change", action="store_true", help="a password is set: ask for it")

    command("whoami", cmd_whoami, "show the saved identity and check it with the server")

    sub = command("send", cmd_send, "send a message to a user or a group")
    target = sub.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="USER_ID", help="receiving user")
    target.add_argument("--group", metavar="GROUP_ID", help="receiving group")
    sub.add_argument("text", nargs="*", metavar="TEXT", help="the message (words are joined)")
    sub.add_argument(
        "--file",
        action="append",
        metavar="PATH",
        help="attach a file (uploaded first; repeat for more, at most 10)",
    )
    sub = command("download", cmd_download, "save an attachment (a media id) to a file")
    sub.add_argument("media_id", metavar="MEDIA_ID", help="from a message's attachments")
    sub.add_argument("-o", "--output", metavar="PATH", help="where to save (default: the id)")

    sub = command("edit", cmd_edit, "replace the text of a message you sent")
    sub.add_argument("message_id", metavar="MESSAGE_ID")
    sub.add_argument("text", nargs="+", metavar="TEXT", help="the new text (words are joined)")
    sub = command("delete", cmd_delete, "delete a message you sent (its text is erased)")
    sub.add_argument("message_id", metavar="MESSAGE_ID")

    group = commands.add_parser(
        "group", parents=[common], help="create, change and show groups", description="groups"
    )
    group_commands = group.add_subparsers(dest="group_command", required=True, metavar="ACTION")
    for name, handler, help_text, arguments in (
        ("create", cmd_group_create, "create a group (you become its owner)", ["name"]),
        ("add", cmd_group_add, "add a user to a group", ["group_id", "user_id"]),
        ("remove", cmd_group_remove, "remove a user from a group", ["group_id", "user_id"]),
        ("promote", cmd_group_promote, "make a member an admin (owner)", ["group_id", "user_id"]),
        ("demote", cmd_group_demote, "make an admin a member (owner)", ["group_id", "user_id"]),
        ("rename", cmd_group_rename, "rename a group (owner, admins)", ["group_id", "name"]),
        ("show", cmd_group_show, "show a group, its members and their roles", ["group_id"]),
    ):
        sub = group_commands.add_parser(name, parents=[common], help=help_text)
        sub.set_defaults(handler=handler)
        for argument in arguments:
            sub.add_argument(argument, metavar=argument.upper())

    command("groups", cmd_groups, "list your groups")
    sub = command("block", cmd_block, "block a user from sending you private messages")
    sub.add_argument("user_id", metavar="USER_ID")
    sub = command("unblock", cmd_unblock, "unblock a user")
    sub.add_argument("user_id", metavar="USER_ID")
    command("blocked", cmd_blocked, "list the users you have blocked")
    sub = command("user", cmd_user, "show a user")
    sub.add_argument("user_id", metavar="USER_ID")

    sub = command("messages", cmd_messages, "list your messages")
    sub.add_argument("--since", type=_timestamp, metavar="TS", help="only newer than TS")
    sub.add_argument("--sent", action="store_true", help="include private messages you sent")
    sub.add_argument("--limit", type=_positive, metavar="N", help="messages per request")
    sub.add_argument("--json", action="store_true", help="print raw JSON, one per line")

    sub = command("conversations", cmd_conversations, "list your conversations, unread counts")
    sub.add_argument("--limit", type=_positive, metavar="N", help="conversations to show")
    sub.add_argument("--json", action="store_true", help="print raw JSON, one per line")

    sub = command("history", cmd_history, "page back through one conversation")
    sub.add_argument("conversation_id", metavar="CONVERSATION", help="a user id or a group id")
    sub.add_argument("--before", type=_timestamp, metavar="TS", help="only older than TS")
    sub.add_argument("--limit", type=_positive, metavar="N", help="messages per page")
    sub.add_argument("--pages", type=_positive, default=1, metavar="N", help="pages (default 1)")
    sub.add_argument("--json", action="store_true", help="print raw JSON, one per line")

    sub = command("read", cmd_read, "mark a conversation read (up to TS, default: all of it)")
    sub.add_argument("conversation_id", metavar="CONVERSATION", help="a user id or a group id")
    sub.add_argument("timestamp", nargs="?", type=_timestamp, metavar="TS", help="read up to")

    sub = command("watch", cmd_watch, "print new messages and change events as they arrive")
    sub.add_argument("--since", type=_timestamp, metavar="TS", help="start after TS (default: now)")
    sub.add_argument("--json", action="store_true", help="print raw JSON, one per line")
    sub.add_argument("--max-seconds", type=_positive_float, metavar="N", help="stop after N s")
    sub.add_argument("--max-messages", type=_positive, metavar="N", help="stop after N messages")
    return parser


# -- entry points -----------------------------------------------------------------------------


def run(argv: list[str] | None = None, runtime: Runtime | None = None) -> int:
    """Parse ``argv``, run the command, and return its exit code; never raises on errors."""
    runtime = runtime or Runtime()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else Exit.USAGE
    session: Session | None = None
    try:
        path = Path(args.config) if args.config else config_file.default_path(runtime.environ)
        loaded = config_file.load(path)
        session = Session(path, replace(loaded, server=args.server or loaded.server), runtime)
        handler: Callable[[Session, argparse.Namespace], int] = args.handler
        return handler(session, args)
    except ApiError as exc:
        message, code = _describe(exc)
    except UnreachableError as exc:
        message, code = f"cannot reach server at {exc.url} ({exc.reason})", Exit.UNREACHABLE
    except ProtocolError as exc:
        message, code = f"unexpected answer from the server: {exc}", Exit.FAILURE
    except ConfigError as exc:
        message, code = str(exc), Exit.CONFIG
    except CommandError as exc:
        message, code = exc.message, exc.code
    except KeyboardInterrupt:
        message, code = "interrupted", Exit.INTERRUPTED
    finally:
        if session is not None:
            session.close()
    _note(f"error: {message}")
    return code


def main(argv: list[str] | None = None) -> int:
    """``parley client …``; ``argv`` excludes the program name."""
    return run(argv)
