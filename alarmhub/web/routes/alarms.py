"""`/api/v1/alarms…`: the operators' queue, an alarm's detail, and the actions on it.

The live stream of the same path prefix is `routes.stream`.
Reads go through the scoped queries of `store.ports.ScopedReads`; actions go through
`hub.act`, which decides under the hub's write lock, so two operators
acknowledging at once get one 200 and one 409 naming the holder.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query

from alarmhub.core.actions import Action, Conflict, ConflictCode
from alarmhub.core.journal_status import JournalStatus, journal_status
from alarmhub.core.model import Alarm, ScaipVoice
from alarmhub.core.registry import Municipality
from alarmhub.core.resolution import Choices, Resolution, Unknown, choose
from alarmhub.core.scaip import SCAIP_FORMAT
from alarmhub.core.scaip_record import operator_view
from alarmhub.core.tenancy import AlarmFilter, Scope
from alarmhub.core.views import alarm_json
from alarmhub.store.accounts import ts
from alarmhub.web.deps import (
    ActOnAlarms,
    AlarmIdPath,
    AlarmInScope,
    Audit,
    Ctx,
    ReadAlarms,
    alarm_or_404,
)
from alarmhub.web.errors import ApiError, not_found, responses
from alarmhub.web.models import (
    AcknowledgeIn,
    AlarmDetail,
    AlarmOut,
    AlarmPage,
    ChoicesOut,
    NoteIn,
    OptionalNoteIn,
    ResolutionChoicesOut,
    ResolveIn,
)


def encode_cursor(priority: int, raised_at: str, alarm_id: str) -> str:
    raw = orjson.dumps([priority, raised_at, alarm_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, str]:
    bad = ApiError(
        422,
        "validation",
        "query.cursor: not a cursor from this API",
        fields=[{"field": "query.cursor", "message": "not a cursor from this API"}],
    )
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    match value:
        case [int(priority), str(raised_at), str(alarm_id)]:
            return priority, raised_at, alarm_id
    raise bad


async def list_alarms(
    ctx: Ctx,
    scope: ReadAlarms,
    state: Literal["open", "acknowledged", "resolved"] | None = None,
    municipality: Municipality | None = None,
    priority: Annotated[int | None, Query(ge=1, le=4)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AlarmPage:
    """Alarms in the caller's municipalities: most urgent first, then oldest first.

    `total` counts all the filters select, so a client that stops reading before the end
    (the operator page reads at most 25,000 of each state) can say how many it did not
    show. Counted in its own read, beside the page's: the two may differ by the changes
    between them, which a client following the stream from `seq` sees anyway.
    """
    seq = ctx.hub.live.seq  # read first: a change after this is on the stream
    after = decode_cursor(cursor) if cursor else None
    f = AlarmFilter(state, municipality, priority, limit + 1, after)
    total = await ctx.reads.count_alarms(scope, f)
    alarms = await ctx.reads.list_alarms(scope, f)
    items = [AlarmOut.model_validate(alarm_json(a)) for a in alarms[:limit]]
    next_cursor = None
    if len(alarms) > limit:
        last = alarms[limit - 1]
        # The store's own time text: keyset comparison is exact, no rounding.
        next_cursor = encode_cursor(int(last.priority), ts(last.raised_at) or "", last.id)
    return AlarmPage(items=items, next_cursor=next_cursor, total=total, seq=seq)


async def get_alarm(ctx: Ctx, scope: ReadAlarms, alarm: AlarmInScope, audit: Audit) -> AlarmDetail:
    """One alarm with its timeline, its device and the device's recent messages."""
    entries = await ctx.reads.timeline(scope, alarm.id)
    device = await ctx.reads.get_device(scope, alarm.device_id)
    events = await ctx.reads.recent_events(scope, alarm.device_id, alarm.municipality)
    # Health data: who looked at which alarm is logged, not only who changed it.
    await audit.record(
        "alarm.viewed",
        alarm_id=alarm.id,
        device_id=alarm.device_id,
        municipality=alarm.municipality,
    )
    masked = await _masked_national_id(ctx, alarm, audit)
    return AlarmDetail.model_validate(
        {
            **alarm_json(alarm),
            "timeline": entries,
            "device": device,
            "recent_events": events,
            "national_id_masked": masked,
            "journal": await journal_of(ctx, alarm, has_number=masked is not None),
            "scaip": _scaip(ctx, alarm, device, events, entries),
        }
    )


