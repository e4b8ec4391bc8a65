"""What a client that gets a request wrong is told: always a JSON error in the documented
shape, with a code that says what is wrong and a message in API terms, never a 500 and never
a traceback in the log.

* Bodies nested deeper than 32 levels: 400 ``too_deep`` on every route with a body (user
  creation included, before any authentication), however deep.
* Numbers are ASCII digits only: ``²`` or Arabic-Indic digits in ``Last-Event-ID`` or a
  query parameter are a 400, not an ``int()`` failure.
* Fields: a missing (or null) field is ``missing_field`` naming it; a mistyped one is
  ``invalid_field`` naming it and the JSON type it must have; aliases that disagree are
  ``conflicting_fields``; a lone surrogate is ``invalid_text``.
* Page sizes say the configured range; numbers too large say so.
* 405, 414 and 431 are JSON too; beyond its own limits granian answers 414/431 itself,
  with an empty body (documented in the README).
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from parley.http.schemas import too_deep
from parley.storage.memory import MemoryStorage
from tests.e2e.server import Server
from tests.e2e.test_authz_matrix import Result, World, world

INTERNAL = ("`", "str |", "null", "Expected", "msgspec", "$.", "Struct", "Traceback")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[_Capture]:
    """Every log record written during the test, from any logger."""
    capture = _Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


def _tracebacks(capture: _Capture) -> list[str]:
    return [r.getMessage() for r in capture.records if r.exc_info or r.levelno >= logging.ERROR]


def error(r: Result, status: int, code: str) -> str:
    """The answer is this JSON error; its message, checked for internal detail."""
    assert r.status == status, (r.status, r.text)
    assert r.headers["content-type"] == "application/json", r.headers
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = str(body["error"]["message"])
    for detail in INTERNAL:
        assert detail not in message, message
    return message


def _routes(w: World) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every route with a body: its URL and a body it accepts."""
    return {
        "create_user": ("/v1/users/create", {"username": "new"}),
        "user_op": (f"/v1/users/{w.me}?op=block", {"blockedUserId": w.other}),
        "create_group": ("/v1/groups/create", {"groupName": "new"}),
        "group_op": (f"/v1/groups/{w.group}?op=add", {"userId": w.other}),
        "send_private": (
            "/v1/messages/send?type=private",
            {"senderId": w.me, "receiverId": w.other, "message": "hi"},
        ),
        "send_group": (
            "/v1/messages/send?type=group",
            {"senderId": w.me, "groupId": w.group, "message": "hi"},
        ),
    }


def _nested(levels: int) -> str:
    """A JSON value that is ``levels`` arrays and objects deep."""
    inner = "1"
    for i in range(levels):
        inner = f"[{inner}]" if i % 2 == 0 else f'{{"k":{inner}}}'
    return inner


def _with_extra(body: dict[str, Any], extra: str) -> bytes:
    """``body`` with an unknown field whose value is the JSON text ``extra``."""
    return json.dumps(body)[:-1].encode() + b', "extra": ' + extra.encode() + b"}"


# item 6: nesting and digits --------------------------------------------------------------
async def test_deep_nesting_is_a_400_on_every_route(logged: _Capture) -> None:
    async with world("token", MemoryStorage()) as w:
        for name, (url, body) in _routes(w).items():
            for levels in (32, 200, 1000, 5000):  # the body itself is one more level
                r = await w.call("POST", url, body=_with_extra(body, _nested(levels)))
                message = error(r, 400, "too_deep")
                assert "32" in message, (name, message)
            r = await w.call("POST", url, body=(b"[" * 5000) + (b"]" * 5000))
            error(r, 400, "too_deep")
        # 31 levels under the body's own object: 32 in all, accepted.
        url, body = _routes(w)["create_user"]
        r = await w.call("POST", url, "none", body=_with_extra(body, _nested(31)))
        assert r.status == 200, r.text
        # Brackets inside strings are text, not nesting.
        text = "[" * 3000 + "{" * 1000
        url, body = _routes(w)["send_private"]
        r = await w.call("POST", url, json_body={**body, "message": text})
        assert r.status == 200, r.text
        r = await w.call("POST", url, body=_with_extra(body, json.dumps('\\"[' * 2000)))
        assert r.status == 200, r.text
    assert not _tracebacks(logged)


