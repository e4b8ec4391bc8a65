"""Signed-in devices, passwords, sign-in, account deletion and export (SPEC §7).

Tokens
    A bearer token is ``<userId>.<secret>`` (256 random bits); storage keeps one row per
    token (a *device*): its id, the secret's SHA-256, a device name, when it was made and
    when it was last used. The token returned at sign-up is the first one. Checking a
    token is a lookup of its hash among the user's tokens, cached in the directory, so an
    idle check still touches no storage. ``lastUsedAt`` is written lazily: at most once
    per ``TOUCH_MS`` per token and process, in the background.

Revocation
    ``revoke`` deletes the row, then ``Directory.token_removed``, which returns only when
    no process can accept the token any more (with Redis: the cache epoch is bumped and
    every trust lease on the old one has run out; see ``parley.cache.redis_directory``), then
    signals ``SIGNED_OUT`` to the user's waiting long-polls and live streams in every
    process: each re-checks its token (``still_signed_in``) and ends. A waiter also
    re-checks it before it answers or writes anything, so a revoked device is never
    shown a message even if that signal is lost; while wake-ups are not reliable
    (``Wakeups.reliable``) waiters re-check it every second as well.

Passwords and sign-in
    argon2id (``services.passwords``); 8-1024 characters; never logged or returned.
    Every attempt is counted by the sign-in throttle *before* the password is checked
    (``services.signins``); a wrong password, an unknown user and a user without a
    password all answer 401 ``bad_credentials`` after the same work.

Deletion
    Three steps, each idempotent: mark the user ``deleting`` (from then on every lookup
    treats it as gone), erase (tokens, password, memberships, blocks both ways, the text of
    its messages: they stay as tombstones with their id and timestamp), then ``deleted``.
    A crash anywhere leaves a ``deleting`` user that nobody can see. Every server
    finishes such deletions when it starts (``finish_deletions``, before it answers) and
    then every ``SWEEP_S`` seconds (``sweep``), so an interrupted deletion is completed
    without the user: after the erase its tokens are gone and it could not repeat the call.
    Until then, repeating the call (its tokens outlive the mark until the erase) finishes
    it too. ``PARLEY_TEST_EXIT_DURING_DELETE=<step>`` (tests only) kills the server's
    process group with SIGKILL right after a step of a request's deletion: ``marked``,
    ``hidden``, ``erased``, ``forgotten``, ``finished``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from parley.cache.base import SIGNED_OUT, Directory, Wakeups
from parley.domain.models import GroupRecord, Message, TokenRecord, UserRecord, new_id
from parley.domain.rules import clean_name
from parley.domain.validation import check_text, well_formed_id
from parley.errors import Code, InvalidInput, NotFound, Unauthenticated
from parley.services.access import Actor, hash_secret, require_self, split_token
from parley.services.passwords import PASSWORD_MAX, PASSWORD_MIN, Passwords
from parley.services.signins import SignInThrottle
from parley.storage.base import Storage

TOUCH_MS = 15 * 60 * 1000  # lastUsedAt is at most this stale
DEVICE_NAME_MAX = 64
DEFAULT_DEVICE = "unnamed device"
EXPORT_PAGE = 1000
FAULT = "PARLEY_TEST_EXIT_DURING_DELETE"
SWEEP_S = 600.0  # how often each process looks for deletions a crash interrupted

log = logging.getLogger("parley.accounts")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: who, and with which token."""

    user_id: str
    token_id: str


@dataclass(frozen=True, slots=True)
class NewToken:
    record: TokenRecord
    token: str  # the secret bearer token, shown once


def mint(user_id: str, device_name: str) -> NewToken:
    secret = secrets.token_urlsafe(32)
    at = now_ms()
    record = TokenRecord(new_id("t_"), user_id, hash_secret(secret), device_name, at, at)
    return NewToken(record, f"{user_id}.{secret}")


