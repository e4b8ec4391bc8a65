"""The ceiling: a raw ASGI app answering every request with {"messages": []}."""

from __future__ import annotations

from typing import Any

BODY = b'{"messages": []}'
HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
