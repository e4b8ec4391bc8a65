"""The OpenAPI 3.1 document, generated from the route table, the msgspec schemas and the limits.

Every rule the server applies to input is stated here, from the same values the server uses
(``Limits`` from the settings), so clients generated from the document and the server agree:
text lengths, what counts as blank, number ranges, enums, which of the aliased fields must
be given, header limits, the shape of ids in paths, and every status an operation can
answer, with its body and headers.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec

from parley.domain.rules import Limits
from parley.http.api import ROUTES, RouteSpec
from parley.http.schemas import ErrorOut, HealthOut, MessagesOut, RenameIn
from parley.services.accounts import DEVICE_NAME_MAX
from parley.services.media import MAX_ATTACHMENTS
from parley.services.passwords import PASSWORD_MAX, PASSWORD_MIN

REASONS = {
    400: "Bad input (see the error code)",
    401: "Missing or unknown token",
    403: "Forbidden",
    404: "Unknown user, group or route",
    408: "The request body did not arrive in time",
    409: "Conflict with the current state",
    413: "Body too large",
    416: "The Range lies outside the file (Content-Range: bytes */size)",
    414: "URI (path and query string) too long. The body is empty when the HTTP server "
    "itself refuses the request (a target over 64 KiB)",
    429: "Rate limited (see Retry-After)",
    431: "Too many or too large header fields. The body is empty when the HTTP server "
    "itself refuses the request (more than 100 header fields)",
    503: "Storage or a dependency is unavailable (see Retry-After)",
}
# Refused before any route runs (by Parley, or past its own limits by the HTTP server), so
# every operation can answer them.
TRANSPORT_STATUSES = (414, 431)
# Operations that need tokens: in open mode they always answer 400 (or 404 for an unknown user).
TOKEN_MODE_ONLY = {
    "stream_ticket": "Open mode has no tokens, so no tickets: `no_tokens`",
    "create_token": "Open mode has no tokens: `no_tokens`",
    "list_tokens": "Open mode has no tokens: `no_tokens`",
    "revoke_token": "Open mode has no tokens: `no_tokens`",
    "sign_in": "Open mode has no sign-in: `no_tokens`",
}
# Bodies that may be left out altogether (every field optional, none needed together).
OPTIONAL_BODY = {"create_token", "delete_user"}
IDEMPOTENCY_KEY_MAX = 255  # a send's key, header or clientMessageId (domain/validation.py)
SEND_KEY_PATTERN = "^[ -~]*$"  # printable ASCII, as an HTTP header can carry it


def whitespace_class() -> str:
    """The characters ``str.strip()`` removes, as the body of a regex character class.

    Written as ``\\uXXXX`` escapes, which ECMA-262 and Python read alike (JSON Schema's
    ``\\s`` differs between the two: Python strips U+001C-U+001F and U+0085, ECMA-262's
    ``\\s`` has U+FEFF instead).
    """
    codes = [c for c in range(0x10000) if chr(c).isspace()]
    parts: list[str] = []
    start = prev = codes[0]
    for code in [*codes[1:], -1]:
        if code == prev + 1:
            prev = code
            continue
        parts.append(f"\\u{start:04x}" if start == prev else f"\\u{start:04x}-\\u{prev:04x}")
        start = prev = code
    return "".join(parts)


WHITESPACE = whitespace_class()
# Text: no NUL anywhere (parley.domain.validation) and at least one character that is not
# whitespace. (Lone surrogates cannot be written in a JSON Schema pattern: described in words.)
NOT_BLANK = f"^[^\\u0000]*[^{WHITESPACE}\\u0000][^\\u0000]*$"


def name_schema(maximum: int, what: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": maximum,
        "pattern": NOT_BLANK,
        "description": f"The {what}, 1-{maximum} characters, not blank, no NUL characters "
        "or lone surrogates. The server trims "
        "leading and trailing whitespace and applies the limit to what is left (so a padded "
        "name may be longer than maxLength); send names trimmed.",
    }


def message_schema(maximum: int) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": maximum,
        "pattern": NOT_BLANK,
        "description": f"The text, 1-{maximum} characters, not blank, no NUL characters or "
        "lone surrogates; stored as sent "
        "(not trimmed).",
    }


ID = {
    "type": "string",
    "minLength": 1,
    "description": "An id returned by the server (users `u_…`, groups `g_…`).",
}
# A path segment: never empty, no '/', and not a dot segment (clients remove those).
PATH_ID = {
    "type": "string",
    "minLength": 1,
    "pattern": "^[^/]+$",
    "not": {"enum": [".", ".."]},
}
TIMESTAMP_PATTERN = "^[0-9]{1,18}$"


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: leaving it out and null both mean "not given"."""
    return {**schema, "type": [schema["type"], "null"]}


