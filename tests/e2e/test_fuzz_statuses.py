"""Every status the OpenAPI document lists for an operation can happen, and is produced here.

For each auth mode, each operation and each documented status there is one request that
gets exactly that status (``PRODUCERS``); a documented status without a producer, or a
producer for a status the document does not list, fails. 429 and 503 are produced for every
``/v1`` route: 429 by a second request from one address under a budget of one, 503 by a
storage that fails, reached through a process whose caches are cold (a restart).

Also here: SQLite that runs out of space, or cannot be written, answers 503 with
Retry-After (never 500), and reads go on.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from parley.errors import Unavailable
from parley.http.api import ROUTES, RouteSpec
from parley.http.openapi import TRANSPORT_STATUSES, document
from parley.storage.base import Storage
from parley.storage.media_port import MediaPort
from parley.storage.memory import MemoryStorage
from parley.storage.sqlite import SqliteStorage
from tests.e2e.test_authz_matrix import GOOD, Result, World, world

PORT = [
    name
    for name, value in {**vars(MediaPort), **vars(Storage)}.items()
    if callable(value) and not name.startswith("_") and name not in ("open", "close")
]


class FaultyStorage(MemoryStorage):
    """The reference adapter, with a switch: while ``failure`` is set, every operation of the
    port raises it (as a database that is down, or a bug, would)."""

    failure: Exception | None = None


def _faulty(name: str) -> Callable[..., Awaitable[Any]]:
    original = getattr(MemoryStorage, name)

    async def method(self: FaultyStorage, *args: Any, **kwargs: Any) -> Any:
        if self.failure is not None:
            raise self.failure
        return await original(self, *args, **kwargs)

    return method


for _name in PORT:
    setattr(FaultyStorage, _name, _faulty(_name))

Producer = Callable[[World], Awaitable[Result]]
BIG = b'{"x": "' + b"x" * 70_000 + b'"}'


def _post(url: str, body: dict[str, str], identity: str = "me") -> Producer:
    async def run(w: World) -> Result:
        fields = {k: v.format(w=w) for k, v in body.items()}
        return await w.call("POST", url.format(w=w), identity, fields)

    return run


def _get(url: str, identity: str = "me") -> Producer:
    async def run(w: World) -> Result:
        return await w.call("GET", url.format(w=w), identity)

    return run


def _raw(method: str, url: str, body: bytes, identity: str = "me") -> Producer:
    async def run(w: World) -> Result:
        return await w.call(method, url.format(w=w), identity, body=body)

    return run


def _raw_with(url: str, body: bytes, headers: dict[str, str]) -> Producer:
    """A POST with headers of its own (a declared Content-Length goes before the real one,
    so it is the one read)."""

    async def run(w: World) -> Result:
        return await w.call("POST", url.format(w=w), "me", body=body, headers=headers)

    return run


def _ranged(url: str, wanted: str) -> Producer:
    async def run(w: World) -> Result:
        return await w.call("GET", url.format(w=w), "me", headers={"Range": wanted})

    return run


def _wrong_password(method: str, url: str, body: dict[str, str]) -> Producer:
    """A password is set, then a call gives a wrong one (401 bad_credentials, any mode)."""

    async def run(w: World) -> Result:
        me = url.format(w=w)
        await w.call("POST", f"/v1/users/{w.me}/password", "me", {"password": "the right one"})
        raw = json.dumps(body).encode()
        return await w.call(method, me, "me", body=raw)

    return run


def _stalled(url: str, identity: str = "me", method: str = "POST") -> Producer:
    """Head and the first bytes of a body, then nothing more (a slow or stuck client)."""

    async def run(w: World) -> Result:
        return await w.call(method, url.format(w=w), identity, body=b'{"user', stall=True)

    return run


def _send(kind: str, fields: dict[str, str], identity: str = "me") -> Producer:
    async def run(w: World) -> Result:
        body = {k: v.format(w=w) for k, v in fields.items()}
        return await w.call("POST", f"/v1/messages/send?type={kind}", identity, body)

    return run


def _blocked_send(w: World) -> Awaitable[Result]:
    async def run() -> Result:
        actor = w.me if w.token_mode else None
        await w.parley.users.block(actor, w.me, w.other)
        body = {"senderId": w.other, "receiverId": w.me, "message": "hi"}
        return await w.call("POST", "/v1/messages/send?type=private", "other", body)

    return run()


def _edit_deleted(w: World) -> Awaitable[Result]:
    async def run() -> Result:
        url = f"/v1/messages/{w.my_message}"
        await w.call("POST", f"{url}?op=delete", "me")
        return await w.call("POST", f"{url}?op=edit", "me", {"message": "back"})

    return run()


# (route, status) -> a request that gets it; "T:" / "O:" prefixes: in that mode only.
ANY = ""
PRODUCERS: dict[tuple[str, str, int], Producer] = {
    # a body that does not arrive in time
    ("create_user", ANY, 408): _stalled("/v1/users/create"),
    ("user_op", ANY, 408): _stalled("/v1/users/{w.me}?op=block"),
    ("create_group", ANY, 408): _stalled("/v1/groups/create"),
    ("group_op", ANY, 408): _stalled("/v1/groups/{w.group}?op=add"),
    ("send_message", ANY, 408): _stalled("/v1/messages/send?type=private"),
    # users
    ("create_user", ANY, 400): _raw("POST", "/v1/users/create", b"{"),
    ("create_user", ANY, 413): _raw("POST", "/v1/users/create", BIG),
    ("user_op", ANY, 400): _post("/v1/users/{w.me}?op=smash", {"blockedUserId": "x"}),
    ("user_op", "T", 401): _post("/v1/users/{w.me}?op=block", {"blockedUserId": "x"}, "none"),
    ("user_op", "T", 403): _post("/v1/users/{w.me}?op=block", {"blockedUserId": "{w.me}"}, "other"),
    ("user_op", ANY, 404): _post("/v1/users/{w.me}?op=block", {"blockedUserId": "u_nobody"}),
    ("user_op", ANY, 409): _post("/v1/users/{w.me}?op=unblock", {"blockedUserId": "{w.other}"}),
    ("user_op", ANY, 413): _raw("POST", "/v1/users/{w.me}?op=block", BIG),
    ("get_user", "T", 401): _get("/v1/users/{w.me}", "none"),
    ("get_user", ANY, 404): _get("/v1/users/u_nobody"),
    ("user_groups", "T", 401): _get("/v1/users/{w.me}/groups", "none"),
    ("user_groups", "T", 403): _get("/v1/users/{w.me}/groups", "other"),
    ("user_groups", "O", 404): _get("/v1/users/u_nobody/groups"),
    ("user_blocked", "T", 401): _get("/v1/users/{w.me}/blocked", "none"),
    ("user_blocked", "T", 403): _get("/v1/users/{w.me}/blocked", "other"),
    ("user_blocked", "O", 404): _get("/v1/users/u_nobody/blocked"),
    # groups
    ("create_group", ANY, 400): _post("/v1/groups/create", {"groupName": ""}),
    ("create_group", "T", 401): _post("/v1/groups/create", {"groupName": "g"}, "none"),
    ("create_group", ANY, 413): _raw("POST", "/v1/groups/create", BIG),
    ("group_op", ANY, 400): _post("/v1/groups/{w.group}?op=kick", {"userId": "{w.other}"}),
    ("group_op", "T", 401): _post("/v1/groups/{w.group}?op=add", {"userId": "x"}, "none"),
    ("group_op", "T", 403): _post("/v1/groups/{w.group}?op=add", {"userId": "{w.other}"}, "other"),
    ("group_op", ANY, 404): _post("/v1/groups/g_nothing?op=add", {"userId": "{w.other}"}),
    ("group_op", ANY, 409): _post("/v1/groups/{w.group}?op=remove", {"userId": "{w.other}"}),
    ("group_op", ANY, 413): _raw("POST", "/v1/groups/{w.group}?op=add", BIG),
    ("get_group", "T", 401): _get("/v1/groups/{w.group}", "none"),
    ("get_group", "T", 403): _get("/v1/groups/{w.group}", "other"),
    ("get_group", ANY, 404): _get("/v1/groups/g_nothing"),
    # messages
    ("send_message", ANY, 400): _send("private", {"senderId": "{w.me}", "message": "x"}),
    ("send_message", "T", 401): _send(
        "private", {"senderId": "{w.me}", "receiverId": "{w.me}", "message": "x"}, "none"
    ),
    ("send_message", ANY, 403): _blocked_send,
    ("send_message", ANY, 404): _send(
        "private", {"senderId": "{w.me}", "receiverId": "u_nobody", "message": "x"}
    ),
    ("send_message", ANY, 413): _raw("POST", "/v1/messages/send?type=private", BIG),
    ("message_op", ANY, 400): _post("/v1/messages/{w.my_message}?op=paint", {}),
    ("message_op", "T", 401): _post("/v1/messages/{w.my_message}?op=delete", {}, "none"),
    ("message_op", ANY, 403): _post(
        "/v1/messages/{w.my_message}?op=edit", {"message": "x", "senderId": "{w.other}"}
    ),
    ("message_op", ANY, 404): _post("/v1/messages/m_nothing?op=delete", {}),
    ("message_op", ANY, 408): _stalled("/v1/messages/{w.my_message}?op=edit"),
    ("message_op", ANY, 409): _edit_deleted,
    ("message_op", ANY, 413): _raw("POST", "/v1/messages/{w.my_message}?op=edit", BIG),
    ("typing", ANY, 400): _post("/v1/users/{w.me}/typing", {}),
    ("typing", "T", 401): _post("/v1/users/{w.me}/typing", {"conversationId": "{w.group}"}, "none"),
    ("typing", "T", 403): _post(
        "/v1/users/{w.me}/typing", {"conversationId": "{w.group}"}, "other"
    ),
    ("typing", ANY, 404): _post("/v1/users/{w.me}/typing", {"conversationId": "g_nothing"}),
    ("typing", ANY, 408): _stalled("/v1/users/{w.me}/typing"),
    ("typing", ANY, 413): _raw("POST", "/v1/users/{w.me}/typing", BIG),
    ("get_messages", ANY, 400): _get("/v1/messages/{w.me}?timestamp=yesterday"),
    ("get_messages", "T", 401): _get("/v1/messages/{w.me}", "none"),
    ("get_messages", "T", 403): _get("/v1/messages/{w.me}", "other"),
    ("get_messages", "O", 404): _get("/v1/messages/u_nobody"),
    ("stream_ticket", "O", 400): _raw("POST", "/v1/messages/{w.me}/ticket", b""),
    ("stream_ticket", "T", 401): _raw("POST", "/v1/messages/{w.me}/ticket", b"", "none"),
    ("stream_ticket", "T", 403): _raw("POST", "/v1/messages/{w.me}/ticket", b"", "other"),
    ("stream_ticket", "O", 404): _raw("POST", "/v1/messages/u_nobody/ticket", b""),
    ("stream_messages", ANY, 400): _get("/v1/messages/{w.me}/stream?timestamp=-1"),
    ("stream_messages", "T", 401): _get("/v1/messages/{w.me}/stream", "none"),
    ("stream_messages", "T", 403): _get("/v1/messages/{w.me}/stream", "other"),
    ("stream_messages", "O", 404): _get("/v1/messages/u_nobody/stream"),
    # devices, passwords, deletion, export
    ("delete_user", ANY, 400): _raw("DELETE", "/v1/users/{w.me}", b"{"),
    ("delete_user", "T", 401): _raw("DELETE", "/v1/users/{w.me}", b"", "none"),
    ("delete_user", "O", 401): _wrong_password(
        "DELETE", "/v1/users/{w.me}", {"password": "wrong!!!"}
    ),
    ("delete_user", "T", 403): _raw("DELETE", "/v1/users/{w.me}", b"", "other"),
    ("delete_user", "O", 404): _raw("DELETE", "/v1/users/u_nobody", b""),
    ("delete_user", ANY, 408): _stalled("/v1/users/{w.me}", method="DELETE"),
    ("delete_user", ANY, 413): _raw("DELETE", "/v1/users/{w.me}", BIG),
    ("create_token", ANY, 400): _post("/v1/users/{w.me}/tokens", {"deviceName": " "}),
    ("create_token", "T", 401): _post("/v1/users/{w.me}/tokens", {}, "none"),
    ("create_token", "T", 403): _post("/v1/users/{w.me}/tokens", {}, "other"),
    ("create_token", ANY, 408): _stalled("/v1/users/{w.me}/tokens"),
    ("create_token", ANY, 413): _raw("POST", "/v1/users/{w.me}/tokens", BIG),
    ("list_tokens", "O", 400): _get("/v1/users/{w.me}/tokens"),
    ("create_token", "O", 404): _post("/v1/users/u_nobody/tokens", {}),
    ("list_tokens", "O", 404): _get("/v1/users/u_nobody/tokens"),
    ("list_tokens", "T", 401): _get("/v1/users/{w.me}/tokens", "none"),
    ("list_tokens", "T", 403): _get("/v1/users/{w.me}/tokens", "other"),
    ("revoke_token", "O", 400): _raw("DELETE", "/v1/users/{w.me}/tokens/t_x", b""),
    ("revoke_token", "T", 401): _raw("DELETE", "/v1/users/{w.me}/tokens/t_x", b"", "none"),
    ("revoke_token", "T", 403): _raw("DELETE", "/v1/users/{w.me}/tokens/t_x", b"", "other"),
    ("revoke_token", "O", 404): _raw("DELETE", "/v1/users/u_nobody/tokens/t_x", b""),
    ("revoke_token", "T", 404): _raw("DELETE", "/v1/users/{w.me}/tokens/t_x", b""),
    ("set_password", ANY, 400): _post("/v1/users/{w.me}/password", {"password": "short"}),
    ("set_password", "O", 401): _wrong_password(
        "POST",
        "/v1/users/{w.me}/password",
        {"password": "long enough", "currentPassword": "x!!!!!!!"},
    ),
    ("set_password", "T", 401): _post(
        "/v1/users/{w.me}/password", {"password": "long enough", "currentPassword": "wrong!!!"}
    ),
    ("set_password", "T", 403): _post("/v1/users/{w.me}/password", {"password": "x"}, "other"),
    ("set_password", "O", 404): _post("/v1/users/u_nobody/password", {"password": "long enough"}),
    ("set_password", ANY, 408): _stalled("/v1/users/{w.me}/password"),
    ("set_password", ANY, 413): _raw("POST", "/v1/users/{w.me}/password", BIG),
    ("sign_in", ANY, 400): _post("/v1/sessions", {"userId": "{w.me}", "password": ""}),
    ("sign_in", "T", 401): _post("/v1/sessions", {"userId": "{w.me}", "password": "wrong!!!"}),
    ("sign_in", "O", 404): _post("/v1/sessions", {"userId": "u_nobody", "password": "long enough"}),
    ("sign_in", ANY, 408): _stalled("/v1/sessions"),
    ("sign_in", ANY, 413): _raw("POST", "/v1/sessions", BIG),
    ("export_user", "T", 401): _get("/v1/users/{w.me}/export", "none"),
    ("export_user", "T", 403): _get("/v1/users/{w.me}/export", "other"),
    ("export_user", "O", 404): _get("/v1/users/u_nobody/export"),
    # conversations
    ("list_conversations", ANY, 400): _get("/v1/users/{w.me}/conversations?limit=0"),
    ("list_conversations", "T", 401): _get("/v1/users/{w.me}/conversations", "none"),
    ("list_conversations", "T", 403): _get("/v1/users/{w.me}/conversations", "other"),
    ("list_conversations", "O", 404): _get("/v1/users/u_nobody/conversations"),
    ("conversation_history", ANY, 400): _get(
        "/v1/users/{w.me}/conversations/{w.other}/messages?before=x"
    ),
    ("conversation_history", "T", 401): _get(
        "/v1/users/{w.me}/conversations/{w.other}/messages", "none"
    ),
    ("conversation_history", ANY, 403): _get(
        "/v1/users/{w.other}/conversations/{w.group}/messages", "other"
    ),
    ("conversation_history", ANY, 404): _get("/v1/users/{w.me}/conversations/u_nobody/messages"),
    ("mark_read", ANY, 400): _post(
        "/v1/users/{w.me}/read", {"conversationId": "{w.other}", "timestamp": "x"}
    ),
    ("mark_read", "T", 401): _post(
        "/v1/users/{w.me}/read", {"conversationId": "{w.other}", "timestamp": "1"}, "none"
    ),
    ("mark_read", ANY, 403): _post(
        "/v1/users/{w.other}/read", {"conversationId": "{w.group}", "timestamp": "1"}, "other"
    ),
    ("mark_read", ANY, 404): _post(
        "/v1/users/{w.me}/read", {"conversationId": "u_nobody", "timestamp": "1"}
    ),
    ("mark_read", ANY, 408): _stalled("/v1/users/{w.me}/read"),
    ("mark_read", ANY, 413): _raw("POST", "/v1/users/{w.me}/read", BIG),
    # attachments
    ("upload_media", ANY, 400): _raw_with("/v1/media", b"x", {"Content-Type": "no type"}),
    ("upload_media", "T", 401): _raw("POST", "/v1/media", b"x", "none"),
    ("upload_media", ANY, 408): _stalled("/v1/media"),
    ("upload_media", ANY, 413): _raw_with("/v1/media", b"x", {"Content-Length": "10" * 9}),
    ("get_media", "T", 401): _get("/v1/media/{w.media}", "none"),
    ("get_media", ANY, 404): _get("/v1/media/f_nothing"),
    ("get_media", ANY, 416): _ranged("/v1/media/{w.media}", "bytes=100000-"),
}
GENERIC = (429, 503)  # produced for every /v1 route, below; 503 also for readyz


def documented(auth: str) -> list[tuple[RouteSpec, int]]:
    """Documented error statuses that Parley itself answers. 414 and 431 come from the HTTP
    server before any route runs (produced on a live server in test_openapi.py)."""
    doc = document(token_mode=auth == "token")
    found = []
    for spec in ROUTES:
        responses = doc["paths"][spec.path][spec.method.lower()]["responses"]
        found += [
            (spec, int(status))
            for status in responses
            if int(status) >= 400 and int(status) not in TRANSPORT_STATUSES
        ]
    return found


def _cases() -> list[Any]:
    return [
        pytest.param(auth, spec, status, id=f"{auth}-{spec.name}-{status}")
        for auth in ("token", "none")
        for spec, status in documented(auth)
    ]


def _producer(auth: str, spec: RouteSpec, status: int) -> Producer | None:
    mode = "T" if auth == "token" else "O"
    return PRODUCERS.get((spec.name, mode, status)) or PRODUCERS.get((spec.name, ANY, status))


@pytest.mark.parametrize(("auth", "spec", "status"), _cases())
async def test_documented_status_happens(
    auth: str, spec: RouteSpec, status: int, tmp_path: Path
) -> None:
    if status in GENERIC:
        if status == 429:
            await _rate_limited(auth, spec)
        else:
            await _unavailable(auth, spec)
        return
    produce = _producer(auth, spec, status)
    assert produce is not None, f"{spec.name} documents {status} in {auth} mode; nothing makes it"
    async with world(auth, SqliteStorage(tmp_path / "parley.db"), request_timeout=0.2) as w:
        r = await produce(w)
    assert r.status == status, r.text
    assert set(r.json()["error"]) == {"code", "message"}


@pytest.mark.parametrize("auth", ["token", "none"])
def test_only_documented_statuses_are_produced(auth: str) -> None:
    """Every producer's status is in the document: an undocumented status fails here."""
    listed = {(spec.name, status) for spec, status in documented(auth)}
    mode = "T" if auth == "token" else "O"
    made = {(name, status) for name, m, status in PRODUCERS if m in (mode, ANY)}
    assert made <= listed, sorted(made - listed)
    for spec in ROUTES:  # every /v1 route is rate limited and needs storage
        if spec.path.startswith("/v1/"):
            assert {(spec.name, 429), (spec.name, 503)} <= listed, spec.name


