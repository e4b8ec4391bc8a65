"""``parley client`` commands against a recording fake of the server (no sockets)."""

from __future__ import annotations

import itertools
import json
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from parley.client.cli import Exit, Runtime, run
from parley.client.config import Config, load, save

SERVER = "http://fake.parley"


def _error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, json={"error": {"code": code, "message": message}}
    )


@dataclass
class FakeParley:
    """Just enough of Parley in token mode to drive the client; records every request."""

    users: dict[str, str] = field(default_factory=dict)  # id -> username
    tokens: dict[str, str] = field(default_factory=dict)  # token -> id
    groups: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    blocks: set[tuple[str, str]] = field(default_factory=set)
    messages: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)  # change events, all users
    requests: list[httpx.Request] = field(default_factory=list)
    #: Answers (or exceptions) to give before the real ones, for failure tests.
    faults: list[httpx.Response | BaseException] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    clock: itertools.count[int] = field(
        default_factory=lambda: itertools.count(1_700_000_000_000, 1000)
    )

    def add_user(self, name: str) -> tuple[str, str]:
        user_id, token = f"u_{name}", f"tok-{name}"
        self.users[user_id] = name
        self.tokens[token] = user_id
        return user_id, token

    def paths(self, method: str = "GET") -> list[str]:
        return [r.url.path for r in self.requests if r.method == method]

    def polls(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.startswith("/v1/messages/u_")]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, BaseException):
                raise fault
            return fault
        parts = request.url.path.strip("/").split("/")
        body = json.loads(request.content) if request.content else {}
        if parts == ["v1", "users", "create"]:
            user_id, token = self.add_user(body["username"])
            return httpx.Response(
                200, json={"userId": user_id, "username": body["username"], "token": token}
            )
        auth = request.headers.get("Authorization", "")
        caller = self.tokens.get(auth.removeprefix("Bearer "))
        if caller is None:
            return _error(401, "unauthenticated", "missing or unknown token")
        return self.route(request, parts, body, caller)

    def route(
        self, request: httpx.Request, parts: list[str], body: dict[str, str], caller: str
    ) -> httpx.Response:
        op = request.url.params.get("op")
        match parts:
            case ["v1", "users", user_id] if request.method == "GET":
                if user_id not in self.users:
                    return _error(404, "user_not_found", "no such user")
                return httpx.Response(
                    200, json={"userId": user_id, "username": self.users[user_id]}
                )
            case ["v1", "users", user_id, "groups"]:
                mine = [
                    {"groupId": g, "groupName": name}
                    for g, (name, members) in self.groups.items()
                    if user_id in members
                ]
                return httpx.Response(200, json={"userId": user_id, "groups": mine})
            case ["v1", "users", user_id, "blocked"]:
                blocked = sorted(b for a, b in self.blocks if a == user_id)
                return httpx.Response(200, json={"userId": user_id, "blockedUserIds": blocked})
            case ["v1", "users", user_id] if op in ("block", "unblock"):
                pair = (user_id, body["blockedUserId"])
                if (pair in self.blocks) == (op == "block"):
                    return _error(409, "conflict", f"cannot {op}")
                (self.blocks.add if op == "block" else self.blocks.discard)(pair)
                return httpx.Response(200, json={})
            case ["v1", "groups", "create"]:
                group_id = f"g_{next(self.ids)}"
                self.groups[group_id] = (body["groupName"], [caller])
                return httpx.Response(
                    200, json={"groupId": group_id, "groupName": body["groupName"]}
                )
            case ["v1", "groups", group_id]:
                if group_id not in self.groups:
                    return _error(404, "group_not_found", "no such group")
                name, members = self.groups[group_id]
                if op == "add":
                    members.append(body["userId"])
                elif op == "remove":
                    members.remove(body["userId"])
                return httpx.Response(
                    200, json={"groupId": group_id, "groupName": name, "members": members}
                )
            case ["v1", "messages", "send"]:
                return self.send(request, body)
            case ["v1", "messages", message_id] if request.method == "POST":
                return self.change(message_id, op, body, caller)
            case ["v1", "messages", user_id]:
                return self.poll(request, user_id)
        return _error(404, "not_found", "no route")

    def send(self, request: httpx.Request, body: dict[str, str]) -> httpx.Response:
        kind = request.url.params["type"]
        recipient = body["receiverId"] if kind == "private" else body["groupId"]
        if kind == "private" and (recipient, body["senderId"]) in self.blocks:
            return _error(403, "blocked", "the receiver has blocked you")
        message = {
            "messageId": f"m_{next(self.ids)}",
            "type": kind,
            "senderId": body["senderId"],
            "recipientId": recipient,
            "message": body["message"],
            "timestamp": str(next(self.clock)),
        }
        self.messages.append(message)
        return httpx.Response(200, json=message)

    def change(
        self, message_id: str, op: str | None, body: dict[str, str], caller: str
    ) -> httpx.Response:
        found = [m for m in self.messages if m["messageId"] == message_id]
        if not found:
            return _error(404, "message_not_found", "message not found")
        message = found[0]
        if message["senderId"] != caller:
            return _error(403, "not_sender", "only its sender may change a message")
        stamp = str(next(self.clock))
        if op == "edit":
            message.update(message=body["message"], editedAt=stamp)
        else:
            message.pop("message", None)
            message["deleted"] = True  # type: ignore[assignment]
        kind = "message_edited" if op == "edit" else "message_deleted"
        self.events.append(
            {"eventId": f"e_{next(self.ids)}", "type": kind, "timestamp": stamp,
             "messageId": message_id, "conversationId": message["recipientId"]}
        )  # fmt: skip
        return httpx.Response(200, json=message)

    def poll(self, request: httpx.Request, user_id: str) -> httpx.Response:
        params = request.url.params
        since = int(params.get("timestamp", "-1"))
        limit = int(params.get("limit", "500"))
        include = params.get("include", "").split(",")
        sent = "sent" in include
        visible = [
            m
            for m in self.messages
            if int(m["timestamp"]) > since
            and (
                m["recipientId"] == user_id
                or (m["type"] == "group" and user_id in self.groups[m["recipientId"]][1])
                or (sent and m["senderId"] == user_id)
            )
        ]
        page = visible[:limit]
        next_ts = page[-1]["timestamp"] if page else str(max(since, 0))
        answer: dict[str, object] = {
            "messages": page, "nextTimestamp": next_ts, "hasMore": len(visible) > limit,
        }  # fmt: skip
        if "events" in include:
            events = [e for e in self.events if int(e["timestamp"]) > since]
            answer["events"] = events
            if events and not page:
                answer["nextTimestamp"] = events[-1]["timestamp"]
        return httpx.Response(200, json=answer)


