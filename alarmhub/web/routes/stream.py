"""`/api/v1/alarms/stream`: the live stream of alarm changes (server-sent events).

How many live streams may be open, per user and in all (issue 13 item 3):

Every alarm change is put on every open stream's queue by `live.Broadcaster`,
on the event loop that also runs ingest, so the number of streams is work done
per alarm. Unbounded, one script (or one operator with a tab per screen, per
reload) could open thousands and slow the intake of alarms. A stream takes a
slot before its response starts and gives it back when the response ends,
however it ends: closed by the client, cut off for not reading, or the server
stopping. Beyond a limit the request gets 429 before any stream is opened.

The slots are plain counters touched only from the event loop (no await between
the check and the increment), so two requests cannot both take the last slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from alarmhub.core.tenancy import Scope
from alarmhub.web.auth import still_authenticated
from alarmhub.web.deps import Ctx, ReadAlarms
from alarmhub.web.errors import responses
from alarmhub.web.recheck import rechecked

STREAM_RETRY_MS = 3000


async def _stream_slot(ctx: Ctx, scope: ReadAlarms) -> AsyncIterator[Scope]:
    """A slot for the whole response: FastAPI runs the code after `yield` when it has ended.

    A `finally` in the stream's own generator would not do: a client that goes away
    before the generator first runs would never run it, and its slot would be lost.
    """
    slots = ctx.streams
    slots.take(scope.user)
    try:
        yield scope
    finally:
        slots.give_back(scope.user)


# The stream route's scope parameter: authorised to read alarms, and holding a slot.
StreamScope = Annotated[Scope, Depends(_stream_slot)]


async def stream(
    request: Request,
    ctx: Ctx,
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
    hub = ctx.hub
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


def router() -> APIRouter:
    # Included before `routes.alarms`: `/stream` must not be taken for an `{alarm_id}`.
    r = APIRouter(prefix="/api/v1/alarms", tags=["alarms"], responses=responses(401, 403, 422))
    r.add_api_route(
        "/stream",
        stream,
        response_class=EventSourceResponse,
        responses={
            200: {"description": "Server-sent events: `alarm` and `resync`"},
            **responses(429),
        },
    )
    return r
