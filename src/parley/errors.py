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

from enum import StrEnum


class Code(StrEnum):
    """Every error code a client can see, by the status it comes with. Stable: clients
    branch on these, and the OpenAPI document lists them (``ErrorDetail.code``)."""

    # 400: the request itself is wrong
    INVALID_INPUT = "invalid_input"  # (generic)
    BAD_REQUEST = "bad_request"  # malformed HTTP (Content-Length, a body cut short)
    INVALID_JSON = "invalid_json"  # the body is not a JSON object
    INVALID_TEXT = "invalid_text"  # not UTF-8, a lone surrogate, a NUL character
    TOO_DEEP = "too_deep"  # JSON nested deeper than the limit
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"  # a field of the wrong JSON type
    CONFLICTING_FIELDS = "conflicting_fields"  # a field and its alias with different values
    EMPTY_FIELD = "empty_field"
    TOO_LONG = "too_long"
    BAD_OP = "bad_op"
    BAD_TYPE = "bad_type"
    BAD_INCLUDE = "bad_include"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_LIMIT = "bad_limit"
    BAD_WAIT = "bad_wait"
    NO_TOKENS = "no_tokens"  # a ticket, a device or a sign-in asked for in open mode
    BAD_PASSWORD = "bad_password"  # a new password shorter or longer than allowed
    BAD_ATTACHMENT = "bad_attachment"  # over 10, unknown, or not uploaded by the sender
    BAD_CONTENT_TYPE = "bad_content_type"  # an upload's Content-Type is not a media type
    EMPTY_FILE = "empty_file"  # an upload with no bytes
    # 401: who is calling is unknown
    UNAUTHENTICATED = "unauthenticated"
    MISSING_TOKEN = "missing_token"
    BAD_TOKEN = "bad_token"
    BAD_TICKET = "bad_ticket"
    BAD_CREDENTIALS = "bad_credentials"  # a wrong user id or password
    # 403: known, but not allowed
    FORBIDDEN = "forbidden"
    NOT_YOURSELF = "not_yourself"
    BLOCKED = "blocked"
    NOT_A_MEMBER = "not_a_member"
    NOT_ALLOWED = "not_allowed"  # a group role does not allow it (owner, admin, member)
    NOT_SENDER = "not_sender"  # only a message's sender may edit or delete it
    # 404
    NOT_FOUND = "not_found"  # no such route
    USER_NOT_FOUND = "user_not_found"
    SENDER_NOT_FOUND = "sender_not_found"
    RECEIVER_NOT_FOUND = "receiver_not_found"
    BLOCKED_USER_NOT_FOUND = "blocked_user_not_found"
    GROUP_NOT_FOUND = "group_not_found"
    MESSAGE_NOT_FOUND = "message_not_found"  # no such message, or one the caller cannot see
    CONVERSATION_NOT_FOUND = "conversation_not_found"  # no such user or group
    MEDIA_NOT_FOUND = "media_not_found"  # unknown, or not visible to the caller
    TOKEN_NOT_FOUND = "token_not_found"  # revoking a device that is not (or no longer) there
    # 405, 408
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TIMEOUT = "body_timeout"
    # 409: the state says no
    CONFLICT = "conflict"
    ALREADY_BLOCKED = "already_blocked"
    NOT_BLOCKED = "not_blocked"
    ALREADY_MEMBER = "already_member"
    NOT_IN_GROUP = "not_in_group"
    ALREADY_ADMIN = "already_admin"
    IS_OWNER = "is_owner"  # the owner's role cannot be changed
    GROUP_FULL = "group_full"  # PARLEY_MAX_GROUP_MEMBERS reached
    MESSAGE_DELETED = "message_deleted"  # editing a message its sender deleted
    # 416: a Range outside the file
    BAD_RANGE = "range_not_satisfiable"
    # 413, 414, 431
    PAYLOAD_TOO_LARGE = "payload_too_large"
    URI_TOO_LONG = "uri_too_long"
    HEADERS_TOO_LARGE = "headers_too_large"
    # 429: slow down (with Retry-After)
    RATE_LIMITED = "rate_limited"
    TOO_MANY_WAITING = "too_many_waiting"
    # 500, 503
    INTERNAL_ERROR = "internal_error"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"


class ParleyError(Exception):
    """Base of every error a client may see. ``code`` is one of :class:`Code`."""

    code: Code = Code.INVALID_INPUT

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(ParleyError):
    code = Code.INVALID_INPUT


class Unauthenticated(ParleyError):
    code = Code.UNAUTHENTICATED


class Forbidden(ParleyError):
    code = Code.FORBIDDEN


class NotFound(ParleyError):
    code = Code.NOT_FOUND


class Conflict(ParleyError):
    code = Code.CONFLICT


class PayloadTooLarge(ParleyError):
    code = Code.PAYLOAD_TOO_LARGE


class RateLimited(ParleyError):
    code = Code.RATE_LIMITED

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyWaiting(RateLimited):
    """Too many long-polls and live streams are open at once for one user or address."""

    code = Code.TOO_MANY_WAITING


class Unavailable(ParleyError):
    code = Code.UNAVAILABLE

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
