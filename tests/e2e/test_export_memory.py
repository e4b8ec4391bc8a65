"""An export of 200,000 messages streams in constant memory (SQLite, a real server).

The server's peak resident memory (VmHWM of every process of the server) may grow by less
than ``GROWTH_MAX`` while it sends the export. Most of what it does grow by is SQLite's
page cache filling up as the messages are read (``PRAGMA cache_size``: at most 64 MiB per
connection, whatever the data). Holding the document instead would add its 57 MiB of JSON
and the messages as objects on top.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from parley.domain.models import GroupRecord, Message, TokenRecord, UserRecord, new_id
from parley.services.access import hash_secret
from parley.storage.base import BulkData
from parley.storage.sqlite import SqliteStorage
from tests.e2e.server import Server

pytestmark = pytest.mark.slow

MESSAGES = 200_000
GROWTH_MAX = (64 + 16) * 1024 * 1024  # the SQLite page cache, and some


def peak_rss(server: Server) -> int:
    total = 0
    for pid in server.pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


async def seed(data: Path) -> tuple[str, str]:
    """Alice, with MESSAGES messages: to her, from her to bob, and in her group."""
    alice, bob = UserRecord(new_id("u_"), "alice"), UserRecord(new_id("u_"), "bob")
    group = GroupRecord(new_id("g_"), "club")
    secret = "s" * 43
    now = int(time.time() * 1000) - MESSAGES
    messages = []
    for n in range(MESSAGES):
        sender, recipient, kind = [
            (bob.id, alice.id, "private"),
            (alice.id, bob.id, "private"),
            (bob.id, group.id, "group"),
        ][n % 3]
        text = f"message number {n} " + "x" * 100
        messages.append(Message(new_id("m_"), kind, sender, recipient, text, now + n))  # type: ignore[arg-type]
    store = SqliteStorage(data / "parley.db")
    await store.open()
    try:
        await store.bulk_load(
            BulkData([alice, bob], [group], [(group.id, alice.id), (group.id, bob.id)], messages)
        )
        await store.add_token(TokenRecord("t_a", alice.id, hash_secret(secret), "phone", now, now))
    finally:
        await store.close()
    return alice.id, f"{alice.id}.{secret}"


async def test_export_streams_in_constant_memory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    alice, token = await seed(data)
    server = await asyncio.to_thread(
        Server(data, PARLEY_STORAGE="sqlite", PARLEY_AUTH="token").start
    )
    target = tmp_path / "export.json"
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert (
                await client.get(f"/v1/messages/{alice}?limit=1", headers=headers)
            ).status_code == 200
            before = peak_rss(server)
            started = time.monotonic()
            async with client.stream("GET", f"/v1/users/{alice}/export", headers=headers) as r:
                assert r.status_code == 200
                with target.open("wb") as out:
                    async for chunk in r.aiter_bytes():
                        out.write(chunk)
            took = time.monotonic() - started
            after = peak_rss(server)
    finally:
        await asyncio.to_thread(server.stop)
    doc = json.loads(target.read_text())
    assert len(doc["messages"]) == MESSAGES
    numbers = sorted(int(m["message"].split()[2]) for m in doc["messages"])
    assert numbers == list(range(MESSAGES))
    size = target.stat().st_size
    print(f"\nexport of {MESSAGES} messages: {size / 2**20:.1f} MiB in {took:.1f} s; server peak "
          f"RSS {before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB after")  # fmt: skip
    assert after - before < GROWTH_MAX
