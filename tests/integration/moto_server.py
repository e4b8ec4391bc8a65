"""A DynamoDB endpoint for tests: moto on a free loopback port, one request at a time.

The server runs in a child process (moto's WSGI application on werkzeug, :data:`SERVER`),
started on first use and stopped when the test run ends, and Parley talks to it over HTTP
through the real aiobotocore client with dummy credentials. Every store gets a table prefix
of its own (``t<random>-``) and drops its tables when it closes, so tests never see each
other's data.

Requests are handled one at a time. moto's own server (``python -m moto.server``) runs each
request in a thread, and its conditional writes are not atomic across threads: a
conditional ``UpdateItem`` checks the condition and applies the update as separate steps,
so two concurrent clock reservations can both succeed on the same old value (measured
with moto 5.2: 9 duplicate timestamps in 2,000 reservations with 16 in flight, 24 with
64). DynamoDB applies each single-item write atomically. Here every request runs under one
lock (connections are still accepted and read concurrently, so clients keep their
keep-alive pools), which makes every single-item write atomic, as in DynamoDB;
``test_dynamodb.py`` hammers the clock to keep it so.

What the endpoint does not model (moto 5): run concurrently (moto's own threaded server),
TransactWriteItems often fail with HTTP 500 and a cancelled transaction can restore a stale
copy of the table; one request at a time, as here, each transaction is applied or cancelled
whole, which is what the group roster writes (``dynamodb_groups``) rely on. A transaction
deep-copies the tables it touches first, so it is slow (tens of ms). Capacity units moto
reports are fixed per call, not computed from item sizes (``docs/dynamodb.md``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from parley.storage.dynamodb import DynamoStorage
from parley.storage.dynamodb_client import DynamoClient

_server: dict[str, Any] = {}

# The child process: moto's application behind one lock (see the module's docstring).
SERVER = """
import io, os, sys, threading
from werkzeug.serving import run_simple
import moto.server

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
moto_app = moto.server.DomainDispatcherApplication(moto.server.create_backend_app)
handler = getattr(moto.server, "MotoRequestHandler", None)  # keeps underscored headers
one_at_a_time = threading.Lock()

def serialised(environ, start_response):
    length = environ.get("CONTENT_LENGTH")
    if length:  # read the request before taking the lock: a slow client holds no one up
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(int(length)))
    with one_at_a_time:
        result = moto_app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
    return [body]

run_simple(host, port, serialised, threaded=True, request_handler=handler)
"""


def moto_missing() -> str | None:
    """None when moto's server and aiobotocore can be imported, else why not."""
    try:
        import aiobotocore  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        return f"DynamoDB tests need moto[server] and aiobotocore ({exc.name} is missing)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def endpoint() -> str:
    """The URL of this run's moto server, started on first call."""
    if "url" in _server:
        return str(_server["url"])
    # Dummy credentials for the client's signature (moto ignores them); real ones, if
    # set, are kept but never leave the machine: the endpoint is on loopback.
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        os.environ["AWS_ACCESS_KEY_ID"] = "testing"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/data.json", timeout=1):
                break
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.05)
    _server.update(url=url, process=process)
    atexit.register(stop)
    return url


def stop() -> None:
    process = _server.pop("process", None)
    _server.pop("url", None)
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def new_prefix() -> str:
    return f"t{secrets.token_hex(5)}-"


class TestDynamo(DynamoStorage):
    """A store on the test endpoint with tables of its own, dropped when it closes.

    ``owner=False`` shares another store's tables (a second "process") and drops nothing.
    """

    def __init__(self, prefix: str | None = None, *, owner: bool = True, **options: Any) -> None:
        options.setdefault("region", "us-east-1")
        super().__init__(table_prefix=prefix or new_prefix(), endpoint=endpoint(), **options)
        self.owner = owner

    async def close(self) -> None:
        await super().close()
        if self.owner:
            await drop_tables(self.table_prefix, list(self.tables.values()))


async def drop_tables(prefix: str, names: list[str]) -> None:
    client = DynamoClient(endpoint=endpoint(), region="us-east-1")
    await client.open()
    try:

        async def drop(name: str) -> None:
            with contextlib.suppress(Exception):
                await client.call("delete_table", TableName=name)

        await asyncio.gather(*(drop(name) for name in names))
    finally:
        await client.close()


Stores = Callable[..., Awaitable[TestDynamo]]


@contextlib.asynccontextmanager
async def shared_tables() -> AsyncIterator[Stores]:
    """Open stores ("processes") on one set of tables; the first one opened owns them."""
    prefix = new_prefix()
    opened: list[TestDynamo] = []

    async def make(**options: Any) -> TestDynamo:
        store = TestDynamo(prefix, owner=not opened, **options)
        await store.open()
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in reversed(opened):  # the owner, first opened, drops the tables last
            await store.close()
