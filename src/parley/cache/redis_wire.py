"""One pipelined Redis connection shared by every request of a process.

redis-py's asyncio client takes a pooled connection for each call in flight, so 64
concurrent idle checks hold 64 connections, each call paying a pool lock, its own write and
its own read. Here every caller writes its command onto one connection and waits on a
future; the replies come back in the order the commands were sent (Redis answers one
connection's commands in order), so each reply resolves the oldest waiting future.
Commands issued in one turn of the event loop leave in one write.

A caller that gives up (a timeout) leaves its future in the queue: its reply, when it
comes, is dropped, and the replies behind it still meet their own callers. A lost or
broken connection fails every waiting call (``ConnectionError``); the next call connects
again. Replies are parsed by hiredis; a Redis error reply is raised as
``redis.exceptions.ResponseError``.

Plain ``redis://`` and ``unix://`` URLs only (with a password and a database number);
for anything else (``rediss://``) :func:`supported` is False and callers keep redis-py.

:class:`Subscription` is the same idea for pub/sub: one RESP3 connection subscribed to
channels, whose messages are handed to a callback as soon as the event loop reads them,
and which can run commands in order with them.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


def supported(url: str) -> bool:
    return urlparse(url).scheme in ("redis", "unix")


def _encode(args: Sequence[Any]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.wire.waiting
        try:
            while (reply := reader.gets()) is not False:
                future = waiting.popleft()
                if not future.done():
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(_error(str(reply)))
                    else:
                        future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            self.wire.broken(self, RedisConnectionError(f"bad reply from redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.wire.broken(self, RedisConnectionError(f"connection to redis lost: {exc}"))


def _error(text: str) -> ResponseError:
    if text.startswith("NOSCRIPT"):
        return NoScriptError(text)
    return ResponseError(text)


class _Address:
    """Where a Redis is and how to sign in to it, from its URL."""

    def __init__(self, url: str) -> None:
        parts = urlparse(url)
        self.unix = parts.path if parts.scheme == "unix" else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        query = parse_qs(parts.query)
        db = query.get("db", [""])[0] or (parts.path.strip("/") if not self.unix else "")
        self.db = int(db or 0)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    def setup(self) -> list[list[Any]]:
        """The commands a new connection sends first (AUTH, SELECT)."""
        setup: list[list[Any]] = []
        if self.password is not None:
            auth = ["AUTH", self.password]
            if self.username:
                auth.insert(1, self.username)
            setup.append(auth)
        if self.db:
            setup.append(["SELECT", self.db])
        return setup

    async def connect(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.BaseProtocol:
        loop = asyncio.get_running_loop()
        if self.unix is not None:
            _, protocol = await loop.create_unix_connection(factory, self.unix)
        else:
            _, protocol = await loop.create_connection(factory, self.host, self.port)
        return protocol


class Wire:
    """A pipelined connection to the Redis at ``url`` (see the module text)."""

    def __init__(self, url: str, connect_timeout: float) -> None:
        self.address = _Address(url)
        self.connect_timeout = connect_timeout
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._closed = False
        self._stopped = False  # shut down for good: no new connection

    async def _connect(self) -> _Protocol:
        async with asyncio.timeout(self.connect_timeout):
            protocol = cast(_Protocol, await self.address.connect(lambda: _Protocol(self)))
        if self._closed or self._stopped:
            assert protocol.transport is not None
            protocol.transport.abort()
            raise RedisConnectionError("closed")
        self._protocol = protocol
        try:
            for command in self.address.setup():
                await asyncio.wait_for(self._send(protocol, command), self.connect_timeout)
        except BaseException:
            self.broken(protocol, RedisConnectionError("set-up failed"))
            raise
        return protocol

    async def _ready(self) -> _Protocol:
        if self._stopped:
            raise RedisConnectionError("redis link stopped")
        self._closed = False
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            return protocol
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    def _send(self, protocol: _Protocol, args: Sequence[Any]) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self._pending.append(_encode(args))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush, protocol)
        return future

    def _flush(self, protocol: _Protocol) -> None:
        self._flush_scheduled = False
        data, self._pending = b"".join(self._pending), []
        if protocol is self._protocol and protocol.transport is not None:
            protocol.transport.write(data)

    async def execute(self, *args: Any, timeout: float) -> Any:
        """One command's reply, or ``TimeoutError`` after ``timeout`` seconds.

        The timeout judges Redis, not this process: when it expires, the event loop gets
        two more turns to read what already arrived (a busy loop, or a process starved of
        CPU, runs its timers before it reads its sockets) before the call counts as failed.
        """
        protocol = await self._ready()
        future = self._send(protocol, args)
        loop = asyncio.get_running_loop()
        handle = loop.call_at(loop.time() + timeout, self._expire, future, 2)
        try:
            return await future
        finally:
            handle.cancel()

    def _expire(self, future: asyncio.Future[Any], turns: int) -> None:
        if future.done():
            return
        if turns:
            asyncio.get_running_loop().call_soon(self._expire, future, turns - 1)
        else:
            future.set_exception(TimeoutError("redis did not answer in time"))

    async def evalsha(
        self,
        sha: str,
        script: bytes | str,
        keys: Sequence[Any],
        args: Sequence[Any],
        *,
        timeout: float,
    ) -> Any:
        """Run a script by its hash, loading it (EVAL) if Redis does not know it yet."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args, timeout=timeout)
        except NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args, timeout=timeout)

    async def many(self, commands: Sequence[Sequence[Any]], *, timeout: float) -> list[Any]:
        """Several commands sent together (one write), their replies in order."""
        return list(await asyncio.gather(*(self.execute(*c, timeout=timeout) for c in commands)))

    def broken(self, protocol: _Protocol, exc: Exception) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        if protocol.transport is not None:
            protocol.transport.abort()
            protocol.transport = None
        waiting, self.waiting = self.waiting, collections.deque()
        self._pending = []
        for future in waiting:
            if not future.done():
                future.set_exception(exc)

    def close(self) -> None:
        """Drop the connection (calls in flight fail); a later call connects again."""
        self._closed = True
        if self._protocol is not None:
            self.broken(self._protocol, RedisConnectionError("closed"))

    def shutdown(self) -> None:
        """Close for good: later calls fail instead of connecting again."""
        self._stopped = True
        self.close()


