"""The attachment routes: ``POST /v1/media`` (a raw body, streamed to the blob store) and
``GET /v1/media/{mediaId}`` (the bytes, with ranges, ETag and headers that keep a browser
from running what was uploaded). Thin, like every handler: rules live in
``services.media``."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

import msgspec

from parley import errors
from parley.domain.models import MediaRecord
from parley.http import schemas as s
from parley.http.asgi import SECURITY_HEADERS, Call, Reply, Send
from parley.http.errors import error_body
from parley.media.blobs import BlobStore
from parley.services.access import Actor

if TYPE_CHECKING:
    from parley.http.api import Api

encode = msgspec.json.Encoder().encode

# Types a browser shows without running anything: served inline. Everything else (HTML,
# SVG, XML, JavaScript, PDF, ...) is served as a download.
INLINE = re.compile(
    r"(image/(png|jpeg|gif|webp|avif|bmp)|audio/[a-z0-9.+-]+|video/[a-z0-9.+-]+|text/plain)"
)
MEDIA_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"sandbox; default-src 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"private, no-cache"),  # kept, revalidated with If-None-Match
    (b"accept-ranges", b"bytes"),
]
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


def disposition(record: MediaRecord) -> bytes:
    kind = record.content_type.partition(";")[0]
    how = "inline" if INLINE.fullmatch(kind) else "attachment"
    return f'{how}; filename="{record.id}"'.encode()


class BlobReply(Reply):
    """Bytes of a blob, streamed chunk by chunk (HEAD: the headers only)."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunks: AsyncIterator[bytes] | None,
    ) -> None:
        super().__init__(b"", status, headers)
        self.chunks = chunks

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        if self.chunks is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _body_chunks(call: Call, timeout: float) -> AsyncIterator[bytes]:
    """The request body as it arrives; each piece must come within ``timeout`` seconds."""
    import asyncio

    from parley.http.asgi import BodyTimeout

    while True:
        try:
            async with asyncio.timeout(timeout):
                message = await call.receive()
        except TimeoutError:
            raise BodyTimeout("the request body took too long to arrive") from None
        if message["type"] == "http.disconnect":
            raise errors.InvalidInput("client disconnected", errors.Code.BAD_REQUEST)
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _length(call: Call) -> int | None:
    raw = call.header(b"content-length")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise errors.InvalidInput("bad content-length", errors.Code.BAD_REQUEST)
    return int(raw) if len(raw) <= 18 else 10**18


async def upload_media(api: Api, call: Call, actor: Actor) -> Reply:
    media = api.parley.media
    assert media is not None
    declared = _length(call)
    record = await media.upload(
        actor, call.header(b"content-type"), declared, _body_chunks(call, api.body_timeout)
    )
    return Reply(encode(s.MediaOut.of(record)))


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(start, end) of a single byte range; None to send everything (no Range, or one
    this server ignores: several ranges, another unit); False when it is unsatisfiable."""
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None:
        return None
    first, last = found.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0:
            return False
        return max(size - count, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return False
    return start, end


async def get_media(api: Api, call: Call, actor: Actor) -> Reply:
    media = api.parley.media
    assert media is not None
    record = await media.find(actor, call.params["mediaId"])
    etag = f'"{record.sha256}"'
    headers = [*MEDIA_HEADERS, (b"etag", etag.encode())]
    match = call.header(b"if-none-match")
    if match is not None and _etag_matches(match, etag):
        return BlobReply(304, headers, None)
    wanted = call.header(b"range")
    if_range = call.header(b"if-range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None
    span = _range(wanted, record.size)
    if span is False:
        headers = [
            (b"content-type", b"application/json"),
            *SECURITY_HEADERS,
            (b"content-range", f"bytes */{record.size}".encode()),
        ]
        body = error_body(errors.Code.BAD_RANGE, "the range lies outside the file")
        headers.append((b"content-length", str(len(body)).encode()))
        return _Fixed(body, 416, headers)
    status = 200
    start, end = 0, record.size - 1
    if isinstance(span, tuple):
        status = 206
        start, end = span
        headers.append((b"content-range", f"bytes {start}-{end}/{record.size}".encode()))
    headers += [
        (b"content-type", record.content_type.encode()),
        (b"content-length", str(end - start + 1).encode()),
        (b"content-disposition", disposition(record)),
    ]
    if call.scope.get("method") == "HEAD":
        return BlobReply(status, headers, None)
    return BlobReply(status, headers, await _opened(media.blobs, record.sha256, start, end))


async def _opened(blobs: BlobStore, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
    """The blob's bytes, its first chunk already read: a blob that is missing (a lost
    file, a bucket that is down) is a 503 before the answer starts, not a cut answer."""
    chunks: AsyncGenerator[bytes, None] = blobs.read(sha256, start, end)
    try:
        first = await anext(chunks, b"")
    except (OSError, errors.Unavailable) as exc:
        await chunks.aclose()
        raise errors.Unavailable("the file's bytes cannot be read") from exc

    async def rest() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return rest()


class _Fixed(Reply):
    """A finished answer whose headers are all given (the 416 with its Content-Range)."""

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})
