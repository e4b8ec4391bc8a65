"""Domain errors to HTTP, in one place."""

from __future__ import annotations

import msgspec

from parley import errors
from parley.http.asgi import BodyTimeout
from parley.http.schemas import ErrorDetail, ErrorOut

STATUS: dict[type[errors.ParleyError], int] = {
    BodyTimeout: 408,
    errors.InvalidInput: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}

_encode = msgspec.json.Encoder().encode


def status_of(error: errors.ParleyError) -> int:
    for kind in type(error).__mro__:
        status = STATUS.get(kind)
        if status is not None:
            return status
    return 500


def error_body(code: errors.Code, message: str) -> bytes:
    return _encode(ErrorOut(ErrorDetail(code, message)))


def retry_after(error: errors.ParleyError) -> int | None:
    if isinstance(error, errors.RateLimited | errors.Unavailable):
        return error.retry_after
    return None
