"""What issue 12 promises about passwords and the web page, checked where it is written down
and where it runs: the argon2id parameters in the code, the stored hashes, the OpenAPI
document and docs/security.md; a right password costs the same work as a wrong one; the
per-user sign-in throttle holds against guesses from many addresses; the page's QR code
library comes from the server itself, under a policy that lets no other origin in."""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path

import httpx

from parley.http.openapi import document
from parley.http.server import create_app
from parley.services.passwords import PARAMETERS
from tests.backends import Harness, MakeHarness

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
STATIC = ROOT / "src" / "parley" / "web" / "static"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def set_password(api: Harness, user: str, headers: dict[str, str]) -> None:
    r = await api.client.post(f"/v1/users/{user}/password", json={"password": PASSWORD},
                              headers=headers)  # fmt: skip
    assert r.status_code == 200, r.text


async def test_argon2id_parameters_are_the_documented_ones(api: Harness) -> None:
    alice, ha = await api.user("alice")
    await set_password(api, alice, ha)
    stored = await api.parley.storage.get_password(alice)
    m, t, p = PARAMETERS["memoryCostKiB"], PARAMETERS["timeCost"], PARAMETERS["parallelism"]
    assert stored is not None and stored.startswith(f"$argon2id$v=19$m={m},t={t},p={p}$")

    # in the OpenAPI description of the password route
    doc = document()
    route = doc["paths"]["/v1/users/{userId}/password"]["post"]
    described = route.get("description", "") + route.get("summary", "")
    for name, value in PARAMETERS.items():
        assert f"{name} {value}" in described, (name, described)

    # and in docs/security.md, in words
    security = " ".join((ROOT / "docs" / "security.md").read_text().split())
    assert "argon2id" in security
    assert f"time cost {t}" in security
    assert f"{m:,} KiB" in security
    assert f"parallelism {p}" in security
    assert f"{PARAMETERS['saltBytes']}-byte salt" in security
    assert f"{PARAMETERS['hashBytes']}-byte" in security


async def test_a_right_password_costs_the_same_work_as_a_wrong_one(api: Harness) -> None:
    """Right, wrong, no password set, unknown user: one argon2id verification each, and the
    stand-in hash for the last two has the same parameters as a real one."""
    alice, ha = await api.user("alice")
    bob, _ = await api.user("bob")
    await set_password(api, alice, ha)
    passwords = api.parley.accounts.passwords
    for user, guess, status in (
        (alice, PASSWORD, 200),
        (alice, "wrong password", 401),
        (bob, PASSWORD, 401),
        ("u_nobody", PASSWORD, 401),
    ):
        before = passwords.verifications
        r = await api.client.post("/v1/sessions", json={"userId": user, "password": guess})
        assert r.status_code == status, r.text
        assert passwords.verifications == before + 1, (user, guess)
    stored = await api.parley.storage.get_password(alice)
    dummy = await passwords._dummy_hash()
    assert stored is not None and dummy.rsplit("$", 2)[0] == stored.rsplit("$", 2)[0]


async def test_the_per_user_throttle_holds_against_many_addresses(
    make_harness: MakeHarness,
) -> None:
    """Guesses at one account from 30 addresses (each well under its own budget): the
    account's budget stops them (429 with Retry-After, no password verified), even the
    right password once it is spent; another account is not affected. On postgres the
    count is kept in Redis."""
    api = await make_harness("token", PARLEY_SIGNIN_PER_USER="3")
    alice, ha = await api.user("alice")
    bob, hb = await api.user("bob")
    await set_password(api, alice, ha)
    await set_password(api, bob, hb)
    app = create_app(api.parley)
    passwords = api.parley.accounts.passwords
    before = passwords.verifications
    statuses: list[int] = []
    for n in range(30):
        transport = httpx.ASGITransport(app=app, client=(f"10.1.2.{n}", 40_000 + n))
        async with httpx.AsyncClient(transport=transport, base_url="http://parley.test") as c:
            guess = PASSWORD if n == 29 else f"guess-{n:04d}"
            r = await c.post("/v1/sessions", json={"userId": alice, "password": guess})
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"]
    checked = passwords.verifications - before
    assert statuses.count(401) == checked <= 2 * 3, statuses  # a window edge: twice at most
    assert statuses.count(429) == 30 - checked and 200 not in statuses
    r = await api.client.post("/v1/sessions", json={"userId": bob, "password": PASSWORD})
    assert r.status_code == 200, r.text


