"""Awkward input gets one answer, whatever the backend.

The rules live in ``parley.domain.validation`` and the services apply them before any
storage call. ``CASES`` is the table: each request (NUL characters, lone surrogates, ids of
every odd shape and size, names and messages at their limits and one past) with the status
and error code it must get. Every backend (the ``backend`` fixture: memory, sqlite, postgres,
postgres+redis, dynamodb) runs the whole table and must match every row, so all backends
answer alike. A memory store that inspects every argument it receives shows that storage
never sees what the domain rejects.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest

from parley.app import build
from parley.domain.validation import valid_text, well_formed_id
from parley.errors import InvalidInput, NotFound, Unauthenticated
from parley.http.server import create_app
from parley.settings import Settings
from parley.storage.base import Storage
from parley.storage.memory import MemoryStorage

OK = (200, "")
EMOJI = "\U0001f600"  # one code point, outside the BMP (two UTF-16 units, four UTF-8 bytes)
BODY_MAX = "262144"  # room for a 100,000-character id inside a JSON body
# The JSON decoder refuses a lone surrogate before any service runs, with the same code the
# domain gives text it cannot hold.
SURROGATE = (400, "invalid_text")

Want = tuple[int, str | frozenset[str]]


@dataclass(frozen=True)
class Case:
    """One request and its answer. ``{me}``, ``{other}`` and ``{group}`` in the path and in
    string fields of the body are replaced by a real user of the harness (the caller), a
    second user and a group the caller created."""

    name: str
    method: str
    path: str
    want: Want
    body: dict[str, str] | bytes | None = None
    headers: dict[str, str | bytes] = field(default_factory=dict)
    mode: str = "token"


# Ids that no server could have made: each must be answered as an unknown id of its kind.
ODD_IDS: dict[str, str] = {
    "1,000 characters": "u_" + "x" * 998,
    "100,000 characters": "u_" + "x" * 99_998,
    "129 characters": "x" * 129,
    "../": "../../etc/passwd",
    "%00": "%00",
    "NUL": "u_\x00",
    "unicode": "u_\u00e9\u2603",
    "emoji": "u_" + EMOJI,
    "leading space": " {other}",
    "trailing newline": "{other}\n",
    "tab": "\t",
    "dot": "u_a.b",
}
# In a path, an id holding "/" (even percent-encoded) splits into other segments: no route;
# a target over 8 KiB is refused before routing (414, tests/e2e/test_request_errors.py).
PATH_IDS = {
    "5,000 characters": "u_" + "x" * 4_998,
    **{name: value for name, value in ODD_IDS.items() if "/" not in value and len(value) < 10_000},
}


def _body_id_cases() -> list[Case]:
    cases = []
    for label, odd in ODD_IDS.items():
        cases += [
            Case(
                f"block: blockedUserId {label}",
                "POST",
                "/v1/users/{me}?op=block",
                (404, "blocked_user_not_found"),
                {"blockedUserId": odd},
            ),
            Case(
                f"unblock: blockedUserId {label}",
                "POST",
                "/v1/users/{me}?op=unblock",
                (404, "blocked_user_not_found"),
                {"blockedUserId": odd},
            ),
            Case(
                f"add member: userId {label}",
                "POST",
                "/v1/groups/{group}?op=add",
                (404, "user_not_found"),
                {"userId": odd},
            ),
            Case(
                f"remove member: userId {label}",
                "POST",
                "/v1/groups/{group}?op=remove",
                (404, "user_not_found"),
                {"userId": odd},
            ),
            Case(
                f"send private: receiverId {label}",
                "POST",
                "/v1/messages/send?type=private",
                (404, "receiver_not_found"),
                {"senderId": "{me}", "receiverId": odd, "message": "hi"},
            ),
            Case(
                f"send group: groupId {label}",
                "POST",
                "/v1/messages/send?type=group",
                (404, "group_not_found"),
                {"senderId": "{me}", "groupId": odd, "message": "hi"},
            ),
            Case(
                f"open send: senderId {label}, with a key",
                "POST",
                "/v1/messages/send?type=private",
                (404, "sender_not_found"),
                {"senderId": odd, "receiverId": "{other}", "message": "hi", "clientMessageId": "k"},
                mode="open",
            ),
        ]
    return cases


def _path_id_cases() -> list[Case]:
    cases = []
    for label, odd in PATH_IDS.items():
        p = quote(odd, safe="{}")
        cases += [
            Case(f"GET user {label}", "GET", f"/v1/users/{p}", (404, "user_not_found")),
            Case(f"GET group {label}", "GET", f"/v1/groups/{p}", (404, "group_not_found")),
            Case(
                f"add to group {label}",
                "POST",
                f"/v1/groups/{p}?op=add",
                (404, "group_not_found"),
                {"userId": "{other}"},
            ),
            # token mode: another user's messages are refused before anything is looked up
            Case(f"GET messages {label}", "GET", f"/v1/messages/{p}", (403, "not_yourself")),
            Case(
                f"open GET messages {label}",
                "GET",
                f"/v1/messages/{p}",
                (404, "user_not_found"),
                mode="open",
            ),
            Case(
                f"open GET groups of {label}",
                "GET",
                f"/v1/users/{p}/groups",
                (404, "user_not_found"),
                mode="open",
            ),
            Case(
                f"open block as {label}",
                "POST",
                f"/v1/users/{p}?op=block",
                (404, "user_not_found"),
                {"blockedUserId": "{other}"},
                mode="open",
            ),
        ]
    cases += [
        Case("GET user ../ in the path", "GET", "/v1/users/..%2F..%2Fetc", (404, "not_found")),
        Case(
            "bearer token of a 200-character user id",
            "GET",
            "/v1/users/{me}",
            (401, "bad_token"),
            headers={"Authorization": "Bearer " + "u" * 200 + ".secret"},
        ),
        Case(
            "bearer token of a unicode user id",
            "GET",
            "/v1/users/{me}",
            (401, "bad_token"),
            headers={"Authorization": b"Bearer u_\xc3\xa9.secret"},
        ),
    ]
    return cases


def _send(message: str, **extra: str) -> dict[str, str]:
    return {"senderId": "{me}", "receiverId": "{other}", "message": message, **extra}


SEND = "/v1/messages/send?type=private"

TEXT_CASES = [
    # usernames: text rules, then 1-64 characters after trimming
    Case("username with NUL", "POST", "/v1/users/create", (400, "invalid_text"),
         {"username": "a\x00b"}),
    Case("username only NUL", "POST", "/v1/users/create", (400, "invalid_text"),
         {"username": "\x00"}),
    Case("username 64 emoji, padded", "POST", "/v1/users/create", OK,
         {"username": "  " + EMOJI * 64 + "\t "}),
    Case("username 65 emoji", "POST", "/v1/users/create", (400, "too_long"),
         {"username": EMOJI * 65}),
    Case("username 64 letters, padded", "POST", "/v1/users/create", OK,
         {"username": " " + "a" * 64 + " "}),
    Case("username 65 letters", "POST", "/v1/users/create", (400, "too_long"),
         {"username": "a" * 65}),
    Case("username of spaces", "POST", "/v1/users/create", (400, "empty_field"),
         {"username": "   "}),
    Case("username surrogate pair", "POST", "/v1/users/create", OK,
         b'{"username": "\\ud83d\\ude00"}'),
    Case("username lone surrogate", "POST", "/v1/users/create", SURROGATE,
         b'{"username": "\\ud800"}'),
    Case("username lone low surrogate", "POST", "/v1/users/create", SURROGATE,
         b'{"username": "a\\udc00b"}'),
    # group names: 1-128 after trimming
    Case("group name with NUL", "POST", "/v1/groups/create", (400, "invalid_text"),
         {"groupName": "g\x00"}),
    Case("group name 128 emoji, padded", "POST", "/v1/groups/create", OK,
         {"groupName": " " + EMOJI * 128 + " "}),
    Case("group name 129 emoji", "POST", "/v1/groups/create", (400, "too_long"),
         {"groupName": EMOJI * 129}),
    Case("group name 129 letters", "POST", "/v1/groups/create", (400, "too_long"),
         {"groupName": "g" * 129}),
    Case("group name lone surrogate", "POST", "/v1/groups/create", SURROGATE,
         b'{"groupName": "\\ud800"}'),
    # messages: 1-4096 code points, not trimmed
    Case("message with NUL", "POST", SEND, (400, "invalid_text"), _send("hi\x00")),
    Case("group message with NUL", "POST", "/v1/messages/send?type=group",
         (400, "invalid_text"), {"senderId": "{me}", "groupId": "{group}", "message": "\x00"}),
    Case("message 4096 emoji", "POST", SEND, OK, _send(EMOJI * 4096)),
    Case("message 4097 emoji", "POST", SEND, (400, "too_long"), _send(EMOJI * 4097)),
    Case("message 4096 letters", "POST", SEND, OK, _send("m" * 4096)),
    Case("message 4097 letters", "POST", SEND, (400, "too_long"), _send("m" * 4097)),
    Case("message 2048 letter+emoji pairs", "POST", SEND, OK, _send(("a" + EMOJI) * 2048)),
    Case("message lone surrogate", "POST", SEND, SURROGATE,
         b'{"senderId": "{me}", "receiverId": "{other}", "message": "hi \\ud800"}'),
    # idempotency keys: 1-255 printable ASCII characters
    Case("key with NUL", "POST", SEND, (400, "invalid_text"),
         _send("hi", clientMessageId="k\x00")),
    Case("key header with NUL", "POST", SEND, (400, "invalid_text"), _send("hi"),
         {"Idempotency-Key": "k\x00"}),
    Case("key header of UTF-8 bytes", "POST", SEND, (400, "invalid_text"), _send("hi"),
         {"Idempotency-Key": b"k\xc3\xa9"}),
    Case("key of 255 emoji", "POST", SEND, (400, "invalid_text"),
         _send("hi", clientMessageId=EMOJI * 255)),
    Case("key of 255 letters", "POST", SEND, OK, _send("hi", clientMessageId="k" * 255)),
    Case("key of 256 letters", "POST", SEND, (400, "too_long"),
         _send("hi", clientMessageId="k" * 256)),
    Case("empty key", "POST", SEND, (400, "empty_field"), _send("hi", clientMessageId="")),
    Case("key lone surrogate", "POST", SEND, SURROGATE,
         b'{"senderId": "{me}", "receiverId": "{other}", "message": "hi",'
         b' "clientMessageId": "\\ud800"}'),
    # ids in bodies
    Case("blockedUserId empty", "POST", "/v1/users/{me}?op=block", (400, "empty_field"),
         {"blockedUserId": ""}),
    Case("blockedUserId lone surrogate", "POST", "/v1/users/{me}?op=block", SURROGATE,
         b'{"blockedUserId": "u_\\ud800"}'),
    Case("userId lone surrogate", "POST", "/v1/groups/{group}?op=add", SURROGATE,
         b'{"userId": "\\udfff"}'),
    Case("receiverId lone surrogate", "POST", SEND, SURROGATE,
         b'{"senderId": "{me}", "receiverId": "\\ud800", "message": "hi"}'),
]  # fmt: skip

CASES: list[Case] = [*TEXT_CASES, *_body_id_cases(), *_path_id_cases()]


# --- running the table -------------------------------------------------------------------
@dataclass
class Party:
    """A client and the names the table's placeholders stand for."""

    client: httpx.AsyncClient
    me: str
    other: str
    group: str
    auth: dict[str, str]

    def fill(self, text: str) -> str:
        return (
            text.replace("{me}", self.me)
            .replace("{other}", self.other)
            .replace("{group}", self.group)
        )

    async def ask(self, case: Case) -> tuple[int, str]:
        headers: dict[str, str | bytes] = {**self.auth, **case.headers}
        body = case.body
        content: bytes | None = None
        if isinstance(body, bytes):
            content = self.fill(body.decode()).encode()
            headers["content-type"] = "application/json"
        elif body is not None:
            content = msgspec.json.encode({k: self.fill(v) for k, v in body.items()})
            headers["content-type"] = "application/json"
        r = await self.client.request(
            case.method, self.fill(case.path), content=content, headers=headers
        )
        code = "" if r.status_code == 200 else r.json()["error"]["code"]
        return r.status_code, code


