"""Devices, passwords and account deletion: the behaviour every storage adapter must have."""

from __future__ import annotations

import asyncio

from parley.domain.models import GroupRecord, TokenRecord, UserRecord, new_id
from parley.storage.base import Storage
from tests.integration.test_storage_contract import draft, settle


def token(user_id: str, at: int = 1000, name: str = "phone") -> TokenRecord:
    return TokenRecord(new_id("t_"), user_id, new_id("h").encode()[:32], name, at, at)


async def new_user(storage: Storage, name: str = "ada") -> tuple[UserRecord, TokenRecord]:
    user = UserRecord(new_id("u_"), name)
    first = token(user.id, 500, "first")
    await storage.create_user(user, first)
    return user, first


async def test_tokens_are_created_with_the_user_and_listed_oldest_first(storage: Storage) -> None:
    user, first = await new_user(storage)
    assert await storage.user_tokens(user.id) == [first]
    later, earlier = token(user.id, 3000, "laptop"), token(user.id, 2000, "tablet")
    await storage.add_token(later)
    await storage.add_token(earlier)
    assert await storage.user_tokens(user.id) == [first, earlier, later]
    other, other_first = await new_user(storage, "bob")
    assert await storage.user_tokens(other.id) == [other_first]
    assert await storage.user_tokens("u_nobody") == []


async def test_deleting_a_token_is_conditional(storage: Storage) -> None:
    user, first = await new_user(storage)
    other, _ = await new_user(storage, "bob")
    assert await storage.delete_token(other.id, first.id) is False  # not theirs
    assert await storage.delete_token(user.id, first.id) is True
    assert await storage.delete_token(user.id, first.id) is False
    assert await storage.user_tokens(user.id) == []


async def test_touch_moves_last_used_forward_only(storage: Storage) -> None:
    user, first = await new_user(storage)
    await storage.touch_token(user.id, first.id, 9000)
    await storage.touch_token(user.id, first.id, 7000)
    (got,) = await storage.user_tokens(user.id)
    assert (got.created_at, got.last_used_at) == (500, 9000)
    await storage.touch_token(user.id, "t_gone", 9999)  # nothing, no error
    await storage.delete_token(user.id, first.id)
    await storage.touch_token(user.id, first.id, 10_000)
    assert await storage.user_tokens(user.id) == []


async def test_passwords(storage: Storage) -> None:
    user, _ = await new_user(storage)
    assert await storage.get_password(user.id) is None
    assert await storage.set_password(user.id, "$argon2id$one") is True
    assert await storage.get_password(user.id) == "$argon2id$one"
    assert await storage.set_password(user.id, "$argon2id$two") is True
    assert await storage.get_password(user.id) == "$argon2id$two"
    assert await storage.set_password("u_nobody", "$argon2id$x") is False
    assert await storage.get_password("u_nobody") is None


async def test_deletion_states(storage: Storage) -> None:
    user, _ = await new_user(storage)
    assert await storage.account_state(user.id) == "active"
    assert await storage.account_state("u_nobody") is None
    assert await storage.begin_deletion("u_nobody") is False
    assert await storage.begin_deletion(user.id) is True
    assert await storage.account_state(user.id) == "deleting"
    assert await storage.get_user(user.id) is None  # "deleting" is gone for lookups
    assert await storage.set_password(user.id, "$argon2id$x") is False
    assert await storage.begin_deletion(user.id) is True  # a retry resumes
    await storage.erase_account(user.id)
    await storage.finish_deletion(user.id)
    assert await storage.account_state(user.id) == "deleted"
    assert await storage.begin_deletion(user.id) is False
    assert await storage.get_user(user.id) is None


async def test_deletions_under_way_are_listed_until_finished(storage: Storage) -> None:
    first, _ = await new_user(storage, "first")
    second, _ = await new_user(storage, "second")
    await new_user(storage, "stays")
    assert await storage.deleting_users() == []
    assert await storage.begin_deletion(first.id)
    assert await storage.begin_deletion(second.id)
    assert await storage.begin_deletion(first.id)  # a retry: listed once
    assert await storage.deleting_users() == sorted([first.id, second.id])
    await storage.erase_account(first.id)
    assert await storage.deleting_users() == sorted([first.id, second.id])  # erased, not done
    await storage.finish_deletion(first.id)
    await storage.finish_deletion(first.id)  # idempotent
    assert await storage.deleting_users() == [second.id]
    assert await storage.begin_deletion(first.id) is False  # deleted stays deleted
    assert await storage.deleting_users() == [second.id]
    await storage.erase_account(second.id)
    await storage.finish_deletion(second.id)
    assert await storage.deleting_users() == []
    assert await storage.account_state(second.id) == "deleted"


async def test_erase_removes_everything_but_message_tombstones(storage: Storage) -> None:
    gone, _ = await new_user(storage, "gone")
    stays, stays_token = await new_user(storage, "stays")
    await storage.add_token(token(gone.id, 2000))
    await storage.set_password(gone.id, "$argon2id$secret")
    group = GroupRecord(new_id("g_"), "club")
    await storage.create_group(group, gone.id)
    await storage.add_member(group.id, stays.id)
    await storage.add_block(gone.id, stays.id)
    await storage.add_block(stays.id, gone.id)
    sent_private, _ = await storage.append_message(draft(gone.id, stays.id, "private words"))
    sent_group, _ = await storage.append_message(draft(gone.id, group.id, "group words", "group"))
    kept, _ = await storage.append_message(draft(stays.id, gone.id, "to gone"))
    keyed, _ = await storage.append_message(draft(gone.id, stays.id, "keyed words", key="k1"))

    await storage.erase_account(gone.id)  # not marked "deleting": nothing happens
    assert await storage.get_password(gone.id) == "$argon2id$secret"

    assert await storage.begin_deletion(gone.id)
    await storage.erase_account(gone.id)
    await storage.erase_account(gone.id)  # idempotent
    await storage.finish_deletion(gone.id)

    assert await storage.user_tokens(gone.id) == []
    assert await storage.user_tokens(stays.id) == [stays_token]
    assert await storage.get_password(gone.id) is None
    assert await storage.user_groups(gone.id) == []
    assert await storage.group_members(group.id) == [stays.id]
    assert await storage.blocked_by(gone.id) == []
    assert await storage.blocked_by(stays.id) == []
    await settle(storage)
    page = await storage.read_messages([stays.id, group.id], stays.id, None, 100)
    by_id = {m.id: m for m in page.messages}
    for erased in (sent_private, sent_group, keyed):
        tomb = by_id[erased.id]
        assert (tomb.body, tomb.ts, tomb.sender_id) == ("", erased.ts, gone.id)
    assert by_id[kept.id].body == "to gone"
    replay = await storage.find_send(gone.id, "k1")
    assert replay is None or replay.body == ""
    assert await storage.get_user(stays.id) == stays


async def test_concurrent_deletions_finish_once(storage: Storage) -> None:
    user, _ = await new_user(storage)
    await storage.append_message(draft(user.id, user.id, "mine"))

    async def delete() -> None:
        await storage.begin_deletion(user.id)
        await storage.erase_account(user.id)
        await storage.finish_deletion(user.id)

    await asyncio.gather(*(delete() for _ in range(4)))
    assert await storage.account_state(user.id) == "deleted"
    assert await storage.deleting_users() == []
    await settle(storage)
    page = await storage.read_messages([user.id], None, None, 10)
    assert [m.body for m in page.messages] == [""]
