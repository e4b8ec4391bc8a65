"""The ASGI application: routes from the table, docs, the web page, errors for the rest."""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from parley.app import Parley, build
from parley.errors import Code
from parley.http.api import ROUTES, Api, encode
from parley.http.asgi import (
    SECURITY_HEADERS,
    ASGIApp,
    Call,
    Endpoint,
    Receive,
    Reply,
    Router,
    Scope,
    Send,
)
from parley.http.errors import error_body
from parley.http.openapi import document
from parley.http.streamport import StreamPort, tls_context
from parley.logs import configure_logging
from parley.settings import Settings
from parley.startup import server_secret

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
SWAGGER = Path(swagger_ui_bundle.swagger_ui_path)
SWAGGER_FILES = {"swagger-ui.css", "swagger-ui-bundle.js", "index.css", "favicon-32x32.png"}
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Parley API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/docs.js"></script></body></html>"""
# Limits checked before routing. Beyond granian's own (a target over 64 KiB, more than 100
# headers, a head over about 400 KiB) granian answers 414/431 itself with an empty body.
MAX_TARGET_BYTES = 8192  # path and query string
MAX_HEADERS = 64
URI_TOO_LONG = f"the request target (path and query) is longer than {MAX_TARGET_BYTES} bytes"
HEADERS_TOO_LARGE = f"the request has more than {MAX_HEADERS} headers"
OVERLOADED = "the server is at its limit of requests in progress; retry shortly"
ALWAYS_ANSWERED = frozenset({"healthz", "readyz", "metrics"})  # never refused when full
DOCS_JS = "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui'});\n"
# The page's own file types, fixed here: browsers run a module script only when it is served
# with a JavaScript type, and the platform's table (mimetypes) may map .js to something else.
PAGE_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _static_files(root: Path) -> set[str]:
    """Every file under the page's folder, as URL paths relative to it (``js/api.js``): the only
    paths the page route serves, so no request can reach outside the folder."""
    if not root.is_dir():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _file(path: Path, csp: str | None = None) -> Response:
    media = PAGE_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    response = FileResponse(path, media_type=media or "application/octet-stream")
    headers = [(k.decode(), v.decode()) for k, v in SECURITY_HEADERS if k != b"cache-control"]
    for key, value in headers:
        response.headers[key] = value
    response.headers["cache-control"] = "no-cache"
    if csp:
        response.headers["content-security-policy"] = csp
    return response


def _json(body: bytes, status: int = 200) -> Response:
    headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
    return Response(body, status, headers=headers, media_type="application/json")


def _not_found() -> Response:
    return _json(error_body(Code.NOT_FOUND, "no such route"), 404)


