"""Credentials never reach the logs.

A real server with access logs on and debug logging: authenticated calls that succeed and
that fail (another user's token, a forged one, a token sent where an id belongs, stream
tickets in the query string), then the whole log output is searched for every token, every
token's secret part and every ticket.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server

pytestmark = pytest.mark.slow


def test_no_token_secret_or_ticket_is_logged(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data",
        PARLEY_AUTH="token",
        PARLEY_ACCESS_LOG="on",
        PARLEY_LOG_LEVEL="debug",
    ).start()
    credentials: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            users = []
            for name in ("alice", "bob"):
                body = client.post("/v1/users/create", json={"username": name}).json()
                users.append((body["userId"], body["token"]))
                credentials += [body["token"], body["token"].rsplit(".", 1)[1]]
            (alice, a_token), (bob, b_token) = users
            a = {"Authorization": f"Bearer {a_token}"}
            b = {"Authorization": f"Bearer {b_token}"}
            b_secret = b_token.rsplit(".", 1)[1]
            calls = [
                ("GET", f"/v1/messages/{alice}", a, None, 200),
                ("GET", f"/v1/messages/{alice}", b, None, 403),
                (
                    "GET",
                    f"/v1/messages/{alice}",
                    {"Authorization": f"Bearer {alice}.{b_secret}"},
                    None,
                    401,
                ),
                ("GET", f"/v1/messages/{alice}", {"Authorization": f"Basic {a_token}"}, None, 401),
                ("GET", f"/v1/messages/{alice}", {"Authorization": a_token}, None, 401),
                ("POST", f"/v1/users/{alice}?op=block", a, {"blockedUserId": a_token}, 404),
                ("POST", "/v1/groups/create", a, {"groupName": a_token}, 200),  # pasted by mistake
                (
                    "POST",
                    "/v1/messages/send?type=private",
                    a,
                    {"senderId": alice, "receiverId": bob, "message": f"my token is {b_secret}"},
                    200,
                ),
                ("POST", f"/v1/users/{alice}?op=block", b, {"blockedUserId": bob}, 403),
            ]
            for method, url, headers, body, status in calls:
                r = client.request(method, url, headers=headers, json=body)
                assert r.status_code == status, (url, r.text)
            for user_id, headers in ((alice, a), (bob, b)):
                ticket = client.post(f"/v1/messages/{user_id}/ticket", headers=headers).json()
                credentials.append(ticket["ticket"])
                url = f"/v1/messages/{alice}/stream?timestamp=0&ticket={ticket['ticket']}"
                with client.stream("GET", url) as r:
                    assert r.status_code == (200 if user_id == alice else 403)
            r = client.get(f"/v1/messages/{alice}?ticket={credentials[-1]}")
            assert r.status_code == 401
    finally:
        server.stop()

    lines = server.log_path.read_text().splitlines()
    for secret in credentials:
        for n, line in enumerate(lines):
            assert secret not in line, f"line {n + 1} of the server log has a credential: {line}"
    # The search is not vacuous: one JSON access line per request, with its request id.
    access = [json.loads(line) for line in lines if '"logger": "parley.access"' in line]
    assert len(access) >= len(calls) + 6, lines
    assert all(
        entry["request_id"]
        for entry in access
        if entry["message"].startswith(("GET /v1", "POST /v1"))
    )
    assert {entry["status"] for entry in access} >= {200, 401, 403, 404}
    assert any("/stream" in entry["message"] for entry in access)