class _Listening(asyncio.Protocol):
    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self.subscription.received(reply)
        except hiredis.ProtocolError as exc:
            self.subscription.lost(RedisConnectionError(f"bad reply from redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.subscription.lost(RedisConnectionError(f"connection to redis lost: {exc}"))


class Subscription:
    """One RESP3 connection subscribed to ``channels``, which also runs commands.

    Each message is passed to ``on_message(channel, data)`` from the event loop's read of
    the socket itself (no task in between), and Redis answers a connection in order: so
    when the reply to a command sent on this connection is handled, every message
    published before Redis ran that command has been handled too.

    ``open`` returns once Redis confirmed every subscription; ``closed`` completes when
    the connection is lost (or :meth:`close`)."""

    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        on_message: Callable[[bytes, bytes], None],
        *,
        name: str,
    ) -> None:
        self.address = _Address(url)
        self.channels = [c.encode() for c in channels]
        self.on_message = on_message
        self.name = name
        self._protocol: _Listening | None = None
        self._replies: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def open(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            protocol = cast(_Listening, await self.address.connect(lambda: _Listening(self)))
            self._protocol = protocol
            if self.closed.done():
                raise RedisConnectionError("closed")
            hello: list[Any] = ["HELLO", 3]
            if self.address.password is not None:
                hello += ["AUTH", self.address.username or "default", self.address.password]
            commands = [hello, ["CLIENT", "SETNAME", self.name]]
            if self.address.db:
                commands.append(["SELECT", self.address.db])
            commands += [["SUBSCRIBE", channel] for channel in self.channels]
            await asyncio.gather(*(self._send(command) for command in commands))

    def _send(self, args: Sequence[Any]) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        protocol = self._protocol
        if protocol is None or protocol.transport is None or self.closed.done():
            future.set_exception(RedisConnectionError("not connected"))
            return future
        self._replies.append(future)
        protocol.transport.write(_encode(args))
        return future

    async def execute(self, *args: Any, timeout: float) -> Any:
        """One command on this connection, its reply (see the class text)."""
        async with asyncio.timeout(timeout):
            return await self._send(args)

    def fire(self, *args: Any) -> None:
        """Send a command whose reply nobody waits for."""
        future = self._send(args)
        future.add_done_callback(_ignore)

    def received(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            self.on_message(reply[1], reply[2])
            return
        if not self._replies:
            return  # nothing asked for it
        future = self._replies.popleft()
        if future.done():
            return
        if isinstance(reply, hiredis.ReplyError):
            future.set_exception(_error(str(reply)))
        else:
            future.set_result(reply)

    def lost(self, exc: Exception) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
            protocol.transport = None
        replies, self._replies = self._replies, collections.deque()
        for future in replies:
            if not future.done():
                future.set_exception(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        self.lost(RedisConnectionError("closed"))


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a lost reply is nobody's error
