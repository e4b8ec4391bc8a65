"""A "maybe changed" cache: which streams changed after a given position.

``ChangeCache`` remembers, for each stream (a user's private inbox, a group, a user's sent
messages), the timestamp of its last message, for every message stored after
``earliest``. A stream it has no entry for has not changed since ``earliest``. So

    changed_since(stream, T) is False   =>   no message newer than T exists in that stream

and an idle poll can be answered without touching the database. When the cache is full
it forgets its oldest entries and raises ``earliest`` to the newest position forgotten, so
an eviction can make it say "maybe" more often but can never hide a change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol


class Changes(Protocol):
    """Where services record and ask about stream changes (local, or shared via Redis)."""

    async def start(self, earliest: int) -> None: ...

    async def marked(self, marks: Sequence[tuple[str, int]]) -> None: ...

    async def changed(self, streams: Sequence[str], after: int) -> bool: ...


class ChangeCache:
    def __init__(self, earliest: int, max_entries: int = 1_000_000) -> None:
        self.earliest = earliest
        self.max_entries = max_entries
        self._last: dict[str, int] = {}

    def mark(self, stream: str, ts: int) -> None:
        last = self._last.pop(stream, None)
        if last is not None and last > ts:
            ts = last
        self._last[stream] = ts  # re-inserted: the dict stays in (roughly) position order
        if len(self._last) > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        drop = max(1, self.max_entries // 10)
        for stream in list(self._last)[:drop]:
            ts = self._last.pop(stream)
            if ts > self.earliest:
                self.earliest = ts

    def changed_since(self, streams: Iterable[str], after: int) -> bool:
        if after < self.earliest:
            return True
        last = self._last
        for stream in streams:
            ts = last.get(stream)
            if ts is not None and ts > after:
                return True
        return False

    def __len__(self) -> int:
        return len(self._last)


def sent_stream(user_id: str) -> str:
    """The stream of private messages a user sent (read with ``include=sent``)."""
    return "sent:" + user_id


class LocalChanges:
    """:class:`Changes` for one process: a :class:`ChangeCache` in memory."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.cache = ChangeCache(earliest=0, max_entries=max_entries)

    async def start(self, earliest: int) -> None:
        self.cache.earliest = earliest

    async def marked(self, marks: Sequence[tuple[str, int]]) -> None:
        for stream, ts in marks:
            self.cache.mark(stream, ts)

    async def changed(self, streams: Sequence[str], after: int) -> bool:
        return self.cache.changed_since(streams, after)


class NoChanges:
    """:class:`Changes` that knows nothing: every check reads storage (``PARLEY_CACHE=none``)."""

    async def start(self, earliest: int) -> None:
        """Nothing to remember."""

    async def marked(self, marks: Sequence[tuple[str, int]]) -> None:
        """Nothing to remember."""

    async def changed(self, streams: Sequence[str], after: int) -> bool:
        return True
