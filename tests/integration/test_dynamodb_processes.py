"""The polling contract on DynamoDB with real OS processes.

Three writer processes (this module run as a script) append through their own
``DynamoStorage`` to one set of tables on the moto endpoint, while this process polls
with ``next_ts`` the way a client does. Every message must arrive exactly once, in order.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.domain.models import Message, new_id
from parley.storage.base import MessageDraft
from tests.conftest import unavailable
from tests.integration import moto_server
from tests.integration.moto_server import Stores
from tests.integration.test_dynamodb import assert_exactly_once_in_order, follow


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    reason = moto_server.moto_missing()
    if reason:
        unavailable(reason)
    async with moto_server.shared_tables() as make:
        yield make


ROOT = Path(__file__).resolve().parents[2]
WRITERS = 3
PER_WRITER = 40
STREAMS = ["u_reader", "g_one", "g_two"]
DEADLINE = 120.0  # seconds the writers may take, start-up included


async def test_writer_processes_and_a_poller(stores: Stores) -> None:
    reader = await stores()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.test_dynamodb_processes",
            moto_server.endpoint(),
            reader.table_prefix,
            str(index),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for index in range(WRITERS)
    ]
    outputs = [asyncio.create_task(w.communicate()) for w in writers]
    got: list[Message] = []
    cursor: int | None = None
    polls = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not all(o.done() for o in outputs) and loop.time() < deadline:
        page, cursor = await follow(reader, STREAMS, cursor, 5)
        got += page
        polls += 1
        await asyncio.sleep(0.01)
    results = await asyncio.wait_for(asyncio.gather(*outputs), timeout=10)
    page, cursor = await follow(reader, STREAMS, cursor, 5)
    got += page
    assert all(w.returncode == 0 for w in writers)
    sent = {line for out, _ in results for line in out.decode().split()}
    assert len(sent) == WRITERS * PER_WRITER
    assert_exactly_once_in_order(got, sent)
    assert polls > 3


async def _write(endpoint: str, prefix: str, index: int) -> list[str]:
    moto_server._server["url"] = endpoint  # the parent's server, not a new one
    store = moto_server.TestDynamo(prefix, owner=False, max_inflight=2)
    await store.open()
    try:
        sent = []
        for n in range(PER_WRITER):
            stream = STREAMS[n % len(STREAMS)]
            kind = "private" if stream.startswith("u_") else "group"
            draft = MessageDraft(new_id("m_"), kind, f"u_w{index}", stream, f"{index}-{n}")
            message, _ = await store.append_message(draft)
            sent.append(message.id)
        return sent
    finally:
        await store.close()


if __name__ == "__main__":
    endpoint_url, table_prefix, writer = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print("\n".join(asyncio.run(_write(endpoint_url, table_prefix, writer))))