async def _rate_limited(auth: str, spec: RouteSpec) -> None:
    assert spec.path.startswith("/v1/"), f"{spec.name}: only /v1 routes are rate limited"
    env = {"PARLEY_RATE_LIMITS": "on", "PARLEY_RATE_ADDRESS_PER_MINUTE": "1"}
    async with world(auth, MemoryStorage(), **env) as w:
        method, url, body = GOOD[spec.name](w)
        await w.call(method, url, "me", body)  # one request from this address: the budget
        r = await w.call(method, url, "me", body)
    assert r.status == 429 and r.json()["error"]["code"] == "rate_limited", r.text
    assert int(r.headers["retry-after"]) >= 1


async def _unavailable(auth: str, spec: RouteSpec) -> None:
    storage = FaultyStorage()
    async with world(auth, storage) as w:
        populated = w
        method, url, body = GOOD[spec.name](w)
    # A restarted process: the same storage, nothing cached; the storage is now down.
    async with world(auth, storage, populate=False) as cold:
        cold.me, cold.other, cold.group = populated.me, populated.other, populated.group
        cold.tokens = populated.tokens
        storage.failure = Unavailable("test: storage down")
        r = await cold.call(method, url, "me", body)
        storage.failure = None
    assert r.status == 503, r.text
    assert int(r.headers["retry-after"]) >= 1


