"""The typed API wrapper against ``httpx.MockTransport``: requests it builds, answers it reads."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from parley.client.api import (
    ApiError,
    Group,
    ParleyApi,
    ProtocolError,
    Registered,
    UnreachableError,
    User,
)

Handler = Callable[[httpx.Request], httpx.Response]

MESSAGE = {
    "messageId": "m1",
    "type": "private",
    "senderId": "u_a",
    "recipientId": "u_b",
    "message": "hi",
    "timestamp": "1700000000000",
}


class Recorder:
    """A transport that answers from a list and records every request it saw."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, index: int = -1) -> object:
        return json.loads(self.requests[index].content)


def make_api(handler: Handler, token: str | None = "tok", sleeps: list[float] | None = None):
    record = sleeps if sleeps is not None else []
    return ParleyApi(
        "http://parley.test/", token, transport=httpx.MockTransport(handler), sleep=record.append
    )


def test_create_user_posts_username_and_reads_token() -> None:
    rec = Recorder(httpx.Response(200, json={"userId": "u_1", "username": "al", "token": "t"}))
    result = make_api(rec, token=None).create_user("al")
    assert result == Registered(user_id="u_1", username="al", token="t")
    request = rec.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/users/create")
    assert rec.body() == {"username": "al"}
    assert "Authorization" not in request.headers


def test_open_mode_registration_has_no_token() -> None:
    rec = Recorder(httpx.Response(200, json={"userId": "u_1", "username": "al"}))
    assert make_api(rec, token=None).create_user("al").token is None


def test_every_request_carries_the_bearer_token() -> None:
    rec = Recorder(httpx.Response(200, json={"userId": "u_1", "username": "al"}))
    assert make_api(rec, token="secret").get_user("u_1") == User(user_id="u_1", username="al")
    assert rec.requests[0].headers["Authorization"] == "Bearer secret"


def test_ids_are_escaped_into_one_path_segment() -> None:
    rec = Recorder(httpx.Response(200, json={"userId": "x", "username": "y"}))
    make_api(rec).get_user("../admin?op=x")
    assert rec.requests[0].url.raw_path == b"/v1/users/..%2Fadmin%3Fop%3Dx"


@pytest.mark.parametrize(
    ("call", "path", "op", "body"),
    [
        (lambda api: api.block("u_a", "u_b"), "/v1/users/u_a", "block", {"blockedUserId": "u_b"}),
        (
            lambda api: api.unblock("u_a", "u_b"),
            "/v1/users/u_a",
            "unblock",
            {"blockedUserId": "u_b"},
        ),
        (lambda api: api.add_member("g_1", "u_b"), "/v1/groups/g_1", "add", {"userId": "u_b"}),
        (
            lambda api: api.remove_member("g_1", "u_b"),
            "/v1/groups/g_1",
            "remove",
            {"userId": "u_b"},
        ),
        (
            lambda api: api.set_role("g_1", "u_b", "admin"),
            "/v1/groups/g_1",
            "promote",
            {"userId": "u_b"},
        ),
        (
            lambda api: api.set_role("g_1", "u_b", "member"),
            "/v1/groups/g_1",
            "demote",
            {"userId": "u_b"},
        ),
        (
            lambda api: api.rename_group("g_1", "crew"),
            "/v1/groups/g_1",
            "rename",
            {"groupName": "crew"},
        ),
    ],
)
def test_operations_post_op_and_body(
    call: Callable[[ParleyApi], None], path: str, op: str, body: object
) -> None:
    rec = Recorder(httpx.Response(200, json={}))
    call(make_api(rec))
    request = rec.requests[0]
    assert (request.method, request.url.path, request.url.params["op"]) == ("POST", path, op)
    assert rec.body() == body


def test_group_create_and_show() -> None:
    rec = Recorder(
        httpx.Response(200, json={"groupId": "g_1", "groupName": "team"}),
        httpx.Response(
            200, json={"groupId": "g_1", "groupName": "team", "members": ["u_a", "u_b"]}
        ),
    )
    api = make_api(rec)
    assert api.create_group("team") == Group(group_id="g_1", group_name="team")
    assert rec.body(0) == {"groupName": "team"}
    assert api.get_group("g_1").members == ["u_a", "u_b"]
    assert rec.requests[1].url.path == "/v1/groups/g_1"


def test_user_groups_and_blocked_lists() -> None:
    rec = Recorder(
        httpx.Response(200, json={"userId": "u_a", "groups": [{"groupId": "g", "groupName": "n"}]}),
        httpx.Response(200, json={"userId": "u_a", "blockedUserIds": ["u_x", "u_y"]}),
    )
    api = make_api(rec)
    assert api.user_groups("u_a") == [Group(group_id="g", group_name="n")]
    assert rec.requests[0].url.path == "/v1/users/u_a/groups"
    assert api.blocked("u_a") == ["u_x", "u_y"]
    assert rec.requests[1].url.path == "/v1/users/u_a/blocked"


def test_send_private_sends_key_and_reads_message() -> None:
    rec = Recorder(httpx.Response(200, json=MESSAGE))
    message = make_api(rec).send_private("u_a", "u_b", "hi", idempotency_key="k1")
    assert message.message_id == "m1"
    assert message.timestamp_ms == 1_700_000_000_000
    request = rec.requests[0]
    assert request.url.path == "/v1/messages/send"
    assert request.url.params["type"] == "private"
    assert request.headers["Idempotency-Key"] == "k1"
    assert rec.body() == {"senderId": "u_a", "receiverId": "u_b", "message": "hi"}


