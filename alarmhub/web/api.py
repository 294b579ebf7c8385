"""The HTTP application: health, readiness, metrics, login, and the JSON API under /api/v1.

Only `/healthz`, `/readyz`, `/metrics`, `/login` and the pages' static assets
answer without authentication; every `/api/v1` route depends on the caller's
tenancy scope (see `web.auth` and `web.tenancy`). Request bodies are capped at
1 MiB (413), and every request is counted by route template and status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import Counter
from prometheus_client.exposition import choose_encoder
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alarmhub.web import auth, routes_admin, routes_alarms, routes_users
from alarmhub.web.auth import LoginRequired
from alarmhub.web.context import StreamSlots, WebContext
from alarmhub.web.errors import error_response
from alarmhub.web.errors import install as install_errors
from alarmhub.web.transport import Hsts

if TYPE_CHECKING:
    from alarmhub.web.ports import DaemonPort

log = structlog.get_logger(__name__)

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 1024 * 1024
UNMATCHED = "unmatched"


class BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(413, "the body is larger than 1 MiB")


class BodyLimit:
    """413 in the API's JSON shape for a body over the limit, declared or streamed.

    Instead of FastAPI's `max_body_size`: that one sits outside the app's
    middleware and answers a too-long Content-Length in plain text. A declared
    length is refused before reading; a chunked body is cut off while read, as
    an HTTPException that the JSON error handler renders.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = error_response(413, "too_large", "the body is larger than 1 MiB")
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        await self.app(scope, limited, send)


class RequestCounter:
    """Counts requests by route *template* (bounded labels), as a plain ASGI wrapper.

    Not a `BaseHTTPMiddleware`: that would buffer the SSE stream. An unmatched
    path is counted as "unmatched" so scanners cannot grow the series.
    """

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            self.counter.labels(template, str(status)).inc()


class ClientGone:
    """A stream whose client has gone ends quietly, not as a server error.

    When a live-stream (SSE) client goes away, FastAPI's keep-alive task can
    still be sending into the stream the request's exit stack has just closed:
    `anyio.BrokenResourceError` in a task group, which uvicorn logged as
    "Exception in ASGI application" at error level (every time a cut-off client
    disconnected, in tests/system/test_faults.py). FastAPI 0.165 has this; the upstream
    fix (fastapi PR #15824) was closed unmerged. An error line that is not an
    error teaches the people on call to ignore error lines, so a closed stream
    after the response has started is logged at debug; anything else, or the
    same before the response started, still raises.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except* (anyio.BrokenResourceError, anyio.ClosedResourceError) as gone:
            if not started:
                raise
            log.debug("http.client_gone", path=scope.get("path"), errors=len(gone.exceptions))


def create_app(hub: DaemonPort) -> FastAPI:
    db = hub.settings.database
    if db.path is None:
        raise NotImplementedError("the web API needs the sqlite store")
    app = FastAPI(
        title="alarmhub",
        version="1",
        summary="Alarm queue, devices, silences and reports for response centres",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    settings = hub.settings
    streams = StreamSlots(settings.max_streams_per_user, settings.max_streams)
    app.state.web = WebContext(hub, db.path, streams=streams)
    install_errors(app)

    async def on_login_required(_request: Request, _exc: Exception) -> Response:
        return RedirectResponse("/login", status_code=303)

    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_middleware(ClientGone)  # the innermost of the three: the others see a normal end
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(RequestCounter, counter=hub.metrics.http_requests)
    app.add_middleware(Hsts)  # outermost: every https response, errors too

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={503: {"description": "Not ready; `checks` says which check failed"}},
    )
    async def readyz() -> JSONResponse:
        """Readiness: broker connected, database writable, rules loaded."""
        checks = {
            "broker_connected": hub.mqtt_connected,
            "database_writable": hub.metrics.store_writable._value.get() == 1,  # noqa: SLF001
            "rules_loaded": bool(hub.rules.version),
        }
        ok = all(checks.values())
        # Which broker: the URL with its password redacted (issue 13 item 10).
        body = {"ready": ok, "checks": checks, "broker": hub.settings.mqtt.shown}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # A plain route: prometheus-client's mounted ASGI app answers 307 -> /metrics/.
        # `?name[]=x&name[]=y` exposes only those series, as prometheus-client's own
        # HTTP handler does: a cheap poll for scripts (the bench polls 4 times a second).
        names = request.query_params.getlist("name[]")
        registry = hub.metrics.registry
        exposed = registry.restricted_registry(names) if names else registry
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(exposed), media_type=content_type)

    app.include_router(auth.router())
    app.include_router(routes_alarms.router())
    app.include_router(routes_admin.router())
    app.include_router(routes_users.router())

    from alarmhub.web.pages import mount_pages  # noqa: PLC0415 - pages import web.auth

    mount_pages(app, hub)
    return app
