"""`/api/v1/users…` and `/api/v1/tokens…`: lock people out (issue 13 #6).

An admin manages everyone; a municipality admin manages the operators of its
own municipalities only (`Scope.manages`); operators get 403. A user or token
the caller does not manage is 404, the same as one that does not exist: a
municipality admin learns nothing about other municipalities' people. Each
change and its audit row are written in one transaction (`store.access`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from alarmhub.core.people import AuditEntry
from alarmhub.core.tenancy import Permission, Scope
from alarmhub.store.sqlite import access
from alarmhub.store.sqlite.accounts import NAME_RE, AccountError
from alarmhub.web.auth import requires
from alarmhub.web.context import client_address, web
from alarmhub.web.errors import not_found, responses

ManageUsers = Annotated[Scope, Depends(requires(Permission.MANAGE_USERS))]
UserNamePath = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_RE.pattern)]
TokenIdPath = Annotated[str, Path(min_length=1, max_length=64)]


class UserOut(BaseModel):
    name: str
    role: Literal["operator", "municipality_admin", "admin"]
    municipalities: list[str]
    active: bool = Field(description="false: disabled, every request of theirs is 401")
    created_at: str


class TokenOut(BaseModel):
    id: str = Field(description="the token's public id (not the secret)", examples=["tok_1a2b"])
    user: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    revoked_by: str | None
    state: Literal["active", "expired", "revoked"]


def _entry(request: Request, scope: Scope, action: str, **detail: str) -> AuditEntry:
    return AuditEntry(
        scope.user,
        action,
        web(request).hub.clock.now(),
        address=client_address(request),
        detail=dict(detail),
    )


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["users"], responses=responses(401, 403, 422))

    @r.get("/users", response_model=list[UserOut])
    async def list_users(request: Request, scope: ManageUsers) -> list[UserOut]:
        """The users the caller manages: everyone for an admin, own operators otherwise."""
        rows = await web(request).db(access.list_users, scope.manages)
        return [UserOut.model_validate(u.json()) for u in rows]

    async def set_active(request: Request, scope: Scope, name: str, active: bool) -> UserOut:
        ctx = web(request)
        action = "user.enabled" if active else "user.disabled"
        entry = _entry(request, scope, action, user=name)
        try:
            await ctx.db(access.set_active, scope.manages, name, active, entry)
        except AccountError:
            raise not_found("user") from None
        found = await ctx.db(access.find_user, scope.manages, name)
        if found is None:
            raise not_found("user")
        return UserOut.model_validate(found.json())

    @r.post("/users/{name}/disable", response_model=UserOut, responses=responses(404))
    async def disable_user(request: Request, scope: ManageUsers, name: UserNamePath) -> UserOut:
        """Lock a user out: the next request with their token or session is 401.

        Their browser sessions are ended and open live streams close within
        `stream_recheck_s`. Disabling a disabled user changes nothing.
        """
        return await set_active(request, scope, name, active=False)

    @r.post("/users/{name}/enable", response_model=UserOut, responses=responses(404))
    async def enable_user(request: Request, scope: ManageUsers, name: UserNamePath) -> UserOut:
        """Let a disabled user in again: tokens not revoked or expired work again."""
        return await set_active(request, scope, name, active=True)

    @r.get("/tokens", response_model=list[TokenOut])
    async def list_tokens(
        request: Request,
        scope: ManageUsers,
        user: Annotated[str | None, Query(max_length=64)] = None,
    ) -> list[TokenOut]:
        """API tokens (never the secrets) of the users the caller manages, and its own."""
        ctx = web(request)
        rows = await ctx.db(access.list_tokens, scope.owns_or_manages, user)
        now = ctx.hub.clock.now()
        return [TokenOut.model_validate(t.json(now)) for t in rows]

    @r.delete(
        "/tokens/{token_id}",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "Revoked; the record stays"}, **responses(404)},
    )
    async def revoke_token(request: Request, scope: ManageUsers, token_id: TokenIdPath) -> Response:
        """Revoke a token by its id: its next request is 401, its live stream closes.

        Revoking a revoked token changes nothing (204 again).
        """
        entry = _entry(request, scope, "token.revoked")
        try:
            await web(request).db(access.revoke_token, scope.owns_or_manages, token_id, entry)
        except AccountError:
            raise not_found("token") from None
        return Response(status_code=204)

    return r