async def party(client: httpx.AsyncClient) -> Party:
    async def user(name: str) -> tuple[str, dict[str, str]]:
        r = await client.post("/v1/users/create", json={"username": name})
        assert r.status_code == 200, r.text
        token = r.json().get("token")
        return r.json()["userId"], {"Authorization": f"Bearer {token}"} if token else {}

    me, auth = await user("me")
    other, _ = await user("other")
    r = await client.post("/v1/groups/create", json={"groupName": "g"}, headers=auth)
    assert r.status_code == 200, r.text
    return Party(client, me, other, r.json()["groupId"], auth)


def matches(got: tuple[int, str], want: Want) -> bool:
    status, code = want
    return got[0] == status and (got[1] in code if isinstance(code, frozenset) else got[1] == code)


async def run_table(parties: dict[str, Party]) -> list[str]:
    wrong = []
    for case in CASES:
        got = await parties[case.mode].ask(case)
        if not matches(got, case.want):
            wrong.append(f"{case.name}: got {got}, want {case.want}")
    return wrong


async def test_every_backend_answers_the_table(make_harness: Any) -> None:
    token = await make_harness("token", PARLEY_MAX_BODY=BODY_MAX)
    opened = await make_harness("none", PARLEY_MAX_BODY=BODY_MAX)
    parties = {"token": await party(token.client), "open": await party(opened.client)}
    wrong = await run_table(parties)
    assert not wrong, f"{len(wrong)} of {len(CASES)} answers differ:\n" + "\n".join(wrong)


