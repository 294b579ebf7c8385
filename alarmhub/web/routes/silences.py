"""`/api/v1/silences…`: silence one device, or every device of a municipality, for a while.

A silenced alarm is still stored and shown as suppressed (never dropped); a
silence is in force at once, and ending it releases its alarms in the same
transaction. Who set and ended each silence stays on record.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from fastapi.responses import Response

from alarmhub.core.suppress import Silence, silence_end
from alarmhub.core.tenancy import Scope
from alarmhub.store.accounts import ts
from alarmhub.web.deps import Audit, Ctx, ManagedSilence, ManageSilences, ReadSilences
from alarmhub.web.errors import ApiError, forbidden, responses
from alarmhub.web.models import SilenceIn, SilenceOut


def _silence_out(s: Silence) -> SilenceOut:
    return SilenceOut(
        id=s.id,
        municipality=s.municipality,
        device_id=s.device_id,
        starts_at=ts(s.starts_at) or "",
        ends_at=ts(s.ends_at) or "",
        reason=s.reason,
        created_by=s.created_by,
        created_at=ts(s.created_at) or "",
        include_priority_1=s.include_priority_1,
    )


async def list_silences(
    ctx: Ctx, scope: ReadSilences, include_ended: bool = False
) -> list[SilenceOut]:
    """Silences in the caller's municipalities, newest start first."""
    rows = await ctx.reads.list_silences(scope, ctx.hub.clock.now(), include_ended)
    return [_silence_out(s) for s in rows]


def _field_error(field: str, message: str) -> ApiError:
    return ApiError(
        422, "validation", f"{field}: {message}", fields=[{"field": field, "message": message}]
    )


async def _check_target(ctx: Ctx, scope: Scope, body: SilenceIn) -> None:
    """403 outside the caller's municipalities; 422 for a device not in the municipality."""
    if not scope.allows(body.municipality):
        raise forbidden("you may not silence devices in that municipality")
    if body.device_id is not None:
        device = await ctx.reads.get_device(scope, body.device_id)
        if device is None or device["municipality"] != body.municipality:
            raise _field_error("body.device_id", "no such device in that municipality")


async def create_silence(
    ctx: Ctx, scope: ManageSilences, body: SilenceIn, audit: Audit
) -> SilenceOut:
    """Silence one device, or (device_id null) every device of a municipality."""
    await _check_target(ctx, scope, body)
    now = ctx.hub.clock.now()
    limit = ctx.hub.rules.municipality_silence_max
    ends = silence_end(body.device_id, body.starts_at, body.ends_at, limit)
    if isinstance(ends, str):
        raise _field_error("body.ends_at", ends)
    silence = Silence(
        id="sil_" + secrets.token_hex(8),
        municipality=body.municipality,
        device_id=body.device_id,
        starts_at=body.starts_at,
        ends_at=ends,
        reason=body.reason,
        created_by=scope.user,
        created_at=now,
        include_priority_1=body.include_priority_1,
    )
    entry = audit.entry(
        "silence.created",
        device_id=body.device_id,
        municipality=body.municipality,
        detail={
            "silence_id": silence.id,
            "municipality_wide": silence.municipality_wide,
            "include_priority_1": silence.include_priority_1,
            "starts_at": ts(silence.starts_at),
            "ends_at": ts(silence.ends_at),
        },
    )
    await ctx.accounts.insert_silence(silence, [entry])
    # In force at once, not at the next registry refresh.
    await ctx.hub.suppression.reload()
    return _silence_out(silence)


async def delete_silence(
    ctx: Ctx, scope: ManageSilences, found: ManagedSilence, audit: Audit
) -> Response:
    """End a silence now; who set and ended it stays on record."""
    # Ended and its alarms released in one transaction (issue 12 item 2).
    entry = audit.entry(
        "silence.ended",
        device_id=found.device_id,
        municipality=found.municipality,
        detail={"silence_id": found.id},
    )
    await ctx.hub.suppression.end_silence(found.id, scope.user, audit=[entry])
    return Response(status_code=204)


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", responses=responses(401, 403, 422), tags=["silences"])
    r.add_api_route("/silences", list_silences, response_model=list[SilenceOut])
    r.add_api_route(
        "/silences",
        create_silence,
        methods=["POST"],
        response_model=SilenceOut,
        status_code=201,
        responses=responses(400, 413),
    )
    r.add_api_route(
        "/silences/{silence_id}",
        delete_silence,
        methods=["DELETE"],
        status_code=204,
        response_class=Response,
        responses={204: {"description": "Ended; the record stays"}, **responses(404)},
    )
    return r
