"""The composition root: builds Parley from settings, for the server, the CLI and tests.

Nothing here connects at import time; :meth:`Parley.start` opens storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parley.cache.base import Changes, Directory
from parley.cache.memory import LocalChanges, MemoryDirectory, Notifier
from parley.cache.uncached import NoChanges, UncachedDirectory
from parley.media.blobs import BlobStore
from parley.metrics import Metrics
from parley.services.accounts import AccountService
from parley.services.conversations import ConversationService
from parley.services.events import EventService
from parley.services.groups import GroupService
from parley.services.media import MediaService
from parley.services.messages import MessageService
from parley.services.passwords import Passwords
from parley.services.signins import SignInLimits, SignInThrottle
from parley.services.users import UserService
from parley.settings import Settings, SettingsError
from parley.startup import check_auth_mode
from parley.storage.base import Storage

log = logging.getLogger("parley")

if TYPE_CHECKING:
    from parley.cache.redis_link import RedisLink
    from parley.cache.redis_wakeups import RedisWakeups


def make_blobs(settings: Settings) -> BlobStore:
    """Where uploaded files' bytes go: the data directory, or an S3 bucket."""
    spool = settings.data_dir / "media" / "tmp"
    if settings.media_url:
        from parley.media.s3 import S3Blobs, parse_media_url

        bucket, prefix = parse_media_url(settings.media_url)
        return S3Blobs(bucket, prefix, spool, settings.s3_endpoint or None)
    from parley.media.files import FileBlobs

    return FileBlobs(settings.data_dir / "media")


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "memory":
        from parley.storage.memory import MemoryStorage

        return MemoryStorage()
    if settings.storage == "sqlite":
        from parley.storage.sqlite import SqliteStorage

        return SqliteStorage(settings.sqlite_path, synchronous=settings.sqlite_synchronous)
    if settings.storage == "postgres":
        from parley.storage.postgres import PostgresStorage

        return PostgresStorage(
            settings.database_url,
            schema=settings.database_schema,
            pool_size=settings.database_pool,
            timeout=settings.database_timeout,
        )
    if settings.storage == "dynamodb":
        from parley.storage.dynamodb import DynamoStorage

        return DynamoStorage(
            table_prefix=settings.dynamodb_table_prefix,
            endpoint=settings.dynamodb_endpoint or None,
        )
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
    accounts: AccountService
    events: EventService
    conversations: ConversationService
    metrics: Metrics = field(default_factory=Metrics)
    media: MediaService | None = None  # attachments (``make_blobs``)
    redis: RedisLink | None = None  # scale-out: the shared cache, when PARLEY_REDIS_URL is set
    wakeups: RedisWakeups | None = None
    _sweep: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        await self.storage.open()
        try:
            await check_auth_mode(self.storage, self.settings)
        except BaseException:
            await self.storage.close()
            raise
        if self.redis is not None:
            await self.redis.start()
        if self.wakeups is not None:
            await self.wakeups.start()
        await self.changes.start(await self.storage.last_position())
        if self.media is not None:
            await self.media.blobs.open()
        # Deletions a crash interrupted are finished before the first request, then swept.
        try:
            finished = await self.accounts.finish_deletions()
        except Exception:  # storage trouble: the sweep tries again
            log.warning("finishing interrupted account deletions failed", exc_info=True)
        else:
            if finished:
                log.info("finished %d interrupted account deletion(s)", len(finished))
        # So are group changes whose events a crash left pending (DynamoDB only).
        try:
            pending = await self.groups.finish_events()
        except Exception:  # storage trouble: the sweep tries again
            log.warning("finishing pending group events failed", exc_info=True)
        else:
            if pending:
                log.info("stored %d pending group change event(s)", pending)
        self._sweep = asyncio.create_task(self._sweeps())

    async def _sweeps(self) -> None:
        await asyncio.gather(self.accounts.sweep(), self.groups.sweep())

    async def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep
            self._sweep = None
        if self.media is not None:
            await self.media.blobs.close()
        if self.wakeups is not None:
            await self.wakeups.stop()
        if self.redis is not None:
            await self.redis.stop()
        await self.storage.close()

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state: "ok", "unavailable", or "degraded" for one Parley can
        do without (Redis down: answers come from PostgreSQL, slower but right)."""
        checks: dict[str, str] = {}
        try:
            await self.storage.ping()
            checks[self.storage.name] = "ok"
        except Exception:
            checks[self.storage.name] = "unavailable"
        if self.redis is not None:
            checks["redis"] = "ok" if self.redis.usable else "degraded"
        return checks


def build(
    settings: Settings,
    storage: Storage | None = None,
    secret_key: bytes | None = None,
    blobs: BlobStore | None = None,
) -> Parley:
    """Parley for ``settings``. ``secret_key`` signs stream tickets; servers pass
    ``parley.startup.server_secret(settings)``. Without it: ``PARLEY_SECRET_KEY``, or a
    key of this process only (enough for one process: tests, tools)."""
    storage = storage if storage is not None else make_storage(settings)
    if secret_key is None and settings.secret_key:
        secret_key = settings.secret_key.encode()
    notifier = Notifier()
    directory: Directory
    changes: Changes
    redis: RedisLink | None = None
    wakeups: RedisWakeups | None = None
    if settings.redis_url:
        redis, directory, changes, wakeups = _shared_cache(settings, storage, notifier)
    elif settings.cache == "none":  # several processes on one database, without Redis
        directory = UncachedDirectory(storage)
        changes = NoChanges(directory)
        notifier.reliable = False  # the other processes' wake-ups never arrive
    else:
        directory = MemoryDirectory(storage)
        changes = LocalChanges(directory)
    users = UserService(storage, directory, settings.limits, settings.token_mode, secret_key)
    groups = GroupService(storage, directory, users, settings.limits)
    events = EventService(storage, changes, notifier)
    groups.event_listeners.append(events.stored)
    messages = MessageService(
        storage, directory, users, groups, changes, settings.limits, notifier, events
    )
    conversations = ConversationService(storage, directory, users, groups, events)
    limits = SignInLimits(
        settings.signin_per_user, settings.signin_per_address, settings.signin_window
    )
    accounts = AccountService(
        storage, directory, Passwords(), SignInThrottle(limits, redis), settings.token_mode,
        notifier,
    )  # fmt: skip
    media = MediaService(
        storage, blobs if blobs is not None else make_blobs(settings), directory,
        settings.max_media,
    )  # fmt: skip
    messages.media = media
    parley = Parley(
        settings, storage, directory, changes, users, groups, messages, notifier, accounts,
        events, conversations, media=media, redis=redis, wakeups=wakeups,
    )  # fmt: skip
    parley.metrics.add_source(
        "parley_storage_calls_total",
        "Storage operations called, by operation.",
        "counter",
        lambda: ((f'operation="{op}"', n) for op, n in sorted(storage.calls.items())),
    )
    parley.metrics.add_source(
        "parley_stream_looks_skipped_total",
        "Live streams' checks that needed no change-cache call: nothing was notified.",
        "counter",
        lambda: [("", messages.looks_skipped)],
    )
    parley.metrics.add_source(
        "parley_poll_looks_skipped_total",
        "Polls answered from the wake-ups this process heard, with no change-cache call.",
        "counter",
        lambda: [("", messages.polls_skipped)],
    )
    parley.metrics.add_source(
        "parley_idle_checks_total",
        "Checks answered from the change cache without storage.",
        "counter",
        lambda: [("", messages.idle_checks)],
    )
    if redis is not None:
        _redis_metrics(parley, redis)
    if parley.wakeups is not None:
        _wakeup_metrics(parley, parley.wakeups)
    return parley


def _wakeup_metrics(parley: Parley, wakeups: RedisWakeups) -> None:
    add = parley.metrics.add_source
    add("parley_listener_lease", "1 while this process answers polls from its wake-ups.",
        "gauge", lambda: [("", 1 if wakeups.settled() else 0)])  # fmt: skip
    add("parley_wakeup_acks_sent_total", "Wake-up batches of other processes acknowledged.",
        "counter", lambda: [("", wakeups.acks_sent)])  # fmt: skip
    add("parley_listener_leases_waited_out_total",
        "Listeners a write waited for until their lease ended (stalled or cut off).",
        "counter", lambda: [("", wakeups.leases_waited_out)])  # fmt: skip


def _redis_metrics(parley: Parley, link: RedisLink) -> None:
    add = parley.metrics.add_source
    add("parley_redis_usable", "1 while answers may come from Redis.", "gauge",
        lambda: [("", 1 if link.usable else 0)])  # fmt: skip
    add("parley_redis_failures_total", "Redis calls that failed or timed out.", "counter",
        lambda: [("", link.failures)])  # fmt: skip
    add("parley_cache_epoch", "The cache epoch this process follows.", "gauge",
        lambda: [("", link.epoch)])  # fmt: skip
    add("parley_cache_epoch_bumps_total", "Cache epochs this process retired.", "counter",
        lambda: [("", link.bumps)])  # fmt: skip


def _shared_cache(
    settings: Settings, storage: Storage, notifier: Notifier
) -> tuple[RedisLink, Directory, Changes, RedisWakeups]:
    """Redis-backed directory, watermarks and wake-ups, anchored in the storage's epoch."""
    from parley.cache.redis_changes import RedisChanges
    from parley.cache.redis_directory import RedisDirectory
    from parley.cache.redis_link import EpochSource, RedisLink
    from parley.cache.redis_wakeups import RedisWakeups

    if not isinstance(storage, EpochSource):
        raise SettingsError(f"PARLEY_REDIS_URL needs PostgreSQL storage, not {storage.name}")
    link = RedisLink(
        settings.redis_url,
        settings.redis_prefix,
        storage,
        timeout=settings.redis_timeout_ms / 1000,
    )
    directory = RedisDirectory(storage, link)
    changes = RedisChanges(link, directory)
    wakeups = RedisWakeups(link, notifier, changes)

    link.on_caught_up = wakeups.caught_up
    return link, directory, changes, wakeups
