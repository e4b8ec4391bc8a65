"""Stream tickets: signed with the server secret over the user's token hash, parsed strictly.

Whoever reads the database (or its backups, or a cache of user records) holds every token
hash; a ticket that could be minted from a hash alone would let them open anyone's stream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from parley.app import Parley, build
from parley.errors import Unauthenticated
from parley.http.server import ParleyApp, create_app
from parley.services.access import new_ticket, ticket_user, ticket_valid
from parley.settings import Settings
from parley.storage.sqlite import SqliteStorage
from tests.e2e.test_authz_matrix import asgi_call

KEY = b"k" * 48


class App:
    def __init__(self, parley: Parley, asgi: ParleyApp, client: httpx.AsyncClient) -> None:
        self.parley = parley
        self.asgi = asgi
        self.client = client

    async def user(self, name: str) -> tuple[str, dict[str, str]]:
        body = (await self.client.post("/v1/users/create", json={"username": name})).json()
        return body["userId"], {"Authorization": f"Bearer {body['token']}"}

    async def stream_status(self, user_id: str, ticket: str) -> int:
        # the stream is cut after its first chunk, as a closed browser tab would
        url = f"/v1/messages/{user_id}/stream?timestamp=0&ticket={ticket}"
        return (await asgi_call(self.asgi, "GET", url)).status


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    settings = Settings.from_env({"PARLEY_RATE_LIMITS": "off", "PARLEY_SECRET_KEY": KEY.decode()})
    parley = build(settings, SqliteStorage(tmp_path / "parley.db"))
    await parley.start()
    asgi = create_app(parley)
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://parley.test") as client:
        try:
            yield App(parley, asgi, client)
        finally:
            await parley.stop()


def hash_only_ticket(user_id: str, token_hash: bytes, expiry: int) -> str:
    """A ticket as Parley used to sign them: keyed with the stored token hash alone."""
    message = f"ticket:{user_id}:{expiry}".encode()
    digest = hmac.new(token_hash, message, hashlib.sha256).digest()
    return f"{user_id}.{expiry}.{base64.urlsafe_b64encode(digest[:24]).decode()}"


async def test_a_ticket_minted_from_the_token_hash_alone_is_refused(app: App) -> None:
    alice, headers = await app.user("alice")
    issued = (await app.client.post(f"/v1/messages/{alice}/ticket", headers=headers)).json()
    assert await app.stream_status(alice, issued["ticket"]) == 200
    (stored,) = await app.parley.storage.user_tokens(alice)
    forged = hash_only_ticket(alice, stored.hash, int(time.time()) + 60)
    assert await app.stream_status(alice, forged) == 401


async def test_a_ticket_of_another_server_secret_is_refused(app: App) -> None:
    alice, _ = await app.user("alice")
    (stored,) = await app.parley.storage.user_tokens(alice)
    other = new_ticket(alice, stored.hash, b"o" * 48, 60)
    assert await app.stream_status(alice, other) == 401
    same = new_ticket(alice, stored.hash, KEY, 60)
    assert await app.stream_status(alice, same) == 200


async def test_a_ticket_ends_with_the_token_it_was_issued_for(app: App) -> None:
    alice, headers = await app.user("alice")
    r = await app.client.post(f"/v1/users/{alice}/tokens", json={}, headers=headers)
    laptop = {"Authorization": f"Bearer {r.json()['token']}"}
    mine = (await app.client.post(f"/v1/messages/{alice}/ticket", headers=headers)).json()
    theirs = (await app.client.post(f"/v1/messages/{alice}/ticket", headers=laptop)).json()
    r = await app.client.delete(f"/v1/users/{alice}/tokens/{r.json()['tokenId']}", headers=headers)
    assert r.status_code == 200
    assert await app.stream_status(alice, theirs["ticket"]) == 401
    assert await app.stream_status(alice, mine["ticket"]) == 200


# superscript two, Arabic-Indic and fullwidth digits: str.isdigit() says yes to all of them
OTHER_DIGITS = ["\u00b2", "1\u00b2", "\u0663" * 10, "\uff11\uff12\uff13"]


@pytest.mark.parametrize("expiry", [*OTHER_DIGITS, "99999999999999999999", ""])
async def test_an_expiry_of_other_digits_is_a_401(app: App, expiry: str) -> None:
    alice, _ = await app.user("alice")
    r = await app.client.get(
        f"/v1/messages/{alice}/stream", params={"ticket": f"{alice}.{expiry}.AAAA"}
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "bad_ticket"


def test_expiry_is_read_as_ascii_digits_only() -> None:
    assert ticket_user("u_a.1764423412.mac") == ("u_a", 1764423412, "mac")
    for bad in ("u_a.².mac", "u_a.+1.mac", "u_a.-1.mac", "u_a. 1.mac", "u_a.1_0.mac"):
        with pytest.raises(Unauthenticated):
            ticket_user(bad)


def test_the_mac_covers_the_token_hash_the_user_and_the_expiry() -> None:
    token_hash = hashlib.sha256(b"secret").digest()
    ticket = new_ticket("u_a", token_hash, KEY, 60, now=1000.0)
    user_id, expiry, mac = ticket_user(ticket)
    assert ticket_valid(KEY, user_id, expiry, mac, token_hash, now=1000.0)
    # a new token (revocation) invalidates the tickets of the old one
    assert not ticket_valid(KEY, user_id, expiry, mac, hashlib.sha256(b"new").digest(), 1000.0)
    assert not ticket_valid(KEY, "u_b", expiry, mac, token_hash, now=1000.0)
    assert not ticket_valid(KEY, user_id, expiry + 1, mac, token_hash, now=1000.0)
    assert not ticket_valid(KEY, user_id, expiry, mac, token_hash, now=1061.0)  # expired
    assert not ticket_valid(KEY, user_id, expiry, mac, None, now=1000.0)  # no token at all
    assert not ticket_valid(b"x" * 48, user_id, expiry, mac, token_hash, now=1000.0)