@dataclass
class Harness:
    fake: FakeParley
    config_path: Path
    capsys: pytest.CaptureFixture[str]
    sleeps: list[float] = field(default_factory=list)
    now: float = 0.0

    def runtime(self, transport: httpx.BaseTransport | None = None) -> Runtime:
        def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            self.now += seconds

        return Runtime(
            transport=transport or httpx.MockTransport(self.fake),
            sleep=sleep,
            monotonic=lambda: self.now,
            now_ms=lambda: 1_600_000_000_000,
            environ={},
        )

    def __call__(self, *argv: str, transport: httpx.BaseTransport | None = None) -> Result:
        code = run(
            ["--server", SERVER, "--config", str(self.config_path), *argv], self.runtime(transport)
        )
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def sign_in(self, name: str) -> str:
        user_id, token = self.fake.add_user(name)
        save(self.config_path, Config(server=SERVER, user_id=user_id, username=name, token=token))
        return user_id


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Harness:
    return Harness(FakeParley(), tmp_path / "client.json", capsys)


# -- identity -----------------------------------------------------------------------------------


def test_register_prints_the_id_and_saves_a_private_config(cli: Harness) -> None:
    result = cli("register", "alice")
    assert result.code == Exit.OK
    assert result.out == "u_alice\n"
    assert load(cli.config_path) == Config(
        server=SERVER, user_id="u_alice", username="alice", token="tok-alice"
    )
    assert stat.S_IMODE(cli.config_path.stat().st_mode) == 0o600
    assert "Authorization" not in cli.fake.requests[0].headers


