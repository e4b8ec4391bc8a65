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

from parley.errors import Forbidden, Unauthenticated

Actor = str | None


def require_self(actor: Actor, user_id: str) -> None:
    """In token mode the caller may act only as itself."""
    if actor is not None and actor != user_id:
        raise Forbidden("you may only act as yourself", "not_yourself")


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
        raise Unauthenticated("malformed token", "bad_token")
    return user_id, secret


def token_matches(secret: str, stored: bytes | None) -> bool:
    if stored is None:
        return False
    return hmac.compare_digest(hash_secret(secret), stored)


def new_ticket(user_id: str, token_hash: bytes, ttl: int, now: float | None = None) -> str:
    """A short-lived credential for one user, for clients that cannot send headers
    (a browser's EventSource). ``<userId>.<expiry>.<mac>``: signed with the user's stored
    token hash, so any Parley process can check it and revoking the token revokes it."""
    expiry = int((time.time() if now is None else now) + ttl)
    return f"{user_id}.{expiry}.{_mac(user_id, expiry, token_hash)}"


def ticket_user(ticket: str) -> tuple[str, int, str]:
    """Split a ticket into user id, expiry and mac (raises Unauthenticated if malformed)."""
    parts = ticket.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(ticket) > 256:
        raise Unauthenticated("malformed ticket", "bad_ticket")
    return parts[0], int(parts[1]), parts[2]


def ticket_valid(
    user_id: str, expiry: int, mac: str, token_hash: bytes | None, now: float | None = None
) -> bool:
    if token_hash is None or expiry < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(_mac(user_id, expiry, token_hash), mac)


def _mac(user_id: str, expiry: int, key: bytes) -> str:
    digest = hmac.new(key, f"ticket:{user_id}:{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()
