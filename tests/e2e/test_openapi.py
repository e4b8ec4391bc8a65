"""The OpenAPI document states the rules the server enforces, from the same settings.

* Every limit is read from the document that a server built from given settings serves at
  ``/openapi.json`` (default settings and changed ones), and checked twice: against the
  settings, and against the server itself (at the limit: accepted; one past it: 400).
* The document's text rules (not blank, ids, timestamps) agree with the server's checks on a
  corpus of awkward values.
* Every route the server answers is in the document and every operation of the document is
  a route (the route table, the router and the other routes of the application).
* Every operation lists 414 and 431, and a live server answers them.
"""

from __future__ import annotations

import contextlib
import re
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from starlette.routing import Route

from parley.app import build
from parley.domain.rules import check_id, check_message_text, clean_name
from parley.domain.validation import check_text
from parley.errors import InvalidInput
from parley.http.api import ROUTES
from parley.http.openapi import PATH_ID, TOKEN_MODE_ONLY, document
from parley.http.server import ParleyApp, create_app
from parley.settings import Settings
from parley.storage.memory import MemoryStorage
from tests.e2e.server import Server

CHANGED = {
    "PARLEY_MAX_USERNAME": "7",
    "PARLEY_MAX_GROUP_NAME": "9",
    "PARLEY_MAX_MESSAGE": "33",
    "PARLEY_MAX_BODY": "2048",
    "PARLEY_PAGE_MAX": "5",
    "PARLEY_PAGE_DEFAULT": "3",
}
# Routes of the application that are not API operations: the document itself, its page and
# the web chat page. Anything else the application answers must be in the document.
NOT_API = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/assets/{name}"),
    ("GET", "/"),
    ("GET", "/{name:path}"),
}


class Served:
    """A Parley app on memory storage, called in-process, with its served document."""

    def __init__(self, app: ParleyApp, client: httpx.AsyncClient, doc: dict[str, Any]) -> None:
        self.app = app
        self.client = client
        self.doc = doc
        self.auth: dict[str, str] = {}
        self.me = self.other = self.group = ""

    def schema(self, name: str) -> dict[str, Any]:
        schema: dict[str, Any] = self.doc["components"]["schemas"][name]
        return schema

    def param(self, path: str, method: str, name: str) -> dict[str, Any]:
        for p in self.doc["paths"][path][method]["parameters"]:
            if p["name"] == name:
                return dict(p)
        raise KeyError(name)


@contextlib.asynccontextmanager
async def served(env: dict[str, str]) -> AsyncIterator[Served]:
    scratch = tempfile.TemporaryDirectory(prefix="parley-openapi-")  # uploaded files
    settings = Settings.from_env(
        {"PARLEY_RATE_LIMITS": "off", "PARLEY_DATA_DIR": scratch.name, **env}
    )
    parley = build(settings, MemoryStorage())
    await parley.start()
    app = create_app(parley)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://parley.test") as c:
            r = await c.get("/openapi.json")
            assert r.status_code == 200
            s = Served(app, c, r.json())
            me = (await c.post("/v1/users/create", json={"username": "me"})).json()
            s.me = me["userId"]
            s.auth = {"Authorization": f"Bearer {me['token']}"} if "token" in me else {}
            r = await c.post("/v1/users/create", json={"username": "other"})
            s.other = r.json()["userId"]
            r = await c.post("/v1/groups/create", json={"groupName": "g"}, headers=s.auth)
            s.group = r.json()["groupId"]
            yield s
    finally:
        await parley.stop()
        scratch.cleanup()


@pytest.mark.parametrize("env", [{}, CHANGED], ids=["defaults", "changed"])
def test_declared_limits_are_the_settings(env: dict[str, str]) -> None:
    limits = Settings.from_env(env).limits
    doc = document(limits=limits)
    schemas = doc["components"]["schemas"]
    for field in ("username", "userName"):
        rule = schemas["CreateUserIn"]["properties"][field]
        assert (rule["minLength"], rule["maxLength"]) == (1, limits.username_max)
    rule = schemas["CreateGroupIn"]["properties"]["groupName"]
    assert (rule["minLength"], rule["maxLength"]) == (1, limits.group_name_max)
    rule = schemas["SendIn"]["properties"]["message"]
    assert (rule["minLength"], rule["maxLength"]) == (1, limits.message_max)
    check = {p["name"]: p for p in doc["paths"]["/v1/messages/{userId}"]["get"]["parameters"]}
    assert (check["limit"]["schema"]["minimum"], check["limit"]["schema"]["maximum"]) == (
        1,
        limits.page_max,
    )
    assert str(limits.page_default) in check["limit"]["description"]
    body = doc["paths"]["/v1/users/create"]["post"]["requestBody"]["description"]
    assert f"at most {limits.body_max_bytes} bytes" in body