async def test_accepted_text_reads_back_unchanged(make_harness: Any) -> None:
    """What the domain accepts, every backend stores exactly (names trimmed, nothing else)."""
    harness = await make_harness("token", PARLEY_MAX_BODY=BODY_MAX)
    p = await party(harness.client)
    name = f"\u00e9{EMOJI}\u200d{EMOJI} \U0010fffd\u0301"
    r = await p.client.post("/v1/users/create", json={"username": f"  {name}\n"})
    created = r.json()
    assert r.status_code == 200 and created["username"] == name
    r = await p.client.get(f"/v1/users/{created['userId']}", headers=p.auth)
    assert r.json()["username"] == name
    text = (EMOJI + "\u00e9\ufeff\x01") * 1024
    r = await p.client.post(
        SEND, json={"senderId": p.me, "receiverId": p.me, "message": text}, headers=p.auth
    )
    assert r.status_code == 200 and r.json()["message"] == text
    for _ in range(300):  # a message is visible within a few milliseconds of its send
        r = await p.client.get(f"/v1/messages/{p.me}", headers=p.auth)
        if r.json()["messages"]:
            break
        await asyncio.sleep(0.01)
    assert [m["message"] for m in r.json()["messages"]] == [text]


# --- the rules are the domain's: services refuse before storage ---------------------------
async def test_services_refuse_what_storage_must_not_see(make_harness: Any) -> None:
    """Called directly (no JSON decoder in front), the services apply the same rules."""
    harness = await make_harness("none")
    parley = harness.parley
    me = (await parley.users.create("me")).user.id
    for bad in ("\ud800", "a\udfffb", "nul\x00"):
        with pytest.raises(InvalidInput) as refused:
            await parley.users.create(bad)
        assert refused.value.code == "invalid_text"
        with pytest.raises(InvalidInput) as refused:
            await parley.groups.create(None, bad)
        assert refused.value.code == "invalid_text"
        with pytest.raises(InvalidInput) as refused:
            await parley.messages.send(None, "private", me, me, bad)
        assert refused.value.code == "invalid_text"
        with pytest.raises(InvalidInput) as refused:
            await parley.messages.send(None, "private", me, me, "hi", bad)
        assert refused.value.code == "invalid_text"
        with pytest.raises(NotFound):
            await parley.users.get(None, "u_" + bad)
        with pytest.raises(NotFound):
            await parley.groups.view(None, "g_" + bad)
        with pytest.raises(Unauthenticated):
            await parley.accounts.authenticate(f"u_{bad}.secret")