class TinySqlite(SqliteStorage):
    """SQLite whose file may not grow past ``max_pages`` pages: a full disk, on demand."""

    max_pages = 0

    def _connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        conn = super()._connect(readonly=readonly)
        if self.max_pages:
            conn.execute(f"PRAGMA max_page_count={self.max_pages}")
        return conn


@pytest.mark.parametrize("auth", ["token", "none"])
async def test_sqlite_disk_full_is_503(auth: str, tmp_path: Path) -> None:
    storage = TinySqlite(tmp_path / "parley.db")
    async with world(auth, storage) as w:
        pages = w.parley.storage._read().execute("PRAGMA page_count").fetchone()[0]
    storage.max_pages = pages + 2
    async with world(auth, storage, populate=False) as full:
        full.me, full.other, full.group, full.tokens = w.me, w.other, w.group, w.tokens
        statuses = []
        for n in range(400):  # fills two pages quickly; bounded either way
            body = {"senderId": w.me, "receiverId": w.me, "message": f"{n} " + "x" * 4000}
            r = await full.call("POST", "/v1/messages/send?type=private", "me", body)
            statuses.append(r.status)
            if r.status != 200:
                break
        assert statuses[-1] == 503, statuses
        assert r.json()["error"]["code"] == "unavailable"
        assert int(r.headers["retry-after"]) >= 1
        r = await full.call("POST", "/v1/users/create", "none", {"username": "late"})
        assert r.status in (200, 503), r.text  # users are small: may still fit
        r = await full.call("GET", f"/v1/messages/{w.me}", "me")
        assert r.status == 200  # reads go on