@pytest.mark.parametrize("env", [{}, CHANGED], ids=["defaults", "changed"])
async def test_the_server_enforces_what_its_document_declares(env: dict[str, str]) -> None:
    """Each declared limit, read from the served document: at it accepted, past it 400."""
    async with served(env) as s:
        c, auth = s.client, s.auth
        limit = s.schema("CreateUserIn")["properties"]["username"]["maxLength"]
        for field in ("username", "userName"):
            r = await c.post("/v1/users/create", json={field: "u" * limit})
            assert r.status_code == 200, r.text
            r = await c.post("/v1/users/create", json={field: "u" * (limit + 1)})
            assert r.status_code == 400, r.text
        limit = s.schema("CreateGroupIn")["properties"]["groupName"]["maxLength"]
        r = await c.post("/v1/groups/create", json={"groupName": "g" * limit}, headers=auth)
        assert r.status_code == 200, r.text
        r = await c.post("/v1/groups/create", json={"groupName": "g" * (limit + 1)}, headers=auth)
        assert r.status_code == 400, r.text

        limit = s.schema("SendIn")["properties"]["message"]["maxLength"]
        key_limit = s.param("/v1/messages/send", "post", "Idempotency-Key")["schema"]["maxLength"]
        # The body's key has the header's limit, whether or not a header is sent.
        client_key = s.schema("SendIn")["properties"]["clientMessageId"]["maxLength"]
        assert client_key == key_limit

        async def send(text: str, key: str = "", client_id: str | None = None) -> int:
            body = {"senderId": s.me, "receiverId": s.other, "message": text}
            if client_id is not None:
                body["clientMessageId"] = client_id
            headers = {**auth, "Idempotency-Key": key} if key else auth
            r = await c.post("/v1/messages/send?type=private", json=body, headers=headers)
            return r.status_code

        assert await send("m" * limit) == 200
        assert await send("m" * (limit + 1)) == 400
        assert await send("keyed", key="k" * key_limit) == 200
        assert await send("keyed", key="k" * (key_limit + 1)) == 400
        assert await send("keyed", client_id="c" * client_key) == 200
        assert await send("keyed", client_id="c" * (client_key + 1)) == 400
        assert await send("keyed", key="k", client_id="c" * (client_key + 1)) == 400

        params = {
            p["name"]: p["schema"]
            for p in s.doc["paths"]["/v1/messages/{userId}"]["get"]["parameters"]
        }
        url = f"/v1/messages/{s.me}"
        for name in ("limit", "wait"):
            low, high = params[name]["minimum"], params[name]["maximum"]
            query = {"timestamp": "1"} if name == "wait" else {}
            for value, status in ((low, 200), (high, 200), (low - 1, 400), (high + 1, 400)):
                if name == "wait" and value == high:
                    continue  # a full long-poll: the range end is checked by the next line
                r = await c.get(url, params={**query, name: value}, headers=auth)
                assert r.status_code == status, (name, value, r.text)
        assert params["include"]["enum"] == ["sent", "events", "sent,events", "events,sent"]
        for value in params["include"]["enum"]:
            r = await c.get(url, params={"include": value}, headers=auth)
            assert r.status_code == 200, (value, r.text)
        r = await c.get(url, params={"include": "received"}, headers=auth)
        assert r.status_code == 400
        pattern = params["timestamp"]["pattern"]
        for value in ("0", "9" * 18, "9" * 19, "-1", "1.5", "١٢", " 1", ""):
            declared = value == "" or re.search(pattern, value) is not None
            r = await c.get(url, params={"timestamp": value}, headers=auth)
            assert (r.status_code == 200) == declared, (value, r.text)
        r = await c.get(f"{url}?timestamp=%C2%B2", headers=auth)  # '²' is a digit to Python
        assert r.status_code == 400

        ops = [
            ("/v1/users/{userId}", "op", f"/v1/users/{s.me}", {"blockedUserId": s.other}),
            ("/v1/groups/{groupId}", "op", f"/v1/groups/{s.group}", {"userId": s.other}),
            ("/v1/messages/send", "type", "/v1/messages/send", None),
        ]
        for template, name, path, body in ops:
            options = s.param(template, "post", name)["schema"]["enum"]
            assert s.param(template, "post", name)["required"]
            for value in options:
                payload = body or {
                    "senderId": s.me,
                    "recipientId": s.other if value == "private" else s.group,
                    "message": "hi",
                }
                if value == "rename":  # the one group op that names no user
                    payload = {"groupName": "renamed"}
                r = await c.post(f"{path}?{name}={value}", json=payload, headers=auth)
                assert r.status_code in (200, 409), (value, r.text)  # 409: already so
            r = await c.post(f"{path}?{name}=other", json=body or {}, headers=auth)
            assert r.status_code == 400
            r = await c.post(path, json=body or {}, headers=auth)
            assert r.status_code == 400

        limit = int(re.findall(r"at most (\d+) bytes", _body_description(s.doc))[0])
        r = await c.post(
            "/v1/users/create", content=b'{"username":"x","pad":"' + b"p" * limit + b'"}'
        )
        assert r.status_code == 413


