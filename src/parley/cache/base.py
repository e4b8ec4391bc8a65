"""The cache ports: what the services ask of the directory, the change cache and wake-ups.

The services import only these protocols; ``parley.app`` picks the implementations::

    port        one process (memory.py)   PARLEY_CACHE=none (uncached.py)   Redis (redis_*.py)
    Directory   MemoryDirectory           UncachedDirectory                 RedisDirectory
    Changes     LocalChanges              NoChanges                         RedisChanges
    Wakeups     Notifier                  Notifier                          Notifier, RedisWakeups

Every implementation may answer "maybe changed" when it cannot know, never "not changed"
when something did change: an idle check that skips storage must be right.

Streams are named by what they carry: a user's private inbox is the user's id, a group's
messages the group's id, and the private messages a user sent :func:`sent_stream`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol

import msgspec

from parley.domain.models import GroupRecord, TokenRecord, UserRecord


def sent_stream(user_id: str) -> str:
    """The stream of private messages a user sent (read with ``include=sent``)."""
    return "sent:" + user_id


def event_stream(stream_id: str) -> str:
    """The change events addressed to a user or a group (read with ``include=events``);
    marked apart from the messages, so checks without events stay idle when only events
    arrive."""
    return "ev:" + stream_id


def streams_of(
    user_id: str, groups: Iterable[str], include_sent: bool, include_events: bool = False
) -> list[str]:
    """Every stream a check by ``user_id`` reads: its inbox, its groups, maybe its sent,
    maybe the events of its own id and of its groups."""
    streams = [user_id, *groups]
    if include_sent:
        streams.append(sent_stream(user_id))
    if include_events:
        streams += [event_stream(s) for s in (user_id, *groups)]
    return streams


class Look(msgspec.Struct, frozen=True):
    """One idle check's answer: the user's groups, and whether any of its streams may
    have changed after the cursor (``False`` only when none did)."""

    groups: AbstractSet[str]  # read-only: it may be the cache's own copy
    changed: bool


class Directory(Protocol):
    """Users, groups, memberships and blocks as the rules read them.

    Reads may come from a cache; writers call the ``*_created`` / ``*_changed`` methods
    after storage committed (or after a conflict showed the cache was wrong), and from then
    on every read, in every process, sees the change.
    """

    async def user(self, user_id: str) -> UserRecord | None: ...

    async def group(self, group_id: str) -> GroupRecord | None: ...

    async def groups_of(self, user_id: str) -> AbstractSet[str]: ...

    async def members_of(self, group_id: str) -> AbstractSet[str]: ...

    async def blocked_by(self, user_id: str) -> AbstractSet[str]: ...

    async def is_member(self, group_id: str, user_id: str) -> bool: ...

    async def tokens(self, user_id: str, fresh: bool = False) -> dict[bytes, TokenRecord]:
        """A user's live tokens by hash (``fresh``: read storage even if cached)."""
        ...

    async def token_added(self, token: TokenRecord) -> None: ...

    async def token_removed(self, user_id: str, token_id: str) -> None:
        """A token was revoked: once this returns, no process accepts it."""
        ...

    async def user_deleted(self, user_id: str) -> None:
        """An account is being deleted: once this returns, no process serves it."""
        ...

    async def user_created(self, user: UserRecord) -> None: ...

    async def group_created(self, group: GroupRecord, first_member: str | None) -> None: ...

    async def memberships_changed(self, group_id: str, user_id: str) -> None: ...

    async def blocks_changed(self, blocker_id: str) -> None: ...


class Changes(Protocol):
    """A "maybe changed" cache of message streams.

    ``look(user, T, include_sent).changed is False`` promises that no message newer than
    ``T`` exists in any stream the user reads; with it come the user's groups, read in the
    same step (an idle check costs one call: no storage, at most one Redis round trip).
    """

    async def start(self, earliest: int) -> None:
        """Storage holds nothing newer than ``earliest`` that was not ``marked``."""
        ...

    async def marked(self, marks: Sequence[tuple[str, int]]) -> None:
        """These (stream, timestamp) messages were committed."""
        ...

    async def look(
        self, user_id: str, after: int | None, include_sent: bool, include_events: bool = False
    ) -> Look:
        """The user's groups, and whether its streams (``streams_of``) may have changed
        after ``after`` (``None``: no cursor, always "changed")."""
        ...