def _given(name: str, minimum: int = 0) -> dict[str, Any]:
    """JSON Schema: the field is present, not null (and has at least ``minimum`` chars)."""
    rule: dict[str, Any] = {"type": "string", **({"minLength": minimum} if minimum else {})}
    return {"required": [name], "properties": {name: rule}}


def _exclusive(schema: dict[str, Any], alias: str, *names: str) -> None:
    """Add to an object schema: ``alias`` is never given together with one of ``names``."""
    others = [_given(name) for name in names]
    rule = others[0] if len(others) == 1 else {"anyOf": others}
    schema.setdefault("dependentSchemas", {})[alias] = {"not": {"allOf": [_given(alias), rule]}}


def _at_least_one(schema: dict[str, Any], *names: str) -> None:
    """Add to an object schema: at least one of ``names`` is given.

    Said with ``if``/``then`` (and ``dependentSchemas`` above) rather than ``anyOf``/``not``
    at the top of the schema, which client generators read as a union of several types and
    so lose the body's model. "Given" means present, not null and not empty."""
    first, *rest = names
    schema["if"] = {"not": _given(first, 1)}
    then = [_given(name, 1) for name in rest]
    schema["then"] = then[0] if len(then) == 1 else {"anyOf": then}


def _constrain(components: dict[str, Any], limits: Limits) -> None:
    """Add the server's input rules to the request bodies msgspec described."""

    def props(name: str) -> dict[str, Any]:
        properties: dict[str, Any] = components[name]["properties"]
        return properties

    user = components["CreateUserIn"]
    username = name_schema(limits.username_max, "username")
    props("CreateUserIn").update(
        username=_optional(username),
        userName=_optional({**username, "description": "Alias of `username`."}),
    )
    _at_least_one(user, "username", "userName")
    _exclusive(user, "userName", "username")
    user["description"] = (
        "Give `username` or its alias `userName` (from the original API), not both: two "
        "different values are refused with 400 `conflicting_fields`."
    )

    # devices and passwords (SPEC §7)
    device = _optional(name_schema(DEVICE_NAME_MAX, "device name"))
    password = {
        "type": "string",
        "minLength": PASSWORD_MIN,
        "maxLength": PASSWORD_MAX,
        "description": f"{PASSWORD_MIN}-{PASSWORD_MAX} characters; stored only as an "
        "argon2id hash, never logged or returned.",
    }
    props("TokenIn")["deviceName"] = device
    props("SignInIn").update(userId=ID, password=password, deviceName=device)
    props("PasswordIn").update(
        password=password,
        currentPassword=_optional(
            {**password, "description": "Needed to change a password that is set."}
        ),
    )
    props("DeleteUserIn")["password"] = _optional(
        {"type": "string", "description": "Needed when the account has a password."}
    )

    props("EditIn").update(
        message=_optional(
            {**message_schema(limits.message_max), "description": "The new text (op=edit)."}
        ),
        senderId=_optional(
            {**ID, "description": "Optional: when given, it must be the message's sender."}
        ),
    )
    props("TypingIn")["conversationId"] = {
        **ID,
        "description": "The peer's user id (private) or the group's id.",
    }
    props("BlockIn")["blockedUserId"] = ID
    props("ReadIn").update(
        conversationId={**ID, "description": "The peer's user id, or a group id."},
        timestamp={
            "description": "Read up to this message timestamp (unix ms, as a decimal string "
            "as on the wire, or a number).",
            "anyOf": [
                {"type": "string", "pattern": TIMESTAMP_PATTERN},
                {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
            ],
        },
    )
    props("MemberIn")["userId"] = ID
    props("CreateGroupIn")["groupName"] = name_schema(limits.group_name_max, "group name")
    props("RenameIn")["groupName"] = name_schema(limits.group_name_max, "group name")

    send = components["SendIn"]
    props("SendIn").update(
        senderId={**ID, "description": "In token mode, the caller's own id."},
        message=message_schema(limits.message_max),
        # The recipient fields carry no minLength: the server reads only the one the
        # query's `type` uses, and a schema cannot look at the query.
        receiverId=_optional(
            {"type": "string", "description": "The receiver of a `type=private` send."}
        ),
        groupId=_optional({"type": "string", "description": "The group of a `type=group` send."}),
        recipientId=_optional(
            {
                "type": "string",
                "description": "Alias (from the original API) of `receiverId` for "
                "`type=private` and of `groupId` for `type=group`.",
            }
        ),
        clientMessageId=_optional(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": IDEMPOTENCY_KEY_MAX,
                "pattern": SEND_KEY_PATTERN,
                "description": f"Idempotency key: printable ASCII, at most "
                f"{IDEMPOTENCY_KEY_MAX} characters; used when no `Idempotency-Key` header is "
                "sent: a retried send with the same key stores one message.",
            }
        ),
    )
    props("SendIn")["attachments"] = _optional(
        {
            "type": "array",
            "items": {**ID, "description": "A media id from POST /v1/media."},
            "maxItems": MAX_ATTACHMENTS,
            "description": f"Files to attach (at most {MAX_ATTACHMENTS}, each uploaded by "
            "the sender; else 400 `bad_attachment`). Messages carry `attachments` only "
            "when there are some.",
        }
    )
    _at_least_one(send, "recipientId", "receiverId", "groupId")
    _exclusive(send, "recipientId", "receiverId", "groupId")
    send["description"] = (
        "The recipient is `receiverId` for `type=private` and `groupId` for `type=group`: "
        "the one the type needs must be given and not empty (else 400 `missing_field` or "
        "`empty_field`); `recipientId` may stand for either, and a field the type does not "
        "use is ignored. Give a field or its alias, not both: two different values are "
        "refused with 400 `conflicting_fields`."
    )


