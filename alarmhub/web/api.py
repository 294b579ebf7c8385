"""The HTTP application: the app factory that puts the routes and wrappers together.

Only `/healthz`, `/readyz`, `/metrics`, `/login` and the pages' static assets
answer without authentication; every `/api/v1` route depends on the caller's
tenancy scope (see `web.auth` and `store.ports.ScopedReads`). Request bodies are capped at
1 MiB (413), and every request is counted by route template and status.
The routes live in `web.routes`, one module per resource.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from alarmhub.web.auth import LoginRequired
from alarmhub.web.context import StreamSlots, WebContext
from alarmhub.web.errors import install as install_errors
from alarmhub.web.middleware import BodyLimit, RequestCounter
from alarmhub.web.routes import (
    alarms,
    audit,
    devices,
    health,
    journal,
    me,
    pages,
    reports,
    residents,
    session,
    silences,
    stream,
    tokens,
    users,
)
from alarmhub.web.transport import Hsts

if TYPE_CHECKING:
    from alarmhub.web.ports import DaemonPort

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 1024 * 1024


async def _on_login_required(_request: Request, _exc: Exception) -> Response:
    return RedirectResponse("/login", status_code=303)


def create_app(hub: DaemonPort) -> FastAPI:
    app = FastAPI(
        title="alarmhub",
        version="1",
        summary="Alarm queue, devices, silences and reports for response centres",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    settings = hub.settings
    streams = StreamSlots(
        settings.max_streams_per_user, settings.max_streams, settings.max_streams_per_municipality
    )
    d = hub.directory
    app.state.web = WebContext(hub, reads=d, accounts=d, access=d, streams=streams)
    install_errors(app)
    app.add_exception_handler(LoginRequired, _on_login_required)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(RequestCounter, counter=hub.metrics.http_requests)
    app.add_middleware(Hsts)  # outermost: every https response, errors too

    app.include_router(health.router())
    app.include_router(session.router())
    # The stream before the alarms: `/alarms/stream` must not be taken for an `{alarm_id}`.
    for routes in (stream, alarms, me, audit, devices, silences, reports, users, tokens):
        app.include_router(routes.router())
    app.include_router(alarms.choices_router())
    app.include_router(residents.router())
    app.include_router(journal.router())
    pages.mount_pages(app)
    return app
