"""`/api/v1/me`: who the caller is, which the pages read to show the right controls."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from alarmhub.core.people import Role
from alarmhub.core.tenancy import Scope
from alarmhub.web.auth import Principal, require_principal
from alarmhub.web.errors import responses
from alarmhub.web.models import Me


async def me(principal: Annotated[Principal, Depends(require_principal)]) -> Me:
    """Who the caller is: name, role, municipalities, and what the role may do.

    The pages read `permissions` to decide which controls to show, so the tenancy rules
    the API enforces are their only copy (a hand-kept list of roles in a script drifted).
    """
    u = principal.user
    return Me(
        name=u.name,
        role=u.role.value,
        municipalities=list(u.municipalities),
        all_municipalities=u.role is Role.ADMIN,
        permissions=Scope.of(u).granted(),
    )


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", responses=responses(401, 403, 422), tags=["auth"])
    r.add_api_route("/me", me, response_model=Me)
    return r