def _body_description(doc: dict[str, Any]) -> str:
    return str(doc["paths"]["/v1/users/create"]["post"]["requestBody"]["description"])


def test_a_changed_setting_changes_the_served_document() -> None:
    """The document a server serves follows its settings (not the defaults)."""

    async def served_doc(env: dict[str, str]) -> dict[str, Any]:
        async with served(env) as s:
            return s.doc

    import asyncio

    default, changed = asyncio.run(served_doc({})), asyncio.run(served_doc(CHANGED))
    path = ("components", "schemas", "CreateUserIn", "properties", "username", "maxLength")
    assert _dig(default, path) == 64 and _dig(changed, path) == 7


def _dig(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


# Text rules: the document's verdict on a value equals the server's -------------------------
AWKWARD = [
    "a",
    " a ",
    "\ta\n",
    " ",
    "",
    "\u3000",
    "\u00a0x\u00a0",
    "\x1c",  # a separator Python strips (ECMA-262's \\s does not have it)
    "\x1cx",
    "\x85",
    "\ufeff",  # ECMA-262 whitespace, not stripped by Python: a character like any other
    "\u200b",
    "\x00",
    "é",
    "日本",
    "😀",
    " \u2028\u2029\u205f ",
]


def _declared(schema: dict[str, Any], value: Any) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


def _server(check: Any, value: str) -> bool:
    try:
        check(value)
    except InvalidInput:
        return False
    return True


@pytest.mark.parametrize("value", AWKWARD, ids=repr)
def test_text_rules_agree_with_the_server(value: str) -> None:
    limits = Settings.from_env({}).limits
    schemas = document(limits=limits)["components"]["schemas"]
    name = schemas["CreateUserIn"]["properties"]["username"]
    group = schemas["CreateGroupIn"]["properties"]["groupName"]
    message = schemas["SendIn"]["properties"]["message"]
    assert _declared(name, value) == _server(
        lambda v: clean_name(check_text(v, "username"), "username", limits.username_max), value
    )
    assert _declared(group, value) == _server(
        lambda v: clean_name(check_text(v, "groupName"), "groupName", limits.group_name_max),
        value,
    )
    assert _declared(message, value) == _server(
        lambda v: check_message_text(check_text(v, "message"), limits.message_max), value
    )
    for owner, field in (
        ("BlockIn", "blockedUserId"),
        ("MemberIn", "userId"),
        ("SendIn", "senderId"),
    ):
        rule = schemas[owner]["properties"][field]
        assert _declared(rule, value) == _server(lambda v, f=field: check_id(v, f), value), field


async def test_aliases_are_declared_as_the_server_reads_them() -> None:
    async with served({}) as s:
        user = s.schema("CreateUserIn")
        send = s.schema("SendIn")
        cases: list[tuple[dict[str, Any], str, dict[str, Any]]] = [
            (user, "/v1/users/create", {"username": "a"}),
            (user, "/v1/users/create", {"userName": "a"}),
            (user, "/v1/users/create", {"username": None, "userName": "a"}),
            (user, "/v1/users/create", {}),
            (user, "/v1/users/create", {"username": None}),
        ]
        for kind in ("private", "group"):
            target = s.other if kind == "private" else s.group
            field = "receiverId" if kind == "private" else "groupId"
            base = {"senderId": s.me, "message": "hi"}
            cases += [
                (send, f"/v1/messages/send?type={kind}", {**base, field: target}),
                (send, f"/v1/messages/send?type={kind}", {**base, "recipientId": target}),
                (
                    send,
                    f"/v1/messages/send?type={kind}",
                    {**base, field: None, "recipientId": target},
                ),
                (send, f"/v1/messages/send?type={kind}", {**base}),
            ]
        for schema, url, body in cases:
            r = await s.client.post(url, json=body, headers=s.auth)
            assert (r.status_code == 200) == _declared(schema, body), (url, body, r.text)
        # Both a field and its alias: the document refuses it, whatever the values.
        for schema, body in (
            (user, {"username": "a", "userName": "a"}),
            (send, {"senderId": "u", "message": "m", "receiverId": "u", "recipientId": "u"}),
            (send, {"senderId": "u", "message": "m", "groupId": "g", "recipientId": "g"}),
        ):
            assert not _declared(schema, body), body


def test_path_ids_are_declared_as_the_router_reads_them() -> None:
    for value in ("u_abc", "a b", "%", "\x00", "é"):
        assert _declared(PATH_ID, value), value
    for value in ("", "a/b", ".", ".."):
        assert not _declared(PATH_ID, value), value


# The document and the routes -----------------------------------------------------------------
def _routes(app: ParleyApp) -> set[tuple[str, str]]:
    """Every (method, path) the application answers: its router, then Starlette's routes."""
    found = set()
    for routes in app.router._table.values():
        for segments, methods in routes:
            found |= {(m, "/" + "/".join(segments)) for m in methods}
    for route in app.fallback.routes:
        assert isinstance(route, Route), route
        found |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return found


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item}


