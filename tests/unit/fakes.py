"""Recording fakes for the services' collaborators, and the services wired on them.

The services run on the in-memory storage adapter (its ``calls`` counter tells which
storage operations a service used) with a change cache and a wake-up channel that record
what the services told them. Tests assert on those records, in the manner of
"Architecture Patterns with Python": drive a service through its public methods, then
look at what its fakes were asked to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from parley.cache.base import Directory, Look, streams_of
from parley.cache.memory import MemoryDirectory, Notifier
from parley.domain.positions import PositionTracker
from parley.domain.rules import Limits
from parley.services.groups import GroupService
from parley.services.messages import MessageService
from parley.services.users import UserService
from parley.storage.memory import MemoryStorage


class RecordingChanges:
    """A change cache that records every mark and answers from what was marked, with
    the groups of a real directory."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.earliest = 0
        self.marks: list[tuple[str, int]] = []
        self.asked: list[tuple[tuple[str, ...], int]] = []

    async def start(self, earliest: int) -> None:
        self.earliest = earliest

    async def marked(self, marks: Sequence[tuple[str, int]]) -> None:
        self.marks.extend(marks)

    async def look(
        self, user_id: str, after: int | None, include_sent: bool, include_events: bool = False
    ) -> Look:
        groups = await self.directory.groups_of(user_id)
        if after is None:
            return Look(groups, True)
        streams = streams_of(user_id, groups, include_sent, include_events)
        self.asked.append((tuple(streams), after))
        if after < self.earliest:
            return Look(groups, True)
        wanted = set(streams)
        return Look(groups, any(s in wanted and ts > after for s, ts in self.marks))

    def streams_marked(self) -> set[str]:
        return {stream for stream, _ in self.marks}


class RecordingNotifier(Notifier):
    """The real in-process wake-up channel, recording every notification it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.notified: list[list[str]] = []

    def notify_all(self, streams: Iterable[str]) -> None:
        streams = list(streams)
        self.notified.append(streams)
        super().notify_all(streams)

    def streams_notified(self) -> set[str]:
        return {stream for streams in self.notified for stream in streams}


class Clock:
    """A clock for the position tracker (unix ms) that the test moves."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def tick(self, ms: int = 1) -> None:
        self.now += ms


@dataclass
class Services:
    storage: MemoryStorage
    changes: RecordingChanges
    notifier: RecordingNotifier
    clock: Clock
    users: UserService
    groups: GroupService
    messages: MessageService
    limits: Limits = field(default_factory=Limits)

    def storage_calls(self) -> int:
        return sum(self.storage.calls.values())

    def forget(self) -> None:
        """Clear the fakes' records (after setting a scene)."""
        self.changes.marks.clear()
        self.changes.asked.clear()
        self.notifier.notified.clear()


def make_services(token_mode: bool = True) -> Services:
    """The services wired as ``parley.app.build`` wires them, on recording fakes."""
    clock = Clock()
    storage = MemoryStorage(positions=PositionTracker(clock))
    notifier = RecordingNotifier()
    limits = Limits()
    directory = MemoryDirectory(storage)
    changes = RecordingChanges(directory)
    users = UserService(storage, directory, limits, token_mode)
    groups = GroupService(storage, directory, users, limits)
    messages = MessageService(storage, directory, users, groups, changes, limits, notifier)
    return Services(storage, changes, notifier, clock, users, groups, messages, limits)
