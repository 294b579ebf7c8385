"""`/api/v1/alarms/stream`: the live stream of alarm changes (server-sent events).

How many live streams may be open, per user, per municipality and in all (issue 13
item 3):

Every alarm change is put on every open stream's queue by `live.Broadcaster`,
on the event loop that also runs ingest, so the number of streams is work done
per alarm. Unbounded, one script (or one operator with a tab per screen, per
reload) could open thousands and slow the intake of alarms. A stream takes a
slot before its response starts and gives it back when the response ends,
however it ends: closed by the client, cut off for not reading, or the server
stopping. Beyond a limit the request gets 429 before any stream is opened.

The slots are plain counters touched only from the event loop (no await between
the check and the increment), so two requests cannot both take the last slot.

The body is written by `web.sse`, not by FastAPI's SSE support (issue 18: that
cost ~490 us of the event loop per event). The route is still documented as
FastAPI documents a server-sent-events route (`_documented`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import StreamingResponse

from alarmhub.web.auth import still_authenticated
from alarmhub.web.context import StreamSlot
from alarmhub.web.deps import Ctx, ReadAlarms
from alarmhub.web.errors import responses
from alarmhub.web.sse import SSE_EVENT_SCHEMA, Recheck, event_stream

STREAM_RETRY_MS = 3000


# What FastAPI's SSE responses carry: no caching, and no buffering in an nginx in front.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
EVENT_STREAM = "text/event-stream"


class EventStreamResponse(StreamingResponse):
    """`text/event-stream`, streamed as given.

    Not FastAPI's `EventSourceResponse`: with that class FastAPI takes the endpoint
    for a generator of events and streams them through its own machinery.
    """

    media_type = "text/event-stream"


# What a page calls its stream (web/static/js/live.js): random, per page.
PAGE_ID = r"^[A-Za-z0-9_-]{8,64}$"


async def _stream_slot(
    ctx: Ctx,
    scope: ReadAlarms,
    page: Annotated[str | None, Query(alias="stream_id", pattern=PAGE_ID)] = None,
) -> AsyncIterator[StreamSlot]:
    """A slot for the whole response: FastAPI runs the code after `yield` when it has ended.

    A `finally` in the stream's own generator would not do: a client that goes away
    before the generator first runs would never run it, and its slot would be lost.
    `stream_id`: the page's name for its stream; a new one of the same user and page
    ends the old one and takes its slot (StreamSlots).
    """
    slots = ctx.streams
    slot = slots.take(scope, page)
    try:
        yield slot
    finally:
        slots.give_back(slot)


# The stream route's slot parameter: authorised to read alarms, and holding a slot.
StreamScope = Annotated[StreamSlot, Depends(_stream_slot)]


async def stream(
    request: Request,
    ctx: Ctx,
    slot: StreamScope,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    resume: Annotated[int | None, Query(alias="last_event_id", ge=0)] = None,
) -> EventStreamResponse:
    """Every alarm created or changed in the caller's municipalities, as it happens.

    `id:` is the change's sequence number; reconnect with `Last-Event-ID`
    (browsers do this by themselves) to receive what was missed. After an
    `event: resync` the client must reload the list: the gap is too old.
    `event: ping` (`{"every_s": N}`) comes at the start and after every N seconds
    with nothing else sent: a client hearing nothing for longer has a dead stream.
    At most `max_streams_per_user` streams per user, `max_streams_per_municipality`
    per municipality the caller may see and `max_streams` in all are open at once;
    beyond any of them, 429 with Retry-After.
    The stream ends when the caller is locked out (checked every `stream_recheck_s`).
    """
    hub = ctx.hub
    live = hub.live
    last: int | None = resume
    if last_event_id is not None and last_event_id.strip().isdigit():
        last = int(last_event_id.strip())
    peer = f"{request.client.host}:{request.client.port}" if request.client else ""
    # Re-checked while open: a locked-out caller's stream ends (issue 13 #6).
    recheck = Recheck(
        lambda: still_authenticated(request), hub.settings.stream_recheck_s, hub.clock.monotonic
    )
    body = event_stream(
        live,
        last,
        peer,
        slot.scope.allows,
        recheck,
        STREAM_RETRY_MS,
        hub.settings.stream_ping_s,
        slot,
    )
    response = EventStreamResponse(body)
    response.headers.update(SSE_HEADERS)  # after Content-Type, in FastAPI's order
    return response


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The responses as FastAPI documented them when it streamed this route itself.

    The route's response class has no media type of its own (so FastAPI adds no
    `schema` to the 200), and each response names `text/event-stream` as before:
    the events by their `itemSchema`, the errors by the error body.
    """
    errors = {
        status: {
            "description": r["description"],
            "content": {EVENT_STREAM: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for status, r in responses(*statuses).items()
    }
    return {
        200: {
            "description": "Server-sent events: `alarm`, `resync` and `ping`",
            "content": {EVENT_STREAM: {"itemSchema": SSE_EVENT_SCHEMA}},
        },
        **errors,
    }


def router() -> APIRouter:
    # Included before `routes.alarms`: `/stream` must not be taken for an `{alarm_id}`.
    r = APIRouter(prefix="/api/v1/alarms", tags=["alarms"])
    r.add_api_route(
        "/stream",
        stream,
        response_class=StreamingResponse,
        responses=_documented(401, 403, 422, 429),
    )
    return r