def device_name(value: str | None) -> str:
    if value is None:
        return DEFAULT_DEVICE
    return clean_name(check_text(value, "deviceName"), "deviceName", DEVICE_NAME_MAX)


def check_password(value: str, field: str = "password") -> str:
    check_text(value, field)
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise InvalidInput(
            f"{field} must be {PASSWORD_MIN}-{PASSWORD_MAX} characters", Code.BAD_PASSWORD
        )
    return value


class AccountService:
    def __init__(
        self,
        storage: Storage,
        directory: Directory,
        passwords: Passwords,
        throttle: SignInThrottle,
        token_mode: bool,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.storage = storage
        self.directory = directory
        self.wakeups = wakeups
        self.passwords = passwords
        self.throttle = throttle
        self.token_mode = token_mode
        self._touched: dict[str, int] = {}  # token id -> last lastUsedAt written or seen
        self._tasks: set[asyncio.Task[None]] = set()

    # tokens ----------------------------------------------------------------------------
    async def authenticate(self, token: str) -> Caller:
        user_id, secret = split_token(token)
        user = await self.directory.user(user_id) if well_formed_id(user_id) else None
        if user is None:
            raise Unauthenticated("unknown token", Code.BAD_TOKEN)
        found = await self.find_token(user_id, hash_secret(secret))
        if found is None:
            raise Unauthenticated("unknown token", Code.BAD_TOKEN)
        self._touch(found)
        return Caller(user_id, found.id)

    async def find_token(self, user_id: str, token_hash: bytes) -> TokenRecord | None:
        # A 256-bit secret's hash: a dict lookup leaks nothing worth timing.
        found = (await self.directory.tokens(user_id)).get(token_hash)
        if found is None:  # minted since this process loaded the user's tokens?
            found = (await self.directory.tokens(user_id, fresh=True)).get(token_hash)
        return found

    async def still_signed_in(self, user_id: str, token_id: str) -> bool:
        """Is this token still live? (Open long-polls and streams ask every second.)"""
        if await self.directory.user(user_id) is None:
            return False
        tokens = (await self.directory.tokens(user_id)).values()
        return any(t.id == token_id for t in tokens)

    def _signed_out(self, user_id: str) -> None:
        """The user's waiting requests, here and in every process: re-check your token."""
        if self.wakeups is not None:
            self.wakeups.signal([user_id], SIGNED_OUT)

    def _touch(self, token: TokenRecord) -> None:
        at = now_ms()
        last = max(self._touched.get(token.id, 0), token.last_used_at)
        if at - last < TOUCH_MS:
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched[token.id] = at
        task = asyncio.create_task(self._write_touch(token, at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_touch(self, token: TokenRecord, at: int) -> None:
        try:
            await self.storage.touch_token(token.user_id, token.id, at)
        except Exception:  # only a hint; the next use tries again
            self._touched.pop(token.id, None)

    async def authenticate_for_deletion(self, token: str) -> Caller:
        """Like ``authenticate``, but also for an account whose deletion started and did not
        finish (a crash): its tokens outlive the mark until the erase removes them, so
        repeating the call finishes it."""
        user_id, secret = split_token(token)
        state = await self.storage.account_state(user_id) if well_formed_id(user_id) else None
        if state == "active":
            return await self.authenticate(token)
        if state is not None:
            wanted = hash_secret(secret)
            for found in await self.storage.user_tokens(user_id):
                if found.hash == wanted:
                    return Caller(user_id, found.id)
        raise Unauthenticated("unknown token", Code.BAD_TOKEN)

    async def create_token(self, actor: Actor, user_id: str, name: str | None) -> NewToken:
        require_self(actor, user_id)
        await self._require_user(user_id)
        self._require_token_mode()
        new = mint(user_id, device_name(name))
        await self.storage.add_token(new.record)
        await self.directory.token_added(new.record)
        return new

    async def list_tokens(self, actor: Actor, user_id: str) -> list[TokenRecord]:
        require_self(actor, user_id)
        await self._require_user(user_id)
        self._require_token_mode()
        tokens = await self.storage.user_tokens(user_id)
        return [_with_touch(t, self._touched.get(t.id, 0)) for t in tokens]

    async def revoke(self, actor: Actor, user_id: str, token_id: str) -> None:
        require_self(actor, user_id)
        await self._require_user(user_id)
        self._require_token_mode()
        if not well_formed_id(token_id) or not await self.storage.delete_token(user_id, token_id):
            raise NotFound("token not found", Code.TOKEN_NOT_FOUND)
        await self.directory.token_removed(user_id, token_id)
        self._signed_out(user_id)

    # passwords -------------------------------------------------------------------------
    async def set_password(
        self, actor: Actor, user_id: str, password: str, current: str | None, address: str
    ) -> None:
        require_self(actor, user_id)
        check_password(password)
        await self._require_user(user_id)
        stored = await self.storage.get_password(user_id)
        if stored is not None:  # changing it: the current one must be given, and right
            await self.throttle.attempt(user_id, address)
            if current is None or not await self.passwords.verify(stored, current):
                raise Unauthenticated("current password is wrong", Code.BAD_CREDENTIALS)
        if not await self.storage.set_password(user_id, await self.passwords.hash(password)):
            raise NotFound("user not found", Code.USER_NOT_FOUND)

    async def sign_in(
        self, user_id: str, password: str, name: str | None, address: str
    ) -> NewToken:
        if not self.token_mode:  # as for the other token routes: the user first
            await self._require_user(user_id)
            self._require_token_mode()
        device = device_name(name)
        check_text(password, "password")
        if not user_id or not password:
            raise InvalidInput("userId and password must not be empty", Code.EMPTY_FIELD)
        if len(password) > PASSWORD_MAX:
            raise InvalidInput(f"password is longer than {PASSWORD_MAX} characters", Code.TOO_LONG)
        known = well_formed_id(user_id)
        await self.throttle.attempt(user_id if known else "-", address)
        stored = await self.storage.get_password(user_id) if known else None
        if not await self.passwords.verify(stored, password) or stored is None:
            raise Unauthenticated("wrong user id or password", Code.BAD_CREDENTIALS)
        if self.passwords.needs_rehash(stored):
            await self.storage.set_password(user_id, await self.passwords.hash(password))
        new = mint(user_id, device)
        await self.storage.add_token(new.record)
        await self.directory.token_added(new.record)
        return new

    # deletion --------------------------------------------------------------------------
    async def delete(self, actor: Actor, user_id: str, password: str | None, address: str) -> None:
        """Delete an account (see the module's docstring). Repeating it is harmless."""
        require_self(actor, user_id)
        state = await self.storage.account_state(user_id) if well_formed_id(user_id) else None
        if state is None:
            raise NotFound("user not found", Code.USER_NOT_FOUND)
        if state == "deleted":
            return  # a retry of a deletion that finished
        if state == "active":
            stored = await self.storage.get_password(user_id)
            if stored is not None:
                await self.throttle.attempt(user_id, address)
                if password is None or not await self.passwords.verify(stored, password):
                    raise Unauthenticated("password is wrong", Code.BAD_CREDENTIALS)
            await self.storage.begin_deletion(user_id)
        self._fault("marked")
        await self.finish_deletion(user_id, faults=True)

    async def finish_deletion(self, user_id: str, faults: bool = False) -> None:
        """Erase a user marked ``deleting`` and mark it ``deleted``. Every step is
        idempotent, so this may run again after a crash, and in several processes at once.
        (``faults``: a request's deletion, where a fault test may kill the server.)"""
        await self.directory.user_deleted(user_id)  # lookups and tokens: gone everywhere
        self._signed_out(user_id)
        if faults:
            self._fault("hidden")
        await self.storage.erase_account(user_id)
        if faults:
            self._fault("erased")
        await self.directory.user_deleted(user_id)  # memberships and blocks, too
        if faults:
            self._fault("forgotten")
        await self.storage.finish_deletion(user_id)
        if faults:
            self._fault("finished")

    async def finish_deletions(self, only: set[str] | None = None) -> list[str]:
        """Finish every deletion that started and did not finish (all of them, or those in
        ``only``); returns the users it finished. The server runs this at start-up and
        then every ``SWEEP_S`` seconds (``sweep``)."""
        finished = []
        for user_id in await self.storage.deleting_users():
            if only is None or user_id in only:
                await self.finish_deletion(user_id)
                finished.append(user_id)
        return finished

    async def sweep(self, every: float = SWEEP_S) -> None:
        """Until cancelled: every ``every`` seconds, finish the deletions that were already
        under way at the previous sweep (one that has just started is left to the request
        that started it; finishing it twice would be harmless, only wasted work)."""
        seen: set[str] = set()
        while True:
            await asyncio.sleep(every)
            try:
                await self.finish_deletions(seen)
                seen = set(await self.storage.deleting_users())
            except Exception:  # storage down: the next sweep tries again
                log.warning("finishing interrupted account deletions failed", exc_info=True)

    @staticmethod
    def _fault(step: str) -> None:
        if os.environ.get(FAULT) == step:  # a fault test: kill -9 right after this step,
            os.killpg(os.getpgrp(), signal.SIGKILL)  # the whole server (no worker respawn)

    # export ----------------------------------------------------------------------------
    async def export(self, actor: Actor, user_id: str) -> Export:
        require_self(actor, user_id)
        user = await self._require_user(user_id)
        tokens = await self.storage.user_tokens(user_id) if self.token_mode else []
        groups = []
        for group_id in sorted(await self.storage.user_groups(user_id)):
            group = await self.directory.group(group_id)
            if group is not None:
                groups.append(group)
        blocked = await self.storage.blocked_by(user_id)
        return Export(self.storage, user, tokens, groups, blocked)

    # helpers ---------------------------------------------------------------------------
    async def _require_user(self, user_id: str) -> UserRecord:
        user = await self.directory.user(user_id) if well_formed_id(user_id) else None
        if user is None:
            raise NotFound("user not found", Code.USER_NOT_FOUND)
        return user

    def _require_token_mode(self) -> None:
        if not self.token_mode:
            raise InvalidInput("devices and sign-in exist only in token mode", Code.NO_TOKENS)


def _with_touch(token: TokenRecord, touched: int) -> TokenRecord:
    if touched > token.last_used_at:
        return TokenRecord(
            token.id, token.user_id, token.hash, token.device_name, token.created_at, touched
        )
    return token


@dataclass
class Export:
    """What an export holds besides its messages, which ``messages`` reads page by page."""

    storage: Storage
    user: UserRecord
    tokens: list[TokenRecord]
    groups: list[GroupRecord]
    blocked: list[str]

    async def messages(self) -> AsyncIterator[list[Message]]:
        """Every message the user can see or sent, ``EXPORT_PAGE`` at a time: stream by
        stream (its inbox, each of its groups, the private messages it sent to others),
        each oldest first. Reading one stream at a time follows one index range per page
        (no sort of everything that is left), and pages never split a millisecond, so none
        is skipped or repeated."""
        user_id = self.user.id
        streams: list[tuple[list[str], str | None]] = [([user_id], None)]
        streams += [([g.id], None) for g in self.groups]
        streams.append(([], user_id))  # sent: those to itself are in its inbox already
        for recipients, sent_by in streams:
            after: int | None = None
            while True:
                page = await self.storage.read_messages(recipients, sent_by, after, EXPORT_PAGE)
                rows = [m for m in page.messages if sent_by is None or m.recipient_id != user_id]
                if rows:
                    yield rows
                if not page.has_more:
                    break
                after = page.next_ts
