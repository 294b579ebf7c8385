"""`/api/v1/alarms…`: the operators' queue, an alarm's detail, the live stream, actions.

Reads go through the scoped queries of `web.tenancy`; actions go through
`hub.act`, which decides under the hub's write lock, so two operators
acknowledging at once get one 200 and one 409 naming the holder.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterable
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from alarmhub.core.actions import Action, Conflict, ConflictCode
from alarmhub.core.tenancy import AlarmFilter, Permission, Scope
from alarmhub.core.views import alarm_json
from alarmhub.store.sqlite import tenancy
from alarmhub.store.sqlite.accounts import ts
from alarmhub.web.auth import requires, still_authenticated
from alarmhub.web.context import web
from alarmhub.web.errors import ApiError, not_found, responses
from alarmhub.web.models import (
    AlarmDetail,
    AlarmOut,
    AlarmPage,
    Municipality,
    NoteIn,
    OptionalNoteIn,
    ResolveIn,
)
from alarmhub.web.recheck import rechecked
from alarmhub.web.streams import StreamScope

ReadScope = Annotated[Scope, Depends(requires(Permission.READ_ALARMS))]
ActScope = Annotated[Scope, Depends(requires(Permission.ACT_ON_ALARMS))]
AlarmIdPath = Annotated[str, Path(min_length=1, max_length=64)]
STREAM_RETRY_MS = 3000


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


def router() -> APIRouter:  # noqa: C901 - FastAPI routes are nested functions
    r = APIRouter(prefix="/api/v1/alarms", tags=["alarms"], responses=responses(401, 403, 422))

    @r.get("", response_model=AlarmPage)
    async def list_alarms(
        request: Request,
        scope: ReadScope,
        state: Literal["open", "acknowledged", "resolved"] | None = None,
        municipality: Municipality | None = None,
        priority: Annotated[int | None, Query(ge=1, le=4)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> AlarmPage:
        """Alarms in the caller's municipalities: most urgent first, then oldest first."""
        ctx = web(request)
        seq = ctx.hub.live.seq  # read first: a change after this is on the stream
        after = decode_cursor(cursor) if cursor else None
        f = AlarmFilter(state, municipality, priority, limit + 1, after)
        alarms = await ctx.db(tenancy.list_alarms, scope, f)
        items = [AlarmOut.model_validate(alarm_json(a)) for a in alarms[:limit]]
        next_cursor = None
        if len(alarms) > limit:
            last = alarms[limit - 1]
            # The store's own time text: keyset comparison is exact, no rounding.
            next_cursor = encode_cursor(int(last.priority), ts(last.raised_at) or "", last.id)
        return AlarmPage(items=items, next_cursor=next_cursor, seq=seq)

    @r.get(
        "/stream",
        response_class=EventSourceResponse,
        responses={
            200: {"description": "Server-sent events: `alarm` and `resync`"},
            **responses(429),
        },
    )
    async def stream(
        request: Request,
        scope: StreamScope,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
        resume: Annotated[int | None, Query(alias="last_event_id", ge=0)] = None,
    ) -> AsyncIterable[ServerSentEvent]:
        """Every alarm created or changed in the caller's municipalities, as it happens.

        `id:` is the change's sequence number; reconnect with `Last-Event-ID`
        (browsers do this by themselves) to receive what was missed. After an
        `event: resync` the client must reload the list: the gap is too old.
        At most `max_streams_per_user` streams per user and `max_streams` in all
        are open at once; beyond either, 429 with Retry-After.
        The stream ends when the caller is locked out (checked every `stream_recheck_s`).
        """
        hub = web(request).hub
        live = hub.live
        last: int | None = resume
        if last_event_id is not None and last_event_id.strip().isdigit():
            last = int(last_event_id.strip())
        yield ServerSentEvent(comment="alarmhub live", retry=STREAM_RETRY_MS)
        peer = f"{request.client.host}:{request.client.port}" if request.client else ""
        # Re-checked while open: a locked-out caller's stream ends (issue 13 #6).
        changes = rechecked(
            live.listen(last, peer),
            lambda: still_authenticated(request),
            hub.settings.stream_recheck_s,
            hub.clock.monotonic,
        )
        async for change in changes:
            if change.kind == "resync":
                yield ServerSentEvent(event="resync", id=str(change.seq), data={})
            elif scope.allows(change.data.get("municipality")):
                yield ServerSentEvent(event=change.kind, id=str(change.seq), data=change.data)

    @r.get("/{alarm_id}", response_model=AlarmDetail, responses=responses(404))
    async def get_alarm(request: Request, scope: ReadScope, alarm_id: AlarmIdPath) -> AlarmDetail:
        """One alarm with its timeline, its device and the device's recent messages."""
        ctx = web(request)
        alarm = await ctx.db(tenancy.get_alarm, scope, alarm_id)
        if alarm is None:
            raise not_found("alarm")
        entries = await ctx.db(tenancy.timeline, scope, alarm_id)
        device = await ctx.db(tenancy.get_device, scope, alarm.device_id)
        events = await ctx.db(tenancy.recent_events, scope, alarm.device_id, alarm.municipality)
        # Health data: who looked at which alarm is logged, not only who changed it.
        await ctx.audit(
            request,
            scope.user,
            "alarm.viewed",
            alarm_id=alarm.id,
            device_id=alarm.device_id,
            municipality=alarm.municipality,
        )
        return AlarmDetail.model_validate(
            {**alarm_json(alarm), "timeline": entries, "device": device, "recent_events": events}
        )

    for action in Action:
        _action_route(r, action)
    return r


