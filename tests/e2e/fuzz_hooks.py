"""Schemathesis hooks for the positive fuzzing run (``test_fuzz_positive.py``).

Loaded by the schemathesis command line (``SCHEMATHESIS_HOOKS=tests.e2e.fuzz_hooks``) in the
run's own process. ``PARLEY_FUZZ_WORLD`` names a JSON file with real data made before the
run (the caller, another user, the caller's group and a message); ``PARLEY_FUZZ_LOG`` a file
that gets one line per answer (operation, phase, generation mode, status).

Generated ids are random and would only ever reach "not found", so before each call the
ids are replaced by real ones; every replacement is itself valid against the document (an
id for an id, one enum value for another), so a positive case stays positive:

* path ``userId`` is the caller and ``groupId`` the caller's group;
* ``senderId`` is the caller; ``receiverId``, ``blockedUserId`` and a member's ``userId``
  the other user; ``groupId`` the group; ``recipientId`` whichever ``type`` needs;
* a send's ``type`` follows the recipient field it carries (JSON Schema cannot tie a query
  value to body fields; the document says it in words);
* a group op follows the body it carries: ``rename`` for a ``groupName`` alone, a member
  op (``add`` if it was ``rename``) for a ``userId`` (the document says it in words, too);
* path ``messageId`` is the caller's message, ``conversationId`` the group; an edit
  carries a text (the document says so in words), one without a body becomes a delete;
* path ``mediaId`` and a send's ``attachments`` are a file the caller uploaded;
* a long-poll's ``wait`` is 0 (long-polls are tested elsewhere; here they would only wait).
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis

_world: dict[str, str] | None = None


def world() -> dict[str, str]:
    global _world
    if _world is None:
        with open(os.environ["PARLEY_FUZZ_WORLD"]) as file:
            _world = json.load(file)
    return _world


def steer(case: Any) -> None:
    w = world()
    path = case.path_parameters or {}
    for name, real in (
        ("userId", w["me"]),
        ("groupId", w["group"]),
        ("messageId", w["message"]),
        ("mediaId", w["media"]),
    ):
        if name in path:
            path[name] = real
    query = case.query if isinstance(case.query, dict) else {}
    if "wait" in query:
        query["wait"] = 0
    body = case.body
    if case.operation.path == "/v1/media" and not body:
        case.body = b"a file"  # the document asks for at least one byte (minLength)
    if case.operation.path == "/v1/messages/{messageId}" and query.get("op") == "edit":
        if not isinstance(body, dict):  # an edit without a body: a delete (no body needed)
            query["op"] = "delete"
        elif not isinstance(body.get("message"), str):
            body["message"] = "edited"  # the document says it in words: op=edit needs it
    if not isinstance(body, dict):
        return
    for name, real in (
        ("senderId", w["me"]),
        ("receiverId", w["other"]),
        ("blockedUserId", w["other"]),
        ("userId", w["other"]),
        ("groupId", w["group"]),
        ("conversationId", w["group"]),
    ):
        if isinstance(body.get(name), str):
            body[name] = real
    if isinstance(body.get("attachments"), list) and body["attachments"]:
        body["attachments"] = [w["media"]]  # a file the caller uploaded
    if case.operation.path == "/v1/groups/{groupId}" and "op" in query:
        named, renamed = isinstance(body.get("userId"), str), isinstance(body.get("groupName"), str)
        if renamed and not named:
            query["op"] = "rename"
        elif named and query["op"] == "rename":
            query["op"] = "add"
    if case.operation.path == "/v1/messages/send":
        private, group = (
            isinstance(body.get("receiverId"), str),
            isinstance(body.get("groupId"), str),
        )
        if private != group:  # exactly one of them given: the type that uses it
            query["type"] = "private" if private else "group"
        if isinstance(body.get("recipientId"), str):
            private = query.get("type") == "private"
            body["recipientId"] = w["other"] if private else w["group"]


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    steer(case)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    meta = case.meta
    record = {
        "operation": case.operation.label,
        "phase": meta.phase.name.value if meta is not None else "-",
        "mode": meta.generation.mode.value if meta is not None else "-",
        "status": response.status_code,
    }
    with open(os.environ["PARLEY_FUZZ_LOG"], "a") as file:
        file.write(json.dumps(record) + "\n")
