"""Blobs as files under the data directory: ``<root>/ab/cd/<sha256>``.

A blob becomes visible under its name only whole: it is written to a spool file in
``<root>/tmp``, fsynced, renamed into place, and the directory fsynced. A crash (even
kill -9) mid-upload leaves at most a spool file, which no name points at and which
``parley media gc`` removes after the grace period.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

from parley.media.blobs import CHUNK, BlobInfo, BlobStore, Spool


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobs(BlobStore):
    name = "files"

    def __init__(self, root: Path) -> None:
        super().__init__(root / "tmp")
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def keep(self, spool: Spool) -> bool:
        return await asyncio.to_thread(self._keep, spool)

    def _keep(self, spool: Spool) -> bool:
        spool.finish()
        target = self.path(spool.sha256)
        if target.exists():
            os.utime(target)  # a fresh upload of these bytes: not garbage for a while
            spool.discard()
            return False
        created = not target.parent.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(spool.path, target)
        _fsync_dir(target.parent)
        if created:
            _fsync_dir(target.parent.parent)
            _fsync_dir(self.root)
        return True

    async def read(self, sha256: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        handle = await asyncio.to_thread(open, self.path(sha256), "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            left = end - start + 1
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def blobs(self) -> AsyncIterator[BlobInfo]:
        infos = await asyncio.to_thread(self._list)
        for info in infos:
            yield info

    def _list(self) -> list[BlobInfo]:
        found = []
        for path in self.root.glob("??/??/*"):
            if len(path.name) != 64:
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append(BlobInfo(path.name, stat.st_size, stat.st_mtime))
        return found

    async def delete(self, sha256: str, modified_before: float) -> bool:
        return await asyncio.to_thread(self._delete, sha256, modified_before)

    def _delete(self, sha256: str, modified_before: float) -> bool:
        path = self.path(sha256)
        try:
            if path.stat().st_mtime >= modified_before:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True
