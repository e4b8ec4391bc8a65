"""A TCP proxy on 127.0.0.1 in front of Redis that a test can cut and restore.

    proxy = await TcpProxy(6379).start()     # point a process at proxy.url
    proxy.cut("refuse")                      # drop every connection, refuse new ones
    proxy.cut("hang")                        # connections stay open, nothing gets through
    proxy.restore()
    proxy.delay = 0.2                        # every chunk, both ways, 200 ms late (in order)

It runs in the test's event loop; every connection it holds is closed by ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["refuse", "hang"]


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.up = True
        self.mode: Mode = "refuse"
        self.connections = 0
        self.delay = 0.0  # seconds each chunk is held before it is passed on
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._drop_all()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    def cut(self, mode: Mode = "refuse") -> None:
        self.up = False
        self.mode = mode
        if mode == "refuse":
            self._drop_all()

    def restore(self) -> None:
        self.up = True
        self._drop_all()  # hung connections are useless now; clients reconnect

    def _drop_all(self) -> None:
        for client, upstream in list(self._pairs):
            client.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
        self._pairs.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up and self.mode == "refuse":
            writer.transport.abort()
            return
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]
        if not self.up:  # hang: hold the connection, swallow what it sends
            pair = (writer, None)
            self._pairs.add(pair)
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not self.up:  # hang mode: swallow traffic on live connections
                    continue
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
