"""Password hashing: argon2id (RFC 9106) through argon2-cffi.

Parameters (``PARAMETERS``): time cost 2, memory 19 MiB (19,456 KiB), parallelism 1, a
16-byte random salt and a 32-byte hash, stored in the PHC string format
(``$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>``), so the parameters can be raised later
and old hashes still verify (they are re-hashed at the next successful sign-in). These are
the OWASP-recommended minimum for argon2id; each hash takes ~20-40 ms of one core.

Hashing runs in a worker thread (it would stall every other request on the event loop)
and at most ``CONCURRENT`` at a time, so a burst of sign-ins cannot exhaust memory.

Constant work: a sign-in for a user that does not exist, or has no password, is verified
against a dummy hash with the same parameters, so it costs the same time as a real one.
"""

from __future__ import annotations

import asyncio

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PARAMETERS = {
    "algorithm": "argon2id",
    "timeCost": 2,
    "memoryCostKiB": 19_456,
    "parallelism": 1,
    "saltBytes": 16,
    "hashBytes": 32,
}
CONCURRENT = 4
PASSWORD_MIN = 8
PASSWORD_MAX = 1024

_hasher = argon2.PasswordHasher(
    time_cost=PARAMETERS["timeCost"],  # type: ignore[arg-type]
    memory_cost=PARAMETERS["memoryCostKiB"],  # type: ignore[arg-type]
    parallelism=PARAMETERS["parallelism"],  # type: ignore[arg-type]
    hash_len=PARAMETERS["hashBytes"],  # type: ignore[arg-type]
    salt_len=PARAMETERS["saltBytes"],  # type: ignore[arg-type]
    type=argon2.Type.ID,
)


class Passwords:
    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(CONCURRENT)
        self._dummy: str | None = None
        self.verifications = 0  # every verify, real or dummy (tests count them)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(_hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; with no stored hash, the same work
        against a dummy one, and False."""
        target = stored if stored is not None else await self._dummy_hash()
        self.verifications += 1
        async with self._slots:
            ok = await asyncio.to_thread(_verify, target, password)
        return ok and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        try:
            return _hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self.hash("parley dummy password, never matches anything")
        return self._dummy


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
