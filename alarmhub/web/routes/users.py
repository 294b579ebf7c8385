"""`/api/v1/users…`: lock people out, and let them in again (issue 13 #6).

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

from alarmhub.core.tenancy import Scope
from alarmhub.store.accounts import NAME_RE
from alarmhub.store.errors import AccountError
from alarmhub.web.deps import Audit, Ctx, ManageUsers
from alarmhub.web.errors import not_found, responses

UserNamePath = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_RE.pattern)]


class UserOut(BaseModel):
    name: str
    role: Literal["operator", "municipality_admin", "admin"]
    municipalities: list[str]
    active: bool = Field(description="false: disabled, every request of theirs is 401")
    created_at: str


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
    return r
