"""Schema fuzzing: schemathesis drives Parley's own OpenAPI document against the app, in-process.

Every operation of the document, in token mode and in open mode, gets schemathesis' explicit
examples, its coverage cases (boundaries, missing and mistyped fields) and a bounded number of
Hypothesis-generated valid and invalid requests (derandomized: the same cases on every run).
Every response must be a documented status with a body that matches the documented schema,
and never a 5xx.

Random ids only ever reach "not found" or "forbidden", so most cases are steered into real
data: a case's identity (own token, another user's token, a malformed one, none) and whether
its ids are replaced by real ones (the caller, another user, the caller's group) are chosen
from a hash of the case itself, so a failing case replays the same way when Hypothesis
shrinks it. Strings replace strings only, so a case schemathesis built to be invalid stays
invalid.
"""

from __future__ import annotations

import shutil
import tempfile
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from parley.app import build
from parley.http.asgi import Receive, Scope, Send
from parley.http.openapi import document
from parley.http.server import ParleyApp, create_app
from parley.settings import Settings

# Generated requests per operation and auth mode, on top of schemathesis' explicit examples
# and coverage cases (boundaries, missing and mistyped fields: about 30-60 per operation).
FUZZ_EXAMPLES = 150
CONFIG = {
    "seed": 20261129,
    "generation": {"max-examples": FUZZ_EXAMPLES, "deterministic": True, "database": "none"},
    "operations": [
        {
            # A live stream never ends: stop at its first data event, or after 0.3 s of none.
            "include-operation-id": "stream_messages",
            "max-stream-events": 1,
            "request-timeout": 0.3,
            "generation": {"max-examples": 15},
        }
    ],
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


class FreshParley:
    """An ASGI app that builds a new Parley, on SQLite in a new folder, at every lifespan.

    Schemathesis starts the lifespan on a test's first request and ends it after the test,
    so every operation's fuzz test gets an empty database; nothing is built at import.
    """

    def __init__(self, auth: str) -> None:
        self.auth = auth
        self.app: ParleyApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            assert self.app is not None, "lifespan not started"
            await self.app(scope, receive, send)
            return
        folder = tempfile.mkdtemp(prefix="parley-fuzz-")
        env = {"PARLEY_AUTH": self.auth, "PARLEY_RATE_LIMITS": "off", "PARLEY_DATA_DIR": folder}
        self.app = create_app(build(Settings.from_env(env)))
        try:
            await self.app(scope, receive, send)  # returns after the lifespan's shutdown
        finally:
            self.app = None
            shutil.rmtree(folder, ignore_errors=True)


def _schema(auth: str) -> Any:
    config = SchemathesisConfig.from_dict(CONFIG)
    schema = schemathesis.openapi.from_dict(document(token_mode=auth == "token"), config=config)
    schema.app = FreshParley(auth)
    return schema


TOKEN_SCHEMA = _schema("token")
OPEN_SCHEMA = _schema("none")


@dataclass
class World:
    """Real data the cases are steered into: the caller, another user, the caller's group."""

    me: str
    other: str
    group: str
    my_token: str | None
    other_token: str | None

    def steer(self, case: Any) -> None:
        key = repr((case.operation.label, case.path_parameters, case.query, case.body))
        seed = zlib.crc32(key.encode())
        identity, real_ids = seed % 10, (seed // 10) % 4 != 0
        if real_ids:
            self._use_real_ids(case)
        wait = (case.query or {}).get("wait")
        if isinstance(wait, int | str) and str(wait).isdigit() and 0 < int(wait) <= 60:
            case.query["wait"] = 0  # long-polls are tested elsewhere; here they would just wait
        if self.my_token is None:
            return  # open mode: no tokens at all
        if identity == 0:
            case.headers = {**(case.headers or {})}
            case.headers.pop("Authorization", None)
        elif identity == 1:
            case.headers = {**(case.headers or {}), "Authorization": "Bearer not-a-token"}
        elif identity == 2:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {self.other_token}"}
        else:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {self.my_token}"}

    def _use_real_ids(self, case: Any) -> None:
        # Only ids the document calls valid are replaced (a real id is valid), so a case
        # schemathesis built to be invalid stays invalid.
        path = case.path_parameters or {}
        for name, real in (("userId", self.me), ("groupId", self.group)):
            value = path.get(name)
            if isinstance(value, str) and value and "/" not in value and value not in (".", ".."):
                path[name] = real
        body = case.body
        if not isinstance(body, dict):
            return
        real_ids = {
            "senderId": self.me,
            "receiverId": self.other,
            "recipientId": self.other,
            "blockedUserId": self.other,
            "userId": self.other,
            "groupId": self.group,
        }
        for name, real in real_ids.items():
            if isinstance(body.get(name), str) and body[name]:
                body[name] = real


def _world(app: Any, token_mode: bool) -> World:
    with asgi.get_client(app) as client:  # starts the lifespan: a fresh database

        def user(name: str) -> tuple[str, str | None]:
            r = client.post("/v1/users/create", json={"username": name})
            assert r.status_code == 200, r.text
            return r.json()["userId"], r.json().get("token")

        me, my_token = user("me")
        other, other_token = user("other")
        headers = {"Authorization": f"Bearer {my_token}"} if token_mode else {}
        r = client.post("/v1/groups/create", json={"groupName": "mine"}, headers=headers)
        assert r.status_code == 200, r.text
        group = r.json()["groupId"]
        if not token_mode:
            r = client.post(f"/v1/groups/{group}?op=add", json={"userId": me})
            assert r.status_code == 200, r.text
        # something to read: checks and streams have a page to answer with
        r = client.post(
            "/v1/messages/send?type=group",
            json={"senderId": me, "groupId": group, "message": "hello"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
    return World(me, other, group, my_token, other_token)


@pytest.fixture
def token_world() -> World:
    return _world(TOKEN_SCHEMA.app, token_mode=True)


@pytest.fixture
def open_world() -> World:
    return _world(OPEN_SCHEMA.app, token_mode=False)


@TOKEN_SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_fuzz_token_mode(case: Any, token_world: World) -> None:
    token_world.steer(case)
    case.call_and_validate(checks=CHECKS)


@OPEN_SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_fuzz_open_mode(case: Any, open_world: World) -> None:
    open_world.steer(case)
    case.call_and_validate(checks=CHECKS)
