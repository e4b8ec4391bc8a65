"""What attachments cost in DynamoDB requests (token mode, a warm process), measured by the
adapter's own counters and pinned here; ``docs/dynamodb.md`` reports them. Print the table:
``.venv/bin/python -m tests.integration.test_media_dynamodb_costs``."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from parley.app import build
from parley.http.server import create_app
from parley.settings import Settings
from tests.conftest import unavailable
from tests.integration import moto_server

Step = Callable[[], Awaitable[httpx.Response]]


async def measure(data_dir: Path) -> dict[str, dict[str, int]]:
    store = moto_server.TestDynamo()
    settings = Settings.from_env(
        {"PARLEY_AUTH": "token", "PARLEY_RATE_LIMITS": "off", "PARLEY_DATA_DIR": str(data_dir)}
    )
    parley = build(settings, store)
    await parley.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(parley)), base_url="http://parley.test"
    )
    try:
        users = {}
        for name in ("a", "b", "c"):
            r = await client.post("/v1/users/create", json={"username": name})
            users[name] = (r.json()["userId"], {"Authorization": f"Bearer {r.json()['token']}"})
        (a, ha), (b, hb), (c, hc) = users["a"], users["b"], users["c"]
        r = await client.post("/v1/groups/create", json={"groupName": "g"}, headers=ha)
        group = r.json()["groupId"]
        await client.post(f"/v1/groups/{group}?op=add", json={"userId": c}, headers=ha)

        async def upload() -> str:
            r = await client.post("/v1/media", content=b"bytes", headers=ha)
            return str(r.json()["mediaId"])

        files = [await upload() for _ in range(8)]
        private = {"senderId": a, "receiverId": b, "message": "x"}
        to_group = {"senderId": a, "groupId": group, "message": "x"}
        send = "/v1/messages/send?type="
        steps: dict[str, Step] = {
            "upload": lambda: client.post("/v1/media", content=b"bytes", headers=ha),
            "send private, no attachment": lambda: client.post(
                send + "private", json=private, headers=ha
            ),
            "send private, 1 attachment": lambda: client.post(
                send + "private", json={**private, "attachments": files[:1]}, headers=ha
            ),
            "send private, 3 attachments": lambda: client.post(
                send + "private", json={**private, "attachments": files[1:4]}, headers=ha
            ),
            "send group, 1 attachment": lambda: client.post(
                send + "group", json={**to_group, "attachments": files[4:5]}, headers=ha
            ),
            "download, uploader": lambda: client.get(f"/v1/media/{files[0]}", headers=ha),
            "download, private peer": lambda: client.get(f"/v1/media/{files[0]}", headers=hb),
            "download, group member": lambda: client.get(f"/v1/media/{files[4]}", headers=hc),
            "download, stranger (404)": lambda: client.get(f"/v1/media/{files[4]}", headers=hb),
        }
        costs = {}
        for name, step in steps.items():
            r = await step()  # the first run warms the directory; the second is measured
            assert r.status_code in (200, 404), r.text
            before = Counter(store.client.usage.calls)
            r = await step()
            assert r.status_code in (200, 404), r.text
            after = Counter(store.client.usage.calls)
            costs[name] = dict(after - before)
        return costs
    finally:
        await client.aclose()
        await parley.stop()


PINNED = {
    "upload": {"put_item": 1},
    "send private, no attachment": {"update_item": 2, "batch_write_item": 1},
    "send private, 1 attachment": {"get_item": 1, "update_item": 3, "batch_write_item": 1},
    "send private, 3 attachments": {"get_item": 3, "update_item": 5, "batch_write_item": 1},
    "send group, 1 attachment": {"get_item": 1, "batch_write_item": 1, "update_item": 3},
    "download, uploader": {"get_item": 1},
    "download, private peer": {"get_item": 3},
    "download, group member": {"get_item": 3},
    "download, stranger (404)": {"get_item": 1},
}  # fmt: skip


async def test_attachment_costs() -> None:
    reason = moto_server.moto_missing()
    if reason:
        unavailable(reason)
    with tempfile.TemporaryDirectory() as data:
        costs = await measure(Path(data))
    assert costs == PINNED


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        for step, calls in asyncio.run(measure(Path(folder))).items():
            print(f"{step:32} {sum(calls.values())}: {calls}")
    moto_server.stop()
