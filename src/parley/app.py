"""The composition root: builds Parley from settings, for the server, the CLI and tests.

Nothing here connects at import time; :meth:`Parley.start` opens storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parley.cache.changes import Changes, LocalChanges
from parley.http.metrics import Metrics
from parley.services.directory import Directory
from parley.services.groups import GroupService
from parley.services.messages import MessageService
from parley.services.notifier import Notifier
from parley.services.users import UserService
from parley.settings import Settings
from parley.storage.base import Storage


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "memory":
        from parley.storage.memory import MemoryStorage

        return MemoryStorage()
    if settings.storage == "sqlite":
        from parley.storage.sqlite import SqliteStorage

        return SqliteStorage(settings.sqlite_path, synchronous=settings.sqlite_synchronous)
    raise NotImplementedError(f"storage {settings.storage!r} is not available in this build")


@dataclass
class Parley:
    settings: Settings
    storage: Storage
    directory: Directory
    changes: Changes
    users: UserService
    groups: GroupService
    messages: MessageService
    notifier: Notifier
    metrics: Metrics = field(default_factory=Metrics)

    async def start(self) -> None:
        await self.storage.open()
        await self.changes.start(await self.storage.last_position())

    async def stop(self) -> None:
        await self.storage.close()

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state: "ok" or "unavailable"."""
        checks: dict[str, str] = {}
        try:
            await self.storage.ping()
            checks[self.storage.name] = "ok"
        except Exception:
            checks[self.storage.name] = "unavailable"
        return checks


def build(settings: Settings, storage: Storage | None = None) -> Parley:
    storage = storage if storage is not None else make_storage(settings)
    directory = Directory(storage)
    changes = LocalChanges()
    users = UserService(storage, directory, settings.limits, settings.token_mode)
    groups = GroupService(storage, directory, users, settings.limits)
    notifier = Notifier()
    messages = MessageService(storage, directory, users, groups, changes, settings.limits, notifier)
    parley = Parley(settings, storage, directory, changes, users, groups, messages, notifier)
    parley.metrics.add_source(
        "parley_storage_calls_total",
        "Storage operations called, by operation.",
        "counter",
        lambda: ((f'operation="{op}"', n) for op, n in sorted(storage.calls.items())),
    )
    parley.metrics.add_source(
        "parley_idle_checks_total",
        "Checks answered from the change cache without storage.",
        "counter",
        lambda: [("", messages.idle_checks)],
    )
    return parley