@pytest.mark.parametrize("auth", ["token", "none"])
async def test_every_route_is_documented_and_every_operation_is_a_route(auth: str) -> None:
    async with served({"PARLEY_AUTH": auth}) as s:
        answered = _routes(s.app)
        documented = _documented(s.doc)
        assert answered - NOT_API == documented, (answered - NOT_API) ^ documented
        assert {(spec.method, spec.path) for spec in ROUTES} == documented
        # and each documented operation is answered by a route (not 404 "no such route" / 405)
        # (deleting the account and its devices last: they sign "me" out)
        for method, path in sorted(documented, key=lambda op: (op[0] == "DELETE", op)):
            url = path.replace("{userId}", s.me).replace("{groupId}", s.group)
            url = url.replace("{tokenId}", "t_x")
            if path.endswith("/stream"):
                continue  # answers 200 and never ends; its route is in the router table above
            r = await s.client.request(method, url, headers=s.auth)
            assert r.status_code != 405, (method, path)
            assert r.status_code != 404 or r.json()["error"]["code"] != "not_found", path
        # a method a path does not document: 405, and Allow lists the documented methods of
        # every documented path the URL matches (/v1/users/create also fits /v1/users/{userId})
        for path in s.doc["paths"]:
            url = path.replace("{userId}", s.me).replace("{groupId}", s.group)
            url = url.replace("{tokenId}", "t_x")
            r = await s.client.request("PATCH", url, headers=s.auth)
            assert r.status_code == 405, (path, r.text)
            listed = {
                m.upper()
                for template, item in s.doc["paths"].items()
                if re.fullmatch(re.sub(r"{\w+}", "[^/]+", template), url)
                for m in [*item, *(["head"] if "get" in item else [])]
            }
            assert set(r.headers["allow"].split(", ")) == listed, path


def test_every_operation_lists_its_answers() -> None:
    for token_mode in (True, False):
        doc = document(token_mode)
        for path, item in doc["paths"].items():
            for method, op in item.items():
                responses = op["responses"]
                assert {"414", "431"} <= set(responses), (method, path)
                if token_mode or op["operationId"] not in TOKEN_MODE_ONLY:
                    assert "200" in responses, (method, path)
                else:
                    # (408 and 413 too where a body is read)
                    assert set(responses) - {"408", "413"} == {
                        "400",
                        "404",
                        "414",
                        "429",
                        "431",
                        "503",
                    }
                for status in ("429", "503"):
                    if status in responses:
                        assert "Retry-After" in responses[status]["headers"], (path, status)
                if path.startswith("/v1/"):
                    assert {"429", "503"} <= set(responses), (method, path)
                if op.get("requestBody"):
                    assert {"400", "408", "413"} <= set(responses), (method, path)


# 414 and 431 come from the HTTP server itself: a live one ----------------------------------
def _raw_status(port: int, head: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_every_operation_answers_414_and_431_as_documented(tmp_path: Path) -> None:
    server = Server(tmp_path, PARLEY_STORAGE="memory").start()
    try:
        doc = httpx.get(f"{server.url}/openapi.json").json()
        for path, item in doc["paths"].items():
            for method in item:
                url = path.replace("{userId}", "u_x").replace("{groupId}", "g_x")
                long_uri = f"{method.upper()} {url}?pad={'p' * 70_000} HTTP/1.1\r\nHost: x\r\n\r\n"
                assert _raw_status(server.port, long_uri.encode()) == 414, path
                fields = "".join(f"X-Field-{i}: v\r\n" for i in range(120))
                many = f"{method.upper()} {url} HTTP/1.1\r\nHost: x\r\n{fields}\r\n"
                assert _raw_status(server.port, many.encode()) == 431, path
    finally:
        server.kill()
