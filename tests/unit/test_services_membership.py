"""Blocks and group membership, through the services, on recording fakes.

What a block or a removal changes is observed only through the services' public methods
(sends refused, reads that stop), never through the directory's own state.
"""

from __future__ import annotations

import pytest

from parley.errors import Conflict, Forbidden, NotFound, ParleyError
from tests.unit.fakes import Services, make_services


def code(error: ParleyError) -> str:
    return str(getattr(error.code, "value", error.code))


async def user(svc: Services, name: str) -> str:
    return (await svc.users.create(name)).user.id


@pytest.fixture
def svc() -> Services:
    return make_services()


async def test_a_block_makes_the_next_private_send_forbidden(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    await svc.messages.send(alice, "private", alice, bob, "before")  # loads bob's blocks
    await svc.users.block(bob, bob, alice)
    svc.forget()
    appended = svc.storage.calls["append_message"]
    with pytest.raises(Forbidden) as caught:
        await svc.messages.send(alice, "private", alice, bob, "after")
    assert code(caught.value) == "blocked"
    assert svc.storage.calls["append_message"] == appended
    assert svc.changes.marks == [] and svc.notifier.notified == []
    # The other direction is not blocked.
    await svc.messages.send(bob, "private", bob, alice, "still talking to you")


async def test_an_unblock_lets_sends_through_again(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    await svc.users.block(bob, bob, alice)
    with pytest.raises(Forbidden):
        await svc.messages.send(alice, "private", alice, bob, "refused")
    await svc.users.unblock(bob, bob, alice)
    await svc.messages.send(alice, "private", alice, bob, "allowed")
    assert await svc.users.blocked(bob, bob) == []


async def test_blocking_twice_or_unblocking_nobody_conflicts(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    await svc.users.block(bob, bob, alice)
    with pytest.raises(Conflict) as twice:
        await svc.users.block(bob, bob, alice)
    assert code(twice.value) == "already_blocked"
    assert await svc.users.blocked(bob, bob) == [alice]
    await svc.users.unblock(bob, bob, alice)
    with pytest.raises(Conflict) as again:
        await svc.users.unblock(bob, bob, alice)
    assert code(again.value) == "not_blocked"
    with pytest.raises(NotFound):
        await svc.users.block(bob, bob, "u_nobody")


async def test_a_group_send_needs_membership(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    group = await svc.groups.create(alice, "club")
    with pytest.raises(Forbidden) as caught:
        await svc.messages.send(bob, "group", bob, group.id, "let me in")
    assert code(caught.value) == "not_a_member"
    await svc.groups.add(alice, group.id, bob)
    await svc.messages.send(bob, "group", bob, group.id, "thanks")


async def test_removing_a_member_stops_its_reads_and_sends(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    group = await svc.groups.create(alice, "club")
    await svc.groups.add(alice, group.id, bob)
    before = await svc.messages.send(alice, "group", alice, group.id, "while you were in")
    svc.clock.tick()
    page = await svc.messages.check(bob, bob, None)
    assert [m.id for m in page.messages] == [before.id]
    cursor = page.next_ts

    svc.forget()
    await svc.groups.remove(alice, group.id, bob)
    # The removed member's long-polls are woken to wait on its new set of streams.
    assert [bob] in svc.notifier.notified

    after = await svc.messages.send(alice, "group", alice, group.id, "after you left")
    svc.clock.tick()
    assert (await svc.messages.check(bob, bob, cursor)).messages == []
    assert after.id not in [m.id for m in (await svc.messages.check(bob, bob, None)).messages]
    assert group.id not in [g.id for g in await svc.groups.of_user(bob, bob)]
    with pytest.raises(Forbidden):
        await svc.messages.send(bob, "group", bob, group.id, "still here?")
    with pytest.raises(Forbidden):
        await svc.groups.view(bob, group.id)
    # The members who stay still read it.
    assert after.id in [m.id for m in (await svc.messages.check(alice, alice, None)).messages]


async def test_an_added_member_reads_new_group_messages_and_is_woken(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    group = await svc.groups.create(alice, "club")
    cursor = (await svc.messages.check(bob, bob, None)).next_ts
    svc.forget()
    await svc.groups.add(alice, group.id, bob)
    assert [bob] in svc.notifier.notified
    sent = await svc.messages.send(alice, "group", alice, group.id, "welcome")
    svc.clock.tick()
    page = await svc.messages.check(bob, bob, cursor)
    assert [m.id for m in page.messages] == [sent.id]


async def test_membership_changes_conflict_when_nothing_changes(svc: Services) -> None:
    alice, bob = await user(svc, "alice"), await user(svc, "bob")
    group = await svc.groups.create(alice, "club")
    with pytest.raises(Conflict) as member:
        await svc.groups.add(alice, group.id, alice)
    assert code(member.value) == "already_member"
    with pytest.raises(Conflict) as absent:
        await svc.groups.remove(alice, group.id, bob)
    assert code(absent.value) == "not_in_group"
    with pytest.raises(Forbidden):
        await svc.groups.add(bob, group.id, bob)  # only members add members


async def test_anyone_may_leave_but_only_members_remove_others(svc: Services) -> None:
    alice, bob, carol = await user(svc, "alice"), await user(svc, "bob"), await user(svc, "carol")
    group = await svc.groups.create(alice, "club")
    await svc.groups.add(alice, group.id, bob)
    with pytest.raises(Forbidden):
        await svc.groups.remove(carol, group.id, bob)
    await svc.groups.remove(bob, group.id, bob)  # leaving
    view = await svc.groups.view(alice, group.id)
    assert view.members == [alice]
