"""kill -9 in the middle of an account deletion (SQLite, a real server process).

``PARLEY_TEST_EXIT_DURING_DELETE`` kills the process right after a step: after the user was
marked ``deleting`` (nothing erased yet), or after the erase (before the mark ``deleted``).
After a restart the account is gone for everyone either way — never half-visible — and
repeating the call finishes what is left.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server

pytestmark = pytest.mark.slow


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("step", ["marked", "erased"])
async def test_kill_9_during_deletion_leaves_it_done_or_resumable(
    step: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = {"PARLEY_STORAGE": "sqlite", "PARLEY_AUTH": "token"}
    server = await asyncio.to_thread(Server(data, **env, PARLEY_TEST_EXIT_DURING_DELETE=step).start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            made = [
                (await client.post("/v1/users/create", json={"username": n})).json() for n in "ab"
            ]
            (alice, ha), (bob, hb) = ((u["userId"], bearer(u["token"])) for u in made)
            r = await client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)
            group = r.json()["groupId"]
            await client.post(f"/v1/groups/{group}?op=add", json={"userId": bob}, headers=ha)
            for body, kind in (
                ({"senderId": alice, "receiverId": bob, "message": "private words"}, "private"),
                ({"senderId": alice, "groupId": group, "message": "group words"}, "group"),
            ):
                r = await client.post(f"/v1/messages/send?type={kind}", json=body, headers=ha)
                assert r.status_code == 200, r.text
            with pytest.raises(httpx.TransportError):
                await client.request("DELETE", f"/v1/users/{alice}", headers=ha)
    finally:
        await asyncio.to_thread(server.kill)  # whatever is left of it

    server = await asyncio.to_thread(Server(data, **env).start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            # gone for everyone at once, before anything is repeated
            r = await client.get(f"/v1/users/{alice}", headers=hb)
            assert r.status_code == 404 and r.json()["error"]["code"] == "user_not_found"
            body = {"senderId": bob, "receiverId": alice, "message": "there?"}
            r = await client.post("/v1/messages/send?type=private", json=body, headers=hb)
            assert r.status_code == 404
            assert (await client.get(f"/v1/messages/{alice}", headers=ha)).status_code == 401
            # repeating the call finishes it (after the erase the tokens are gone: 401)
            r = await client.request("DELETE", f"/v1/users/{alice}", headers=ha)
            assert r.status_code == (200 if step == "marked" else 401), r.text
            r = await client.request("DELETE", f"/v1/users/{alice}", headers=ha)
            assert r.status_code == 401  # finished: no token left
            group_now = (await client.get(f"/v1/groups/{group}", headers=hb)).json()
            assert group_now["members"] == [bob]
            got = (await client.get(f"/v1/messages/{bob}", headers=hb)).json()["messages"]
            assert len(got) == 2 and all(m["deleted"] and "message" not in m for m in got)
    finally:
        await asyncio.to_thread(server.stop)
