"""Attachments over HTTP, on every backend: upload, attach, who may download, headers.

The blob store is the data directory's by default; ``s3_api`` runs the same app against
an S3 bucket on moto's server (loopback), so every backend shape, scale-out and DynamoDB
included, is also tested with S3.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import pytest

from tests.backends import Harness, MakeHarness

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def code(r: Any) -> str:
    return str(r.json()["error"]["code"])


async def upload(
    api: Harness, headers: dict[str, str], data: bytes = PNG, kind: str = "image/png"
) -> str:
    r = await api.client.post("/v1/media", content=data, headers={**headers, "Content-Type": kind})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == len(data) and body["contentType"] == kind
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["mediaId"].startswith("f_") and len(body["mediaId"]) >= 20
    return str(body["mediaId"])


async def send(api: Harness, headers: dict[str, str], kind: str, **body: Any) -> Any:
    return await api.client.post(f"/v1/messages/send?type={kind}", json=body, headers=headers)


async def new_group(api: Harness, headers: dict[str, str]) -> str:
    r = await api.client.post("/v1/groups/create", json={"groupName": "g"}, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["groupId"])


async def group_op(api: Harness, group: str, op: str, headers: dict[str, str], user: str) -> None:
    r = await api.client.post(f"/v1/groups/{group}?op={op}", json={"userId": user}, headers=headers)
    assert r.status_code == 200, r.text


async def status(api: Harness, media_id: str, headers: dict[str, str]) -> int:
    return (await api.client.get(f"/v1/media/{media_id}", headers=headers)).status_code


async def s3_harness(make_harness: MakeHarness, auth: str = "token", **env: str) -> Harness:
    """An app with files in an S3 bucket of its own (moto on loopback)."""
    from tests.integration import moto_server

    reason = moto_server.moto_missing()
    if reason:
        pytest.skip(reason)
    bucket = f"parley-{secrets.token_hex(4)}"
    return await make_harness(
        auth,
        PARLEY_MEDIA_URL=f"s3://{bucket}/media",
        PARLEY_S3_ENDPOINT=moto_server.endpoint(),
        **env,
    )


@pytest.fixture(params=["files", "s3"])
async def any_api(request: pytest.FixtureRequest, make_harness: MakeHarness) -> Harness:
    if request.param == "files":
        return await make_harness("token")
    return await s3_harness(make_harness)


async def test_upload_attach_and_download(any_api: Harness) -> None:
    api = any_api
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    media = await upload(api, ha)
    r = await send(api, ha, "private", senderId=alice, receiverId=bob, message="look",
                   attachments=[media])  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["attachments"] == [media]
    r = await api.client.get(f"/v1/messages/{bob}", headers=hb)
    (message,) = r.json()["messages"]
    assert message["attachments"] == [media]
    r = await api.client.get(f"/v1/media/{media}", headers=hb)
    assert r.status_code == 200
    assert r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-length"] == str(len(PNG))
    assert r.headers["etag"] == f'"{hashlib.sha256(PNG).hexdigest()}"'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]
    assert r.headers["content-disposition"].startswith("inline")


async def test_messages_without_attachments_keep_their_shape(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    r = await send(api, ha, "private", senderId=alice, receiverId=bob, message="hi")
    assert "attachments" not in r.json()
    r = await send(api, ha, "private", senderId=alice, receiverId=bob, message="hi",
                   attachments=[])  # fmt: skip
    assert "attachments" not in r.json()
    r = await api.client.get(f"/v1/messages/{bob}", headers=hb)
    assert all(set(m) == {"messageId", "type", "senderId", "recipientId", "timestamp", "message"}
               for m in r.json()["messages"])  # fmt: skip


async def test_same_bytes_are_stored_once(any_api: Harness) -> None:
    api = any_api
    _, ha = await api.user("alice")
    _, hb = await api.user("bob")
    first = await upload(api, ha)
    second = await upload(api, hb)
    assert first != second
    media = api.parley.media
    assert media is not None
    blobs = [b async for b in media.blobs.blobs()]
    assert [b.sha256 for b in blobs] == [hashlib.sha256(PNG).hexdigest()]


async def test_authorization_matrix(api: Harness) -> None:
    owner, ho = await api.user("owner")
    peer, hp = await api.user("peer")
    member, hm = await api.user("member")
    removed, hr = await api.user("removed")
    _, hs = await api.user("stranger")
    blocked, hb = await api.user("blocked")
    group = await new_group(api, ho)
    for user in (member, removed):
        await group_op(api, group, "add", ho, user)
    private_file = await upload(api, ho, b"private bytes", "text/plain")
    group_file = await upload(api, ho, b"group bytes", "text/plain")
    r = await send(api, ho, "private", senderId=owner, receiverId=peer, message="p",
                   attachments=[private_file])  # fmt: skip
    assert r.status_code == 200, r.text
    r = await send(api, ho, "group", senderId=owner, groupId=group, message="g",
                   attachments=[group_file])  # fmt: skip
    assert r.status_code == 200, r.text
    await group_op(api, group, "remove", ho, removed)

    # a blocked user cannot reach the blocker with a file: the send is refused
    r = await api.client.post(f"/v1/users/{owner}?op=block", json={"blockedUserId": blocked},
                              headers=ho)  # fmt: skip
    assert r.status_code == 200, r.text
    blocked_file = await upload(api, hb, b"unwanted", "text/plain")
    r = await send(api, hb, "private", senderId=blocked, receiverId=owner, message="x",
                   attachments=[blocked_file])  # fmt: skip
    assert r.status_code == 403

    expected = {
        (private_file, "owner"): 200, (private_file, "peer"): 200,
        (private_file, "member"): 404, (private_file, "removed"): 404,
        (private_file, "stranger"): 404, (private_file, "blocked"): 404,
        (group_file, "owner"): 200, (group_file, "peer"): 404,
        (group_file, "member"): 200, (group_file, "removed"): 404,
        (group_file, "stranger"): 404, (group_file, "blocked"): 404,
        (blocked_file, "owner"): 404, (blocked_file, "blocked"): 200,
        (blocked_file, "stranger"): 404,
    }  # fmt: skip
    who = {"owner": ho, "peer": hp, "member": hm, "removed": hr, "stranger": hs, "blocked": hb}
    actual = {(f, name): await status(api, f, who[name]) for f, name in expected}
    assert actual == expected
    assert await status(api, "f_" + secrets.token_urlsafe(16), ho) == 404
    for weird in ("..%2F..%2Fetc", "%00", "\u2603" * 10, "x" * 300):
        assert await status(api, weird, ho) == 404
    assert await status(api, private_file, {}) == 401
    # re-adding the removed member gives the group's files back
    await group_op(api, group, "add", ho, removed)
    assert await status(api, group_file, hr) == 200


async def test_a_deleted_message_takes_its_files_with_it(api: Harness) -> None:
    """Deleting a message (op=delete) drops its attachments: it shows none any more, and
    whoever could download a file only through that message gets 404; the uploader keeps
    access to their own upload."""
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    group = await new_group(api, ha)
    await group_op(api, group, "add", ha, bob)
    private_file = await upload(api, ha, b"private bytes", "text/plain")
    group_file = await upload(api, ha, b"group bytes", "text/plain")
    sent = []
    for kind, to, media in (("private", {"receiverId": bob}, private_file),
                            ("group", {"groupId": group}, group_file)):  # fmt: skip
        r = await send(api, ha, kind, senderId=alice, message="x", attachments=[media], **to)
        assert r.status_code == 200, r.text
        sent.append(r.json()["messageId"])
    assert await status(api, private_file, hb) == 200
    assert await status(api, group_file, hb) == 200
    for message_id in sent:
        r = await api.client.post(f"/v1/messages/{message_id}?op=delete", headers=ha)
        assert r.status_code == 200, r.text
        assert r.json()["deleted"] is True and "attachments" not in r.json()
    assert await status(api, private_file, hb) == 404
    assert await status(api, group_file, hb) == 404
    assert await status(api, private_file, ha) == 200  # the uploader's own file
    r = await api.client.get(f"/v1/messages/{bob}", headers=hb)
    assert r.status_code == 200, r.text
    shown = [m for m in r.json()["messages"] if m["messageId"] in sent]
    assert len(shown) == 2 and all("attachments" not in m for m in shown), shown


async def test_attachment_rules(api: Harness) -> None:
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    mine = await upload(api, ha)
    theirs = await upload(api, hb, b"bob's")
    cases = [
        ([theirs], "bad_attachment"),
        (["f_" + secrets.token_urlsafe(16)], "bad_attachment"),
        (["../x"], "bad_attachment"),
        ([mine] + [await upload(api, ha, bytes([i])) for i in range(10)], "bad_attachment"),
        ([""], "empty_field"),
    ]
    for files, expected in cases:
        r = await send(api, ha, "private", senderId=alice, receiverId=bob, message="x",
                       attachments=files)  # fmt: skip
        assert r.status_code == 400 and code(r) == expected, (files, r.text)
    r = await send(api, ha, "private", senderId=alice, receiverId=bob, message="x",
                   attachments="f_x")  # fmt: skip
    assert r.status_code == 400
    r = await send(api, ha, "private", senderId=alice, receiverId=bob, message="ten",
                   attachments=[mine, mine])  # fmt: skip
    assert r.status_code == 200 and r.json()["attachments"] == [mine]
    assert await status(api, theirs, ha) == 404


async def test_upload_limits(make_harness: MakeHarness) -> None:
    api = await make_harness("token", PARLEY_MAX_MEDIA="1000")
    _, ha = await api.user("alice")
    r = await api.client.post("/v1/media", content=b"x" * 1001, headers=ha)
    assert r.status_code == 413 and code(r) == "payload_too_large"

    async def chunks() -> Any:  # no Content-Length: counted while reading
        for _ in range(20):
            yield b"y" * 100

    r = await api.client.post("/v1/media", content=chunks(), headers=ha)
    assert r.status_code == 413
    r = await api.client.post("/v1/media", content=b"x" * 1000, headers=ha)
    assert r.status_code == 200 and r.json()["contentType"] == "application/octet-stream"
    r = await api.client.post("/v1/media", content=b"", headers=ha)
    assert r.status_code == 400 and code(r) == "empty_file"  # the body is the file

    async def nothing() -> Any:  # no Content-Length, and no bytes either
        for _ in range(2):
            yield b""

    r = await api.client.post("/v1/media", content=nothing(), headers=ha)
    assert r.status_code == 400 and code(r) == "empty_file"
    r = await api.client.post(
        "/v1/media", content=b"x", headers={**ha, "Content-Type": "not a type"}
    )
    assert r.status_code == 400 and code(r) == "bad_content_type"
    r = await api.client.post("/v1/media", content=b"x")
    assert r.status_code == 401
    media = api.parley.media
    assert media is not None
    assert media.blobs.stale_spools(float("inf")) == []  # refused uploads left nothing


async def test_ranges_and_etags(any_api: Harness) -> None:
    api = any_api
    _, ha = await api.user("alice")
    media = await upload(api, ha)
    url = f"/v1/media/{media}"
    etag = f'"{hashlib.sha256(PNG).hexdigest()}"'
    r = await api.client.get(url, headers={**ha, "If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == etag
    r = await api.client.get(url, headers={**ha, "If-None-Match": '"other"'})
    assert r.status_code == 200
    r = await api.client.get(url, headers={**ha, "Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == PNG[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(PNG)}"
    assert r.headers["content-length"] == "10"
    r = await api.client.get(url, headers={**ha, "Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == PNG[-5:]
    r = await api.client.get(url, headers={**ha, "Range": f"bytes={len(PNG) - 3}-"})
    assert r.status_code == 206 and r.content == PNG[-3:]
    r = await api.client.get(url, headers={**ha, "Range": f"bytes=5-{len(PNG) + 100}"})
    assert r.status_code == 206 and r.content == PNG[5:]
    r = await api.client.get(url, headers={**ha, "Range": f"bytes={len(PNG)}-"})
    assert r.status_code == 416 and code(r) == "range_not_satisfiable"
    assert r.headers["content-range"] == f"bytes */{len(PNG)}"
    r = await api.client.get(url, headers={**ha, "Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and r.content == PNG  # several ranges: the whole file
    r = await api.client.get(url, headers={**ha, "Range": "bytes=0-1", "If-Range": '"old"'})
    assert r.status_code == 200 and r.content == PNG
    r = await api.client.head(url, headers=ha)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(PNG))


@pytest.mark.parametrize(
    ("kind", "inline"),
    [
        ("image/png", True),
        ("image/jpeg", True),
        ("text/plain; charset=utf-8", True),
        ("video/mp4", True),
        ("text/html", False),
        ("image/svg+xml", False),
        ("application/xml", False),
        ("text/xml", False),
        ("application/javascript", False),
        ("text/javascript", False),
        ("application/xhtml+xml", False),
        ("application/pdf", False),
        ("application/octet-stream", False),
    ],
)
async def test_what_a_browser_would_run_is_a_download(
    api: Harness, kind: str, inline: bool
) -> None:
    _, ha = await api.user("alice")
    media = await upload(api, ha, b"<script>alert(1)</script>", kind)
    r = await api.client.get(f"/v1/media/{media}", headers=ha)
    assert r.status_code == 200
    assert r.headers["content-disposition"].startswith("inline" if inline else "attachment")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "sandbox; default-src 'none'"


async def test_open_mode_has_no_authorization(open_api: Harness) -> None:
    api = open_api
    alice, _ = await api.user("alice")
    bob, _ = await api.user("bob")
    media = await upload(api, {})
    r = await send(api, {}, "private", senderId=alice, receiverId=bob, message="x",
                   attachments=[media])  # fmt: skip
    assert r.status_code == 200 and r.json()["attachments"] == [media]
    assert await status(api, media, {}) == 200


async def test_a_lost_file_is_503_not_a_cut_answer(any_api: Harness) -> None:
    api = any_api
    _, ha = await api.user("alice")
    media_id = await upload(api, ha)
    media = api.parley.media
    assert media is not None
    assert await media.blobs.delete(hashlib.sha256(PNG).hexdigest(), float("inf"))
    r = await api.client.get(f"/v1/media/{media_id}", headers=ha)
    assert r.status_code == 503 and code(r) == "unavailable"
    assert r.headers["retry-after"]