IDS = ("id", "recipients", "sent_by", "first_member")


class Inspecting(MemoryStorage):
    """The reference adapter, recording every argument the domain should have refused."""

    refused: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.refused = []

    def inspect(self, operation: str, name: str, value: object) -> None:
        if isinstance(value, str):
            is_id = name.endswith("_id") or name in IDS
            if (
                not valid_text(value)
                or (is_id and not well_formed_id(value))
                or (name == "send_key" and not (value.isascii() and len(value) <= 255))
            ):
                self.refused.append(f"{operation}({name}={value[:40]!r})")
        elif isinstance(value, list | tuple):
            for item in value:
                self.inspect(operation, name, item)
        elif isinstance(value, msgspec.Struct):
            for field_name in value.__struct_fields__:
                self.inspect(operation, field_name, getattr(value, field_name))


def _inspected(name: str) -> Callable[..., Awaitable[Any]]:
    original = getattr(MemoryStorage, name)
    signature = inspect.signature(original)

    async def method(self: Inspecting, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        for arg, value in list(bound.arguments.items())[1:]:
            self.inspect(name, arg, value)
        return await original(self, *args, **kwargs)

    return method


for _name, _value in vars(Storage).items():
    if callable(_value) and not _name.startswith("__") and _name not in ("open", "close"):
        setattr(Inspecting, _name, _inspected(_name))


async def test_storage_never_sees_refused_input() -> None:
    stores = [Inspecting(), Inspecting()]
    parleys = []
    parties = {}
    for store, (mode, auth) in zip(stores, (("token", "token"), ("open", "none")), strict=True):
        settings = Settings.from_env(
            {"PARLEY_AUTH": auth, "PARLEY_RATE_LIMITS": "off", "PARLEY_MAX_BODY": BODY_MAX}
        )
        parley = build(settings, store)
        await parley.start()
        parleys.append(parley)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(parley)), base_url="http://parley.test"
        )
        parties[mode] = await party(client)
    try:
        wrong = await run_table(parties)
    finally:
        for p in parties.values():
            await p.client.aclose()
        for parley in parleys:
            await parley.stop()
    assert stores[0].calls["append_message"] > 0, "accepted sends reached storage"
    refused = stores[0].refused + stores[1].refused
    assert not refused, f"storage saw {len(refused)} refused inputs:\n" + "\n".join(refused)
    assert not wrong, "\n".join(wrong)