def test_send_group_generates_a_key() -> None:
    rec = Recorder(httpx.Response(200, json=MESSAGE | {"type": "group", "recipientId": "g"}))
    make_api(rec).send_group("u_a", "g", "hi")
    request = rec.requests[0]
    assert request.url.params["type"] == "group"
    assert len(request.headers["Idempotency-Key"]) >= 16
    assert rec.body() == {"senderId": "u_a", "groupId": "g", "message": "hi"}


def test_send_retries_once_with_the_same_key_after_no_answer() -> None:
    rec = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json=MESSAGE))
    sleeps: list[float] = []
    make_api(rec, sleeps=sleeps).send_private("u_a", "u_b", "hi")
    keys = {r.headers["Idempotency-Key"] for r in rec.requests}
    assert len(rec.requests) == 2
    assert len(keys) == 1
    assert sleeps == [1.0]


def test_send_retries_once_after_503_honouring_retry_after() -> None:
    busy = httpx.Response(
        503, headers={"Retry-After": "2"}, json={"error": {"code": "unavailable", "message": "x"}}
    )
    rec = Recorder(busy, httpx.Response(200, json=MESSAGE))
    sleeps: list[float] = []
    make_api(rec, sleeps=sleeps).send_group("u_a", "g", "hi", idempotency_key="k")
    assert [r.headers["Idempotency-Key"] for r in rec.requests] == ["k", "k"]
    assert sleeps == [2.0]


def test_send_gives_up_after_the_second_failure() -> None:
    rec = Recorder(httpx.ConnectError("Connection refused"))
    with pytest.raises(UnreachableError, match="connection refused"):
        make_api(rec).send_private("u_a", "u_b", "hi")
    assert len(rec.requests) == 2


def test_send_does_not_retry_client_errors() -> None:
    error = {"error": {"code": "blocked", "message": "the receiver blocked you"}}
    rec = Recorder(httpx.Response(403, json=error))
    with pytest.raises(ApiError) as caught:
        make_api(rec).send_private("u_a", "u_b", "hi")
    assert (caught.value.status, caught.value.code) == (403, "blocked")
    assert len(rec.requests) == 1


def test_messages_query_and_page() -> None:
    body = {"messages": [MESSAGE], "nextTimestamp": "1700000000000", "hasMore": True}
    rec = Recorder(httpx.Response(200, json=body))
    page = make_api(rec).messages("u_b", since="5", include_sent=True, limit=10, wait=3)
    assert dict(rec.requests[0].url.params) == {
        "timestamp": "5",
        "include": "sent",
        "limit": "10",
        "wait": "3",
    }
    assert rec.requests[0].url.path == "/v1/messages/u_b"
    assert page.has_more
    assert page.next_timestamp == "1700000000000"
    assert page.raw == [MESSAGE]
    assert page.messages[0].sender_id == "u_a"


def test_messages_without_options_sends_no_query() -> None:
    rec = Recorder(httpx.Response(200, json={"messages": [], "nextTimestamp": "0"}))
    page = make_api(rec).messages("u_b")
    assert rec.requests[0].url.query == b""
    assert page.messages == []
    assert not page.has_more


def test_error_body_becomes_api_error() -> None:
    body = {"error": {"code": "rate_limited", "message": "slow down"}}
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "7"}, json=body))
    with pytest.raises(ApiError) as caught:
        make_api(rec).get_user("u")
    error = caught.value
    assert (error.status, error.code, error.message, error.retry_after) == (
        429,
        "rate_limited",
        "slow down",
        7.0,
    )


def test_error_without_json_body_still_has_a_code() -> None:
    rec = Recorder(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ApiError) as caught:
        make_api(rec).get_user("u")
    assert (caught.value.status, caught.value.code) == (502, "http_502")
    assert caught.value.message == "Bad Gateway"


def test_unexpected_answer_is_a_protocol_error() -> None:
    rec = Recorder(httpx.Response(200, json={"userId": 5}))
    with pytest.raises(ProtocolError, match="get user"):
        make_api(rec).get_user("u")


def test_non_json_success_is_a_protocol_error() -> None:
    rec = Recorder(httpx.Response(200, text="ok"))
    with pytest.raises(ProtocolError, match="not JSON"):
        make_api(rec).get_user("u")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection refused"),
        (httpx.ReadTimeout("timed out"), "no answer in time"),
        (httpx.ConnectTimeout("timed out"), "connection timed out"),
        (httpx.RemoteProtocolError("closed"), "connection closed by the server"),
    ],
)
def test_transport_failures_become_unreachable(exc: Exception, reason: str) -> None:
    with pytest.raises(UnreachableError) as caught:
        make_api(Recorder(exc)).get_user("u")
    assert caught.value.reason == reason
    assert str(caught.value) == f"cannot reach server at http://parley.test ({reason})"


def test_long_poll_gets_a_longer_read_timeout() -> None:
    seen: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"messages": [], "nextTimestamp": "1"})

    api = make_api(handler)
    api.messages("u", wait=25)
    api.messages("u")
    assert seen[0] == {"connect": 35.0, "read": 35.0, "write": 35.0, "pool": 35.0}
    assert seen[1] == {"connect": 10.0, "read": 10.0, "write": 10.0, "pool": 10.0}


def test_api_is_a_context_manager() -> None:
    with make_api(Recorder(httpx.Response(200, json={}))) as api:
        api.block("a", "b")
