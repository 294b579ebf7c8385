"""The operator and municipality pages, served by alarmhub itself (no CDN, no build step).

The pages are static HTML shells; plain ES modules under ``static/js`` fetch the
API and render. The server fills in two things only: the shared header and the
acknowledgement targets from the rules file (so the queue marks "past target"
by the same numbers the metrics use). Every page is sent with a
Content-Security-Policy of ``default-src 'self'``: no inline script or style,
nothing from another origin — which also keeps the pages working on a response
centre's closed network.
"""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from alarmhub.core.rules import RuleSet
from alarmhub.web.auth import LoginRequired, require_page_user
from alarmhub.web.deps import Ctx

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# 'self' for everything; forms only post to us; no framing (clickjacking an
# "acknowledge" button would be an attack on patients).
CSP = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}


class _StaticFiles(StaticFiles):
    """Static files that are revalidated on every load: no build step means no hashed names."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers.update(SECURITY_HEADERS)
        return response


@cache
def _read(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def render(name: str, sla: dict[str, int]) -> str:
    """A page shell with the header and the targets filled in (attribute-escaped JSON)."""
    body = _read(name).replace("{{header}}", _read("header.html"))
    return body.replace("{{sla}}", html.escape(json.dumps(sla), quote=True))


def sla_targets(rules: RuleSet) -> dict[str, int]:
    """Acknowledgement targets in seconds by priority ("1".."4"), from the loaded rules."""
    return {str(int(p)): int(d.total_seconds()) for p, d in rules.sla_ack.items()}


def _login_redirect(request: Request) -> RedirectResponse:
    target = quote(request.url.path, safe="/")
    return RedirectResponse(f"/login?next={target}", status_code=303, headers=PAGE_HEADERS)


async def _page(name: str, request: Request, ctx: Ctx) -> Response:
    try:
        await require_page_user(request)
    except LoginRequired:
        return _login_redirect(request)
    return HTMLResponse(render(name, sla_targets(ctx.hub.rules)), headers=PAGE_HEADERS)


async def queue_page(request: Request, ctx: Ctx) -> Response:
    return await _page("queue.html", request, ctx)


async def alarm_page(request: Request, ctx: Ctx, alarm_id: str) -> Response:
    del alarm_id  # the page's script reads it from the address
    return await _page("alarm.html", request, ctx)


async def devices_page(request: Request, ctx: Ctx) -> Response:
    return await _page("devices.html", request, ctx)


async def reports_page(request: Request, ctx: Ctx) -> Response:
    return await _page("reports.html", request, ctx)


async def users_page(request: Request, ctx: Ctx) -> Response:
    return await _page("users.html", request, ctx)


async def residents_page(request: Request, ctx: Ctx) -> Response:
    return await _page("residents.html", request, ctx)


async def login_page() -> Response:
    return HTMLResponse(_read("login.html"), headers=PAGE_HEADERS)


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)
    r.add_api_route("/", queue_page)
    r.add_api_route("/alarms/{alarm_id}", alarm_page)
    r.add_api_route("/devices", devices_page)
    r.add_api_route("/reports", reports_page)
    r.add_api_route("/users", users_page)
    r.add_api_route("/residents", residents_page)
    r.add_api_route("/login", login_page)
    return r


def mount_pages(app: FastAPI) -> None:
    """The pages' routes, and their static assets (a mount: not an APIRouter route)."""
    app.include_router(router())
    app.mount("/static", _StaticFiles(directory=STATIC_DIR), name="static")
