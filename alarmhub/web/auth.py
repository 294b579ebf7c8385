"""Who is calling: bearer tokens for API clients, sessions for browsers, CSRF.

Every API route depends on :func:`require_scope` (or :func:`requires`), which
authenticates once and turns the user into the request's tenancy
:class:`Scope`. Browsers authenticate with the `alarmhub_session` cookie
(HttpOnly, SameSite=Strict; over https `__Host-alarmhub_session` and Secure, see
`web/transport.py`); because a cookie is sent by the browser on its
own, a state-changing cookie request must also carry `X-CSRF-Token` equal to
the `alarmhub_csrf` cookie (double submit, and bound to the session row).
Bearer requests need no CSRF token: a foreign page cannot make a browser send
an Authorization header. Logging in and out are the routes of `routes.session`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated

from fastapi import Depends, Request

from alarmhub.core.people import User
from alarmhub.core.tenancy import Permission, Scope
from alarmhub.web.context import web
from alarmhub.web.errors import ApiError, forbidden
from alarmhub.web.transport import CookieNames, cookie_names

SESSION_COOKIE = "alarmhub_session"
CSRF_COOKIE = "alarmhub_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        user = await ctx.accounts.user_for_token(credential.strip(), now)
        return Principal(user, "token") if user else None
    if header:
        return None  # some other scheme: refuse rather than fall back to the cookie
    names = cookies(request)
    session_id = request.cookies.get(names.session)
    if not session_id:
        return None
    info = await ctx.accounts.session(session_id, now)
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


@cache
def requires(permission: Permission) -> Callable[[Scope], Awaitable[Scope]]:
    """A dependency: the scope, after checking the role may do `permission` (else 403).

    One function per permission (cached): FastAPI resolves a dependency once per
    request only when it is the same callable, so a route and its in-scope lookup
    that both ask for a permission share one authentication.
    """

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
    info = await ctx.accounts.session(session_id, ctx.hub.clock.now())
    if info is None:
        raise LoginRequired
    return info.user


def cookies(request: Request) -> CookieNames:
    """The session and CSRF cookies' names and Secure flag for this request's scheme.

    The scheme is https when uvicorn serves TLS, or a trusted proxy said so (uvicorn's
    FORWARDED_ALLOW_IPS); an X-Forwarded-Proto from anyone else is not believed.
    """
    return cookie_names(request.url.scheme, SESSION_COOKIE, CSRF_COOKIE)
