"""A lean JSON response: headers computed once, body encoded by msgspec."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.background import BackgroundTask
from starlette.responses import Response

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_JSON = (b"content-type", b"application/json")

encode = msgspec.json.Encoder().encode


class JsonResponse(Response):
    media_type = "application/json"

    def __init__(
        self,
        body: bytes,
        status_code: int = 200,
        extra: list[tuple[bytes, bytes]] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.background = background
        headers = [_JSON, (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
        if extra:
            headers += extra
        self.raw_headers = headers


def json_response(value: Any, status_code: int = 200) -> JsonResponse:
    return JsonResponse(encode(value), status_code)
