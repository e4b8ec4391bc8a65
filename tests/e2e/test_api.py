"""Every endpoint and every error status, over HTTP, in token mode and open mode."""

from __future__ import annotations

import pytest

from tests.backends import Harness


def error_code(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return str(body["error"]["code"])


# users -----------------------------------------------------------------------------------
async def test_create_user_returns_id_name_and_token(api: Harness) -> None:
    r = await api.client.post("/v1/users/create", json={"username": "  Ada  "})
    assert r.status_code == 200
    body = r.json()
    assert body["username"] == "Ada"
    assert body["userId"].startswith("u_") and len(body["userId"]) >= 20
    assert body["token"].startswith(body["userId"] + ".")


async def test_create_user_open_mode_has_no_token(open_api: Harness) -> None:
    r = await open_api.client.post("/v1/users/create", json={"userName": "alias"})
    assert r.status_code == 200
    assert set(r.json()) == {"userId", "username"}
    assert r.json()["username"] == "alias"


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"username": 5}',
        b"{}",
        b'{"username": "   "}',
        b'{"username": ""}',
        ('{"username": "' + "x" * 65 + '"}').encode(),
        b"\xff\xfe",
    ],
)
async def test_create_user_bad_input_is_400(api: Harness, body: bytes) -> None:
    r = await api.client.post("/v1/users/create", content=body)
    assert r.status_code == 400, r.text
    error_code(r)


async def test_unknown_fields_are_ignored(api: Harness) -> None:
    r = await api.client.post("/v1/users/create", json={"username": "x", "extra": [1, 2]})
    assert r.status_code == 200


async def test_body_over_limit_is_413(api: Harness) -> None:
    r = await api.client.post("/v1/users/create", content=b"{" + b" " * 70_000 + b"}")
    assert r.status_code == 413
    assert error_code(r) == "payload_too_large"


async def test_get_user(api: Harness) -> None:
    alice, _ha = await api.user("alice")
    _bob, hb = await api.user("bob")
    r = await api.client.get(f"/v1/users/{alice}", headers=hb)
    assert r.status_code == 200 and r.json() == {"userId": alice, "username": "alice"}
    r = await api.client.get("/v1/users/u_nope", headers=hb)
    assert r.status_code == 404 and error_code(r) == "user_not_found"


@pytest.mark.parametrize("weird", ["..%2F..%2Fetc", "%00", "\u2603" * 10, "x" * 5000, "%2e%2e"])
async def test_ids_of_any_shape_are_4xx(api: Harness, weird: str) -> None:
    _, headers = await api.user("u")
    for path in (f"/v1/users/{weird}", f"/v1/groups/{weird}", f"/v1/messages/{weird}"):
        r = await api.client.get(path, headers=headers)
        assert 400 <= r.status_code < 500, (path, r.status_code)


