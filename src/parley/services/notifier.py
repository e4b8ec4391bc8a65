"""Wake-ups for long-polls and live streams.

Waiters register on the streams they read (a user's inbox, its groups, its sent messages);
``notify(stream)`` wakes every waiter of that stream. It is the one path every stored
message goes through: in-process for the embedded default, and fed from Redis pub/sub
when several processes share a database. A wake-up is only a hint to read again; a waiter
that wakes early or twice reads nothing new and goes back to waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.wakeups = 0
        # Set by a cross-process channel (Redis pub/sub): called with the streams of every
        # message stored by this process, so other processes can wake their waiters.
        self.broadcast: Callable[[list[str]], None] | None = None

    async def wait(self, streams: Iterable[str], timeout: float) -> bool:
        """Wait until one of ``streams`` is notified (True) or ``timeout`` passes (False)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys = list(streams)
        for key in keys:
            self._waiters.setdefault(key, set()).add(future)
        try:
            async with asyncio.timeout(timeout):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiters[key]

    def notify_all(self, streams: Iterable[str]) -> None:
        """Wake the waiters of these streams here and, through ``broadcast``, elsewhere."""
        for stream in streams:
            self.notify(stream)
        if self.broadcast is not None:
            self.broadcast(list(streams))

    def notify(self, stream: str) -> None:
        waiters = self._waiters.get(stream)
        if not waiters:
            return
        for future in list(waiters):
            if not future.done():
                future.set_result(None)
                self.wakeups += 1

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())