class ParleyApp:
    """The API routes on the lean ASGI layer; everything else goes on to Starlette.

    Before routing, a request whose target or header list is over its limit is answered
    414 or 431. At most ``PARLEY_MAX_CONCURRENCY`` requests are in progress at once (each
    long-poll and stream holds one); past it a request is answered 503 with Retry-After at
    once, except the operations endpoints, which always answer.
    """

    def __init__(self, parley: Parley, fallback: Starlette) -> None:
        self.parley = parley
        self.fallback = fallback
        self.access = logging.getLogger("parley.access") if parley.settings.access_log else None
        self.router = Router()
        self.active = 0  # requests in progress
        self.max_active = parley.settings.max_concurrency
        self.overloaded = 0  # requests refused because the process was full
        self.exempt: set[Endpoint] = set()
        self.stream_port: StreamPort | None = None  # set at startup when one is configured
        api = Api(parley)
        for spec in ROUTES:
            endpoint = api.endpoint(spec, api.handler(spec))
            self.router.add(spec.method, spec.path, endpoint)
            if spec.name in ALWAYS_ANSWERED:
                self.exempt.add(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.access is not None and scope["type"] == "http":
            await _logged(self.access, self.serve, scope, receive, send)
        else:
            await self.serve(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)  # type: ignore[arg-type]
            return
        path = scope["path"]
        if len(path) + len(scope["query_string"]) > MAX_TARGET_BYTES:
            await _refuse(send, 414, Code.URI_TOO_LONG, URI_TOO_LONG)
            return
        if len(scope["headers"]) > MAX_HEADERS:
            await _refuse(send, 431, Code.HEADERS_TOO_LARGE, HEADERS_TOO_LARGE)
            return
        endpoint, params, exists = self.router.match(scope["method"], path)
        if self.active >= self.max_active and endpoint not in self.exempt:
            self.overloaded += 1
            retry = [(b"retry-after", b"1")]
            await _refuse(send, 503, Code.OVERLOADED, OVERLOADED, retry)
            return
        self.active += 1
        try:
            if endpoint is not None:
                call = Call(scope, receive, params)
                try:
                    reply = await endpoint(call)
                    await reply.send(send)
                finally:
                    if call.release is not None:
                        call.release()
            elif exists:
                body = error_body(Code.METHOD_NOT_ALLOWED, "method not allowed")
                allow = ", ".join(self.router.allowed(path)).encode()
                await Reply(body, 405, [(b"allow", allow)]).send(send)
            else:
                await self.fallback(scope, receive, _secured(send))  # type: ignore[arg-type]
        finally:
            self.active -= 1


async def _logged(
    log: logging.Logger, app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one request and write its access line: a JSON log record with the request
    id the answer carries (``x-request-id``), the status and the time taken. The path is
    logged without its query string, where stream tickets travel."""
    started = time.perf_counter()
    seen: dict[str, Any] = {"status": 0, "request_id": None}

    async def watched(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]
            for key, value in message.get("headers", ()):
                if key == b"x-request-id":
                    seen["request_id"] = value.decode("latin-1")
        await send(message)

    try:
        await app(scope, receive, watched)
    finally:
        ms = (time.perf_counter() - started) * 1000
        log.info(
            "%s %s %d %.1fms",
            scope["method"],
            scope["path"],
            seen["status"],
            ms,
            extra={"status": seen["status"], "request_id": seen["request_id"]},
        )


async def _refuse(
    send: Send,
    status: int,
    code: Code,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await Reply(error_body(code, message), status, headers).send(send)


def _secured(send: Send) -> Send:
    """``send`` that adds the security headers a response lacks (docs, files, errors)."""

    async def secured(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {key.lower() for key, _ in headers}
            headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message = {**message, "headers": headers}
        await send(message)

    return secured


def create_app(parley: Parley) -> ParleyApp:
    routes: list[BaseRoute] = []
    openapi = encode(document(parley.settings.token_mode, limits=parley.settings.limits))
    static_files = _static_files(STATIC)

    async def openapi_json(request: Request) -> Response:
        return _json(openapi)

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_PAGE, headers={"content-security-policy": PAGE_CSP})

    async def docs_asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "docs.js":
            return Response(DOCS_JS, media_type="text/javascript")
        if name not in SWAGGER_FILES:
            return _not_found()
        return _file(SWAGGER / name)

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in static_files:
            return _not_found()
        return _file(STATIC / name, PAGE_CSP)

    routes += [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/assets/{name}", docs_asset, methods=["GET"]),
        Route("/", page, methods=["GET"]),
        Route("/{name:path}", page, methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return _not_found()
        if status == 405:
            return _json(error_body(Code.METHOD_NOT_ALLOWED, "method not allowed"), 405)
        return _json(error_body(Code.BAD_REQUEST, "bad request"), status)

    front: list[ParleyApp] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await parley.start()
        streams = await _open_stream_port(parley.settings, front[0])
        try:
            yield
        finally:
            if streams is not None:
                await streams.close()
            await parley.stop()

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.parley = parley
    front.append(ParleyApp(parley, app))
    return front[0]


async def _open_stream_port(settings: Settings, app: ParleyApp) -> StreamPort | None:
    """The stream port of this worker process, when one is configured (every worker
    listens on it; the kernel spreads the connections)."""
    if not settings.stream_port:
        return None
    tls = tls_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
    port = StreamPort(
        app,
        tls=tls,
        head_seconds=settings.request_timeout,
        connections_max=connection_limit(settings),
    )
    app.stream_port = port
    await port.start(settings.host, settings.stream_port)
    add = app.parley.metrics.add_source
    add("parley_stream_port_connections", "Connections open on the stream port.", "gauge",
        lambda: [("", len(port.connections))])  # fmt: skip
    add("parley_stream_port_refused_total",
        "Connections the stream port closed at once because it was full.", "counter",
        lambda: [("", port.refused)])  # fmt: skip
    return port


FILE_RESERVE = 256  # open files kept free for storage, Redis, logs and the listener


def connection_limit(settings: Settings) -> int:
    """Connections one server process may hold open: ``PARLEY_MAX_CONNECTIONS``, lowered
    to fit the open-file limit, whose soft value is first raised to the hard one. Past the
    open-file limit the server could not accept at all; below this cap it keeps accepting,
    so a process whose requests are all busy still answers 503 and ``/healthz``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.max_connections + FILE_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    return max(1, min(settings.max_connections, soft - FILE_RESERVE))


def app_factory() -> ParleyApp:
    """Entry point for the ASGI server: settings from the environment."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(build(settings, secret_key=server_secret(settings)))