def test_register_will_not_lose_a_saved_token(cli: Harness) -> None:
    cli("register", "alice")
    result = cli("register", "bob")
    assert result.code == Exit.CONFIG
    assert "already holds the token of user u_alice" in result.err
    assert load(cli.config_path).user_id == "u_alice"
    assert cli("register", "bob", "--force").code == Exit.OK
    assert load(cli.config_path).user_id == "u_bob"


def test_login_checks_the_token_and_saves_it(cli: Harness) -> None:
    user_id, token = cli.fake.add_user("carol")
    result = cli("login", "--user-id", user_id, "--token", token)
    assert result.code == Exit.OK
    assert result.out == "signed in as carol (u_carol)\n"
    assert load(cli.config_path) == Config(SERVER, user_id, "carol", token)


def test_login_with_an_unknown_token_saves_nothing(cli: Harness) -> None:
    user_id, _ = cli.fake.add_user("carol")
    result = cli("login", "--user-id", user_id, "--token", "wrong")
    assert result.code == Exit.UNAUTHORIZED
    assert "not signed in or token unknown" in result.err
    assert not cli.config_path.exists()


def test_whoami_shows_and_checks_the_identity(cli: Harness) -> None:
    cli.sign_in("alice")
    result = cli("whoami")
    assert result.code == Exit.OK
    assert "u_alice" in result.out
    assert "tok-… (saved)" in result.out
    assert "server knows you as alice" in result.out


def test_commands_need_an_identity(cli: Harness) -> None:
    result = cli("whoami")
    assert result.code == Exit.UNAUTHORIZED
    assert result.err == (
        "error: not signed in or token unknown — run `parley client register` or `login`\n"
    )


def test_server_option_after_the_command_overrides_the_config(cli: Harness) -> None:
    cli.sign_in("alice")
    cli(
        "user",
        "u_alice",
        "--server",
        "http://elsewhere:9",
    )
    assert str(cli.fake.requests[-1].url).startswith("http://elsewhere:9/v1/users/u_alice")


