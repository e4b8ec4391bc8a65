"""The stream port across real processes on one PostgreSQL and one Redis: a server with two
workers listens on its stream port in both (the kernel spreads the connections), and
messages sent through another server reach every stream held there, each exactly once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import free_port
from tests.integration import services

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

STREAMS = 16
DEADLINE = 30.0  # seconds for every stream to get its messages


async def _first_event(lines: object) -> None:
    async for line in lines:  # type: ignore[attr-defined]
        if line.startswith(": keep-alive"):
            return


async def test_streams_on_two_workers_get_messages_sent_elsewhere(tmp_path: Path) -> None:
    stream_port = free_port()
    envs = [{"PARLEY_WORKERS": "2", "PARLEY_STREAM_PORT": str(stream_port)}, {}]
    async with services.postgres_servers(tmp_path, envs) as (held, sender):
        assert held.stream_port == stream_port
        limits = httpx.Limits(max_connections=STREAMS + 8)
        async with (
            httpx.AsyncClient(base_url=sender.url, timeout=15) as main,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{stream_port}", timeout=60, limits=limits
            ) as streams,
        ):
            made = [
                (await main.post("/v1/users/create", json={"username": f"u{i}"})).json()
                for i in range(STREAMS + 1)
            ]
            alice, readers = made[0], made[1:]
            workers: set[str] = set()
            received: dict[str, list[str]] = {r["userId"]: [] for r in readers}

            async def hold(reader: dict[str, str], opened: asyncio.Event) -> None:
                path = f"/v1/messages/{reader['userId']}/stream"
                headers = {"Authorization": f"Bearer {reader['token']}"}
                async with streams.stream("GET", path, headers=headers) as r:
                    assert r.status_code == 200
                    workers.add(r.headers["x-request-id"].rsplit("-", 1)[0])
                    lines = r.aiter_lines()
                    await _first_event(lines)
                    opened.set()
                    async for line in lines:
                        if line.startswith("data:"):
                            body = json.loads(line[5:])
                            received[reader["userId"]] += [m["message"] for m in body["messages"]]
                            if len(received[reader["userId"]]) >= 2:
                                return

            openings = [asyncio.Event() for _ in readers]
            tasks = [
                asyncio.create_task(hold(r, e)) for r, e in zip(readers, openings, strict=True)
            ]
            try:
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in openings)), DEADLINE)
                # both workers hold streams (16 connections all on one: 1 chance in 32,768)
                assert len(workers) == 2, workers
                auth = {"Authorization": f"Bearer {alice['token']}"}
                for n in range(2):
                    for reader in readers:
                        r = await main.post(
                            "/v1/messages/send?type=private",
                            json={
                                "senderId": alice["userId"],
                                "receiverId": reader["userId"],
                                "message": f"{reader['userId']} #{n}",
                            },
                            headers=auth,
                        )
                        assert r.status_code == 200, r.text
                await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            assert received == {u: [f"{u} #0", f"{u} #1"] for u in received}
