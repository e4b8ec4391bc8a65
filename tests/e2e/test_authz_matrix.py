"""The authorization matrix, generated from the route table.

Every route x {no token, malformed token, forged token, another user's token, own token}
answers as SPEC §4 says: 401 for the first three; for the route's owner a 2xx; for another
user 403 on routes that act for one user or one group (``self``, ``member``, ``sender``) and
2xx on routes any signed-in user may call (``token``); public routes answer 2xx to everyone.
Each route has one request (``GOOD``) that succeeds for its owner; a route added to
``ROUTES`` without one fails here. No answer to another user carries the owner's messages,
groups, blocks or group details.

The helpers here (a world of two users and a group, raw ASGI calls that also work for
never-ending streams) are shared with ``test_fuzz_statuses.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from parley.app import Parley, build
from parley.http.api import ROUTES, RouteSpec
from parley.http.server import ParleyApp, create_app
from parley.settings import Settings
from parley.storage.base import Storage
from parley.storage.sqlite import SqliteStorage

SECRET_PRIVATE = "private words for me only"
SECRET_GROUP = "words for my group only"


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def asgi_call(
    app: ParleyApp,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    client: tuple[str, int] = ("127.0.0.1", 50000),
    stall: bool = False,
) -> Result:
    """One request straight into the ASGI app. A streamed answer (Server-Sent Events) is
    cut after its first chunk by a client disconnect, as a browser closing the page would.
    With ``stall`` the body is sent as a first part that is never followed by the rest."""
    path, _, query = url.partition("?")
    raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
    ]
    if body:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw_headers,
        "client": client,
        "server": ("parley.test", 80),
        "root_path": "",
    }
    sent_request = False
    done = asyncio.Event()
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": body, "more_body": stall}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False) or chunks[-1]:
                done.set()  # a whole answer, or a stream's first chunk: enough

    async with asyncio.timeout(10):
        await app(scope, receive, send)
    headers_out = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    return Result(start["status"], headers_out, b"".join(chunks))


@dataclass
class World:
    """A Parley app with two users and a group: ``me`` owns everything, ``other`` is a
    stranger to it. Setup goes through the services, so no request counts toward limits."""

    parley: Parley
    app: ParleyApp
    auth: str
    me: str = ""
    other: str = ""
    group: str = ""
    my_message: str = ""  # a private message from me to other
    tokens: dict[str, str] = field(default_factory=dict)
    my_token_id: str = "t_none"
    media: str = ""  # a file ``me`` uploaded
    addresses: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    @property
    def token_mode(self) -> bool:
        return self.auth == "token"

    def headers(self, identity: str) -> dict[str, str]:
        """Authorization for ``me``, ``other``, ``none``, ``malformed`` or ``forged``."""
        if not self.token_mode or identity == "none":
            return {}
        if identity == "malformed":
            return {"Authorization": "Bearer not-a-token"}
        if identity == "forged":  # the right shape, the owner's id, a made-up secret
            return {"Authorization": f"Bearer {self.me}.{'A' * 43}"}
        return {"Authorization": f"Bearer {self.tokens[identity]}"}

    async def call(
        self,
        method: str,
        url: str,
        identity: str = "me",
        json_body: Any = None,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        fresh_address: bool = False,
        stall: bool = False,
    ) -> Result:
        if json_body is not None:
            body = json.dumps(json_body).encode()
        client = ("127.0.0.1", 50000)
        if fresh_address:  # each its own client address (rate limits are per address)
            n = next(self.addresses)
            client = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 50000)
        all_headers = {**self.headers(identity), **(headers or {})}
        return await asgi_call(self.app, method, url, all_headers, body, client, stall)

    async def populate(self) -> None:
        me = await self.parley.users.create("me")
        other = await self.parley.users.create("other")
        self.me, self.other = me.user.id, other.user.id
        if me.token and other.token:
            self.tokens = {"me": me.token, "other": other.token}
            (mine,) = await self.parley.storage.user_tokens(self.me)
            self.my_token_id = mine.id
            await self.parley.accounts.set_password(self.me, self.me, PASSWORD, None, "-")
        actor = self.me if self.token_mode else None
        group = await self.parley.groups.create(actor, "mine")
        self.group = group.id
        if not self.token_mode:
            await self.parley.groups.add(None, self.group, self.me)
        await self.parley.messages.send(
            self.other if self.token_mode else None, "private", self.other, self.me, SECRET_PRIVATE
        )
        await self.parley.messages.send(actor, "group", self.me, self.group, SECRET_GROUP)
        mine = await self.parley.messages.send(actor, "private", self.me, self.other, "hi other")
        self.my_message = mine.id
        assert self.parley.media is not None

        async def chunks() -> AsyncIterator[bytes]:
            yield SECRET_PRIVATE.encode()

        uploaded = await self.parley.media.upload(actor, "text/plain", None, chunks())
        self.media = uploaded.id


@asynccontextmanager
async def world(
    auth: str,
    storage: Storage,
    *,
    populate: bool = True,
    request_timeout: float | None = None,
    **env: str,
) -> AsyncIterator[World]:
    # uploads go beside the SQLite file, or into a folder of this world's own
    db_path = getattr(storage, "path", None)
    scratch = None if isinstance(db_path, Path) else tempfile.mkdtemp(prefix="parley-world-")
    env.setdefault(
        "PARLEY_DATA_DIR", str(db_path.parent) if isinstance(db_path, Path) else str(scratch)
    )
    settings = Settings.from_env({"PARLEY_AUTH": auth, "PARLEY_RATE_LIMITS": "off", **env})
    if request_timeout is not None:
        settings = dataclasses.replace(settings, request_timeout=request_timeout)
    parley = build(settings, storage)
    await parley.start()
    try:
        w = World(parley, create_app(parley), auth)
        if populate:
            await w.populate()
        yield w
    finally:
        await parley.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


# One request per route that succeeds for the owner of the world: (method, url, body).
Request = tuple[str, str, Any]
GOOD: dict[str, Callable[[World], Request]] = {
    "create_user": lambda w: ("POST", "/v1/users/create", {"username": "new"}),
    "user_op": lambda w: ("POST", f"/v1/users/{w.me}?op=block", {"blockedUserId": w.other}),
    "get_user": lambda w: ("GET", f"/v1/users/{w.me}", None),
    "user_groups": lambda w: ("GET", f"/v1/users/{w.me}/groups", None),
    "user_blocked": lambda w: ("GET", f"/v1/users/{w.me}/blocked", None),
    "create_group": lambda w: ("POST", "/v1/groups/create", {"groupName": "new"}),
    "group_op": lambda w: ("POST", f"/v1/groups/{w.group}?op=add", {"userId": w.other}),
    "get_group": lambda w: ("GET", f"/v1/groups/{w.group}", None),
    "send_message": lambda w: (
        "POST",
        "/v1/messages/send?type=private",
        {"senderId": w.me, "receiverId": w.other, "message": "hello"},
    ),
    "get_messages": lambda w: ("GET", f"/v1/messages/{w.me}?include=sent", None),
    "message_op": lambda w: ("POST", f"/v1/messages/{w.my_message}?op=edit", {"message": "new"}),
    "typing": lambda w: ("POST", f"/v1/users/{w.me}/typing", {"conversationId": w.group}),
    "stream_ticket": lambda w: ("POST", f"/v1/messages/{w.me}/ticket", None),
    "stream_messages": lambda w: ("GET", f"/v1/messages/{w.me}/stream?timestamp=0", None),
    "delete_user": lambda w: ("DELETE", f"/v1/users/{w.me}", {"password": PASSWORD}),
    "create_token": lambda w: ("POST", f"/v1/users/{w.me}/tokens", {"deviceName": "phone"}),
    "list_tokens": lambda w: ("GET", f"/v1/users/{w.me}/tokens", None),
    "revoke_token": lambda w: ("DELETE", f"/v1/users/{w.me}/tokens/{w.my_token_id}", None),
    "set_password": lambda w: (
        "POST",
        f"/v1/users/{w.me}/password",
        {"password": PASSWORD, "currentPassword": PASSWORD},
    ),
    "sign_in": lambda w: ("POST", "/v1/sessions", {"userId": w.me, "password": PASSWORD}),
    "export_user": lambda w: ("GET", f"/v1/users/{w.me}/export", None),
    "list_conversations": lambda w: ("GET", f"/v1/users/{w.me}/conversations", None),
    "conversation_history": lambda w: (
        "GET",
        f"/v1/users/{w.me}/conversations/{w.other}/messages",
        None,
    ),
    "mark_read": lambda w: (
        "POST",
        f"/v1/users/{w.me}/read",
        {"conversationId": w.other, "timestamp": "1"},
    ),
    "upload_media": lambda w: ("POST", "/v1/media", {"any": "bytes"}),
    "get_media": lambda w: ("GET", f"/v1/media/{w.media}", None),
    "healthz": lambda w: ("GET", "/healthz", None),
    "readyz": lambda w: ("GET", "/readyz", None),
    "metrics": lambda w: ("GET", "/metrics", None),
}

# What each identity gets, by the route's ``auth`` kind (SPEC §4).
EXPECTED: dict[str, dict[str, int]] = {
    "public": {"none": 200, "malformed": 200, "forged": 200, "other": 200, "me": 200},
    "token": {"none": 401, "malformed": 401, "forged": 401, "other": 200, "me": 200},
    "self": {"none": 401, "malformed": 401, "forged": 401, "other": 403, "me": 200},
    "member": {"none": 401, "malformed": 401, "forged": 401, "other": 403, "me": 200},
    "sender": {"none": 401, "malformed": 401, "forged": 401, "other": 403, "me": 200},
    "viewer": {"none": 401, "malformed": 401, "forged": 401, "other": 404, "me": 200},
}
IDENTITIES = ("none", "malformed", "forged", "other", "me")
# Tickets and devices are made from tokens: none in open mode.
OPEN_MODE_STATUS = {name: 400 for name in ("stream_ticket", "create_token", "list_tokens",
                                           "revoke_token", "sign_in")}  # fmt: skip
PASSWORD = "correct horse battery"


def good_request(spec: RouteSpec, w: World) -> Request:
    rule = GOOD.get(spec.name)
    if rule is None:
        pytest.fail(f"route {spec.name} ({spec.method} {spec.path}) has no rule in GOOD")
    return rule(w)


def _route_id(spec: RouteSpec) -> str:
    return spec.name


@pytest.fixture
def sqlite(tmp_path: Path) -> SqliteStorage:
    return SqliteStorage(tmp_path / "parley.db")


def test_every_route_has_a_rule() -> None:
    assert {spec.name for spec in ROUTES} == set(GOOD), "GOOD must list exactly the routes"
    assert {spec.auth for spec in ROUTES} <= set(EXPECTED)


@pytest.mark.parametrize("spec", ROUTES, ids=_route_id)
async def test_token_mode_matrix(spec: RouteSpec, sqlite: SqliteStorage) -> None:
    async with world("token", sqlite) as w:
        method, url, body = good_request(spec, w)
        got = {}
        for identity in IDENTITIES:
            r = await w.call(method, url, identity, body)
            got[identity] = r.status
            if r.status >= 400:
                error = r.json()["error"]
                assert set(error) == {"code", "message"}
                for secret in (SECRET_PRIVATE, SECRET_GROUP, w.group, *w.tokens.values()):
                    assert secret not in r.text, (identity, r.text)
        assert got == EXPECTED[spec.auth], f"{spec.method} {spec.path} ({spec.auth})"


@pytest.mark.parametrize("spec", ROUTES, ids=_route_id)
async def test_open_mode_ignores_authorization(spec: RouteSpec, sqlite: SqliteStorage) -> None:
    """Open mode is the original API: no tokens, any Authorization header is ignored."""
    async with world("none", sqlite) as w:
        method, url, body = good_request(spec, w)
        for garbage in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "x"}):
            r = await w.call(method, url, "none", body, headers=garbage)
            assert r.status == OPEN_MODE_STATUS.get(spec.name, 200), (garbage, r.text)
            if spec.name == "user_op":  # blocking twice is a conflict: undo for the next try
                await w.parley.users.unblock(None, w.me, w.other)
            if spec.name == "group_op":
                await w.parley.groups.remove(None, w.group, w.other)


async def test_tickets_follow_the_same_rules(sqlite: SqliteStorage) -> None:
    """The stream also takes ``?ticket=``; another user's ticket is still another user."""
    async with world("token", sqlite) as w:
        tickets = {}
        for who in ("me", "other"):
            user = w.me if who == "me" else w.other
            r = await w.call("POST", f"/v1/messages/{user}/ticket", who)
            assert r.status == 200
            tickets[who] = r.json()["ticket"]
        url = f"/v1/messages/{w.me}/stream?timestamp=0&ticket="
        assert (await w.call("GET", url + tickets["me"], "none")).status == 200
        assert (await w.call("GET", url + tickets["other"], "none")).status == 403
        forged = tickets["me"].rsplit(".", 1)[0] + ".AAAA"
        assert (await w.call("GET", url + forged, "none")).status == 401
        assert (await w.call("GET", url + "garbage", "none")).status == 401
        # a ticket opens the stream only: not a bearer token for anything else
        r = await w.call("GET", f"/v1/messages/{w.me}?ticket={tickets['me']}", "none")
        assert r.status == 401


