"""The benchmark's data set: fill a store with the workload model's data, fast, through the
storage port.

Per user: ``private_per_user`` private messages (5 of them in the last minute) and one
membership in a group of ``group_size``; per group: ``group_messages`` messages (2 of them in
the last minute). A check with ``timestamp = recent_after`` therefore returns about 5 private
and 2 group messages, the model's "~7 messages per check". Two extra groups of 100 and
1,000 members take the fan-out sends. Every user has ``devices`` signed-in devices (rows
of the device table); the benchmark signs in with the first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from parley.domain.models import GroupRecord, Message, TokenRecord, UserRecord, new_id
from parley.services.access import new_token
from parley.services.accounts import mint
from parley.storage.base import BulkData, Storage

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Dataset:
    users: int
    messages: int
    recent_after: int  # a cursor that leaves ~7 messages per user
    idle_after: int  # a cursor newer than every message
    big_groups: dict[int, str]  # size -> group id
    users_file: Path


async def add_devices(
    storage: Storage,
    first: list[TokenRecord],
    extra: int,
    progress: Progress,
    at_once: int = 500,
) -> None:
    """Store each user's sign-up token as its first device (``bulk_load`` writes users,
    not devices), and ``extra`` more devices per user."""
    progress(f"adding {1 + extra} device(s) to each of {len(first):,} users")
    records = [*first]
    records += [mint(t.user_id, f"device {k + 2}").record for t in first for k in range(extra)]
    for start in range(0, len(records), at_once):
        await asyncio.gather(*(storage.add_token(r) for r in records[start : start + at_once]))


async def populate(
    storage: Storage,
    users: int,
    messages: int,
    workdir: Path,
    progress: Progress,
    group_size: int = 5,
    batch: int = 50_000,
    devices: int = 1,
) -> Dataset:
    now = time.time_ns() // 1_000_000
    recent_after = now - 60_000
    groups_count = max(1, users // group_size)
    per_user = max(5, int(messages * 0.8) // users)
    per_group = max(2, (messages - per_user * users) // groups_count)
    old_span = 7 * 24 * 3600 * 1000

    ids: list[str] = []
    first: list[TokenRecord] = []
    lines: list[str] = []
    data = BulkData()
    done = 0
    started = time.monotonic()

    async def flush(force: bool = False) -> None:
        nonlocal data, done
        size = len(data.users) + len(data.members) + len(data.messages)
        if size >= batch or (force and size):
            await storage.bulk_load(data)
            done += len(data.messages)
            data = BulkData()
            rate = done / max(time.monotonic() - started, 1e-9)
            progress(f"loaded {done:,} messages ({rate:,.0f}/s)")

    progress(f"loading {users:,} users, ~{messages:,} messages")
    for n in range(users):
        user_id = new_id("u_")
        token, token_hash = new_token(user_id)
        ids.append(user_id)
        first.append(TokenRecord(new_id("t_"), user_id, token_hash, "bench", now, now))
        data.users.append(UserRecord(user_id, f"user{n}", token_hash))
        lines.append(f"{user_id} {token}")
        if len(data.users) >= batch:
            await flush(force=True)
    await flush(force=True)
    await add_devices(storage, first, max(0, devices - 1), progress)

    group_ids = [new_id("g_") for _ in range(groups_count)]
    data.groups = [GroupRecord(g, f"group{i}") for i, g in enumerate(group_ids)]
    big_groups = {}
    for size in (100, 1000):
        gid = new_id("g_")
        big_groups[size] = gid
        data.groups.append(GroupRecord(gid, f"big{size}"))
        data.members += [(gid, u) for u in ids[: min(size, users)]]
    for i, user_id in enumerate(ids):
        data.members.append((group_ids[i % groups_count], user_id))
    await flush(force=True)

    seq = 0

    def stamp(k: int, total: int, recent: int) -> int:
        nonlocal seq
        seq += 1
        if k >= total - recent:  # the last `recent` fall inside the last minute
            return recent_after + 1 + (seq % 59_000)
        return now - old_span + (seq * 7919) % (old_span - 120_000)

    for i, user_id in enumerate(ids):
        for k in range(per_user):
            sender = ids[(i + k + 1) % users]
            data.messages.append(
                Message(
                    new_id("m_"), "private", sender, user_id, f"hello {k}", stamp(k, per_user, 5)
                )
            )
        await flush()
    for g, gid in enumerate(group_ids):
        for k in range(per_group):
            sender = ids[(g * group_size) % users]
            data.messages.append(
                Message(new_id("m_"), "group", sender, gid, f"group {k}", stamp(k, per_group, 2))
            )
        await flush()
    await flush(force=True)

    users_file = workdir / "users.txt"
    group_of = {u: group_ids[i % groups_count] for i, u in enumerate(ids)}
    users_file.write_text("\n".join(f"{line} {group_of[line.split()[0]]}" for line in lines) + "\n")
    big_file = workdir / "big1000.txt"
    big_file.write_text("\n".join(lines[: min(1000, users)]) + "\n")
    return Dataset(
        users=users,
        messages=done,
        recent_after=recent_after,
        idle_after=now,
        big_groups=big_groups,
        users_file=users_file,
    )
