"""`/login` and `/logout`: a browser's session, its cookies, and slowing down guessing.

Who a request is, once logged in, is decided in `web.auth`; this only opens and
ends the session. Both are audited with the caller's address.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from alarmhub.store.accounts import verify_password
from alarmhub.web.auth import Principal, cookies, require_principal
from alarmhub.web.context import WebContext, client_address
from alarmhub.web.deps import Ctx
from alarmhub.web.errors import ApiError, ErrorBody

SESSION_TTL = timedelta(hours=12)  # one shift
MAX_FORM_BYTES = 4096


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form, parsed without a multipart dependency; at most 4 KiB."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "too_large", "the login form is larger than 4 KiB")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the form is not UTF-8") from None
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items() if v}


_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                }
            }
        },
    }
}

_ERR: dict[str, Any] = {"model": ErrorBody}


def _throttle(ctx: WebContext, request: Request, username: str) -> tuple[str, str]:
    """The limiter's key of this attempt, counted as failed; 429 while the pair must wait.

    Counted as failed before the hash is checked (it takes a while), so parallel
    guesses of one pair cannot all pass the wait; a success takes it back.
    """
    limiter = ctx.login_limiter
    key = limiter.key(username[:64], client_address(request) or "unknown")
    now_s = ctx.hub.clock.monotonic()
    wait = limiter.wait(key, now_s)
    if wait is not None:
        raise ApiError(
            429,
            "rate_limited",
            "too many failed logins; try again later",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )
    limiter.failed(key, now_s)
    return key


def _with_session_cookies(request: Request, session_id: str, csrf: str) -> Response:
    response = RedirectResponse("/", status_code=303)
    names = cookies(request)
    max_age = int(SESSION_TTL.total_seconds())
    response.set_cookie(
        names.session,
        session_id,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=names.secure,
        path="/",
    )
    response.set_cookie(
        names.csrf,
        csrf,
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=names.secure,
        path="/",
    )
    return response


async def login(request: Request, ctx: Ctx) -> Response:
    """Log a browser in: form fields `username` and `password`.

    Failed logins are slowed down per (user name, client address): after five,
    each further try waits 1 s, 2 s, 4 s … at most 60 s (429 with Retry-After);
    a successful login clears the count. A browser (Accept: text/html) with
    wrong credentials is sent back to `/login?error=invalid`.
    """
    form = await _form(request)
    username, password = form.get("username", ""), form.get("password", "")
    if not username or not password:
        raise ApiError(400, "bad_request", "the form needs username and password")
    key = _throttle(ctx, request, username)
    user, stored = await ctx.accounts.password_hash_of(username)
    ok = await asyncio.to_thread(verify_password, stored, password)
    if not ok or user is None:
        await ctx.audit(request, username[:64], "login.failed")
        if _wants_html(request):
            return RedirectResponse("/login?error=invalid", status_code=303)
        raise ApiError(401, "invalid_credentials", "wrong user name or password")
    ctx.login_limiter.succeeded(key)
    now = ctx.hub.clock.now()
    session_id, csrf = await ctx.accounts.create_session(
        user.name, now, now + SESSION_TTL, [ctx.entry(request, user.name, "login")]
    )
    return _with_session_cookies(request, session_id, csrf)


async def logout(
    request: Request, ctx: Ctx, principal: Annotated[Principal, Depends(require_principal)]
) -> Response:
    """End the browser session (needs `X-CSRF-Token` like every cookie POST)."""
    if principal.session_id is not None:
        entry = ctx.entry(request, principal.user.name, "logout")
        await ctx.accounts.delete_session(principal.session_id, [entry])
    else:
        await ctx.audit(request, principal.user.name, "logout")
    response = RedirectResponse("/login", status_code=303)
    names = cookies(request)
    response.delete_cookie(
        names.session, path="/", secure=names.secure, httponly=True, samesite="strict"
    )
    response.delete_cookie(names.csrf, path="/", secure=names.secure, samesite="strict")
    return response


def router() -> APIRouter:
    r = APIRouter(tags=["auth"])
    r.add_api_route(
        "/login",
        login,
        methods=["POST"],
        status_code=303,
        response_class=Response,
        openapi_extra=_FORM_BODY,
        responses={
            303: {"description": "Logged in: cookies set, redirect to /"},
            400: {**_ERR, "description": "Form fields missing or not UTF-8"},
            401: {**_ERR, "description": "Wrong user name or password (API clients)"},
            413: {**_ERR, "description": "Form larger than 4 KiB"},
            429: {**_ERR, "description": "Too many attempts; see Retry-After"},
        },
    )
    r.add_api_route(
        "/logout",
        logout,
        methods=["POST"],
        status_code=303,
        response_class=Response,
        responses={
            303: {"description": "Logged out: cookies cleared, redirect to /login"},
            401: {**_ERR, "description": "No session"},
            403: {**_ERR, "description": "CSRF token missing or wrong"},
        },
    )
    return r
