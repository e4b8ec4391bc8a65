"""A JSON answer sent as it is produced: chunks from an async iterator, with chunked
transfer encoding, so a large document (an account export) is never held in memory.

Chunks are produced on demand (pull): a slow client holds at most one chunk here. If the
client goes away the producer is closed. A failure after the first chunk cannot change
the status any more: the answer is cut short, which a client sees as invalid JSON.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from parley.http.asgi import SECURITY_HEADERS, Reply, Send

log = logging.getLogger("parley.http")


class JsonStream(Reply):
    def __init__(self, chunks: AsyncIterator[bytes], headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(b"", 200, headers)
        self.chunks = chunks

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:
            log.exception("streamed answer failed after it started")
            raise
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
