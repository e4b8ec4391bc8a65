"""Input limits and the checks every service applies to text fields.

Which characters text may hold, and what an id or an idempotency key looks like: ``validation``.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.errors import Code, InvalidInput


@dataclass(frozen=True, slots=True)
class Limits:
    username_max: int = 64
    group_name_max: int = 128
    group_members_max: int = 1024  # the owner included
    message_max: int = 4096
    body_max_bytes: int = 64 * 1024
    page_default: int = 500
    page_max: int = 1000


def clean_name(value: str, field: str, maximum: int) -> str:
    """Trim a name and check it is 1..maximum characters."""
    name = value.strip()
    if not name:
        raise InvalidInput(f"{field} must not be empty", Code.EMPTY_FIELD)
    if len(name) > maximum:
        raise InvalidInput(f"{field} is longer than {maximum} characters", Code.TOO_LONG)
    return name


def check_message_text(text: str, maximum: int) -> str:
    if not text or not text.strip():
        raise InvalidInput("message must not be empty", Code.EMPTY_FIELD)
    if len(text) > maximum:
        raise InvalidInput(f"message is longer than {maximum} characters", Code.TOO_LONG)
    return text


def check_id(value: str, field: str) -> str:
    if not value:
        raise InvalidInput(f"{field} must not be empty", Code.EMPTY_FIELD)
    return value
