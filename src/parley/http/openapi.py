"""The OpenAPI 3.1 document, generated from the route table and the msgspec schemas."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from parley.http.api import ROUTES, RouteSpec
from parley.http.schemas import ErrorOut, MessagesOut

REASONS = {
    400: "Bad input",
    401: "Missing or unknown token",
    403: "Forbidden",
    404: "Unknown user, group or route",
    408: "The request body did not arrive in time",
    409: "Conflict",
    413: "Body too large",
    429: "Rate limited (see Retry-After)",
    503: "Storage or a dependency is unavailable (see Retry-After)",
}


# One event of the live stream (Server-Sent Events): each ``messages`` event carries a page
# of messages and its id is that page's nextTimestamp; comments keep the connection alive.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"const": "messages"},
        "id": {"type": "string", "pattern": "^[0-9]{1,18}$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{MessagesOut.__name__}"},
        },
        "retry": {"type": "integer"},
    },
    "required": ["event", "id", "data"],
}


def _ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def _operation(spec: RouteSpec, token_mode: bool) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary}
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "Opaque id returned by the server.",
        }
        for name in re.findall(r"{(\w+)}", spec.path)
    ]
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "schema": p.schema,
            "description": p.description,
            **({} if p.required else {"allowEmptyValue": True}),  # empty = not given
        }
        for p in spec.query
    ]
    if spec.method == "POST" and spec.name == "send_message":
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
                "description": "A retried send with the same key stores one message.",
            }
        )
    if params:
        op["parameters"] = params
    if spec.request is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(spec.request)}},
        }
    ok: dict[str, Any] = {"description": "OK"}
    if spec.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(spec.response)}}
    elif spec.content_type == "text/event-stream":
        ok["content"] = {spec.content_type: {"schema": SSE_EVENT}}
    elif spec.content_type != "application/json":
        ok["content"] = {spec.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {"200": ok}
    for status in spec.statuses(token_mode):
        responses[str(status)] = {
            "description": REASONS[status],
            "content": {"application/json": {"schema": _ref(ErrorOut)}},
        }
    op["responses"] = responses
    if token_mode and spec.auth != "public":
        op["security"] = [{"bearer": []}]
    else:
        op["security"] = []
    return op


def document(token_mode: bool = True, server_url: str | None = None) -> dict[str, Any]:
    kinds = {k for spec in ROUTES for k in (spec.request, spec.response) if k is not None}
    kinds |= {ErrorOut, MessagesOut}
    _, components = msgspec.json.schema_components(
        sorted(kinds, key=lambda k: k.__name__), ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, token_mode)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley",
            "version": "1",
            "description": "A messaging backend: users, private messages, groups, blocking "
            'and polling. Errors are `{"error": {"code", "message"}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
