"""Accounts, authentication and blocking."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from parley.cache.base import Directory
from parley.domain.models import UserRecord, new_id
from parley.domain.rules import Limits, check_id, clean_name
from parley.domain.validation import check_text, well_formed_id
from parley.errors import Code, Conflict, InvalidInput, NotFound, Unauthenticated
from parley.services.access import Actor, new_ticket, require_self, ticket_user, ticket_valid
from parley.services.accounts import DEFAULT_DEVICE, mint
from parley.storage.base import Storage

TICKET_SECONDS = 60
LookedUpAs = Literal["user", "sender", "receiver", "blocked user"]
# The code of a missing user, by the role it was looked up in.
NOT_FOUND: dict[LookedUpAs, Code] = {
    "user": Code.USER_NOT_FOUND,
    "sender": Code.SENDER_NOT_FOUND,
    "receiver": Code.RECEIVER_NOT_FOUND,
    "blocked user": Code.BLOCKED_USER_NOT_FOUND,
}


@dataclass(frozen=True, slots=True)
class NewUser:
    user: UserRecord
    token: str | None


class UserService:
    def __init__(
        self,
        storage: Storage,
        directory: Directory,
        limits: Limits,
        token_mode: bool,
        secret_key: bytes | None = None,
    ) -> None:
        self.storage = storage
        self.directory = directory
        self.limits = limits
        self.token_mode = token_mode
        # Signs stream tickets (parley.startup.server_secret); without one, a key of this
        # process only, which no other process could check.
        self.secret_key = secret_key or secrets.token_bytes(32)

    async def create(self, username: str) -> NewUser:
        name = clean_name(check_text(username, "username"), "username", self.limits.username_max)
        user_id = new_id("u_")
        user = UserRecord(user_id, name)
        first = mint(user_id, DEFAULT_DEVICE) if self.token_mode else None
        await self.storage.create_user(user, first.record if first else None)
        await self.directory.user_created(user)
        if first is not None:
            await self.directory.token_added(first.record)
        return NewUser(user, first.token if first else None)

    async def issue_ticket(
        self, actor: Actor, user_id: str, token_id: str | None
    ) -> tuple[str, int]:
        """A ticket for the live stream (see ``access.new_ticket``) and its lifetime,
        signed with the calling token's hash: revoking that token revokes the ticket."""
        require_self(actor, user_id)
        await self.require(user_id)
        tokens = await self.directory.tokens(user_id)
        token = next((t for t in tokens.values() if t.id == token_id), None)
        if token is None:
            raise InvalidInput("tickets exist only in token mode", Code.NO_TOKENS)
        ticket = new_ticket(user_id, token.hash, self.secret_key, TICKET_SECONDS)
        return ticket, TICKET_SECONDS

    async def authenticate_ticket(self, ticket: str) -> tuple[str, str]:
        """The user and the token a ticket was issued for."""
        user_id, expiry, mac = ticket_user(ticket)
        user = await self.directory.user(user_id) if well_formed_id(user_id) else None
        if user is not None:
            for token in (await self.directory.tokens(user_id)).values():
                if ticket_valid(self.secret_key, user_id, expiry, mac, token.hash):
                    return user_id, token.id
        raise Unauthenticated("unknown or expired ticket", Code.BAD_TICKET)

    async def get(self, actor: Actor, user_id: str) -> UserRecord:
        return await self.require(user_id)

    async def require(self, user_id: str, what: LookedUpAs = "user") -> UserRecord:
        # A malformed id names nothing stored: answered as an unknown one, without storage.
        user = await self.directory.user(user_id) if well_formed_id(user_id) else None
        if user is None:
            raise NotFound(f"{what} not found", NOT_FOUND[what])
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
            raise Conflict("user is already blocked", Code.ALREADY_BLOCKED)

    async def unblock(self, actor: Actor, user_id: str, blocked_id: str) -> None:
        require_self(actor, user_id)
        check_id(blocked_id, "blockedUserId")
        await self.require(user_id)
        await self.require(blocked_id, "blocked user")
        changed = await self.storage.remove_block(user_id, blocked_id)
        # A 409 too: the cache may still hold the block the database no longer has.
        await self.directory.blocks_changed(user_id)
        if not changed:
            raise Conflict("user is not blocked", Code.NOT_BLOCKED)

    async def blocked(self, actor: Actor, user_id: str) -> list[str]:
        require_self(actor, user_id)
        await self.require(user_id)
        return sorted(await self.directory.blocked_by(user_id))
