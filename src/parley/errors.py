"""Domain errors with stable codes.

Services raise these; the HTTP layer turns each kind into one status code in one place
(``parley.http.errors``). Services know nothing of HTTP.

    ParleyError
     ├── InvalidInput        bad or missing field, bad op/type, text over a limit   -> 400
     ├── Unauthenticated     missing, malformed or unknown token                    -> 401
     ├── Forbidden           blocked, not a member, acting as another user          -> 403
     ├── NotFound            unknown user, group or route                           -> 404
     ├── Conflict            already blocked/member, not blocked/member             -> 409
     ├── PayloadTooLarge     request body over the limit                            -> 413
     ├── RateLimited         over a rate budget (carries retry_after seconds)       -> 429
     │    └── TooManyWaiting too many long-polls/streams open for a user or address
     └── Unavailable         storage or a dependency is down (carries retry_after)  -> 503
"""

from __future__ import annotations


class ParleyError(Exception):
    """Base of every error a client may see. ``code`` is stable snake_case."""

    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(ParleyError):
    code = "invalid_input"


class Unauthenticated(ParleyError):
    code = "unauthenticated"


class Forbidden(ParleyError):
    code = "forbidden"


class NotFound(ParleyError):
    code = "not_found"


class Conflict(ParleyError):
    code = "conflict"


class PayloadTooLarge(ParleyError):
    code = "payload_too_large"


class RateLimited(ParleyError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyWaiting(RateLimited):
    """Too many long-polls and live streams are open at once for one user or address."""

    code = "too_many_waiting"


class Unavailable(ParleyError):
    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
