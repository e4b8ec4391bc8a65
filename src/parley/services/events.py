"""Change events (SPEC §7): what tells a user's devices that something changed.

An event is addressed to streams: user ids (a user's own ``read`` marker, the peer's
``receipt``, a private message's edit or delete: both users) and group ids (a group
message's edit or delete, membership, role and name changes: every current member).
:meth:`EventService.emit` raises one: it stores the event through
``Storage.append_event`` (the message clock, the commit frontier), marks the streams'
``ev:`` entries in the change cache and wakes long-polls and live streams that read
events. A change stored with its events in one write (an edit, a group change: see
``parley.services.groups``) passes them to :meth:`EventService.stored` for the marks and
wake-ups. Checks with ``include=events`` deliver it through the same cursor as messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from parley.cache.base import Changes, Wakeups, event_stream
from parley.domain.models import Event, new_id
from parley.storage.base import EventDraft, Storage

RESERVED = frozenset(("eventId", "type", "timestamp"))  # the envelope's own fields


class EventService:
    def __init__(self, storage: Storage, changes: Changes, notifier: Wakeups) -> None:
        self.storage = storage
        self.changes = changes
        self.notifier = notifier

    async def emit(self, type: str, streams: Sequence[str], fields: Mapping[str, str]) -> Event:
        """Store one event for these user and group ids (durably, one write) and tell
        every process; return it with its timestamp."""
        if RESERVED & fields.keys():
            raise ValueError(f"event fields may not be named {sorted(RESERVED)}")
        draft = EventDraft(new_id("e_"), type, tuple(dict.fromkeys(streams)), dict(fields))
        event = await self.storage.append_event(draft)
        await self.stored(event, draft.streams)
        return event

    async def stored(self, event: Event, streams: Sequence[str]) -> None:
        """Mark and wake after an event was stored (by ``emit`` or by a storage write
        that stores an event together with another change, such as an edit)."""
        marks = [(event_stream(stream), event.ts) for stream in dict.fromkeys(streams)]
        await self.changes.marked(marks)
        self.notifier.notify_all([stream for stream, _ in marks])
