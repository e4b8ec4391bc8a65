"""kill -9 at every step of an account deletion, on every backend that outlives a process
(SQLite, PostgreSQL + Redis, DynamoDB on moto), with a real server process.

``PARLEY_TEST_EXIT_DURING_DELETE=<step>`` makes the server SIGKILL itself right after a
step of ``DELETE /v1/users/:userId`` (``parley.services.accounts``):

    marked     the user is ``deleting``; nothing erased, its tokens still there
    hidden     every process was told it is gone (the directory)
    erased     tokens, memberships, blocks and message texts erased; not yet ``deleted``
    forgotten  the directory told again (memberships and blocks)
    finished   ``deleted``; the process dies before it answers

The call never gets an answer. After a restart on the same data the account is fully
deleted before the server answers anything (it finishes interrupted deletions at
start-up): 404 for everyone, no token left, the group without it, tombstones for its
messages, nothing ``deleting`` in storage, and repeating the call is harmless (401: the
tokens are gone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from parley.app import make_storage
from parley.settings import Settings
from tests.conftest import unavailable
from tests.e2e.server import Server
from tests.integration import moto_server, services

pytestmark = pytest.mark.slow

STEPS = ["marked", "hidden", "erased", "forgotten", "finished"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def backend_env(kind: str) -> AsyncIterator[dict[str, str]]:
    """Server settings for a store of this test's own, removed afterwards."""
    if kind == "sqlite":
        yield {"PARLEY_STORAGE": "sqlite"}
    elif kind == "postgres":
        reason = await services.postgres_unreachable() or services.redis_unreachable()
        if reason:
            unavailable(reason)
        schema = services.new_schema()
        try:
            yield {
                "PARLEY_STORAGE": "postgres",
                "PARLEY_DATABASE_URL": services.DATABASE_URL,
                "PARLEY_DATABASE_SCHEMA": schema,
                **services.redis_env(),
            }
        finally:
            await services.drop_schema(schema)
    else:
        reason = moto_server.moto_missing()
        if reason:
            unavailable(reason)
        prefix = moto_server.new_prefix()
        try:
            yield {
                "PARLEY_STORAGE": "dynamodb",
                "PARLEY_DYNAMODB_ENDPOINT": moto_server.endpoint(),
                "PARLEY_DYNAMODB_TABLE_PREFIX": prefix,
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        finally:
            from parley.storage.dynamodb_tables import table_names

            await moto_server.drop_tables(prefix, list(table_names(prefix).values()))


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "dynamodb"])
@pytest.mark.parametrize("step", STEPS)
async def test_kill_9_at_each_step_of_a_deletion_converges_on_restart(
    kind: str, step: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with backend_env(kind) as env:
        env = {**env, "PARLEY_AUTH": "token", "PARLEY_DATA_DIR": str(data)}
        await kill_during_deletion_and_check(data, env, step)


async def kill_during_deletion_and_check(data: Path, env: dict[str, str], step: str) -> None:
    server = await asyncio.to_thread(Server(data, **env, PARLEY_TEST_EXIT_DURING_DELETE=step).start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            made = []
            for name in "abc":
                r = await client.post("/v1/users/create", json={"username": name})
                assert r.status_code == 200, r.text
                made.append(r.json())
            (alice, ha), (bob, hb), (carol, hc) = ((u["userId"], bearer(u["token"])) for u in made)
            r = await client.post(f"/v1/users/{alice}/tokens", json={"deviceName": "laptop"},
                                  headers=ha)  # fmt: skip
            assert r.status_code == 200, r.text
            h_laptop = bearer(r.json()["token"])
            r = await client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)
            group = r.json()["groupId"]
            for who in (bob, carol):
                r = await client.post(f"/v1/groups/{group}?op=add", json={"userId": who},
                                      headers=ha)  # fmt: skip
                assert r.status_code == 200, r.text
            r = await client.post(f"/v1/users/{alice}?op=block", json={"blockedUserId": carol},
                                  headers=ha)  # fmt: skip
            assert r.status_code == 200, r.text
            for body, kind in (
                ({"senderId": alice, "receiverId": bob, "message": "private words"}, "private"),
                ({"senderId": alice, "groupId": group, "message": "group words"}, "group"),
                ({"senderId": bob, "receiverId": alice, "message": "to alice"}, "private"),
            ):
                headers = ha if body["senderId"] == alice else hb
                r = await client.post(f"/v1/messages/send?type={kind}", json=body, headers=headers)
                assert r.status_code == 200, r.text
            with pytest.raises(httpx.TransportError):  # the process dies under the call
                await client.request("DELETE", f"/v1/users/{alice}", headers=ha)
        assert await asyncio.to_thread(server.proc.wait, 15) == -9  # type: ignore[union-attr]
    finally:
        await asyncio.to_thread(server.kill)  # whatever is left of it

    # The state the crash left, read straight from storage: the deletion is under way
    # (or, after "finished", done) and never half-visible.
    settings = Settings.from_env(env)
    storage = make_storage(settings)
    await storage.open()
    try:
        state = await storage.account_state(alice)
        assert state == ("deleted" if step == "finished" else "deleting")
        assert await storage.get_user(alice) is None
    finally:
        await storage.close()

    server = await asyncio.to_thread(Server(data, **env).start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            # everything is done before the first answer
            r = await client.get(f"/v1/users/{alice}", headers=hb)
            assert r.status_code == 404 and r.json()["error"]["code"] == "user_not_found"
            body = {"senderId": bob, "receiverId": alice, "message": "there?"}
            r = await client.post("/v1/messages/send?type=private", json=body, headers=hb)
            assert r.status_code == 404, r.text
            for token in (ha, h_laptop):
                assert (await client.get(f"/v1/messages/{alice}", headers=token)).status_code == 401
            group_now = (await client.get(f"/v1/groups/{group}", headers=hb)).json()
            assert sorted(group_now["members"]) == sorted([bob, carol])
            assert alice not in group_now["roles"]
            assert "owner" in group_now["roles"].values()  # handed over
            got = (await client.get(f"/v1/messages/{bob}", headers=hb)).json()["messages"]
            assert len(got) == 2 and all(m["deleted"] and "message" not in m for m in got)
            got = (await client.get(f"/v1/messages/{carol}", headers=hc)).json()["messages"]
            assert len(got) == 1 and got[0]["deleted"]  # the block went with the account
            # repeating the call is harmless: no token of the account is left
            for token in (ha, h_laptop):
                r = await client.request("DELETE", f"/v1/users/{alice}", headers=token)
                assert r.status_code == 401, r.text
    finally:
        await asyncio.to_thread(server.stop)

    storage = make_storage(settings)
    await storage.open()
    try:
        assert await storage.account_state(alice) == "deleted"
        assert await storage.deleting_users() == []
        assert await storage.user_tokens(alice) == []
        assert await storage.user_groups(alice) == []
        assert await storage.blocked_by(alice) == []
    finally:
        await storage.close()