SIGNED_OUT = {"type": "signed_out"}  # a signal: re-check your token now


class Watch:
    """One waiting client (a long-poll or a live stream): the future it waits on now, and
    whether it has gone away. ``stop()`` (its connection closed) marks it gone and wakes
    the current wait.

    A waiter also hears *signals* for its user (``Wakeups.listen``): ``signal()`` queues
    one and wakes the current wait (``poked``). Typing notices are queued only for a
    waiter that shows them (``typing``); the others are only poked, to re-check their
    token (``SIGNED_OUT``) or everything (``poke``)."""

    __slots__ = ("future", "gone", "poked", "signals", "typing")

    SIGNALS_MAX = 100  # signals kept for a stream that is not reading them

    def __init__(self, typing: bool = False) -> None:
        self.future: asyncio.Future[bool] | None = None
        self.gone = False
        self.poked = False
        self.typing = typing
        self.signals: list[dict[str, str]] = []

    def stop(self) -> None:
        self.gone = True
        self._wake()

    def poke(self) -> None:
        """End the current wait: the waiter re-checks its token and its streams."""
        self.poked = True
        self._wake()

    def signal(self, fields: dict[str, str]) -> None:
        if self.typing and fields.get("type") == "typing" and len(self.signals) < self.SIGNALS_MAX:
            self.signals.append(fields)
        self.poke()

    def _wake(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(False)

    def take_signals(self) -> list[dict[str, str]]:
        signals, self.signals, self.poked = self.signals, [], False
        return signals


class Wakeups(Protocol):
    """Wakes long-polls when their streams may have changed. A wake-up is only a hint to
    read again: a waiter that wakes early or twice reads nothing new and waits again.

    ``reliable`` says whether every wake-up and signal meant for this process's waiters
    reaches it (one process; or Redis pub/sub while subscribed). While it is true a waiter
    sleeps until it is woken or its own deadline (a stream's keep-alive); while it is
    false it re-checks on its own every few seconds. An implementation that loses or
    regains reliability pokes every waiter, so each re-checks at once."""

    reliable: bool
    # A token that stays equal while no wake-up meant for this process can have been
    # lost (None: it cannot tell). A waiter that looked at its streams and has not been
    # woken since, with the same token, knows that none of them changed.
    mark: Callable[[], Hashable] | None
    serial: int  # raised by every notification
    # Whether this process has applied every wake-up of every write answered so far, in
    # any process (None: it cannot tell). A poll whose last look found nothing, with the
    # same ``mark`` and none of its streams heard since, may then answer "nothing new"
    # without looking (``parley.cache.redis_wakeups``: a listener lease).
    settled: Callable[[], bool] | None

    async def flushed(self) -> None:
        """Return once the wake-ups queued so far reached every process that answers polls
        from them (a write's answer waits for it)."""
        ...

    def heard_since(self, serial: int, streams: Iterable[str]) -> bool:
        """Was one of ``streams`` notified here after ``serial`` (a past ``serial``)?"""
        ...

    async def wait(
        self, streams: Iterable[str], timeout: float, watch: Watch | None = None
    ) -> bool:
        """Wait until one of ``streams`` is notified (True) or ``timeout`` passes (False).
        With ``watch``, its ``stop()`` also ends the wait (False)."""
        ...

    def notify_all(self, streams: Iterable[str]) -> None:
        """Wake the waiters of these streams, in this process and in the others."""
        ...

    def listen(self, user_id: str, watch: Watch) -> None:
        """Pass the signals (``signal``) for ``user_id`` to ``watch`` until it is gone or
        ``unlisten``."""
        ...

    def unlisten(self, user_id: str, watch: Watch) -> None: ...

    def signal(self, user_ids: Sequence[str], fields: dict[str, str]) -> None:
        """An ephemeral signal (never stored) for the listening streams of these users,
        in this process and in the others; lost if nobody listens."""
        ...


class Counters(Protocol):
    """Counters shared by every process (sign-in throttles)."""

    async def count(self, keys: Sequence[str], ttl: int) -> list[int] | None:
        """Add one to each key (created with ``ttl`` seconds to live) and return the new
        values; None when the shared store cannot answer (count locally instead)."""
        ...
