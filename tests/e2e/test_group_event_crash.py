"""kill -9 between a group change's commit and its event, on every backend that outlives a
process (SQLite, PostgreSQL + Redis, DynamoDB on moto), with a real server process.

``PARLEY_TEST_EXIT_DURING_GROUP_CHANGE=<step>`` makes the server SIGKILL itself during
``POST /v1/groups/:groupId?op=add``:

    committed  the change is stored (with its events), not yet announced (every backend)
    written    DynamoDB: the change, its event items and its pending record are written,
               the clock position not yet released (readers abort it when its lease ends)
    released   DynamoDB: the position is released, the pending record not yet deleted

After a restart on the same data, a member polling with ``include=events`` from before the
change gets its ``member_added`` event exactly once, a retry of the change (409) adds
nothing, and the group's next change comes after it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server
from tests.e2e.test_deletion_crash import backend_env, bearer

pytestmark = pytest.mark.slow

CASES = [
    ("sqlite", "committed"),
    ("postgres", "committed"),
    ("dynamodb", "committed"),
    ("dynamodb", "written"),
    ("dynamodb", "released"),
]


async def events_since(
    client: httpx.AsyncClient, user: str, headers: dict[str, str], after: str
) -> list[dict[str, str]]:
    """Every event a user's cursor delivers after ``after``, page by page (bounded)."""
    events: list[dict[str, str]] = []
    params = {"timestamp": after, "include": "events"}
    for _ in range(100):
        r = await client.get(f"/v1/messages/{user}", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        events += body["events"]
        params["timestamp"] = body["nextTimestamp"]
        if not body["hasMore"]:
            return events
    raise AssertionError("pages never ended")


@pytest.mark.parametrize(("kind", "step"), CASES)
async def test_kill_9_after_a_group_change_keeps_its_event_exactly_once(
    kind: str, step: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with backend_env(kind) as env:
        env = {**env, "PARLEY_AUTH": "token", "PARLEY_DATA_DIR": str(data)}
        fault = {"PARLEY_TEST_EXIT_DURING_GROUP_CHANGE": step}
        server = await asyncio.to_thread(Server(data, **env, **fault).start)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                made = []
                for name in "ab":
                    r = await client.post("/v1/users/create", json={"username": name})
                    assert r.status_code == 200, r.text
                    made.append(r.json())
                (alice, ha), (bob, hb) = ((u["userId"], bearer(u["token"])) for u in made)
                r = await client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)
                assert r.status_code == 200, r.text
                group = r.json()["groupId"]
                r = await client.get(f"/v1/messages/{alice}", headers=ha)
                before = r.json()["nextTimestamp"]  # the owner's cursor before the change
                with pytest.raises(httpx.TransportError):  # the process dies under the call
                    await client.post(f"/v1/groups/{group}?op=add", json={"userId": bob},
                                      headers=ha)  # fmt: skip
            assert await asyncio.to_thread(server.proc.wait, 15) == -9  # type: ignore[union-attr]
        finally:
            await asyncio.to_thread(server.kill)  # whatever is left of it

        server = await asyncio.to_thread(Server(data, **env).start)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                added = {"type": "member_added", "groupId": group, "userId": bob, "by": alice}

                def changes(events: list[dict[str, str]]) -> list[dict[str, str]]:
                    keep = ("type", "groupId", "userId", "by", "groupName")
                    return [{k: e[k] for k in keep if k in e} for e in events]

                assert changes(await events_since(client, alice, ha, before)) == [added]
                assert changes(await events_since(client, bob, hb, "0")) == [added]
                # the client's retry finds the change made and stores nothing
                r = await client.post(f"/v1/groups/{group}?op=add", json={"userId": bob},
                                      headers=ha)  # fmt: skip
                assert r.status_code == 409 and r.json()["error"]["code"] == "already_member"
                r = await client.post(f"/v1/groups/{group}?op=rename",
                                      json={"groupName": "h"}, headers=ha)  # fmt: skip
                assert r.status_code == 200, r.text
                renamed = {"type": "group_renamed", "groupId": group, "groupName": "h", "by": alice}
                got = await events_since(client, alice, ha, before)
                assert changes(got) == [added, renamed]
                assert len({e["eventId"] for e in got}) == 2
                assert changes(await events_since(client, bob, hb, "0")) == [added, renamed]
        finally:
            await asyncio.to_thread(server.stop)
