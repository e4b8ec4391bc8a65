"""Who is calling, and the two authorization rules every service shares.

``actor`` is the authenticated user's id in token mode and ``None`` in open mode, where
Parley behaves exactly like the original API: anyone may act for anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

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