class ReadOnlySqlite(SqliteStorage):
    """SQLite whose connections refuse writes: an unwritable database, on demand."""

    read_only = False

    def _connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        conn = super()._connect(readonly=readonly)
        if self.read_only:
            conn.execute("PRAGMA query_only=1")
        return conn


async def test_sqlite_unwritable_is_503(tmp_path: Path) -> None:
    storage = ReadOnlySqlite(tmp_path / "parley.db")
    async with world("none", storage) as w:
        pass
    storage.read_only = True
    async with world("none", storage, populate=False) as ro:
        writes = [
            ("POST", "/v1/users/create", {"username": "x"}),
            ("POST", "/v1/groups/create", {"groupName": "g"}),
            ("POST", f"/v1/groups/{w.group}?op=add", {"userId": w.other}),
            ("POST", f"/v1/users/{w.me}?op=block", {"blockedUserId": w.other}),
            (
                "POST",
                "/v1/messages/send?type=private",
                {"senderId": w.me, "receiverId": w.other, "message": "x"},
            ),
        ]
        for method, url, body in writes:
            r = await ro.call(method, url, "none", body)
            assert r.status == 503, (url, r.text)
            assert int(r.headers["retry-after"]) >= 1
        r = await ro.call("GET", f"/v1/messages/{w.me}", "none")
        assert r.status == 200 and len(r.json()["messages"]) == 2  # reads go on