SSE_EVENT = {
    "type": "object",
    "description": "One event of the live stream (Server-Sent Events): each `messages` event "
    "carries a page of messages and its id is that page's nextTimestamp; comments keep the "
    "connection alive.",
    "properties": {
        "event": {"const": "messages"},
        "id": {"type": "string", "pattern": TIMESTAMP_PATTERN},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{MessagesOut.__name__}"},
        },
        "retry": {"type": "integer"},
    },
    "required": ["event", "id", "data"],
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
    }
}


def _ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def _request_schema(spec: RouteSpec, limits: Limits) -> dict[str, Any]:
    assert spec.request is not None
    if spec.name == "group_op":
        return {
            "description": '`op=add`, `remove`, `promote`, `demote`: `{"userId"}`; '
            '`op=rename`: `{"groupName"}`. In token mode the owner and admins add and '
            "remove others (admins: members only), anyone may remove themselves, the owner "
            "promotes and demotes, the owner and admins rename (else 403 `not_allowed`); "
            "nobody adds a user who has blocked them (403 `blocked`); a group holds at most "
            f"{limits.group_members_max} members, its owner included (409 `group_full`). "
            "When the owner leaves, the longest-standing admin, else member, owns the group.",
            "anyOf": [_ref(spec.request), _ref(RenameIn)],
        }
    return _ref(spec.request)


def _query_schema(name: str, schema: dict[str, Any], limits: Limits) -> dict[str, Any]:
    if name == "limit" and "maximum" not in schema:  # (a route's own maximum stays)
        return {**schema, "maximum": limits.page_max}
    return schema


def _query_description(name: str, description: str, limits: Limits) -> str:
    if "{page_max}" in description:
        return description.replace("{page_max}", str(limits.page_max))
    if name == "limit" and description.startswith("Page size"):
        return f"Page size, 1-{limits.page_max} (default {limits.page_default})."
    return description


def _parameters(spec: RouteSpec, limits: Limits) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_ID,
            "description": "An id returned by the server.",
        }
        for name in re.findall(r"{(\w+)}", spec.path)
    ]
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "schema": _query_schema(p.name, p.schema, limits),
            "description": _query_description(p.name, p.description, limits),
            **({} if p.required else {"allowEmptyValue": True}),  # empty = not given
        }
        for p in spec.query
    ]
    if spec.name == "send_message":
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "maxLength": IDEMPOTENCY_KEY_MAX,
                    "pattern": SEND_KEY_PATTERN,
                },
                "description": "A retried send with the same key stores one message "
                "(takes precedence over `clientMessageId`; empty = not given).",
            }
        )
    if spec.name == "stream_messages":
        params.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^([0-9]{1,18})?$"},
                "description": "Sent by a reconnecting EventSource: resume after this "
                "event id (a nextTimestamp); replaces `timestamp`. Empty = not given.",
            }
        )
    return params


MAX_MEDIA_NOTE = "26214400 bytes by default"
# A file: any bytes. Uploads take any Content-Type and downloads answer the file's own; the
# document names the generic one, which clients and generators understand.
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
# an upload: at least one byte (400 `empty_file`)
UPLOAD = {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}}
}
MEDIA_HEADERS = {
    name: {"schema": {"type": "string"}, "description": text}
    for name, text in (
        ("ETag", "The file's SHA-256, quoted"),
        ("Content-Disposition", "attachment for types a browser would run (HTML, SVG, ...)"),
        ("Content-Security-Policy", "sandbox; default-src 'none'"),
        ("X-Content-Type-Options", "nosniff"),
    )
}