async def test_nesting_check_is_linear_on_hostile_bodies() -> None:
    """Many brackets and then one unterminated string of escaped quotes: a scan that
    backtracks takes minutes on 60 KB; this one answers within the call's 10 s bound."""
    hostile = b"[" * 40 + b'"' + b'\\"' * 30_000
    async with world("none", MemoryStorage()) as w:
        for body in (hostile, hostile[40:] + b"[" * 40, b'{"m": "' + b"[" * 60_000 + b'"}'):
            r = await w.call("POST", "/v1/users/create", body=body)
            assert r.status == 400, r.text


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def test_nesting_check_agrees_with_a_parser() -> None:
    """Random documents 20-45 levels deep whose strings are full of brackets, quotes and
    backslashes: ``too_deep`` says "over 32" exactly when a JSON parser finds it so."""
    rng = random.Random(20261201)
    pieces = ["[", "]", "{", "}", '"', "\\", '\\"', "a", "[[{{", "\\\\", "é"]

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))

    def document(level: int, target: int) -> Any:
        if level >= target:
            return text()
        if rng.random() < 0.5:
            return [document(level + 1, target), *(text() for _ in range(rng.randint(0, 2)))]
        return {text(): document(level + 1, target)}

    seen = {True: 0, False: 0}
    for _ in range(1000):
        value = document(0, rng.randint(20, 45))
        expected = _depth(value) > 32
        seen[expected] += 1
        assert too_deep(json.dumps(value).encode()) == expected, value
    assert min(seen.values()) > 300  # both sides of the limit were tried


@pytest.mark.parametrize("digits", ["²", "12³", "٣", "\uff11\uff12", "۱۲۳", "1²"])
async def test_numbers_are_ascii_digits_only(digits: str, logged: _Capture) -> None:
    async with world("token", MemoryStorage()) as w:
        # Headers travel as bytes: a Latin-1 byte (²) or the UTF-8 bytes of other digits.
        raw = digits.encode("utf-8").decode("latin-1") if max(map(ord, digits)) > 255 else digits
        stream = f"/v1/messages/{w.me}/stream"
        error(await w.call("GET", stream, headers={"Last-Event-ID": raw}), 400, "bad_timestamp")
        quoted = "".join(f"%{b:02X}" for b in digits.encode())
        for name in ("timestamp", "limit", "wait"):
            r = await w.call("GET", f"/v1/messages/{w.me}?{name}={quoted}")
            assert "whole number" in error(r, 400, f"bad_{name}")
        r = await w.call("GET", f"{stream}?timestamp={quoted}")
        error(r, 400, "bad_timestamp")
        # ASCII digits still resume a stream.
        r = await w.call("GET", stream, headers={"Last-Event-ID": "0"})
        assert r.status == 200, r.text
    assert not _tracebacks(logged)


# item 6 over the wire: a real server, its log -----------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("errors"), PARLEY_AUTH="none").start()
    try:
        yield running
    finally:
        running.stop()


def _exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One raw request on its own connection: status, headers, body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            part = conn.recv(65536)
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


