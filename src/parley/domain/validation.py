"""What Parley accepts as input: one set of rules, applied by the services before storage.

Every backend stores what passes these rules and never sees anything else, so the answer to
a request does not depend on the backend. Adapters assume valid input.

Text (usernames, group names, messages)
    A sequence of Unicode scalar values without U+0000: no lone surrogates (U+D800-U+DFFF,
    which no UTF-8 store can hold) and no NUL (which PostgreSQL text cannot hold).
    Otherwise 400 ``invalid_text``. Lengths count code points (an emoji is one character);
    names are trimmed first and their limits apply to the trimmed name
    (``rules.clean_name``, ``rules.check_message_text``).

Ids (users, groups, in the path, in a body, in a token)
    Parley makes every id itself (``models.new_id``): 1-128 characters of ``A-Z a-z 0-9 _ -``.
    Any other string names nothing that can exist, so it is answered exactly as an unknown
    id of the same kind, at the same point: 404 ``<kind>_not_found`` (401 inside a token).
    An empty id in a body is a missing field: 400 ``empty_field``.
    Why 404 and not 400: ids are opaque, a client cannot tell a well-formed unknown id from a
    malformed one and need not; one answer per kind keeps every route's list of statuses as
    it is, and looking one up is never a storage call.

Idempotency keys (``Idempotency-Key`` header or ``clientMessageId``)
    1-255 printable ASCII characters (U+0020-U+007E), as an HTTP header value can carry:
    other characters are 400 ``invalid_text``, more than 255 are 400 ``too_long``. A key
    with its sender id then fits any backend's key size (DynamoDB: 1,024 bytes).
"""

from __future__ import annotations

import re

from parley.errors import Code, InvalidInput

ID_MAX = 128
SEND_KEY_MAX = 255

_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{ID_MAX}}}")
_SEND_KEY = re.compile(r"[\x20-\x7e]+")


def well_formed_id(value: str) -> bool:
    """Could ``value`` be an id Parley made? If not, nothing stored has it."""
    return _ID.fullmatch(value) is not None


def valid_text(value: str) -> bool:
    """Unicode scalar values only (no lone surrogates) and no NUL."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, field: str) -> str:
    if not valid_text(value):
        raise InvalidInput(
            f"{field} must be Unicode text without NUL characters or lone surrogates",
            Code.INVALID_TEXT,
        )
    return value


def check_send_key(key: str | None) -> str | None:
    """An idempotency key, or None when the send has none."""
    if key is None:
        return None
    if not key:
        raise InvalidInput("idempotency key must not be empty", Code.EMPTY_FIELD)
    if _SEND_KEY.fullmatch(key) is None:
        raise InvalidInput("idempotency key must be printable ASCII characters", Code.INVALID_TEXT)
    if len(key) > SEND_KEY_MAX:
        raise InvalidInput(
            f"idempotency key is longer than {SEND_KEY_MAX} characters", Code.TOO_LONG
        )
    return key
