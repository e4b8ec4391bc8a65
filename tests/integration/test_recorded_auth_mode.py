"""The auth mode is recorded with the data, in every backend, and a restart in the other
mode is refused (``parley.startup.check_auth_mode``)."""

from __future__ import annotations

import asyncio

import pytest

from parley.app import build
from parley.settings import Settings
from parley.startup import StartupRefused
from parley.storage.base import Storage
from parley.storage.postgres import PostgresStorage
from tests.conftest import unavailable
from tests.integration import moto_server, services


def settings(auth: str, **env: str) -> Settings:
    return Settings.from_env({"PARLEY_AUTH": auth, **env})


async def test_first_record_wins_and_replace_overwrites(storage: Storage) -> None:
    assert await storage.record_meta("auth_mode", "token") is None
    assert await storage.record_meta("auth_mode", "none") == "token"
    assert await storage.record_meta("auth_mode", "token") == "token"
    assert await storage.record_meta("auth_mode", "none", replace=True) == "token"
    assert await storage.record_meta("auth_mode", "token") == "none"
    assert await storage.record_meta("another", "x") is None


async def test_concurrent_first_records_agree_on_one_winner(storage: Storage) -> None:
    values = [f"v{i}" for i in range(6)]
    answers = await asyncio.gather(*(storage.record_meta("race", v) for v in values))
    winners = [v for v, answer in zip(values, answers, strict=True) if answer is None]
    assert len(winners) == 1, answers
    assert all(answer in (None, winners[0]) for answer in answers)
    assert await storage.record_meta("race", "late") == winners[0]


async def refused_after(first: Storage, second: Storage) -> None:
    """Serve ``first`` in token mode, then try ``second`` (the same data) in open mode."""
    parley = build(settings("token"), first)
    await parley.start()
    await parley.users.create("alice")
    await parley.stop()
    with pytest.raises(StartupRefused, match="served with --auth token"):
        await build(settings("none"), second).start()


async def test_postgres_refuses_the_other_mode() -> None:
    reason = await services.postgres_unreachable()
    if reason:
        unavailable(reason)
    schema = services.new_schema()
    try:
        url = services.DATABASE_URL
        await refused_after(
            PostgresStorage(url, schema=schema), PostgresStorage(url, schema=schema)
        )
        allowed = build(
            settings("none", PARLEY_ALLOW_AUTH_CHANGE="1"), PostgresStorage(url, schema=schema)
        )
        await allowed.start()
        await allowed.stop()
    finally:
        await services.drop_schema(schema)


async def test_dynamodb_refuses_the_other_mode() -> None:
    reason = moto_server.moto_missing()
    if reason:
        unavailable(reason)
    async with moto_server.shared_tables() as make:
        owner = await make()  # holds the tables until the end
        prefix = owner.table_prefix
        await refused_after(
            moto_server.TestDynamo(prefix, owner=False), moto_server.TestDynamo(prefix, owner=False)
        )
        assert await owner.record_meta("auth_mode", "token") == "token"
