"""Media records in process memory (the reference adapter of ``MediaPort``)."""

from __future__ import annotations

from collections.abc import Sequence

from parley.domain.models import MediaRecord, MediaRef
from parley.storage.media_port import MediaPort, gone


class MemoryMedia(MediaPort):
    def __init__(self) -> None:
        super().__init__()
        self._media: dict[str, MediaRecord] = {}
        self._media_refs: dict[str, dict[str, MediaRef]] = {}  # media id -> message id -> ref

    async def add_media(self, record: MediaRecord) -> None:
        self._media[record.id] = record

    async def get_media(self, media_id: str) -> MediaRecord | None:
        return self._media.get(media_id)

    async def add_media_refs(self, refs: Sequence[MediaRef]) -> None:
        for ref in refs:
            if ref.media_id not in self._media:
                raise gone(ref.media_id)
        for ref in refs:
            self._media_refs.setdefault(ref.media_id, {}).setdefault(ref.message_id, ref)

    async def media_refs(self, media_id: str) -> list[MediaRef]:
        return list(self._media_refs.get(media_id, {}).values())

    async def unreferenced_media(self, created_before: int, limit: int) -> list[MediaRecord]:
        found = [
            r
            for r in self._media.values()
            if r.created_at < created_before and not self._media_refs.get(r.id)
        ]
        return sorted(found, key=lambda r: r.created_at)[:limit]

    async def delete_media(self, media_id: str) -> bool:
        if media_id not in self._media or self._media_refs.get(media_id):
            return False
        del self._media[media_id]
        return True

    async def media_with_sha(self, sha256: str) -> bool:
        return any(r.sha256 == sha256 for r in self._media.values())
