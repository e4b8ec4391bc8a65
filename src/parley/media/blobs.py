"""The blob store port: write a blob while it arrives, read ranges, list, delete."""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

CHUNK = 64 * 1024  # bytes per read when streaming a blob out
SPOOL = 1024 * 1024  # bytes buffered before a write to the spool file


class BlobInfo:
    __slots__ = ("modified", "sha256", "size")

    def __init__(self, sha256: str, size: int, modified: float) -> None:
        self.sha256 = sha256
        self.size = size
        self.modified = modified  # unix seconds


class Spool:
    """An upload in progress: bytes hashed as they arrive and written to a temporary file
    of the data directory, never held whole in memory (at most ``SPOOL`` bytes)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=directory)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb", buffering=0)
        self.hash = hashlib.sha256()
        self.size = 0
        self._buffer: list[bytes] = []
        self._buffered = 0

    def add(self, chunk: bytes) -> bool:
        """Take a chunk; True when the buffer should be written out (``flush``)."""
        self.hash.update(chunk)
        self.size += len(chunk)
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        return self._buffered >= SPOOL

    def flush(self) -> None:
        """Write the buffer to the file (blocking: run it in a thread)."""
        data, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        view = memoryview(data)
        while view:
            written = self.file.write(view)
            view = view[written or 0 :]

    def finish(self) -> None:
        """Flush, fsync and close the file (blocking)."""
        self.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def discard(self) -> None:
        """Close and remove the file (blocking); nothing if already gone."""
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)

    @property
    def sha256(self) -> str:
        return self.hash.hexdigest()


class BlobStore(ABC):
    """Where the bytes go. Blobs are named by their SHA-256 (lowercase hex)."""

    name = "blobs"

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create directories."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def spool(self) -> Spool:
        return Spool(self.spool_dir)

    @abstractmethod
    async def keep(self, spool: Spool) -> bool:
        """Store a finished spool under its SHA-256 (the spool file is used up); False
        when those bytes were stored already (then only their modification time moves, so
        the garbage collector leaves them alone for another grace period)."""

    @abstractmethod
    def read(self, sha256: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes ``start`` to ``end`` inclusive, in chunks."""

    @abstractmethod
    def blobs(self) -> AsyncIterator[BlobInfo]:
        """Every stored blob."""

    @abstractmethod
    async def delete(self, sha256: str, modified_before: float) -> bool:
        """Delete a blob not modified since ``modified_before`` (unix seconds)."""

    def stale_spools(self, modified_before: float) -> list[Path]:
        """Spool files left behind (a crash mid-upload), older than ``modified_before``."""
        if not self.spool_dir.is_dir():
            return []
        found = []
        for path in self.spool_dir.glob("upload-*.part"):
            try:
                if path.stat().st_mtime < modified_before:
                    found.append(path)
            except FileNotFoundError:
                continue
        return found
