"""`/api/v1/tokens…`: list API tokens (never the secrets) and revoke them (issue 13 #6).

The caller sees and revokes its own tokens and those of the users it manages
(`Scope.owns_or_manages`); any other token is 404, as if it did not exist.
A revocation and its audit row are written in one transaction (`store.access`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from alarmhub.store.errors import AccountError
from alarmhub.web.deps import Audit, Ctx, ManageUsers
from alarmhub.web.errors import not_found, responses

TokenIdPath = Annotated[str, Path(min_length=1, max_length=64)]


class TokenOut(BaseModel):
    id: str = Field(description="the token's public id (not the secret)", examples=["tok_1a2b"])
    user: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    revoked_by: str | None
    state: Literal["active", "expired", "revoked"]


async def list_tokens(
    ctx: Ctx,
    scope: ManageUsers,
    user: Annotated[str | None, Query(max_length=64)] = None,
) -> list[TokenOut]:
    """API tokens (never the secrets) of the users the caller manages, and its own."""
    rows = await ctx.access.list_tokens(scope.owns_or_manages, user)
    now = ctx.hub.clock.now()
    return [TokenOut.model_validate(t.json(now)) for t in rows]


async def revoke_token(
    ctx: Ctx, scope: ManageUsers, token_id: TokenIdPath, audit: Audit
) -> Response:
    """Revoke a token by its id: its next request is 401, its live stream closes.

    Revoking a revoked token changes nothing (204 again).
    """
    entry = audit.entry("token.revoked", detail={})
    try:
        await ctx.access.revoke_token(scope.owns_or_manages, token_id, entry)
    except AccountError:
        raise not_found("token") from None
    return Response(status_code=204)


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["users"], responses=responses(401, 403, 422))
    r.add_api_route("/tokens", list_tokens, response_model=list[TokenOut])
    r.add_api_route(
        "/tokens/{token_id}",
        revoke_token,
        methods=["DELETE"],
        status_code=204,
        response_class=Response,
        responses={204: {"description": "Revoked; the record stays"}, **responses(404)},
    )
    return r
