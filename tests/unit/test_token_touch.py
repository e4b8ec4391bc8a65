"""lastUsedAt is written lazily: at most once per TOUCH_MS per token and process, so checking
a token stays a memory lookup (no storage call) in the steady state."""

from __future__ import annotations

import asyncio

import pytest

from parley.cache.memory import MemoryDirectory
from parley.domain.rules import Limits
from parley.services import accounts
from parley.services.accounts import AccountService
from parley.services.passwords import Passwords
from parley.services.signins import SignInLimits, SignInThrottle
from parley.services.users import UserService
from parley.storage.memory import MemoryStorage


async def test_last_used_is_written_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = MemoryStorage()
    directory = MemoryDirectory(storage)
    users = UserService(storage, directory, Limits(), True)
    service = AccountService(storage, directory, Passwords(), SignInThrottle(SignInLimits()), True)
    created = await users.create("alice")
    assert created.token is not None
    (token,) = await storage.user_tokens(created.user.id)
    now = [token.last_used_at + 1]
    monkeypatch.setattr(accounts, "now_ms", lambda: now[0])

    await service.authenticate(created.token)
    before = storage.calls["touch_token"]
    for _ in range(100):  # within the interval: no write, and no storage read either
        reads = sum(storage.calls.values())
        await service.authenticate(created.token)
        assert sum(storage.calls.values()) == reads
    now[0] += accounts.TOUCH_MS
    await service.authenticate(created.token)
    await service.authenticate(created.token)
    await asyncio.sleep(0)  # the write runs in the background
    await asyncio.sleep(0)
    assert storage.calls["touch_token"] == before + 1
    (touched,) = await storage.user_tokens(created.user.id)
    assert touched.last_used_at == now[0] and touched.created_at == token.created_at