async def test_nothing_of_mine_reaches_another_user(sqlite: SqliteStorage) -> None:
    """Another user's view of me: my name, nothing more."""
    async with world("token", sqlite) as w:
        await w.parley.users.block(w.me, w.me, w.other)
        r = await w.call("GET", f"/v1/users/{w.me}", "other")
        assert r.status == 200 and r.json() == {"userId": w.me, "username": "me"}
        for url in (
            f"/v1/messages/{w.me}",
            f"/v1/messages/{w.me}?include=sent",
            f"/v1/messages/{w.me}?timestamp=0&wait=1",
            f"/v1/messages/{w.me}/stream?timestamp=0",
            f"/v1/users/{w.me}/groups",
            f"/v1/users/{w.me}/blocked",
            f"/v1/groups/{w.group}",
        ):
            r = await w.call("GET", url, "other")
            assert r.status == 403, (url, r.status)
            for secret in (SECRET_PRIVATE, SECRET_GROUP, "mine", w.other):
                assert secret not in r.text, (url, r.text)
        # the other user's own views hold nothing of mine either but what I sent it (the
        # private message it sent me shows only with include=sent, as its own)
        r = await w.call("GET", f"/v1/messages/{w.other}", "other")
        assert r.status == 200 and [m["messageId"] for m in r.json()["messages"]] == [w.my_message]
        r = await w.call("GET", f"/v1/messages/{w.other}?include=sent", "other")
        assert [m["message"] for m in r.json()["messages"]] == [SECRET_PRIVATE, "hi other"]
        r = await w.call("GET", f"/v1/users/{w.other}/groups", "other")
        assert r.json()["groups"] == []
        # a non-member cannot post into the group nor read it by sending as me
        r = await w.call(
            "POST",
            "/v1/messages/send?type=group",
            "other",
            {"senderId": w.other, "groupId": w.group, "message": "let me in"},
        )
        assert r.status == 403
        r = await w.call(
            "POST",
            "/v1/messages/send?type=group",
            "other",
            {"senderId": w.me, "groupId": w.group, "message": "as you"},
        )
        assert r.status == 403
        # nor replay my idempotent send by guessing its key
        key = {"Idempotency-Key": "k1"}
        mine = {"senderId": w.me, "receiverId": w.me, "message": "keyed"}
        assert (
            await w.call("POST", "/v1/messages/send?type=private", "me", mine, headers=key)
        ).status == 200
        theirs = {"senderId": w.other, "receiverId": w.other, "message": "other"}
        r = await w.call("POST", "/v1/messages/send?type=private", "other", theirs, headers=key)
        assert r.status == 200 and r.json()["message"] == "other"
