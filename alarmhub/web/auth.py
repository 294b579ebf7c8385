"""Who is calling: bearer tokens for API clients, sessions for browsers, CSRF, login.

Every API route depends on :func:`require_scope` (or :func:`requires`), which
authenticates once and turns the user into the request's tenancy
:class:`Scope`. Browsers authenticate with the `alarmhub_session` cookie
(HttpOnly, SameSite=Strict; over https `__Host-alarmhub_session` and Secure, see
`web/transport.py`); because a cookie is sent by the browser on its
own, a state-changing cookie request must also carry `X-CSRF-Token` equal to
the `alarmhub_csrf` cookie (double submit, and bound to the session row).
Bearer requests need no CSRF token: a foreign page cannot make a browser send
an Authorization header.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from alarmhub.core.people import User
from alarmhub.core.tenancy import Permission, Scope
from alarmhub.store.sqlite import accounts
from alarmhub.web.context import client_address, web
from alarmhub.web.errors import ApiError, ErrorBody, forbidden
from alarmhub.web.transport import CookieNames, cookie_names

SESSION_COOKIE = "alarmhub_session"
CSRF_COOKIE = "alarmhub_csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = timedelta(hours=12)  # one shift
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    via: str  # "token" or "session"
    session_id: str | None = None


class LoginRequired(Exception):  # noqa: N818 - a signal, handled by a redirect
    """A page was asked for without a session: answered with 303 to /login."""


async def _principal(request: Request) -> Principal | None:
    ctx = web(request)
    now = ctx.hub.clock.now()
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        user = await ctx.db(accounts.user_for_token, credential.strip(), now)
        return Principal(user, "token") if user else None
    if header:
        return None  # some other scheme: refuse rather than fall back to the cookie
    names = cookies(request)
    session_id = request.cookies.get(names.session)
    if not session_id:
        return None
    info = await ctx.db(accounts.session, session_id, now)
    if info is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        cookie = request.cookies.get(names.csrf, "")
        if not (
            sent and hmac.compare_digest(sent, cookie) and hmac.compare_digest(sent, info.csrf)
        ):
            raise ApiError(403, "csrf", f"a cookie request that changes state needs {CSRF_HEADER}")
    return Principal(info.user, "session", session_id)


async def require_principal(request: Request) -> Principal:
    principal = await _principal(request)
    if principal is None:
        raise ApiError(
            401,
            "unauthenticated",
            "log in, or send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="alarmhub"'},
        )
    request.state.principal = principal
    return principal


async def still_authenticated(request: Request) -> bool:
    """Would this request's credentials be accepted now? For an open live stream.

    The same check as at the start (`_principal`): a disabled user, a revoked or
    expired token and an ended session all answer no.
    """
    try:
        return await _principal(request) is not None
    except ApiError:
        return False


async def require_scope(principal: Annotated[Principal, Depends(require_principal)]) -> Scope:
    """The caller's tenancy scope, computed once per request."""
    return Scope.of(principal.user)


def requires(permission: Permission) -> Callable[[Scope], Awaitable[Scope]]:
    """A dependency: the scope, after checking the role may do `permission` (else 403)."""

    async def check(scope: Annotated[Scope, Depends(require_scope)]) -> Scope:
        if not scope.can(permission):
            raise forbidden(f"the role {scope.role} may not {permission.value.replace('_', ' ')}")
        return scope

    return check


async def require_page_user(request: Request) -> User:
    """For HTML pages: the session's user, or a 303 redirect to /login."""
    ctx = web(request)
    session_id = request.cookies.get(cookies(request).session)
    if not session_id:
        raise LoginRequired
    info = await ctx.db(accounts.session, session_id, ctx.hub.clock.now())
    if info is None:
        raise LoginRequired
    return info.user


def cookies(request: Request) -> CookieNames:
    """The session and CSRF cookies' names and Secure flag for this request's scheme.

    The scheme is https when uvicorn serves TLS, or a trusted proxy said so (uvicorn's
    FORWARDED_ALLOW_IPS); an X-Forwarded-Proto from anyone else is not believed.
    """
    return cookie_names(request.url.scheme, SESSION_COOKIE, CSRF_COOKIE)


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


def router() -> APIRouter:
    r = APIRouter(tags=["auth"])

    @r.post(
        "/login",
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
    async def login(request: Request) -> Response:
        """Log a browser in: form fields `username` and `password`.

        Failed logins are slowed down per (user name, client address): after five,
        each further try waits 1 s, 2 s, 4 s … at most 60 s (429 with Retry-After);
        a successful login clears the count. A browser (Accept: text/html) with
        wrong credentials is sent back to `/login?error=invalid`.
        """
        ctx = web(request)
        form = await _form(request)
        username, password = form.get("username", ""), form.get("password", "")
        if not username or not password:
            raise ApiError(400, "bad_request", "the form needs username and password")
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
        # Counted as failed before the hash is checked (it takes a while), so parallel
        # guesses of one pair cannot all pass the wait above; a success takes it back.
        limiter.failed(key, now_s)
        user, stored = await ctx.db(accounts.password_hash_of, username)
        ok = await asyncio.to_thread(accounts.verify_password, stored, password)
        if not ok or user is None:
            await ctx.audit(request, username[:64], "login.failed")
            if _wants_html(request):
                return RedirectResponse("/login?error=invalid", status_code=303)
            raise ApiError(401, "invalid_credentials", "wrong user name or password")
        limiter.succeeded(key)
        now = ctx.hub.clock.now()
        session_id, csrf = await ctx.db(accounts.create_session, user.name, now, now + SESSION_TTL)
        await ctx.audit(request, user.name, "login")
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

    @r.post(
        "/logout",
        status_code=303,
        response_class=Response,
        responses={
            303: {"description": "Logged out: cookies cleared, redirect to /login"},
            401: {**_ERR, "description": "No session"},
            403: {**_ERR, "description": "CSRF token missing or wrong"},
        },
    )
    async def logout(
        request: Request, principal: Annotated[Principal, Depends(require_principal)]
    ) -> Response:
        """End the browser session (needs `X-CSRF-Token` like every cookie POST)."""
        ctx = web(request)
        if principal.session_id is not None:
            await ctx.db(accounts.delete_session, principal.session_id)
        await ctx.audit(request, principal.user.name, "logout")
        response = RedirectResponse("/login", status_code=303)
        names = cookies(request)
        response.delete_cookie(
            names.session, path="/", secure=names.secure, httponly=True, samesite="strict"
        )
        response.delete_cookie(names.csrf, path="/", secure=names.secure, samesite="strict")
        return response

    return r