def test_config_option_after_the_command(cli: Harness, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    cli("register", "bob", "--config", str(other))
    assert load(other).user_id == "u_bob"
    assert not cli.config_path.exists()


# -- sending ------------------------------------------------------------------------------------


def test_send_private_as_self_with_an_idempotency_key(cli: Harness) -> None:
    me = cli.sign_in("alice")
    cli.fake.add_user("bob")
    result = cli("send", "--to", "u_bob", "hello", "there")
    assert result.code == Exit.OK
    assert result.out == "m_1\n"
    request = cli.fake.requests[-1]
    assert request.url.params["type"] == "private"
    assert request.headers["Authorization"] == "Bearer tok-alice"
    assert re.fullmatch(r"[0-9a-f]{32}", request.headers["Idempotency-Key"])
    assert json.loads(request.content) == {
        "senderId": me,
        "receiverId": "u_bob",
        "message": "hello there",
    }


def test_each_send_uses_a_new_key(cli: Harness) -> None:
    cli.sign_in("alice")
    cli("send", "--to", "u_alice", "one")
    cli("send", "--to", "u_alice", "two")
    keys = {r.headers["Idempotency-Key"] for r in cli.fake.requests}
    assert len(keys) == 2


def test_send_to_group(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.groups["g_9"] = ("team", ["u_alice"])
    assert cli("send", "--group", "g_9", "hi").code == Exit.OK
    assert json.loads(cli.fake.requests[-1].content)["groupId"] == "g_9"
    assert cli.fake.messages[0]["type"] == "group"


@pytest.mark.parametrize(
    "fault",
    [httpx.ConnectError("Connection refused"), _error(503, "unavailable", "db down")],
)
def test_send_retries_once_with_the_same_key(
    cli: Harness, fault: httpx.Response | Exception
) -> None:
    cli.sign_in("alice")
    cli.fake.faults.append(fault)
    result = cli("send", "--to", "u_alice", "hi")
    assert result.code == Exit.OK
    assert len(cli.fake.messages) == 1
    first, second = cli.fake.requests
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]


def test_send_to_a_blocker_is_forbidden(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.add_user("bob")
    cli.fake.blocks.add(("u_bob", "u_alice"))
    result = cli("send", "--to", "u_bob", "hi")
    assert result.code == Exit.FORBIDDEN
    assert result.err == "error: forbidden: you are blocked by this user [blocked]\n"
    assert result.out == ""


def test_send_needs_a_target(cli: Harness) -> None:
    cli.sign_in("alice")
    assert cli("send", "hi").code == Exit.USAGE


# -- groups, blocking, users --------------------------------------------------------------------


def test_group_lifecycle(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.add_user("bob")
    created = cli("group", "create", "team")
    assert created.code == Exit.OK
    group_id = created.out.strip()
    assert cli("group", "add", group_id, "u_bob").out == f"added u_bob to {group_id}\n"
    shown = cli("group", "show", group_id)
    assert re.search(r"name\s+team", shown.out)
    assert re.search(r"members\s+2", shown.out)
    assert re.search(r"u_bob\s+bob", shown.out)
    assert cli("groups").out.split() == [group_id, "team"]
    assert cli("group", "remove", group_id, "u_bob").code == Exit.OK
    assert cli.fake.groups[group_id][1] == ["u_alice"]


def test_unknown_group_is_not_found(cli: Harness) -> None:
    cli.sign_in("alice")
    result = cli("group", "show", "g_nope")
    assert result.code == Exit.NOT_FOUND
    assert result.err == "error: not found: no such group [group_not_found]\n"


def test_block_unblock_and_list(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.add_user("bob")
    assert cli("blocked").err == "(nobody blocked)\n"
    assert cli("block", "u_bob").out == "blocked u_bob\n"
    assert cli("blocked").out.split() == ["u_bob", "bob"]
    again = cli("block", "u_bob")
    assert again.code == Exit.CONFLICT
    assert again.err.startswith("error: conflict:")
    assert cli("unblock", "u_bob").code == Exit.OK
    assert cli.fake.blocks == set()


def test_user_shows_id_and_name(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.add_user("bob")
    result = cli("user", "u_bob")
    assert result.out.split() == ["id", "u_bob", "username", "bob"]


# -- reading messages ---------------------------------------------------------------------------


def _seed_conversation(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.add_user("bob")
    cli.fake.groups["g_1"] = ("team", ["u_alice", "u_bob"])
    for sender, kind, to, text in [
        ("u_bob", "private", "u_alice", "hi alice"),
        ("u_alice", "private", "u_bob", "hi bob"),
        ("u_bob", "group", "g_1", "hello\nteam"),
    ]:
        field_name = "receiverId" if kind == "private" else "groupId"
        cli.fake.send(
            httpx.Request("POST", f"{SERVER}/v1/messages/send?type={kind}"),
            {"senderId": sender, field_name: to, "message": text},
        )


def test_messages_table_resolves_names_once(cli: Harness) -> None:
    _seed_conversation(cli)
    result = cli("messages")
    assert result.code == Exit.OK
    lines = result.out.splitlines()
    assert lines[0].split() == ["TIME", "TYPE", "FROM", "TO", "TEXT"]
    assert len(lines) == 3  # header, then the two messages alice receives
    assert lines[1].split()[2:] == ["private", "bob", "alice", "hi", "alice"]
    assert lines[2].split()[2:] == ["group", "bob", "#team", "hello", "⏎", "team"]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", lines[1])
    assert cli.fake.paths().count("/v1/users/u_bob") == 1
    assert "next: --since 1700000002000" in result.err


def test_names_that_cannot_be_looked_up_show_as_ids(cli: Harness) -> None:
    _seed_conversation(cli)
    cli.fake.faults += [
        httpx.Response(200, json={"messages": cli.fake.messages, "nextTimestamp": "9"}),
        _error(404, "user_not_found", "user not found"),
        _error(403, "not_a_member", "you are not a member of this group"),
    ]
    result = cli("messages")
    assert result.code == Exit.OK
    rows = [line.split()[2:5] for line in result.out.splitlines()[1:]]
    assert rows == [
        ["private", "u_bob", "alice"],
        ["private", "alice", "u_bob"],
        ["group", "u_bob", "g_1"],
    ]
    assert cli.fake.paths().count("/v1/users/u_bob") == 1  # a failed lookup is cached too


def test_messages_sent_includes_my_private_messages(cli: Harness) -> None:
    _seed_conversation(cli)
    result = cli("messages", "--sent")
    assert cli.fake.polls()[-1].url.params["include"] == "sent"
    assert "hi bob" in result.out


def test_messages_follows_pages(cli: Harness) -> None:
    _seed_conversation(cli)
    result = cli("messages", "--sent", "--limit", "2", "--json")
    polls = cli.fake.polls()
    assert [r.url.params.get("timestamp") for r in polls] == [None, "1700000001000"]
    assert all(r.url.params["limit"] == "2" for r in polls)
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [row["message"] for row in rows] == ["hi alice", "hi bob", "hello\nteam"]


def test_messages_since_accepts_ms_and_iso(cli: Harness) -> None:
    cli.sign_in("alice")
    cli("messages", "--since", "1700000000500")
    assert cli.fake.requests[-1].url.params["timestamp"] == "1700000000500"
    cli("messages", "--since", "2024-01-02T03:04:05+00:00")
    assert cli.fake.requests[-1].url.params["timestamp"] == "1704164645000"
    assert cli("messages", "--since", "yesterday").code == Exit.USAGE


def test_no_messages(cli: Harness) -> None:
    cli.sign_in("alice")
    result = cli("messages")
    assert (result.code, result.out) == (Exit.OK, "")
    assert "(no messages)" in result.err


# -- watching -----------------------------------------------------------------------------------


def test_watch_long_polls_from_now_and_follows_next_timestamp(cli: Harness) -> None:
    _seed_conversation(cli)
    result = cli("watch", "--max-messages", "2")
    assert result.code == Exit.OK
    (poll,) = cli.fake.polls()
    assert dict(poll.url.params) == {
        "timestamp": "1600000000000",
        "include": "sent,events",
        "wait": "25",
    }
    lines = result.out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("private  bob  alice  hi alice")
    assert lines[1].endswith("private  alice  bob  hi bob")


def test_watch_backs_off_and_resumes_from_the_last_position(cli: Harness) -> None:
    _seed_conversation(cli)
    down = httpx.ConnectError("Connection refused")
    cli.fake.faults += [
        httpx.Response(
            200, json={"messages": [], "nextTimestamp": "1700000000500", "hasMore": False}
        ),
        down,
        down,
        _error(503, "unavailable", "storage down", **{"Retry-After": "1"}),
        down,
    ]
    result = cli("watch", "--since", "1700000000000", "--max-messages", "1", "--json")
    assert result.code == Exit.OK
    assert json.loads(result.out)["message"] == "hi bob"
    polls = [r.url.params["timestamp"] for r in cli.fake.requests]
    assert polls == ["1700000000000"] + ["1700000000500"] * 5
    assert cli.sleeps == [1.0, 1.0, 2.0, 4.0, 8.0]  # 1.0 first: an instant empty answer
    assert "watch: cannot reach server at http://fake.parley (connection refused);" in result.err
    assert "retrying in 4 s" in result.err
    assert "watch: reconnected" in result.err


def test_watch_stops_after_max_seconds(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.faults += [httpx.ConnectError("refused")] * 10
    result = cli("watch", "--max-seconds", "5")
    assert result.code == Exit.OK
    assert sum(cli.sleeps) == 5.0
    assert [r.url.params["wait"] for r in cli.fake.requests] == ["5", "4", "2"]


def test_watch_gives_up_on_client_errors(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.faults.append(_error(401, "unauthenticated", "unknown token"))
    result = cli("watch")
    assert result.code == Exit.UNAUTHORIZED


def test_ctrl_c_ends_watch_cleanly(cli: Harness) -> None:
    cli.sign_in("alice")
    cli.fake.faults.append(KeyboardInterrupt())
    assert cli("watch").code == Exit.OK
    cli.fake.faults.append(KeyboardInterrupt())
    assert cli("messages").code == Exit.INTERRUPTED


# -- error reporting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "code", "text"),
    [
        (_error(400, "invalid_input", "message is empty"), Exit.BAD_REQUEST, "bad input:"),
        (_error(403, "forbidden", "acting as another user"), Exit.FORBIDDEN, "forbidden:"),
        (_error(413, "payload_too_large", "body too big"), Exit.TOO_LARGE, "too large:"),
        (
            _error(429, "rate_limited", "slow down", **{"Retry-After": "3"}),
            Exit.RATE_LIMITED,
            "rate limited: slow down [rate_limited]; retry after 3 s",
        ),
        (
            _error(503, "unavailable", "db down", **{"Retry-After": "2"}),
            Exit.UNAVAILABLE,
            "server unavailable: db down [unavailable]; retry after 2 s",
        ),
        (httpx.Response(500, text="oops"), Exit.FAILURE, "server error 500:"),
        (httpx.Response(200, json={"nope": 1}), Exit.FAILURE, "unexpected answer"),
    ],
)
def test_error_statuses_map_to_messages_and_exit_codes(
    cli: Harness, response: httpx.Response, code: Exit, text: str
) -> None:
    cli.sign_in("alice")
    cli.fake.faults.append(response)
    result = cli("user", "u_alice")
    assert result.code == code
    assert text in result.err
    assert result.err.count("\n") == 1


def test_exit_codes_are_distinct() -> None:
    assert len({int(code) for code in Exit}) == len(Exit)


def test_unreachable_server(cli: Harness) -> None:
    cli.sign_in("alice")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    result = cli("user", "u_bob", transport=httpx.MockTransport(refuse))
    assert result.code == Exit.UNREACHABLE
    assert result.err == f"error: cannot reach server at {SERVER} (connection refused)\n"


def test_broken_config_is_reported(cli: Harness) -> None:
    cli.config_path.write_text("{")
    result = cli("whoami")
    assert result.code == Exit.CONFIG
    assert "is not valid JSON" in result.err


def test_help_and_usage_errors_return_codes(cli: Harness) -> None:
    assert cli("--help").code == 0
    assert cli("frobnicate").code == Exit.USAGE
    assert cli("messages", "--limit", "0").code == Exit.USAGE


def test_main_is_the_entry_point() -> None:
    from parley.client import main

    entry: Callable[[list[str] | None], int] = main
    assert entry(["--help"]) == 0


# -- edits, deletes, events ---------------------------------------------------------------------


def test_edit_and_delete_own_messages(cli: Harness) -> None:
    _seed_conversation(cli)
    mine = next(m for m in cli.fake.messages if m["senderId"] == "u_alice")
    result = cli("edit", mine["messageId"], "hi", "bob!")
    assert result.code == Exit.OK and result.out.strip() == f"edited {mine['messageId']}"
    (edit,) = [r for r in cli.fake.requests if r.url.params.get("op") == "edit"]
    assert json.loads(edit.content) == {"message": "hi bob!"}
    lines = cli("messages", "--sent").out.splitlines()
    assert any(line.endswith("hi bob! (edited)") for line in lines)
    result = cli("delete", mine["messageId"])
    assert result.code == Exit.OK and result.out.strip() == f"deleted {mine['messageId']}"
    lines = cli("messages", "--sent").out.splitlines()
    assert any(line.endswith("(deleted)") for line in lines)
    theirs = next(m for m in cli.fake.messages if m["senderId"] == "u_bob")
    result = cli("delete", theirs["messageId"])
    assert result.code != Exit.OK and "only its sender" in result.err


def test_watch_shows_change_events(cli: Harness) -> None:
    _seed_conversation(cli)
    mine = next(m for m in cli.fake.messages if m["senderId"] == "u_alice")
    cli("edit", mine["messageId"], "hi again")
    result = cli("watch", "--since", "1700000002500", "--max-seconds", "1")
    lines = result.out.splitlines()
    assert any(
        "event  message_edited" in line and f"messageId={mine['messageId']}" in line
        for line in lines
    ), lines
    result = cli("watch", "--since", "1700000002500", "--max-seconds", "1", "--json")
    events = [json.loads(line) for line in result.out.splitlines()]
    assert [e["type"] for e in events if "eventId" in e] == ["message_edited"]