def _action_route(r: APIRouter, action: Action) -> None:  # noqa: C901 - three route shapes
    async def run(
        request: Request, scope: Scope, alarm_id: str, outcome: str | None, note: str | None
    ) -> AlarmOut:
        ctx = web(request)
        alarm = await ctx.db(tenancy.get_alarm, scope, alarm_id)
        if alarm is None:
            raise not_found("alarm")
        detail: dict[str, Any] = {"with_note": note is not None}
        if outcome is not None:
            detail["outcome"] = outcome
        entry = ctx.entry(
            request,
            scope.user,
            f"alarm.{action.value}",
            alarm_id=alarm.id,
            device_id=alarm.device_id,
            municipality=alarm.municipality,
            detail=detail,
        )
        # The audit row commits in the action's own transaction, only if it applies.
        result = await ctx.hub.act(
            alarm_id, action, scope.user, outcome=outcome, note=note, audit=[entry]
        )
        if result is None:
            raise not_found("alarm")
        if isinstance(result, Conflict):
            if result.code is ConflictCode.INVALID:
                raise ApiError(422, "invalid", result.message)
            raise ApiError(409, result.code.value, result.message, holder=result.holder)
        return AlarmOut.model_validate(alarm_json(result))

    path = f"/{{alarm_id}}/{action.value}"
    common: dict[str, Any] = {
        "response_model": AlarmOut,
        "responses": responses(400, 404, 409, 413),
        "name": f"alarm_{action.name.lower()}",
    }
    if action is Action.RESOLVE:

        @r.post(path, **common)
        async def resolve(
            request: Request, scope: ActScope, alarm_id: AlarmIdPath, body: ResolveIn
        ) -> AlarmOut:
            """Resolve with an outcome (e.g. `false_alarm`, `helped`) and an optional note."""
            return await run(request, scope, alarm_id, body.outcome, body.note)

    elif action is Action.NOTE:

        @r.post(path, **common)
        async def note(
            request: Request, scope: ActScope, alarm_id: AlarmIdPath, body: NoteIn
        ) -> AlarmOut:
            """Add a note to the alarm's timeline."""
            return await run(request, scope, alarm_id, None, body.note)

    else:

        @r.post(path, **common, summary=f"{action.value.capitalize()} an alarm")
        async def act(
            request: Request,
            scope: ActScope,
            alarm_id: AlarmIdPath,
            body: OptionalNoteIn | None = None,
        ) -> AlarmOut:
            return await run(request, scope, alarm_id, None, body.note if body else None)
