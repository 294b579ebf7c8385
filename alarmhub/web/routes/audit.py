"""`/api/v1/audit`: the audit log, newest first, for admins.

What is written to it is decided where each change is made (`web.deps.Audit`);
this only reads it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from alarmhub.web.deps import Ctx, ReadAudit
from alarmhub.web.errors import responses
from alarmhub.web.models import AuditOut


async def audit(
    ctx: Ctx,
    scope: ReadAudit,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    """The audit log, newest first (admins only)."""
    del scope
    rows = await ctx.accounts.list_audit(limit)
    return [AuditOut.model_validate(x) for x in rows]


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", responses=responses(401, 403, 422), tags=["admin"])
    r.add_api_route("/audit", audit, response_model=list[AuditOut])
    return r
