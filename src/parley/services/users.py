"""Accounts, authentication and blocking."""

from __future__ import annotations

from dataclasses import dataclass

from parley.cache.base import Directory
from parley.domain.models import UserRecord, new_id
from parley.domain.rules import Limits, check_id, clean_name
from parley.domain.validation import check_text, well_formed_id
from parley.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from parley.services.access import (
    Actor,
    new_ticket,
    new_token,
    require_self,
    split_token,
    ticket_user,
    ticket_valid,
    token_matches,
)
from parley.storage.base import Storage

TICKET_SECONDS = 60


@dataclass(frozen=True, slots=True)
class NewUser:
    user: UserRecord
    token: str | None


class UserService:
    def __init__(
        self, storage: Storage, directory: Directory, limits: Limits, token_mode: bool
    ) -> None:
        self.storage = storage
        self.directory = directory
        self.limits = limits
        self.token_mode = token_mode

    async def create(self, username: str) -> NewUser:
        name = clean_name(check_text(username, "username"), "username", self.limits.username_max)
        user_id = new_id("u_")
        token, token_hash = new_token(user_id) if self.token_mode else (None, None)
        user = UserRecord(user_id, name, token_hash)
        await self.storage.create_user(user)
        await self.directory.user_created(user)
        return NewUser(user, token)

    async def authenticate(self, token: str) -> str:
        """The id of the user a bearer token belongs to."""
        user_id, secret = split_token(token)
        user = await self.directory.user(user_id) if well_formed_id(user_id) else None
        if user is None or not token_matches(secret, user.token_hash):
            raise Unauthenticated("unknown token", "bad_token")
        return user_id

    async def issue_ticket(self, actor: Actor, user_id: str) -> tuple[str, int]:
        """A ticket for the live stream (see ``access.new_ticket``) and its lifetime."""
        require_self(actor, user_id)
        user = await self.require(user_id)
        if user.token_hash is None:
            raise InvalidInput("tickets exist only in token mode", "no_tokens")
        return new_ticket(user_id, user.token_hash, TICKET_SECONDS), TICKET_SECONDS

    async def authenticate_ticket(self, ticket: str) -> str:
        user_id, expiry, mac = ticket_user(ticket)
        user = await self.directory.user(user_id) if well_formed_id(user_id) else None
        if user is None or not ticket_valid(user_id, expiry, mac, user.token_hash):
            raise Unauthenticated("unknown or expired ticket", "bad_ticket")
        return user_id

    async def get(self, actor: Actor, user_id: str) -> UserRecord:
        return await self.require(user_id)

    async def require(self, user_id: str, what: str = "user") -> UserRecord:
        # A malformed id names nothing stored: answered as an unknown one, without storage.
        user = await self.directory.user(user_id) if well_formed_id(user_id) else None
        if user is None:
            raise NotFound(f"{what} not found", f"{what.replace(' ', '_')}_not_found")
        return user

    async def block(self, actor: Actor, user_id: str, blocked_id: str) -> None:
        require_self(actor, user_id)
        check_id(blocked_id, "blockedUserId")
        await self.require(user_id)
        await self.require(blocked_id, "blocked user")
        # The conditional write decides, not the cache; and a 409 forgets the cached
        # blocks too, since it may be the answer to a cache that was wrong.
        changed = await self.storage.add_block(user_id, blocked_id)
        await self.directory.blocks_changed(user_id)
        if not changed:
            raise Conflict("user is already blocked", "already_blocked")

    async def unblock(self, actor: Actor, user_id: str, blocked_id: str) -> None:
        require_self(actor, user_id)
        check_id(blocked_id, "blockedUserId")
        await self.require(user_id)
        await self.require(blocked_id, "blocked user")
        changed = await self.storage.remove_block(user_id, blocked_id)
        # A 409 too: the cache may still hold the block the database no longer has.
        await self.directory.blocks_changed(user_id)
        if not changed:
            raise Conflict("user is not blocked", "not_blocked")

    async def blocked(self, actor: Actor, user_id: str) -> list[str]:
        require_self(actor, user_id)
        await self.require(user_id)
        return sorted(await self.directory.blocked_by(user_id))