def _request(method: str, target: bytes, headers: bytes = b"", body: bytes = b"") -> bytes:
    return (
        method.encode()
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + headers
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


@pytest.mark.slow
def test_server_answers_400_without_a_traceback(server: Server) -> None:
    deep = b'{"username": "a", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    status, _, body = _exchange(server, _request("POST", b"/v1/users/create", body=deep))
    assert status == 400 and json.loads(body)["error"]["code"] == "too_deep", body
    user = json.loads(
        _exchange(server, _request("POST", b"/v1/users/create", body=b'{"username":"u"}'))[2]
    )["userId"]
    stream = f"/v1/messages/{user}/stream".encode()
    for value in (b"\xb2", "٣".encode(), b"1\xb3"):
        request = _request("GET", stream, b"Last-Event-ID: " + value + b"\r\n")
        status, _, body = _exchange(server, request)
        assert status == 400 and json.loads(body)["error"]["code"] == "bad_timestamp", body
    log = server.log_path.read_text()
    assert "Traceback" not in log and "RecursionError" not in log, log[-2000:]


# first-hour errors -------------------------------------------------------------------------
async def test_limit_names_the_configured_range() -> None:
    async with world("token", MemoryStorage(), PARLEY_PAGE_MAX="50") as w:
        url = f"/v1/messages/{w.me}"
        for value in ("0", "51", "99999999999999999999999999"):
            message = error(await w.call("GET", f"{url}?limit={value}"), 400, "bad_limit")
            assert message == "limit must be between 1 and 50", message
        assert (await w.call("GET", f"{url}?limit=50")).status == 200
        message = error(await w.call("GET", f"{url}?limit=abc"), 400, "bad_limit")
        assert "whole number" in message
        for value in ("1000000000000000000", "123456789012345678901234567890"):
            message = error(await w.call("GET", f"{url}?timestamp={value}"), 400, "bad_timestamp")
            assert "between 0 and" in message and "whole number" not in message, message
            r = await w.call("GET", f"{url}/stream", headers={"Last-Event-ID": value})
            assert "between 0 and" in error(r, 400, "bad_timestamp")
        message = error(await w.call("GET", f"{url}?wait=61"), 400, "bad_wait")
        assert message == "wait must be between 0 and 60"


async def test_missing_and_mistyped_fields_are_named_in_api_terms() -> None:
    async with world("token", MemoryStorage()) as w:
        routes = _routes(w)
        required = {
            "user_op": ["blockedUserId"],
            "create_group": ["groupName"],
            "group_op": ["userId"],
            "send_private": ["senderId", "message", "receiverId"],
            "send_group": ["senderId", "message", "groupId"],
        }
        for name, fields in required.items():
            url, body = routes[name]
            for field in fields:
                without = {k: v for k, v in body.items() if k != field}
                for sent in (without, {**without, field: None}):
                    message = error(await w.call("POST", url, json_body=sent), 400, "missing_field")
                    assert message == f"{field} is required", (name, message)
        r = await w.call("POST", "/v1/users/create", "none", {})
        assert error(r, 400, "missing_field") == "username is required"
        optional = {
            "create_user": ["username", "userName"],
            "send_private": ["recipientId", "clientMessageId"],
            "send_group": ["recipientId"],
        }
        for name, (url, body) in routes.items():
            for field in [*body, *optional.get(name, [])]:
                for wrong in (7, 1.5, True, [], {}, ["x"]):
                    sent = {**body, field: wrong}
                    r = await w.call("POST", url, json_body=sent)
                    message = error(r, 400, "invalid_field")
                    assert message == f"{field} must be a string", (name, field, message)
        for not_an_object in (b"[]", b'"text"', b"7", b"null", b"true"):
            r = await w.call("POST", "/v1/groups/create", body=not_an_object)
            assert error(r, 400, "invalid_json") == "body must be a JSON object"
        for broken in (b"{", b'{"groupName": }', b"{'groupName': 'x'}", b'{"groupName": NaN}'):
            r = await w.call("POST", "/v1/groups/create", body=broken)
            assert error(r, 400, "invalid_json") == "body is not valid JSON"
        r = await w.call("POST", "/v1/groups/create", headers={"content-length": "0"})
        assert "empty" in error(r, 400, "invalid_json")


async def test_text_errors_are_reported_as_text() -> None:
    async with world("token", MemoryStorage()) as w:
        routes = _routes(w)
        for name, field in (
            ("create_user", "username"),
            ("create_group", "groupName"),
            ("send_private", "message"),
            ("send_group", "message"),
        ):
            url, body = routes[name]
            for lone in ("\\ud800", "\\udfff", "a\\udc00b", "\\ud83d"):
                raw = json.dumps({**body, field: "PLACEHOLDER"}).replace("PLACEHOLDER", lone)
                message = error(await w.call("POST", url, body=raw.encode()), 400, "invalid_text")
                assert "surrogate" in message, message
            paired = json.dumps({**body, field: "x"}).replace('"x"', '"\\ud83d\\ude00"')
            r = await w.call("POST", url, body=paired.encode())
            assert r.status == 200, r.text
        r = await w.call("POST", "/v1/groups/create", body=b'{"groupName": "caf\xe9"}')
        assert error(r, 400, "invalid_text") == "body is not valid UTF-8"


async def test_aliases_that_disagree_are_a_conflict() -> None:
    async with world("token", MemoryStorage()) as w:
        url = "/v1/users/create"
        r = await w.call("POST", url, "none", {"username": "ann", "userName": "bob"})
        message = error(r, 400, "conflicting_fields")
        assert "username" in message and "userName" in message
        r = await w.call("POST", url, "none", {"username": "ann", "userName": "ann"})
        assert r.status == 200 and r.json()["username"] == "ann", r.text
        r = await w.call("POST", url, "none", {"userName": "cid"})
        assert r.status == 200 and r.json()["username"] == "cid", r.text
        private = {"senderId": w.me, "receiverId": w.other, "message": "hi"}
        send = "/v1/messages/send?type=private"
        r = await w.call("POST", send, json_body={**private, "recipientId": w.me})
        assert "receiverId" in error(r, 400, "conflicting_fields")
        r = await w.call("POST", send, json_body={**private, "recipientId": w.other})
        assert r.status == 200 and r.json()["recipientId"] == w.other, r.text
        group = {"senderId": w.me, "groupId": w.group, "message": "hi"}
        send = "/v1/messages/send?type=group"
        r = await w.call("POST", send, json_body={**group, "recipientId": "g_other"})
        assert "groupId" in error(r, 400, "conflicting_fields")
        r = await w.call("POST", send, json_body={**group, "recipientId": w.group})
        assert r.status == 200, r.text


async def test_405_414_431_are_json() -> None:
    async with world("token", MemoryStorage()) as w:
        for method, url in (
            ("DELETE", "/v1/users/create"),
            ("PUT", f"/v1/messages/{w.me}"),
            ("POST", "/healthz"),
            ("POST", "/docs"),
            ("DELETE", "/openapi.json"),
        ):
            error(await w.call(method, url), 405, "method_not_allowed")
        long_id = "u" * 9000
        message = error(await w.call("GET", f"/v1/users/{long_id}"), 414, "uri_too_long")
        assert "8192" in message
        r = await w.call("GET", f"/v1/messages/{w.me}?timestamp=0&pad={'x' * 9000}")
        error(r, 414, "uri_too_long")
        assert (await w.call("GET", f"/v1/users/{'u' * 7000}")).status == 404  # under it
        many = {f"x-extra-{i}": "1" for i in range(70)}
        r = await w.call("GET", "/healthz", headers=many)
        assert "64" in error(r, 431, "headers_too_large")
        few = {f"x-extra-{i}": "1" for i in range(40)}
        assert (await w.call("GET", "/healthz", headers=few)).status == 200


@pytest.mark.slow
def test_what_granian_answers_itself(server: Server) -> None:
    """Within granian's limits Parley answers (JSON); beyond them granian answers before
    Parley sees the request: an empty body and ``connection: close``, as documented."""
    status, headers, body = _exchange(server, _request("GET", b"/v1/users/" + b"u" * 9000))
    assert status == 414 and json.loads(body)["error"]["code"] == "uri_too_long"
    status, headers, body = _exchange(server, _request("GET", b"/v1/users/" + b"u" * 70_000))
    assert (status, body, headers.get("connection")) == (414, b"", "close")
    extra = b"".join(b"X-Extra-%d: 1\r\n" % i for i in range(80))
    status, headers, body = _exchange(server, _request("GET", b"/healthz", extra))
    assert status == 431 and json.loads(body)["error"]["code"] == "headers_too_large"
    extra = b"".join(b"X-Extra-%d: 1\r\n" % i for i in range(150))
    status, headers, body = _exchange(server, _request("GET", b"/healthz", extra))
    assert (status, body, headers.get("connection")) == (431, b"", "close")
    status, headers, body = _exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert (status, body) == (400, b"")
