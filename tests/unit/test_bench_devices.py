"""The benchmark's data set signs its users in: each user's token (the one the load
scripts send) is a row of the device table, beside ``devices - 1`` more."""

from __future__ import annotations

from pathlib import Path

from parley.bench.dataset import populate
from parley.services.access import hash_secret, split_token
from parley.storage.memory import MemoryStorage


async def test_every_user_has_its_devices_and_its_token_is_one(tmp_path: Path) -> None:
    storage = MemoryStorage()
    await storage.open()
    try:
        data = await populate(storage, 50, 500, tmp_path, lambda _: None, devices=3)
        lines = data.users_file.read_text().split("\n")
        users = [line.split() for line in lines if line]
        assert len(users) == 50
        for user_id, token, _group in users:
            tokens = await storage.user_tokens(user_id)
            assert len(tokens) == 3 and len({t.hash for t in tokens}) == 3
            assert hash_secret(split_token(token)[1]) in {t.hash for t in tokens}
        (tmp_path / "one").mkdir()
        single = MemoryStorage()
        await single.open()
        one = await populate(single, 5, 50, tmp_path / "one", lambda _: None)
        for line in one.users_file.read_text().split("\n")[:5]:
            user_id, token, _group = line.split()
            tokens = await single.user_tokens(user_id)
            assert [t.hash for t in tokens] == [hash_secret(split_token(token)[1])]
    finally:
        await storage.close()