async def test_the_qr_code_is_drawn_by_the_page_itself(api: Harness) -> None:
    """The page and its scripts name no other origin, the QR code library is served by
    Parley, and the page's Content-Security-Policy lets scripts and connections come from
    the server only (so a CDN script could not even load; the browser test sees the code
    drawn under this policy)."""
    r = await api.client.get("/")
    assert r.status_code == 200
    policy = dict(
        part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";")
    )
    assert policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
    assert policy["default-src"] == "'self'"
    sources = re.findall(r"""<(?:script|link)[^>]+(?:src|href)="([^"]+)\"""", r.text)
    assert "/vendor/qrcode-generator/qrcode.js" in sources
    for source in sources:
        if source.startswith("data:"):  # inline (the empty favicon), no origin at all
            continue
        assert source.startswith("/") and not source.startswith("//"), source
        got = await api.client.get(source)
        assert got.status_code == 200, source
    library = await api.client.get("/vendor/qrcode-generator/qrcode.js")
    assert library.headers["content-type"].startswith("text/javascript")
    assert "qrcode" in library.text
    for path in STATIC.rglob("*"):
        if path.suffix in (".js", ".html", ".css") and "vendor" not in path.parts:
            text = path.read_text()
            assert not re.search(r"""(?:from|import|src=|href=|url\()[ \t]*["']?(?:https?:)?//""",
                                 text), path  # fmt: skip
    devices = (STATIC / "js" / "views" / "devices.js").read_text()
    assert "globalThis.qrcode" in devices and "canvas" in devices


async def test_idle_checks_from_several_devices_make_no_storage_calls(api: Harness) -> None:
    """Three signed-in devices of one user, each checking with its own token: once each has
    been seen, their idle checks touch no storage (with Redis: those that ran inside one
    trust lease of the shared cache, as in test_idle_checks.py)."""
    alice, ha = await api.user("alice")
    devices = [ha]
    for name in ("laptop", "tablet"):
        r = await api.client.post(f"/v1/users/{alice}/tokens", json={"deviceName": name},
                                  headers=ha)  # fmt: skip
        devices.append(bearer(r.json()["token"]))
    r = await api.client.get(f"/v1/messages/{alice}", headers=ha)
    cursor = r.json()["nextTimestamp"]
    for headers in devices:  # each token seen once
        r = await api.client.get(f"/v1/messages/{alice}?timestamp={cursor}", headers=headers)
        assert r.status_code == 200
    calls = api.parley.storage.calls
    link = api.parley.redis
    covered = 0
    trusted_until = math.inf if link is None else 0.0  # the lease as the last check ended
    for n in range(150):
        if link is not None:
            for _ in range(200):
                if link.usable:
                    break
                await asyncio.sleep(0.01)
        # A check counts when the lease held from the previous check to the end of this
        # one: after a lapse the process may read storage again, which is right.
        unbroken = time.monotonic() < trusted_until
        lease_end = link.trusted_until if link is not None else math.inf
        ahead = dict(calls)
        r = await api.client.get(f"/v1/messages/{alice}?timestamp={cursor}",
                                 headers=devices[n % 3])  # fmt: skip
        assert r.json() == {"messages": [], "nextTimestamp": cursor, "hasMore": False}
        if unbroken and time.monotonic() < lease_end:
            covered += 1
            made = {k: v - ahead.get(k, 0) for k, v in calls.items() if v != ahead.get(k, 0)}
            assert not made, made
        trusted_until = link.trusted_until if link is not None else math.inf
    assert covered >= 75
