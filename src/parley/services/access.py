"""Who is calling, and the two authorization rules every service shares.

``actor`` is the authenticated user's id in token mode and ``None`` in open mode, where
Parley behaves exactly like the original API: anyone may act for anyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from parley.errors import Code, Forbidden, Unauthenticated

Actor = str | None


def require_self(actor: Actor, user_id: str) -> None:
    """In token mode the caller may act only as itself."""
    if actor is not None and actor != user_id:
        raise Forbidden("you may only act as yourself", Code.NOT_YOURSELF)


def new_token(user_id: str) -> tuple[str, bytes]:
    """A bearer token ``<userId>.<secret>`` and the hash that is stored instead of it."""
    secret = secrets.token_urlsafe(32)
    return f"{user_id}.{secret}", hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    # Tokens carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str]:
    user_id, dot, secret = token.rpartition(".")
    if not dot or not user_id or not secret or len(token) > 256:
        raise Unauthenticated("malformed token", Code.BAD_TOKEN)
    return user_id, secret


def token_matches(secret: str, stored: bytes | None) -> bool:
    if stored is None:
        return False
    return hmac.compare_digest(hash_secret(secret), stored)


def new_ticket(
    user_id: str, token_hash: bytes, key: bytes, ttl: int, now: float | None = None
) -> str:
    """A short-lived credential for one user, for clients that cannot send headers
    (a browser's EventSource): ``<userId>.<expiry>.<mac>``.

    The mac is keyed with the server secret, which only Parley processes hold, so whoever
    reads the database, its backups or the cache cannot mint one. It also covers the
    user's stored token hash, so a ticket is worth no more than the token it was traded
    for: when the token changes, its tickets stop working.
    """
    expiry = int((time.time() if now is None else now) + ttl)
    return f"{user_id}.{expiry}.{_mac(key, user_id, expiry, token_hash)}"


MAX_EXPIRY_DIGITS = 12  # unix seconds until the year 33658


def ticket_user(ticket: str) -> tuple[str, int, str]:
    """Split a ticket into user id, expiry and mac (raises Unauthenticated if malformed).

    The expiry must be ASCII digits: ``str.isdigit`` also accepts characters such as
    ``²`` that ``int`` cannot read."""
    parts = ticket.split(".")
    if len(parts) != 3 or len(ticket) > 256 or not _ascii_digits(parts[1]):
        raise Unauthenticated("malformed ticket", Code.BAD_TICKET)
    return parts[0], int(parts[1]), parts[2]


def _ascii_digits(text: str) -> bool:
    return 0 < len(text) <= MAX_EXPIRY_DIGITS and text.isascii() and text.isdigit()


def ticket_valid(
    key: bytes,
    user_id: str,
    expiry: int,
    mac: str,
    token_hash: bytes | None,
    now: float | None = None,
) -> bool:
    if token_hash is None or expiry < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(_mac(key, user_id, expiry, token_hash), mac)


def _mac(key: bytes, user_id: str, expiry: int, token_hash: bytes) -> str:
    # Every field is length-prefixed, so no two different inputs share a message.
    fields = (b"parley-ticket-v2", user_id.encode(), str(expiry).encode(), token_hash)
    message = b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()