def _responses(spec: RouteSpec, token_mode: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK"}
    if spec.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(spec.response)}}
    elif spec.content_type == "text/event-stream":
        ok["content"] = {spec.content_type: {"schema": SSE_EVENT}}
    elif spec.content_type == "application/octet-stream":
        ok["content"] = BINARY  # in fact the file's own Content-Type
        ok["headers"] = MEDIA_HEADERS
    elif spec.content_type != "application/json":
        ok["content"] = {spec.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {"200": ok}
    if spec.content_type == "application/octet-stream":
        responses["206"] = {
            "description": "Partial content: the single byte range asked for with Range",
            "content": BINARY,
        }
        responses["304"] = {"description": "Not modified: If-None-Match matched the ETag"}
    for status in sorted({*spec.statuses(token_mode), *TRANSPORT_STATUSES}):
        answer: dict[str, Any] = {"description": REASONS[status]}
        body = HealthOut if spec.name == "readyz" and status == 503 else ErrorOut
        answer["content"] = {"application/json": {"schema": _ref(body)}}
        if status in (429, 503):
            answer["headers"] = RETRY_AFTER
        responses[str(status)] = answer
    if spec.name in TOKEN_MODE_ONLY and not token_mode:
        del responses["200"]  # never succeeds without tokens
        responses["400"]["description"] = TOKEN_MODE_ONLY[spec.name]
    return responses


def _links(spec: RouteSpec) -> dict[str, Any]:
    """Where the ids of an answer can be used next (for clients and stateful testing)."""

    def to(operation: str, **parameters: str) -> dict[str, Any]:
        return {"operationId": operation, "parameters": parameters}

    if spec.name == "create_user":
        user = "$response.body#/userId"
        return {
            "GetUser": to("get_user", userId=user),
            "UserGroups": to("user_groups", userId=user),
            "UserBlocked": to("user_blocked", userId=user),
            "CheckMessages": to("get_messages", userId=user),
        }
    if spec.name == "create_group":
        group = "$response.body#/groupId"
        return {
            "GetGroup": to("get_group", groupId=group),
            "GroupOp": to("group_op", groupId=group),
        }
    if spec.name == "send_message":
        return {"SenderMessages": to("get_messages", userId="$response.body#/senderId")}
    return {}


def _operation(spec: RouteSpec, token_mode: bool, limits: Limits) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary}
    params = _parameters(spec, limits)
    if params:
        op["parameters"] = params
    if spec.upload:
        op["requestBody"] = {
            "required": True,
            "description": f"The file's bytes, with its Content-Type: at least one (400 "
            f"`empty_file`), at most {MAX_MEDIA_NOTE} (PARLEY_MAX_MEDIA; 413 above).",
            "content": UPLOAD,
        }
    if spec.request is not None:
        op["requestBody"] = {
            "required": spec.name not in OPTIONAL_BODY,
            "description": f"JSON, at most {limits.body_max_bytes} bytes (413 above). "
            "Unknown fields are ignored.",
            "content": {"application/json": {"schema": _request_schema(spec, limits)}},
        }
    op["responses"] = _responses(spec, token_mode)
    links = _links(spec)
    if links and "200" in op["responses"]:
        op["responses"]["200"]["links"] = links
    if token_mode and spec.auth != "public":
        op["security"] = [{"bearer": []}]
    else:
        op["security"] = []
    return op


DESCRIPTION = (
    "A messaging backend: users, private messages, groups, blocking and polling. Errors are "
    '`{"error": {"code", "message"}}`. A path called with a method it does not list answers '
    "405 `method_not_allowed`. Every operation may answer 414 (URI too long) and 431 (too "
    "many header fields); past the HTTP server's own limits (a URI over 64 KiB, more than 100 "
    "header fields) those answers have an empty body."
)


def document(
    token_mode: bool = True, server_url: str | None = None, limits: Limits | None = None
) -> dict[str, Any]:
    limits = limits or Limits()
    kinds = {k for spec in ROUTES for k in (spec.request, spec.response) if k is not None}
    kinds |= {ErrorOut, MessagesOut, HealthOut, RenameIn}
    _, components = msgspec.json.schema_components(
        sorted(kinds, key=lambda k: k.__name__), ref_template="#/components/schemas/{name}"
    )
    components = copy.deepcopy(components)
    _constrain(components, limits)
    paths: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, token_mode, limits)
    bearer = {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`: the token from user creation, "
        "`<userId>.<secret>`, at most 256 characters.",
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Parley", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": bearer}},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
