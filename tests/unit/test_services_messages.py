"""Sending and checking messages, through the services, on recording fakes.

Each test drives ``MessageService`` (and the user and group services it relies on) on the
in-memory adapter and asserts on what the fakes recorded: which streams a send marked in
the change cache and which it woke, and how many storage calls a check made.
"""

from __future__ import annotations

import asyncio

import pytest

from parley.errors import Forbidden, InvalidInput, NotFound, ParleyError
from tests.unit.fakes import Services, make_services


def code(error: ParleyError) -> str:
    return str(getattr(error.code, "value", error.code))


async def user(svc: Services, name: str) -> str:
    return (await svc.users.create(name)).user.id


@pytest.fixture
def svc() -> Services:
    return make_services()


async def test_a_private_send_marks_and_wakes_the_receiver_and_the_senders_sent_stream(
    svc: Services,
) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    message = await svc.messages.send(alice, "private", alice, bob, "hi")
    assert svc.changes.marks == [(bob, message.ts), (f"sent:{alice}", message.ts)]
    assert svc.notifier.notified == [[bob, f"sent:{alice}"]]
    assert svc.storage.calls["append_message"] == 1


async def test_a_group_send_marks_and_wakes_the_group_only(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    group = await svc.groups.create(alice, "friends")
    await svc.groups.add(alice, group.id, bob)
    svc.forget()
    message = await svc.messages.send(alice, "group", alice, group.id, "hello all")
    assert svc.changes.marks == [(group.id, message.ts)]
    assert svc.notifier.notified == [[group.id]]


async def test_a_refused_send_stores_marks_and_wakes_nothing(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    with pytest.raises(NotFound):
        await svc.messages.send(alice, "private", alice, "u_nobody", "hi")
    with pytest.raises(Forbidden) as caught:
        await svc.messages.send(alice, "private", bob, alice, "as someone else")
    assert code(caught.value) == "not_yourself"
    with pytest.raises(InvalidInput):
        await svc.messages.send(alice, "private", alice, bob, "")
    assert svc.storage.calls["append_message"] == 0
    assert svc.changes.marks == [] and svc.notifier.notified == []


async def test_a_check_returns_what_was_sent_and_a_cursor_past_it(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    sent = await svc.messages.send(alice, "private", alice, bob, "hi")
    svc.clock.tick()
    page = await svc.messages.check(bob, bob, None)
    assert [m.id for m in page.messages] == [sent.id]
    assert page.next_ts >= sent.ts
    mine = await svc.messages.check(alice, alice, None, include_sent=True)
    assert [m.id for m in mine.messages] == [sent.id]


async def test_the_idle_check_answers_without_storage(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    group = await svc.groups.create(bob, "club")
    await svc.messages.send(alice, "private", alice, bob, "hi")
    svc.clock.tick()
    cursor = (await svc.messages.check(bob, bob, None)).next_ts
    svc.clock.tick(1_000)
    before = dict(svc.storage.calls)
    for _ in range(5):
        page = await svc.messages.check(bob, bob, cursor, include_sent=True)
        assert page.messages == [] and page.next_ts == cursor
    assert dict(svc.storage.calls) == before
    assert svc.messages.idle_checks == 5
    # The cache was asked about every stream the user reads.
    streams, after = svc.changes.asked[-1]
    assert set(streams) == {bob, group.id, f"sent:{bob}"} and after == cursor


async def test_a_check_after_a_change_reads_storage(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    cursor = (await svc.messages.check(bob, bob, None)).next_ts
    sent = await svc.messages.send(alice, "private", alice, bob, "news")
    svc.clock.tick()
    reads = svc.storage.calls["read_messages"]
    page = await svc.messages.check(bob, bob, cursor)
    assert [m.id for m in page.messages] == [sent.id]
    assert svc.storage.calls["read_messages"] == reads + 1


async def test_a_send_wakes_a_waiting_long_poll(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    cursor = (await svc.messages.check(bob, bob, None)).next_ts
    svc.clock.tick()
    poll = asyncio.create_task(svc.messages.check(bob, bob, cursor, wait=30))
    for _ in range(100):  # until the poll waits for a wake-up
        if svc.notifier.waiting:
            break
        await asyncio.sleep(0.001)
    assert svc.notifier.waiting == 1
    sent = await svc.messages.send(alice, "private", alice, bob, "wake up")
    svc.clock.tick()
    # Woken, it answers well before its next periodic re-check (5 s) would have.
    page = await asyncio.wait_for(poll, timeout=2)
    assert [m.id for m in page.messages] == [sent.id]
    assert svc.notifier.wakeups == 1


async def test_a_long_poll_asks_the_change_cache_once_per_wake_up(svc: Services) -> None:
    bob = await user(svc, "bob")
    group = await svc.groups.create(bob, "club")
    cursor = (await svc.messages.check(bob, bob, None)).next_ts
    svc.clock.tick()
    svc.forget()
    before = dict(svc.storage.calls)
    poll = asyncio.create_task(svc.messages.check(bob, bob, cursor, wait=30))

    async def waiting_after(asks: int) -> None:
        for _ in range(200):  # until the poll asked again and waits for a wake-up
            if len(svc.changes.asked) >= asks and svc.notifier.waiting == 1:
                return
            await asyncio.sleep(0.001)

    await waiting_after(1)
    assert len(svc.changes.asked) == 1  # the first check
    for woken in range(1, 4):
        svc.notifier.notify(group.id)  # a hint with nothing behind it
        await waiting_after(1 + woken)
        assert len(svc.changes.asked) == 1 + woken  # one question per wake-up
    assert dict(svc.storage.calls) == before  # and every answer came from the cache
    assert svc.messages.idle_checks == 4
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll


async def test_acting_for_another_user_is_refused_in_token_mode(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    with pytest.raises(Forbidden) as caught:
        await svc.messages.check(alice, bob, None)
    assert code(caught.value) == "not_yourself"


async def test_open_mode_lets_anyone_act_for_anyone() -> None:
    svc = make_services(token_mode=False)
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    sent = await svc.messages.send(None, "private", alice, bob, "no tokens")
    svc.clock.tick()
    page = await svc.messages.check(None, bob, None)
    assert [m.id for m in page.messages] == [sent.id]
