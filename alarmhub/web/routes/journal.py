"""`/api/v1/alarms/{alarm_id}/journal/release|cancel`: a held journal note (issue 17).

A note is held, not sent, when the national identity number behind its resident's
pseudonym was replaced or removed after the alarm was raised (core/journal/identity.py):
the pseudonym may name another person now. An administrator of the alarm's
municipality (or an admin) decides whose note it is: `release` names the number it
goes with (checked as the register's are, sealed on the export row, never echoed),
`cancel` ends it unsent. Another municipality's alarm is 404, as everywhere; a note
that is not held is 409 `journal_not_held`. Each change writes its audit row
(`journal.released`, `journal.cancelled`; never the number) in its own transaction.
Both answer the alarm's journal state as its detail shows it.
"""

from __future__ import annotations

from fastapi import APIRouter

from alarmhub.core.national_id import Invalid, parse_national_id
from alarmhub.store.sealing import KeyMissingError
from alarmhub.web.deps import AlarmIdPath, Audit, Ctx, ManageResidents, alarm_or_404
from alarmhub.web.errors import ApiError, responses
from alarmhub.web.models import JournalCancelIn, JournalOut, JournalReleaseIn
from alarmhub.web.routes.alarms import journal_of


def _not_held() -> ApiError:
    return ApiError(
        409,
        "journal_not_held",
        "the alarm's journal note is not held: only a held note is released or cancelled",
    )


async def release_note(
    ctx: Ctx, scope: ManageResidents, alarm_id: AlarmIdPath, body: JournalReleaseIn, audit: Audit
) -> JournalOut:
    """Send a held note with the number named, whatever the register holds now."""
    alarm = await alarm_or_404(ctx, scope, alarm_id)
    nid = parse_national_id(body.national_id)
    if isinstance(nid, Invalid):
        message = f"national_id: {nid.reason}"
        raise ApiError(
            422, "validation", message, fields=[{"field": "body.national_id", "message": message}]
        )
    entry = audit.entry(
        "journal.released",
        alarm_id=alarm.id,
        municipality=alarm.municipality,
        detail={"resident": alarm.resident, "kind": nid.kind.value, "synthetic": nid.synthetic},
    )
    try:
        done = await ctx.hub.residents.release_note(alarm.id, alarm.municipality, nid, [entry])
    except KeyMissingError as exc:
        raise ApiError(409, "resident_key_missing", str(exc)) from None
    if not done:
        raise _not_held()
    return JournalOut.model_validate(await journal_of(ctx, alarm, has_number=True))


async def cancel_note(
    ctx: Ctx,
    scope: ManageResidents,
    alarm_id: AlarmIdPath,
    audit: Audit,
    body: JournalCancelIn | None = None,
) -> JournalOut:
    """End a held note unsent; `reason` (default "cancelled by <user>") is shown."""
    alarm = await alarm_or_404(ctx, scope, alarm_id)
    reason = (body.reason if body is not None else None) or f"cancelled by {scope.user}"
    entry = audit.entry(
        "journal.cancelled",
        alarm_id=alarm.id,
        municipality=alarm.municipality,
        detail={"resident": alarm.resident, "reason": reason},
    )
    if not await ctx.hub.residents.cancel_note(alarm.id, alarm.municipality, reason, [entry]):
        raise _not_held()
    return JournalOut.model_validate(await journal_of(ctx, alarm, has_number=True))


def router() -> APIRouter:
    r = APIRouter(
        prefix="/api/v1/alarms/{alarm_id}/journal",
        tags=["journal"],
        responses=responses(400, 401, 403, 404, 409, 413, 422),
    )
    r.add_api_route("/release", release_note, methods=["POST"], response_model=JournalOut)
    r.add_api_route("/cancel", cancel_note, methods=["POST"], response_model=JournalOut)
    return r
