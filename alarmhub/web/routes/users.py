"""`/api/v1/users…`: lock people out, let them in again (issue 13 #6), and record
their HPR numbers, by which the journal note names its author (issue 17).

An admin manages everyone; a municipality admin manages the operators of its
own municipalities only (`Scope.manages`); operators get 403. A user the
caller does not manage is 404, the same as one that does not exist: a
municipality admin learns nothing about other municipalities' people. Each
change and its audit row are written in one transaction (`store.access`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from alarmhub.core.hpr import InvalidHpr, parse_hpr
from alarmhub.core.tenancy import Scope
from alarmhub.store.accounts import NAME_RE
from alarmhub.store.errors import AccountError
from alarmhub.web.deps import Audit, Ctx, ManageUsers
from alarmhub.web.errors import ApiError, not_found, responses
from alarmhub.web.models import HprIn

UserNamePath = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_RE.pattern)]


class UserOut(BaseModel):
    name: str
    role: Literal["operator", "municipality_admin", "admin"]
    municipalities: list[str]
    active: bool = Field(description="false: disabled, every request of theirs is 401")
    created_at: str
    hpr: str | None = Field(
        None, description="HPR number: the journal note names the user by it (null: none)"
    )


async def list_users(ctx: Ctx, scope: ManageUsers) -> list[UserOut]:
    """The users the caller manages: everyone for an admin, own operators otherwise."""
    rows = await ctx.access.list_users(scope.manages)
    return [UserOut.model_validate(u.json()) for u in rows]


async def _set_active(ctx: Ctx, audit: Audit, scope: Scope, name: str, *, active: bool) -> UserOut:
    action = "user.enabled" if active else "user.disabled"
    entry = audit.entry(action, detail={"user": name})
    try:
        await ctx.access.set_active(scope.manages, name, active, entry)
    except AccountError:
        raise not_found("user") from None
    found = await ctx.access.find_user(scope.manages, name)
    if found is None:
        raise not_found("user")
    return UserOut.model_validate(found.json())


async def disable_user(ctx: Ctx, scope: ManageUsers, name: UserNamePath, audit: Audit) -> UserOut:
    """Lock a user out: the next request with their token or session is 401.

    Their browser sessions are ended and open live streams close within
    `stream_recheck_s`. Disabling a disabled user changes nothing.
    """
    return await _set_active(ctx, audit, scope, name, active=False)


async def enable_user(ctx: Ctx, scope: ManageUsers, name: UserNamePath, audit: Audit) -> UserOut:
    """Let a disabled user in again: tokens not revoked or expired work again."""
    return await _set_active(ctx, audit, scope, name, active=True)


async def _set_hpr(ctx: Ctx, audit: Audit, scope: Scope, name: str, hpr: str | None) -> UserOut:
    if hpr is None:
        entry = audit.entry("user.hpr_removed", detail={"user": name})
    else:
        entry = audit.entry("user.hpr_set", detail={"user": name, "hpr": hpr})
    try:
        await ctx.access.set_hpr(scope.manages, name, hpr, entry)
    except AccountError:
        raise not_found("user") from None
    found = await ctx.access.find_user(scope.manages, name)
    if found is None:
        raise not_found("user")
    return UserOut.model_validate(found.json())


async def put_hpr(
    ctx: Ctx, scope: ManageUsers, name: UserNamePath, body: HprIn, audit: Audit
) -> UserOut:
    """Record the user's HPR number: the journal notes of alarms they resolve name them by it.

    1-9 digits (leading zeros dropped: `007125186` is `7125186`). Setting the number
    the user already has changes nothing and writes no audit row.
    """
    hpr = parse_hpr(body.hpr)
    if isinstance(hpr, InvalidHpr):
        message = f"hpr: {hpr.reason}"
        raise ApiError(
            422, "validation", message, fields=[{"field": "body.hpr", "message": message}]
        )
    return await _set_hpr(ctx, audit, scope, name, hpr)


async def delete_hpr(ctx: Ctx, scope: ManageUsers, name: UserNamePath, audit: Audit) -> UserOut:
    """Remove the user's HPR number: their notes name them by alarmhub's user name again."""
    return await _set_hpr(ctx, audit, scope, name, None)


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["users"], responses=responses(401, 403, 422))
    r.add_api_route("/users", list_users, response_model=list[UserOut])
    for path, endpoint in (("disable", disable_user), ("enable", enable_user)):
        r.add_api_route(
            f"/users/{{name}}/{path}",
            endpoint,
            methods=["POST"],
            response_model=UserOut,
            responses=responses(404),
        )
    r.add_api_route(
        "/users/{name}/hpr",
        put_hpr,
        methods=["PUT"],
        response_model=UserOut,
        responses=responses(400, 404, 413),  # a body that is not JSON, or too big
    )
    r.add_api_route(
        "/users/{name}/hpr",
        delete_hpr,
        methods=["DELETE"],
        response_model=UserOut,
        responses=responses(404),
    )
    return r
