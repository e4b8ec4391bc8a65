"""``parley media gc``: uploads no message carries go after the grace period, with their
bytes unless another upload still points at them; so do leftovers of interrupted uploads."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parley.app import build
from parley.settings import Settings
from tests.backends import Harness, MakeHarness
from tests.e2e.test_media import PNG, s3_harness, send, status, upload

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["files", "s3"])
async def gc_api(request: pytest.FixtureRequest, make_harness: MakeHarness) -> Harness:
    if request.param == "files":
        return await make_harness("token")
    return await s3_harness(make_harness)


async def test_collect_keeps_what_messages_carry(gc_api: Harness) -> None:
    api = gc_api
    media = api.parley.media
    assert media is not None
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    carried = await upload(api, ha)
    lonely = await upload(api, ha, b"never sent", "text/plain")
    twin = await upload(api, hb)  # the same bytes as ``carried``, never sent
    r = await send(api, ha, "private", senderId=alice, receiverId=bob, message="x",
                   attachments=[carried])  # fmt: skip
    assert r.status_code == 200
    spool = media.blobs.spool()  # an upload cut off by a crash
    spool.add(b"half a file")
    spool.flush()
    spool.file.close()
    old = time.time() - 10
    os.utime(spool.path, (old, old))

    young = await media.collect(3600)  # everything is younger than an hour
    assert (young.records, young.blobs, young.spools) == (0, 0, 0)
    assert await status(api, lonely, ha) == 200

    report = await media.collect(0, now=time.time() + 5)
    assert (report.records, report.blobs, report.spools) == (2, 1, 1)
    assert await status(api, lonely, ha) == 404
    assert await status(api, twin, hb) == 404
    r = await api.client.get(f"/v1/media/{carried}", headers=hb)
    assert r.status_code == 200 and r.content == PNG
    assert not spool.path.exists()
    again = await media.collect(0, now=time.time() + 5)
    assert (again.records, again.blobs, again.spools) == (0, 0, 0)


def _gc(data: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "parley", "media", "gc", "--data-dir", str(data), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_command_on_a_sqlite_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings.from_env({"PARLEY_DATA_DIR": str(data), "PARLEY_AUTH": "token"})
    parley = build(settings)
    await parley.start()
    try:
        alice = await parley.users.create("alice")
        bob = await parley.users.create("bob")
        assert parley.media is not None

        async def chunks(data: bytes) -> object:
            yield data

        kept = await parley.media.upload(alice.user.id, "image/png", None, chunks(PNG))  # type: ignore[arg-type]
        gone = await parley.media.upload(alice.user.id, "text/plain", None, chunks(b"x"))  # type: ignore[arg-type]
        await parley.messages.send(
            alice.user.id, "private", alice.user.id, bob.user.id, "hi", None, [kept.id]
        )
    finally:
        await parley.stop()
    await asyncio.sleep(0.01)  # the uploads are now older than "now"

    done = await asyncio.to_thread(_gc, data)
    assert done.returncode == 0, done.stderr
    assert "removed 0 unattached upload(s), 0 file(s)" in done.stdout
    done = await asyncio.to_thread(_gc, data, "--grace", "0")
    assert done.returncode == 0, done.stderr
    assert "removed 1 unattached upload(s), 1 file(s) and 0 unfinished" in done.stdout
    files = sorted(p.name for p in (data / "media").rglob("*") if p.is_file())
    assert files == [kept.sha256]
    assert gone.sha256 not in files
    refused = await asyncio.to_thread(_gc, data, "--grace", "-1")
    assert refused.returncode == 2
