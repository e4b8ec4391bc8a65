"""Media records and messages carrying attachments: the same behaviour on every backend."""

from __future__ import annotations

import asyncio

import pytest

from parley.domain.models import GroupRecord, MediaRecord, MediaRef, new_id
from parley.errors import Code, InvalidInput
from parley.storage.base import MessageDraft, Storage


def record(uploader: str = "u_a", sha: str = "ab" * 32, created_at: int = 1_000) -> MediaRecord:
    return MediaRecord(new_id("f_"), uploader, "image/png", 42, sha, created_at)


async def test_records_round_trip(storage: Storage) -> None:
    first = record()
    await storage.add_media(first)
    assert await storage.get_media(first.id) == first
    assert await storage.get_media("f_missing") is None
    assert await storage.media_with_sha(first.sha256) is True
    assert await storage.media_with_sha("cd" * 32) is False


async def test_references_are_idempotent_and_listed(storage: Storage) -> None:
    media = record()
    await storage.add_media(media)
    ref = MediaRef(media.id, "m_1", "group", "u_a", "g_1")
    await storage.add_media_refs([ref, MediaRef(media.id, "m_2", "private", "u_a", "u_b")])
    await storage.add_media_refs([ref])
    refs = await storage.media_refs(media.id)
    assert sorted(refs, key=lambda r: r.message_id) == [
        ref,
        MediaRef(media.id, "m_2", "private", "u_a", "u_b"),
    ]
    assert await storage.media_refs("f_other") == []


async def test_only_old_unreferenced_records_are_garbage(storage: Storage) -> None:
    old, carried, young = (
        record(created_at=1_000),
        record(created_at=1_500),
        record(created_at=9_000),
    )
    for r in (old, carried, young):
        await storage.add_media(r)
    await storage.add_media_refs([MediaRef(carried.id, "m_1", "private", "u_a", "u_b")])
    assert [r.id for r in await storage.unreferenced_media(5_000, 100)] == [old.id]
    assert await storage.delete_media(carried.id) is False  # carried by a message
    assert await storage.delete_media(old.id) is True
    assert await storage.delete_media(old.id) is False
    assert await storage.get_media(old.id) is None
    assert await storage.get_media(carried.id) == carried
    assert await storage.unreferenced_media(5_000, 100) == []


async def test_messages_keep_their_attachments(storage: Storage) -> None:
    group = GroupRecord(new_id("g_"), "g")
    await storage.create_group(group, "u_a")
    files = (new_id("f_"), new_id("f_"))
    with_files = MessageDraft(new_id("m_"), "group", "u_a", group.id, "look", None, files)
    plain = MessageDraft(new_id("m_"), "private", "u_a", "u_b", "hi", "key-1", ())
    keyed = MessageDraft(new_id("m_"), "private", "u_a", "u_b", "pic", "key-2", files[:1])
    stored, _ = await storage.append_message(with_files)
    assert stored.attachments == files
    await storage.append_message(plain)
    await storage.append_message(keyed)
    await asyncio.sleep(0.003)
    page = await storage.read_messages([group.id, "u_b"], None, None, 10)
    by_id = {m.id: m for m in page.messages}
    assert by_id[with_files.id].attachments == files
    assert by_id[plain.id].attachments == ()
    assert by_id[keyed.id].attachments == files[:1]
    replay = await storage.find_send("u_a", "key-2")
    assert replay is not None and replay.attachments == files[:1]


async def test_a_file_collected_meanwhile_cannot_be_attached(storage: Storage) -> None:
    kept, collected = record(), record()
    for r in (kept, collected):
        await storage.add_media(r)
    assert await storage.delete_media(collected.id) is True
    refs = [MediaRef(m.id, "m_9", "private", "u_a", "u_b") for m in (kept, collected)]
    with pytest.raises(InvalidInput) as caught:
        await storage.add_media_refs(refs)
    assert caught.value.code == Code.BAD_ATTACHMENT
    assert await storage.media_refs(collected.id) == []


async def test_a_send_and_the_collector_never_both_win(storage: Storage) -> None:
    """Attaching a file and collecting it, at the same time: either the file stays with its
    reference, or it is gone and the attaching failed; never a reference to nothing."""
    for i in range(20):
        media = record()
        await storage.add_media(media)
        ref = MediaRef(media.id, f"m_{i}", "private", "u_a", "u_b")

        async def attach(ref: MediaRef = ref) -> bool:
            try:
                await storage.add_media_refs([ref])
            except InvalidInput:
                return False
            return True

        attached, deleted = await asyncio.gather(attach(), storage.delete_media(media.id))
        assert attached != deleted, (attached, deleted)
        exists = await storage.get_media(media.id) is not None
        assert exists == attached
        assert bool(await storage.media_refs(media.id)) == attached