async def journal_of(ctx: Ctx, alarm: Alarm, *, has_number: bool) -> dict[str, str | int | None]:
    """The alarm's journal export as its row says (issue 17), else why there is none."""
    found = await ctx.hub.journal_outbox.journal_exports([alarm.id])
    if not found:
        return journal_status(alarm, has_number).as_json()
    e = found[0]
    return JournalStatus(
        e.state, e.reason, e.created_at, e.sent_at, e.finished_at, e.attempts, e.last_error
    ).as_json()


def _scaip(
    ctx: Ctx,
    alarm: Alarm,
    device: dict[str, Any] | None,
    events: list[dict[str, Any]],
    entries: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """What the operator is shown of a SCAIP alarm, and the voice taking it sends by default."""
    seen = operator_view(alarm.id, events, entries)
    if seen is None and (device is None or device.get("profile") != SCAIP_FORMAT):
        return None
    policy = ctx.hub.rules.scaip_policy(alarm.municipality)
    # The device's own voice parameters win over the municipality's, as in its answers.
    own = ((device or {}).get("settings") or {}).get("scaip") or {}
    voice = {k: own[k] for k in ("mre", "cre", "tnu") if own.get(k) is not None}
    return {
        **(seen or {"crd": [], "answers": []}),
        "answer_policy": policy.answer.value,
        "configured_voice": voice or asdict(policy.voice),
    }


async def _masked_national_id(ctx: Ctx, alarm: Alarm, audit: Audit) -> str | None:
    """The resident's number, masked; its read audited in the read's own transaction."""
    if alarm.resident is None:
        return None
    entry = audit.entry(
        "resident.national_id_viewed",
        alarm_id=alarm.id,
        municipality=alarm.municipality,
        detail={"resident": alarm.resident, "shown": "masked"},
    )
    return await ctx.hub.residents.masked(alarm.municipality, alarm.resident, [entry])


async def _act(
    ctx: Ctx,
    audit: Audit,
    scope: Scope,
    action: Action,
    alarm: Alarm | str,
    outcome: str | None = None,
    note: str | None = None,
    resolution: Resolution | None = None,
    voice: ScaipVoice | None = None,
) -> AlarmOut:
    """One action on one alarm (or its id), for the route shapes below."""
    # Looked up after the body is valid: see web.deps on why not as a dependency.
    if isinstance(alarm, str):
        alarm = await alarm_or_404(ctx, scope, alarm)
    alarm_id = alarm.id
    detail: dict[str, Any] = {"with_note": note is not None}
    if outcome is not None:
        detail["outcome"] = outcome
    if voice is not None:
        detail["voice"] = {k: v for k, v in asdict(voice).items() if v is not None}
    if resolution is not None:
        detail.update({k: v for k, v in resolution.detail().items() if not k.endswith("_text")})
    entry = audit.entry(
        f"alarm.{action.value}",
        alarm_id=alarm.id,
        device_id=alarm.device_id,
        municipality=alarm.municipality,
        detail=detail,
    )
    # The audit row commits in the action's own transaction, only if it applies.
    result = await ctx.hub.act(
        alarm_id,
        action,
        scope.user,
        outcome=outcome,
        note=note,
        resolution=resolution,
        voice=voice,
        audit=[entry],
    )
    if result is None:
        raise not_found("alarm")
    if isinstance(result, Conflict):
        if result.code is ConflictCode.INVALID:
            raise ApiError(422, "invalid", result.message)
        raise ApiError(409, result.code.value, result.message, holder=result.holder)
    return AlarmOut.model_validate(alarm_json(result))


async def resolve(
    ctx: Ctx, scope: ActOnAlarms, alarm_id: AlarmIdPath, body: ResolveIn, audit: Audit
) -> AlarmOut:
    """Resolve with an outcome (e.g. `false_alarm`, `helped`) and an optional note.

    And the cause (årsak) and the action taken (tiltak), each a code of the alarm
    kind's list (`GET /api/v1/resolution-choices`) with free text: a code not in the
    list is refused with 422, `allowed` naming the codes that are.
    """
    alarm = await alarm_or_404(ctx, scope, alarm_id)
    choices = ctx.hub.rules.resolutions.for_kind(alarm.kind)
    picked = choose(choices, body.cause, body.action_taken, body.cause_text, body.action_text)
    if isinstance(picked, Unknown):
        raise ApiError(
            422,
            "validation",
            picked.message,
            fields=[{"field": f"body.{picked.field}", "message": picked.message}],
            allowed=list(picked.allowed),
        )
    return await _act(ctx, audit, scope, Action.RESOLVE, alarm, body.outcome, body.note, picked)


def _choices_out(c: Choices) -> ChoicesOut:
    return ChoicesOut.model_validate(
        {
            "causes": [{"code": x.code, "text": x.text} for x in c.causes],
            "actions": [{"code": x.code, "text": x.text} for x in c.actions],
        }
    )


async def resolution_choices(ctx: Ctx, scope: ReadAlarms) -> ResolutionChoicesOut:
    """The causes and actions an operator picks from on resolving, per alarm kind."""
    del scope  # the rules file's lists: the same for every caller who may read alarms
    r = ctx.hub.rules.resolutions
    return ResolutionChoicesOut(
        default=_choices_out(r.default), kinds={k: _choices_out(c) for k, c in r.kinds.items()}
    )


async def note(
    ctx: Ctx, scope: ActOnAlarms, alarm_id: AlarmIdPath, body: NoteIn, audit: Audit
) -> AlarmOut:
    """Add a note to the alarm's timeline."""
    return await _act(ctx, audit, scope, Action.NOTE, alarm_id, note=body.note)


async def acknowledge(
    ctx: Ctx,
    scope: ActOnAlarms,
    alarm_id: AlarmIdPath,
    audit: Audit,
    body: AcknowledgeIn | None = None,
) -> AlarmOut:
    """Acknowledge (take) an alarm, with an optional note.

    For a SCAIP device under the `hold_until_taken` policy, `voice` chooses what its
    answer `snu=0` tells it: `{"voice": {"mre": 1, "cre": 62, "tnu": "+4712345678"}}`
    (docs/scaip.md); its next resend is answered with exactly these.
    """
    note, voice = (body.note, body.voice.voice() if body.voice else None) if body else (None, None)
    return await _act(ctx, audit, scope, Action.ACKNOWLEDGE, alarm_id, note=note, voice=voice)


def _plain_action(action: Action) -> Callable[..., Awaitable[AlarmOut]]:
    """The route of an action that takes an optional note and nothing else."""

    async def act(
        ctx: Ctx,
        scope: ActOnAlarms,
        alarm_id: AlarmIdPath,
        audit: Audit,
        body: OptionalNoteIn | None = None,
    ) -> AlarmOut:
        return await _act(ctx, audit, scope, action, alarm_id, note=body.note if body else None)

    return act


def choices_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["alarms"], responses=responses(401, 403))
    r.add_api_route("/resolution-choices", resolution_choices, response_model=ResolutionChoicesOut)
    return r


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1/alarms", tags=["alarms"], responses=responses(401, 403, 422))
    r.add_api_route("", list_alarms, response_model=AlarmPage)
    r.add_api_route("/{alarm_id}", get_alarm, response_model=AlarmDetail, responses=responses(404))
    for action in Action:
        extra: dict[str, Any] = {}
        endpoint: Callable[..., Awaitable[AlarmOut]] = resolve
        if action is Action.NOTE:
            endpoint = note
        elif action is Action.ACKNOWLEDGE:
            endpoint = acknowledge
            extra["summary"] = "Acknowledge an alarm"
        elif action is not Action.RESOLVE:
            endpoint = _plain_action(action)
            extra["summary"] = f"{action.value.capitalize()} an alarm"
        r.add_api_route(
            f"/{{alarm_id}}/{action.value}",
            endpoint,
            methods=["POST"],
            response_model=AlarmOut,
            responses=responses(400, 404, 409, 413),
            name=f"alarm_{action.name.lower()}",
            **extra,
        )
    return r