# blocking --------------------------------------------------------------------------------
async def test_block_and_unblock_rules(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    url = f"/v1/users/{alice}"
    r = await api.client.post(url + "?op=block", json={"blockedUserId": bob}, headers=ha)
    assert r.status_code == 200 and r.json()["blocked"] is True
    r = await api.client.post(url + "?op=block", json={"blockedUserId": bob}, headers=ha)
    assert r.status_code == 409 and error_code(r) == "already_blocked"
    r = await api.client.get(f"{url}/blocked", headers=ha)
    assert r.json() == {"userId": alice, "blockedUserIds": [bob]}
    # the blocked user gets 403 on private messages, and the block hides nothing delivered
    r = await api.client.post(
        "/v1/messages/send?type=private",
        json={"senderId": bob, "receiverId": alice, "message": "hi"},
        headers=hb,
    )
    assert r.status_code == 403 and error_code(r) == "blocked"
    r = await api.client.post(url + "?op=unblock", json={"blockedUserId": bob}, headers=ha)
    assert r.status_code == 200
    r = await api.client.post(url + "?op=unblock", json={"blockedUserId": bob}, headers=ha)
    assert r.status_code == 409 and error_code(r) == "not_blocked"
    r = await api.client.post(url + "?op=block", json={"blockedUserId": alice}, headers=ha)
    assert r.status_code == 200  # a user may block itself
    r = await api.client.post(url + "?op=block", json={"blockedUserId": "u_ghost"}, headers=ha)
    assert r.status_code == 404
    r = await api.client.post(url + "?op=smash", json={"blockedUserId": bob}, headers=ha)
    assert r.status_code == 400 and error_code(r) == "bad_op"
    r = await api.client.post(url, json={"blockedUserId": bob}, headers=ha)
    assert r.status_code == 400
    r = await api.client.post(url + "?op=block", json={}, headers=ha)
    assert r.status_code == 400


async def test_block_for_someone_else_is_403(api: Harness) -> None:
    alice, _ha = await api.user("alice")
    bob, hb = await api.user("bob")
    r = await api.client.post(
        f"/v1/users/{alice}?op=block", json={"blockedUserId": bob}, headers=hb
    )
    assert r.status_code == 403 and error_code(r) == "not_yourself"


async def test_block_unknown_user_path_is_404_in_open_mode(open_api: Harness) -> None:
    bob, _ = await open_api.user("bob")
    r = await open_api.client.post("/v1/users/u_nobody?op=block", json={"blockedUserId": bob})
    assert r.status_code == 404


async def test_blocked_user_can_still_send_to_shared_group(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    group = (await api.client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)).json()
    await api.client.post(f"/v1/groups/{group['groupId']}?op=add", json={"userId": bob}, headers=ha)
    await api.client.post(f"/v1/users/{alice}?op=block", json={"blockedUserId": bob}, headers=ha)
    r = await api.client.post(
        "/v1/messages/send?type=group",
        json={"senderId": bob, "groupId": group["groupId"], "message": "still here"},
        headers=hb,
    )
    assert r.status_code == 200
    r = await api.client.get(f"/v1/messages/{alice}", headers=ha)
    assert [m["message"] for m in r.json()["messages"]] == ["still here"]


# groups ----------------------------------------------------------------------------------
async def test_group_lifecycle_token_mode(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    carol, hc = await api.user("carol")
    r = await api.client.post("/v1/groups/create", json={"groupName": " team "}, headers=ha)
    assert r.status_code == 200
    gid = r.json()["groupId"]
    assert r.json()["groupName"] == "team" and gid.startswith("g_")
    r = await api.client.get(f"/v1/groups/{gid}", headers=ha)
    assert r.json() == {
        "groupId": gid,
        "groupName": "team",
        "members": [alice],
        "roles": {alice: "owner"},
    }
    # non-members may not add, nor see the group
    r = await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": carol}, headers=hb)
    assert r.status_code == 403 and error_code(r) == "not_a_member"
    r = await api.client.get(f"/v1/groups/{gid}", headers=hb)
    assert r.status_code == 403
    r = await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": bob}, headers=ha)
    assert r.status_code == 200 and r.json() == {"groupId": gid, "userId": bob, "member": True}
    r = await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": bob}, headers=ha)
    assert r.status_code == 409 and error_code(r) == "already_member"
    r = await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": "u_x"}, headers=ha)
    assert r.status_code == 404
    r = await api.client.get(f"/v1/users/{bob}/groups", headers=hb)
    assert r.json() == {"userId": bob, "groups": [{"groupId": gid, "groupName": "team"}]}
    r = await api.client.get(f"/v1/users/{bob}/groups", headers=ha)
    assert r.status_code == 403
    # anyone may leave; removing a non-member is a conflict
    r = await api.client.post(f"/v1/groups/{gid}?op=remove", json={"userId": bob}, headers=hb)
    assert r.status_code == 200 and r.json()["member"] is False
    r = await api.client.post(f"/v1/groups/{gid}?op=remove", json={"userId": bob}, headers=ha)
    assert r.status_code == 409 and error_code(r) == "not_in_group"
    r = await api.client.post(f"/v1/groups/{gid}?op=remove", json={"userId": carol}, headers=hc)
    assert r.status_code == 409
    r = await api.client.post(f"/v1/groups/{gid}?op=kick", json={"userId": bob}, headers=ha)
    assert r.status_code == 400
    r = await api.client.post("/v1/groups/g_missing?op=add", json={"userId": bob}, headers=ha)
    assert r.status_code == 404 and error_code(r) == "group_not_found"
    r = await api.client.post("/v1/groups/create", json={"groupName": "x" * 129}, headers=ha)
    assert r.status_code == 400
    r = await api.client.post("/v1/groups/create", json={"groupName": 7}, headers=ha)
    assert r.status_code == 400


async def test_group_open_mode_starts_empty(open_api: Harness) -> None:
    alice, _ = await open_api.user("alice")
    r = await open_api.client.post("/v1/groups/create", json={"groupName": "g"})
    gid = r.json()["groupId"]
    r = await open_api.client.get(f"/v1/groups/{gid}")
    assert r.json()["members"] == []
    r = await open_api.client.post(
        "/v1/messages/send?type=group", json={"senderId": alice, "groupId": gid, "message": "x"}
    )
    assert r.status_code == 403 and error_code(r) == "not_a_member"
    r = await open_api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": alice})
    assert r.status_code == 200


# messages --------------------------------------------------------------------------------
async def test_private_and_group_messages_visibility(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    gid = (await api.client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)).json()[
        "groupId"
    ]

    async def send(kind: str, body: dict[str, str], headers: dict[str, str]) -> dict[str, str]:
        r = await api.client.post(f"/v1/messages/send?type={kind}", json=body, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    m1 = await send("private", {"senderId": alice, "receiverId": bob, "message": "hi bob"}, ha)
    assert set(m1) == {"messageId", "type", "senderId", "recipientId", "message", "timestamp"}
    assert m1["type"] == "private" and m1["recipientId"] == bob and m1["timestamp"].isdigit()
    await send("private", {"senderId": alice, "recipientId": alice, "message": "note"}, ha)
    g1 = await send("group", {"senderId": alice, "groupId": gid, "message": "before bob"}, ha)
    assert g1["type"] == "group" and g1["recipientId"] == gid
    # not a member yet
    r = await api.client.post(
        "/v1/messages/send?type=group",
        json={"senderId": bob, "groupId": gid, "message": "x"},
        headers=hb,
    )
    assert r.status_code == 403
    await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": bob}, headers=ha)
    await send("group", {"senderId": bob, "recipientId": gid, "message": "bob here"}, hb)

    bob_view = (await api.client.get(f"/v1/messages/{bob}", headers=hb)).json()
    # a current member sees the group's history, and its own group messages
    assert [m["message"] for m in bob_view["messages"]] == ["hi bob", "before bob", "bob here"]
    assert bob_view["hasMore"] is False and bob_view["nextTimestamp"].isdigit()
    alice_view = (await api.client.get(f"/v1/messages/{alice}", headers=ha)).json()
    assert [m["message"] for m in alice_view["messages"]] == ["note", "before bob", "bob here"]
    sent_view = (await api.client.get(f"/v1/messages/{alice}?include=sent", headers=ha)).json()
    assert [m["message"] for m in sent_view["messages"]] == [
        "hi bob",
        "note",
        "before bob",
        "bob here",
    ]
    stamps = [int(m["timestamp"]) for m in sent_view["messages"]]
    assert stamps == sorted(stamps)

    # removed from the group: sees none of its messages any more
    await api.client.post(f"/v1/groups/{gid}?op=remove", json={"userId": bob}, headers=hb)
    bob_view = (await api.client.get(f"/v1/messages/{bob}", headers=hb)).json()
    assert [m["message"] for m in bob_view["messages"]] == ["hi bob"]


async def test_timestamp_filter_and_errors(api: Harness) -> None:
    alice, ha = await api.user("alice")
    r = await api.client.get(f"/v1/messages/{alice}", headers=ha)
    assert r.json()["messages"] == []  # an array, never null
    first = r.json()["nextTimestamp"]
    await api.client.post(
        "/v1/messages/send?type=private",
        json={"senderId": alice, "receiverId": alice, "message": "later"},
        headers=ha,
    )
    r = await api.client.get(f"/v1/messages/{alice}?timestamp={first}", headers=ha)
    # the message may need a millisecond to pass the frontier; poll briefly
    for _ in range(50):
        if r.json()["messages"]:
            break
        r = await api.client.get(f"/v1/messages/{alice}?timestamp={first}", headers=ha)
    assert [m["message"] for m in r.json()["messages"]] == ["later"]
    for bad in ("abc", "-5", "1.5", "9" * 30, "%20"):
        r = await api.client.get(f"/v1/messages/{alice}?timestamp={bad}", headers=ha)
        assert r.status_code == 400, bad
        assert error_code(r) == "bad_timestamp"
    for bad in ("0", "1001", "x"):
        r = await api.client.get(f"/v1/messages/{alice}?limit={bad}", headers=ha)
        assert r.status_code == 400
    r = await api.client.get(f"/v1/messages/{alice}?include=everything", headers=ha)
    assert r.status_code == 400
    r = await api.client.get("/v1/messages/u_nobody", headers=ha)
    assert r.status_code == 403  # acting as another user, whether or not it exists


async def test_send_errors(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, _hb = await api.user("bob")
    url = "/v1/messages/send"
    cases: list[tuple[str, dict[str, object], int]] = [
        ("?type=private", {"senderId": alice, "receiverId": bob, "message": ""}, 400),
        ("?type=private", {"senderId": alice, "receiverId": bob, "message": "x" * 4097}, 400),
        ("?type=private", {"senderId": alice, "receiverId": bob}, 400),
        ("?type=private", {"senderId": alice, "message": "x"}, 400),
        ("?type=private", {"senderId": alice, "receiverId": 5, "message": "x"}, 400),
        ("?type=telepathy", {"senderId": alice, "receiverId": bob, "message": "x"}, 400),
        ("", {"senderId": alice, "receiverId": bob, "message": "x"}, 400),
        ("?type=private", {"senderId": bob, "receiverId": alice, "message": "x"}, 403),
        ("?type=private", {"senderId": alice, "receiverId": "u_nobody", "message": "x"}, 404),
        ("?type=group", {"senderId": alice, "groupId": "g_nothing", "message": "x"}, 404),
    ]
    for query, body, status in cases:
        r = await api.client.post(url + query, json=body, headers=ha)
        assert r.status_code == status, (query, body, r.text)
        error_code(r)
    r = await api.client.post(
        url + "?type=private",
        json={"senderId": alice, "receiverId": bob, "message": "x" * 4096},
        headers=ha,
    )
    assert r.status_code == 200


async def test_open_mode_seed_client_flow(open_api: Harness) -> None:
    """A client written for the original API works unchanged with --auth none."""
    c = open_api.client
    a = (await c.post("/v1/users/create", json={"username": "a"})).json()["userId"]
    b = (await c.post("/v1/users/create", json={"username": "b"})).json()["userId"]
    g = (await c.post("/v1/groups/create", json={"groupName": "g"})).json()["groupId"]
    assert (await c.post(f"/v1/groups/{g}?op=add", json={"userId": a})).status_code == 200
    assert (await c.post(f"/v1/groups/{g}?op=add", json={"userId": b})).status_code == 200
    r = await c.post(
        "/v1/messages/send?type=private", json={"senderId": a, "receiverId": b, "message": "p"}
    )
    assert r.status_code == 200
    r = await c.post(
        "/v1/messages/send?type=group", json={"senderId": b, "groupId": g, "message": "g"}
    )
    assert r.status_code == 200
    assert (await c.post(f"/v1/users/{b}?op=block", json={"blockedUserId": a})).status_code == 200
    r = await c.post(
        "/v1/messages/send?type=private", json={"senderId": a, "receiverId": b, "message": "p2"}
    )
    assert r.status_code == 403
    msgs = (await c.get(f"/v1/messages/{b}")).json()["messages"]
    assert [m["message"] for m in msgs] == ["p", "g"]
    assert (await c.post(f"/v1/groups/{g}?op=remove", json={"userId": b})).status_code == 200
    assert (await c.get(f"/v1/messages/{b}?timestamp=0")).json()["messages"][0]["message"] == "p"


# authentication --------------------------------------------------------------------------
async def test_token_checks(api: Harness) -> None:
    alice, ha = await api.user("alice")
    url = f"/v1/messages/{alice}"
    assert (await api.client.get(url)).status_code == 401
    for header in (
        "Bearer",
        "Basic abc",
        "Bearer nodot",
        f"Bearer {alice}.wrongsecret",
        "Bearer u_ghost.secret",
        "Bearer " + "x" * 400,
    ):
        r = await api.client.get(url, headers={"Authorization": header})
        assert r.status_code == 401, header
        error_code(r)
    assert (await api.client.get(url, headers=ha)).status_code == 200
    r = await api.client.post("/v1/groups/create", json={"groupName": "g"})
    assert r.status_code == 401


async def test_tokens_are_stored_only_as_hashes(api: Harness) -> None:
    alice, ha = await api.user("alice")
    token = ha["Authorization"].split(" ", 1)[1]
    (stored,) = await api.parley.storage.user_tokens(alice)
    secret = token.rsplit(".", 1)[1]
    assert secret.encode() not in stored.hash and len(stored.hash) == 32
    user = await api.parley.storage.get_user(alice)
    assert user is not None and user.token_hash is None


# idempotency -----------------------------------------------------------------------------
async def test_idempotent_send_replays_first_answer(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, _ = await api.user("bob")
    body = {"senderId": alice, "receiverId": bob, "message": "once"}
    headers = {**ha, "Idempotency-Key": "k-1"}
    first = await api.client.post("/v1/messages/send?type=private", json=body, headers=headers)
    again = await api.client.post("/v1/messages/send?type=private", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    body2 = {**body, "clientMessageId": "k-2"}
    a = await api.client.post("/v1/messages/send?type=private", json=body2, headers=ha)
    b = await api.client.post("/v1/messages/send?type=private", json=body2, headers=ha)
    assert a.json() == b.json() and a.json()["messageId"] != first.json()["messageId"]
    sent = (await api.client.get(f"/v1/messages/{alice}?include=sent", headers=ha)).json()
    assert len(sent["messages"]) == 2


# operations ------------------------------------------------------------------------------
async def test_health_ready_metrics_openapi_docs(api: Harness) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    await api.client.get("/v1/users/u_x")
    metrics = (await api.client.get("/metrics")).text
    assert 'parley_http_requests_total{route="get_user",status="401"} 1' in metrics
    assert "parley_storage_calls_total" in metrics
    assert "parley_http_request_seconds_bucket" in metrics
    doc = (await api.client.get("/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in docs.text
    assert "http" not in docs.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    asset = await api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    assert (await api.client.get("/docs/assets/../../etc/passwd")).status_code == 404


async def test_openapi_describes_every_route(api: Harness) -> None:
    from parley.http.api import ROUTES

    doc = (await api.client.get("/openapi.json")).json()
    for spec in ROUTES:
        assert spec.method.lower() in doc["paths"][spec.path], spec.path
    for methods in doc["paths"].values():
        for op in methods.values():
            for resp in op["responses"].values():
                for content in resp.get("content", {}).values():
                    ref = content.get("schema", {}).get("$ref")  # a file: no schema
                    if ref:
                        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]


async def test_unknown_route_and_method(api: Harness) -> None:
    r = await api.client.get("/v2/nothing")
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = await api.client.delete("/v1/users/create")
    assert r.status_code == 405 and error_code(r) == "method_not_allowed"


async def test_security_headers(api: Harness) -> None:
    r = await api.client.get("/healthz")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-request-id"]


async def test_rate_limits_answer_429_with_retry_after(make_harness: object) -> None:
    harness: Harness = await make_harness(  # type: ignore[operator]
        "token", PARLEY_RATE_LIMITS="on", PARLEY_RATE_CREATES_PER_HOUR="2"
    )
    await harness.user("a")
    await harness.user("b")
    r = await harness.client.post("/v1/users/create", json={"username": "c"})
    assert r.status_code == 429 and error_code(r) == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1


async def test_long_poll_wakes_when_added_to_a_group(api: Harness) -> None:
    import asyncio
    import time

    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    gid = (await api.client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)).json()[
        "groupId"
    ]
    cursor = (await api.client.get(f"/v1/messages/{bob}", headers=hb)).json()["nextTimestamp"]

    async def add_then_send() -> None:
        await asyncio.sleep(0.2)
        await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": bob}, headers=ha)
        await api.client.post(
            "/v1/messages/send?type=group",
            json={"senderId": alice, "groupId": gid, "message": "welcome"},
            headers=ha,
        )

    started = time.monotonic()
    poll = api.client.get(f"/v1/messages/{bob}?timestamp={cursor}&wait=20", headers=hb)
    response, _ = await asyncio.gather(poll, add_then_send())
    assert [m["message"] for m in response.json()["messages"]] == ["welcome"]
    assert time.monotonic() - started < 3  # woken, not timed out (nor the 5 s re-check)
