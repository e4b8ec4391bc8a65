"""Devices, sign-in, sign-out, account deletion and export through the HTTP API (SPEC §7),
on every backend."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from parley.services import accounts
from tests.backends import Harness, MakeHarness

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def link(api: Harness, user: str, headers: dict[str, str], name: str = "laptop") -> dict:
    r = await api.client.post(
        f"/v1/users/{user}/tokens", json={"deviceName": name}, headers=headers
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def send(api: Harness, sender: str, to: str, text: str, headers: dict[str, str]) -> None:
    body = {"senderId": sender, "receiverId": to, "message": text}
    r = await api.client.post("/v1/messages/send?type=private", json=body, headers=headers)
    assert r.status_code == 200, r.text


async def everything(api: Harness, user: str, headers: dict[str, str]) -> list[dict]:
    for _ in range(100):  # messages pass the frontier within a millisecond
        r = await api.client.get(f"/v1/messages/{user}?include=sent", headers=headers)
        assert r.status_code == 200, r.text
        messages = list(r.json()["messages"])
        if messages:
            return messages
        await asyncio.sleep(0.005)
    return []


# tokens ------------------------------------------------------------------------------------
async def test_a_linked_device_gets_its_own_token(api: Harness) -> None:
    alice, ha = await api.user("alice")
    new = await link(api, alice, ha, "  laptop ")
    assert set(new) == {"tokenId", "token", "deviceName", "createdAt", "userId"}
    assert new["deviceName"] == "laptop" and new["userId"] == alice
    assert new["token"].startswith(alice + ".") and new["tokenId"].startswith("t_")
    hl = bearer(new["token"])
    assert (await api.client.get(f"/v1/users/{alice}/groups", headers=hl)).status_code == 200

    listed = (await api.client.get(f"/v1/users/{alice}/tokens", headers=hl)).json()
    assert listed["userId"] == alice
    tokens = listed["tokens"]
    names = {t["tokenId"]: t["deviceName"] for t in tokens}  # the sign-up token is one
    assert sorted(names.values()) == ["laptop", "unnamed device"]
    assert [t["tokenId"] for t in tokens if t["current"]] == [new["tokenId"]]
    assert all(
        set(t) == {"tokenId", "deviceName", "createdAt", "lastUsedAt", "current"} for t in tokens
    )
    for secret in (new["token"], ha["Authorization"].split()[1]):
        assert secret.split(".")[1] not in json.dumps(listed)
    from_phone = (await api.client.get(f"/v1/users/{alice}/tokens", headers=ha)).json()["tokens"]
    assert [names[t["tokenId"]] for t in from_phone if t["current"]] == ["unnamed device"]


async def test_revoked_token_is_refused_at_once_and_others_keep_working(api: Harness) -> None:
    alice, ha = await api.user("alice")
    _, hb = await api.user("bob")
    laptop = await link(api, alice, ha)
    hl = bearer(laptop["token"])
    url = f"/v1/users/{alice}/tokens/{laptop['tokenId']}"
    assert (await api.client.delete(url, headers=hb)).status_code == 403  # not bob's to revoke
    r = await api.client.delete(url, headers=ha)
    assert r.status_code == 200 and r.json() == {
        "userId": alice, "tokenId": laptop["tokenId"], "revoked": True,
    }  # fmt: skip
    r = await api.client.get(f"/v1/messages/{alice}", headers=hl)
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_token"
    assert (await api.client.delete(url, headers=ha)).status_code == 404
    assert (await api.client.get(f"/v1/messages/{alice}", headers=ha)).status_code == 200
    # signing out the current device: its own token stops working
    me = (await api.client.get(f"/v1/users/{alice}/tokens", headers=ha)).json()["tokens"]
    (current,) = [t for t in me if t["current"]]
    r = await api.client.delete(f"/v1/users/{alice}/tokens/{current['tokenId']}", headers=ha)
    assert r.status_code == 200
    assert (await api.client.get(f"/v1/messages/{alice}", headers=ha)).status_code == 401


async def test_revoking_ends_an_open_long_poll(api: Harness) -> None:
    alice, ha = await api.user("alice")
    laptop = await link(api, alice, ha)
    hl = bearer(laptop["token"])
    cursor = (await api.client.get(f"/v1/messages/{alice}", headers=hl)).json()["nextTimestamp"]
    poll = asyncio.ensure_future(
        api.client.get(f"/v1/messages/{alice}?timestamp={cursor}&wait=30", headers=hl)
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    loop = asyncio.get_running_loop()
    revoked_at = loop.time()
    r = await api.client.delete(f"/v1/users/{alice}/tokens/{laptop['tokenId']}", headers=ha)
    assert r.status_code == 200
    answer = await asyncio.wait_for(poll, 10)
    assert answer.status_code == 401
    # The poll re-checks its token every second: it cannot outlive the revocation by more
    # than that (plus the revocation's own wait for the fleet, with Redis).
    assert loop.time() - revoked_at < 2.5


# passwords ----------------------------------------------------------------------------------
async def test_password_sign_in(api: Harness) -> None:
    alice, ha = await api.user("alice")
    url = f"/v1/users/{alice}/password"
    r = await api.client.post(url, json={"password": "short"}, headers=ha)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_password"
    r = await api.client.post(url, json={"password": "x" * 1025}, headers=ha)
    assert r.status_code == 400
    sign_in = {"userId": alice, "password": PASSWORD, "deviceName": "tablet"}
    r = await api.client.post("/v1/sessions", json=sign_in)
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_credentials"  # none set
    r = await api.client.post(url, json={"password": PASSWORD}, headers=ha)
    assert r.status_code == 200 and r.json() == {"userId": alice, "passwordSet": True}
    assert PASSWORD not in r.text

    r = await api.client.post("/v1/sessions", json=sign_in)
    assert r.status_code == 200, r.text
    session = r.json()
    assert set(session) == {"tokenId", "token", "deviceName", "createdAt", "userId"}
    assert session["deviceName"] == "tablet"
    assert (
        await api.client.get(f"/v1/messages/{alice}", headers=bearer(session["token"]))
    ).status_code == 200

    for wrong in ({**sign_in, "password": PASSWORD + "!"}, {**sign_in, "userId": "u_nobody"}):
        r = await api.client.post("/v1/sessions", json=wrong)
        assert r.status_code == 401 and r.json()["error"]["code"] == "bad_credentials"

    # changing it needs the current one
    r = await api.client.post(url, json={"password": "a new password"}, headers=ha)
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_credentials"
    change = {"password": "a new password", "currentPassword": PASSWORD}
    assert (await api.client.post(url, json=change, headers=ha)).status_code == 200
    assert (await api.client.post("/v1/sessions", json=sign_in)).status_code == 401
    renewed = {**sign_in, "password": "a new password"}
    assert (await api.client.post("/v1/sessions", json=renewed)).status_code == 200
    stored = await api.parley.storage.get_password(alice)
    assert stored is not None and stored.startswith("$argon2id$") and "a new password" not in stored


async def test_wrong_passwords_do_the_same_work(api: Harness) -> None:
    """Unknown user, no password, wrong password: each verifies one argon2id hash."""
    alice, ha = await api.user("alice")
    bob, _ = await api.user("bob")
    await api.client.post(f"/v1/users/{alice}/password", json={"password": PASSWORD}, headers=ha)
    passwords = api.parley.accounts.passwords
    for user in (alice, bob, "u_nobody"):
        before = passwords.verifications
        r = await api.client.post("/v1/sessions", json={"userId": user, "password": "guess1234"})
        assert r.status_code == 401
        assert passwords.verifications == before + 1


async def test_sign_in_attempts_are_throttled(make_harness: MakeHarness) -> None:
    """10,000 guesses from one address: at most the documented budget is ever checked
    (a window boundary can let through twice the budget, never more); the rest get 429 with
    Retry-After, without a password being verified. PARLEY_RATE_LIMITS=off does not matter."""
    api = await make_harness(
        "token", PARLEY_SIGNIN_PER_ADDRESS="5", PARLEY_SIGNIN_PER_USER="1000000"
    )
    assert not api.parley.settings.rate_limits.enabled
    alice, ha = await api.user("alice")
    await api.client.post(f"/v1/users/{alice}/password", json={"password": PASSWORD}, headers=ha)
    passwords = api.parley.accounts.passwords
    before = passwords.verifications
    statuses: dict[int, int] = {}
    retry_after = set()
    for n in range(10_000):
        guess = PASSWORD if n == 9_999 else f"guess-{n:05d}"  # even the right one, at the end
        r = await api.client.post("/v1/sessions", json={"userId": alice, "password": guess})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code == 429:
            retry_after.add(int(r.headers["retry-after"]))
    checked = passwords.verifications - before
    assert checked <= 2 * 5 and statuses.get(401, 0) == checked, statuses
    assert statuses[429] == 10_000 - checked and 200 not in statuses
    assert retry_after and min(retry_after) >= 1

    # per user: another address, the same user
    per_user = await make_harness("token", PARLEY_SIGNIN_PER_USER="3")
    bob, hb = await per_user.user("bob")
    await per_user.client.post(f"/v1/users/{bob}/password", json={"password": PASSWORD}, headers=hb)
    got = []
    for _ in range(20):
        r = await per_user.client.post(
            "/v1/sessions", json={"userId": bob, "password": "nope nope"}
        )
        got.append(r.status_code)
    assert got.count(401) <= 6 and got.count(429) >= 14


# deletion -----------------------------------------------------------------------------------
async def test_deleting_an_account(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    laptop = bearer((await link(api, alice, ha))["token"])
    gid = (await api.client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)).json()[
        "groupId"
    ]
    await api.client.post(f"/v1/groups/{gid}?op=add", json={"userId": bob}, headers=ha)
    await api.client.post(f"/v1/users/{bob}?op=block", json={"blockedUserId": alice}, headers=hb)
    await api.client.post(f"/v1/users/{bob}?op=unblock", json={"blockedUserId": alice}, headers=hb)
    await send(api, alice, bob, "remember me", ha)
    body = {"senderId": alice, "groupId": gid, "message": "group words"}
    assert (
        await api.client.post("/v1/messages/send?type=group", json=body, headers=ha)
    ).status_code == 200
    await send(api, bob, alice, "to alice", hb)
    await api.client.post(f"/v1/users/{alice}/password", json={"password": PASSWORD}, headers=ha)

    r = await api.client.request("DELETE", f"/v1/users/{alice}", headers=ha)
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_credentials"  # password
    r = await api.client.request(
        "DELETE", f"/v1/users/{alice}", json={"password": PASSWORD}, headers=hb
    )
    assert r.status_code == 403
    r = await api.client.request(
        "DELETE", f"/v1/users/{alice}", json={"password": PASSWORD}, headers=ha
    )
    assert r.status_code == 200 and r.json() == {"userId": alice, "deleted": True}

    for headers in (ha, laptop):
        assert (await api.client.get(f"/v1/messages/{alice}", headers=headers)).status_code == 401
    r = await api.client.get(f"/v1/users/{alice}", headers=hb)
    assert r.status_code == 404 and r.json()["error"]["code"] == "user_not_found"
    body = {"senderId": bob, "receiverId": alice, "message": "hello?"}
    r = await api.client.post("/v1/messages/send?type=private", json=body, headers=hb)
    assert r.status_code == 404
    group = (await api.client.get(f"/v1/groups/{gid}", headers=hb)).json()
    assert group["members"] == [bob]
    r = await api.client.post("/v1/sessions", json={"userId": alice, "password": PASSWORD})
    assert r.status_code == 401

    messages = await everything(api, bob, hb)
    mine = [m for m in messages if m["senderId"] == alice]
    assert len(mine) == 2
    for m in mine:
        assert m["deleted"] is True and "message" not in m and m["timestamp"] and m["messageId"]
    assert [m["message"] for m in messages if m["senderId"] == bob] == ["to alice"]
    stored = await api.parley.storage.read_messages([bob, gid], bob, None, 100)
    assert all(m.body == "" for m in stored.messages if m.sender_id == alice)  # erased, not hidden


async def test_deleting_is_idempotent_under_concurrent_retries(api: Harness) -> None:
    alice, ha = await api.user("alice")
    await send(api, alice, alice, "note to self", ha)

    async def delete() -> httpx.Response:
        return await api.client.request("DELETE", f"/v1/users/{alice}", headers=ha)

    answers = await asyncio.gather(*(delete() for _ in range(5)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses[0] == 200 and set(statuses) <= {200, 401}, [r.text for r in answers]
    assert await api.parley.storage.account_state(alice) == "deleted"
    assert (await delete()).status_code == 401  # every token is gone
    _, hb = await api.user("bob")
    assert (await api.client.get(f"/v1/users/{alice}", headers=hb)).status_code == 404


async def test_a_running_server_finishes_interrupted_deletions(api: Harness) -> None:
    """A deletion that stopped after the erase (its process died, its tokens are gone, so
    the user cannot repeat the call) is finished by any other process: the sweep finishes
    what was already under way at its previous round, and leaves a just-started one be."""
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    await send(api, alice, bob, "words", ha)
    storage, service = api.parley.storage, api.parley.accounts
    assert await storage.begin_deletion(alice)
    await storage.erase_account(alice)  # ... and the process that did it died here
    assert (await api.client.request("DELETE", f"/v1/users/{alice}", headers=ha)).status_code == 401
    assert await storage.deleting_users() == [alice]

    answers: list[list[str]] = []
    real = storage.deleting_users

    async def counted() -> list[str]:
        answers.append(await real())
        return answers[-1]

    storage.deleting_users = counted  # type: ignore[method-assign]
    sweep = asyncio.create_task(service.sweep(every=0.001))
    try:
        for _ in range(5000):  # bounded: each round is a few storage calls
            await asyncio.sleep(0.001)
            if answers and answers[-1] == []:
                break
    finally:
        sweep.cancel()
        await asyncio.gather(sweep, return_exceptions=True)
    # a round to note it, a round to finish it, and one that finds nothing left
    assert answers[:2] == [[alice], [alice]] and answers[-1] == [], answers
    assert await storage.account_state(alice) == "deleted"
    assert await storage.deleting_users() == []
    assert (await api.client.get(f"/v1/users/{alice}", headers=hb)).status_code == 404

    # the first round only notes what is under way; finishing comes at the next one
    carol, _ = await api.user("carol")
    assert await storage.begin_deletion(carol)
    assert await service.finish_deletions(set()) == []
    assert await storage.account_state(carol) == "deleting"
    assert await service.finish_deletions({carol}) == [carol]
    assert await storage.account_state(carol) == "deleted"


# export -------------------------------------------------------------------------------------
async def test_export_has_everything_and_no_secrets(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "EXPORT_PAGE", 7)  # several pages, none split or repeated
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    carol, _ = await api.user("carol")
    laptop = await link(api, alice, ha, "laptop")
    gid = (
        await api.client.post("/v1/groups/create", json={"groupName": "club"}, headers=ha)
    ).json()["groupId"]
    await api.client.post(f"/v1/users/{alice}?op=block", json={"blockedUserId": carol}, headers=ha)
    await api.client.post(f"/v1/users/{alice}/password", json={"password": PASSWORD}, headers=ha)
    for n in range(30):
        await send(api, alice, bob, f"to bob {n}", ha)  # sent to others: exported too
    await send(api, bob, alice, "from bob", hb)
    body = {"senderId": alice, "groupId": gid, "message": "in the club"}
    await api.client.post("/v1/messages/send?type=group", json=body, headers=ha)
    await send(api, bob, carol, "not alice's business", hb)
    await asyncio.sleep(0.01)

    r = await api.client.get(f"/v1/users/{alice}/export", headers=ha)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert set(doc) == {
        "userId",
        "username",
        "exportedAt",
        "devices",
        "groups",
        "blockedUserIds",
        "messages",
    }
    assert (doc["userId"], doc["username"]) == (alice, "alice")
    assert sorted(d["deviceName"] for d in doc["devices"]) == ["laptop", "unnamed device"]
    assert doc["groups"] == [{"groupId": gid, "groupName": "club"}]
    assert doc["blockedUserIds"] == [carol]
    texts = [m["message"] for m in doc["messages"]]
    # stream by stream (inbox, each group, sent to others), each oldest first
    assert texts == ["from bob", "in the club", *(f"to bob {n}" for n in range(30))]
    sent = [int(m["timestamp"]) for m in doc["messages"][2:]]
    assert sent == sorted(sent)
    for secret in (ha["Authorization"].split()[1], laptop["token"], PASSWORD, "$argon2"):
        assert secret.split(".")[-1] not in r.text
    assert (await api.client.get(f"/v1/users/{alice}/export", headers=hb)).status_code == 403
