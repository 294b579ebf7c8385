"""The live stream's bytes (web/sse.py) are what FastAPI's own SSE support sent (issue 18).

FastAPI's encoder is the reference: a stream it writes from `ServerSentEvent`s,
as the route did before, must be byte for byte what `event_stream` writes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import fastapi.sse
import httpx
from fastapi import APIRouter, FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent

from alarmhub.daemon.fanout import Broadcaster
from alarmhub.web import sse
from alarmhub.web.errors import responses
from alarmhub.web.routes import stream as stream_route
from alarmhub.web.sse import Recheck, event_bytes, event_stream

# An alarm as views.alarm_json makes it: text with non-ASCII letters, floats, None.
ALARM: dict[str, Any] = {
    "id": "a-1",
    "device_id": "osl-pend-1",
    "municipality": "0301",
    "kind": "button",
    "priority": 1,
    "state": "acknowledged",
    "raised_at": "2026-12-04T23:40:00.123Z",
    "acknowledged_by": "Ærlig Østby Åsen",
    "resident": "r-ø",
    "outcome": None,
    "time_to_acknowledge_s": 12.345,
    "time_to_on_site_s": None,
}


def parse(raw: bytes) -> list[dict[str, str]]:
    """Events as an SSE parser sees them (field -> value), comments left out."""
    events: list[dict[str, str]] = []
    event: dict[str, str] = {}
    for line in raw.decode().split("\n"):
        if line == "":
            if event:
                events.append(event)
            event = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            event[key] = value
    return events


def never_locked_out() -> Recheck:
    async def yes() -> bool:
        return True

    return Recheck(yes, 3600.0, lambda: 0.0)


async def fastapi_bytes(items: list[ServerSentEvent]) -> bytes:
    """`items` as FastAPI's SSE support writes them, over ASGI."""
    app = FastAPI()

    async def gen() -> AsyncIterator[ServerSentEvent]:
        for item in items:
            yield item

    app.add_api_route("/s", gen, response_class=EventSourceResponse)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/s")
    return r.content


async def test_the_bytes_are_fastapis_for_the_opening_an_alarm_and_a_resync() -> None:
    live = Broadcaster(ring_size=1)
    live.publish("alarm", ALARM)
    live.publish("alarm", ALARM)  # the ring holds only this one: resuming from 0 is a resync
    change = live.publish("alarm", ALARM)
    body = event_stream(live, 0, "", lambda _m: True, never_locked_out(), 3000)
    ours = await anext(body) + await anext(body)  # the opening; the resync
    live.publish("alarm", ALARM)
    ours += await anext(body)
    await body.aclose()  # type: ignore[attr-defined]  # event_stream is an async generator
    theirs = await fastapi_bytes(
        [
            ServerSentEvent(comment="alarmhub live", retry=3000),
            ServerSentEvent(event="ping", data={"every_s": 15.0}),
            ServerSentEvent(event="resync", id=str(change.seq), data={}),
            ServerSentEvent(event="alarm", id=str(change.seq + 1), data=ALARM),
        ]
    )
    assert ours == theirs
    assert b"\\u00c6rlig" in ours  # the ASCII JSON FastAPI wrote, not raw UTF-8


async def test_a_backlog_goes_out_in_one_write_that_parses_into_the_same_events_in_order() -> None:
    live = Broadcaster()
    changes = [live.publish("alarm", {**ALARM, "id": f"a-{i}"}) for i in range(5)]
    body = event_stream(live, 0, "", lambda _m: True, never_locked_out(), 3000)
    await anext(body)
    chunk = await anext(body)
    await body.aclose()  # type: ignore[attr-defined]
    assert chunk == b"".join(event_bytes(c) for c in changes)
    events = parse(chunk)
    assert [e["id"] for e in events] == [str(c.seq) for c in changes]
    assert [json.loads(e["data"])["id"] for e in events] == [f"a-{i}" for i in range(5)]


async def test_each_stream_sees_only_its_scope_while_sharing_one_encoding() -> None:
    live = Broadcaster()
    oslo = event_stream(live, None, "o", lambda m: m == "0301", never_locked_out(), 3000)
    everyone = event_stream(live, None, "a", lambda _m: True, never_locked_out(), 3000)
    await anext(oslo)
    await anext(everyone)
    oslo_next, all_next = anext(oslo), anext(everyone)
    # Registered while waiting for their first changes:
    first_oslo = asyncio.ensure_future(oslo_next)
    first_all = asyncio.ensure_future(all_next)
    await asyncio.sleep(0)
    bergen = live.publish("alarm", {**ALARM, "municipality": "4601"})
    mine = live.publish("alarm", ALARM)
    got_oslo, got_all = await first_oslo, await first_all
    assert [e["id"] for e in parse(got_oslo)] == [str(mine.seq)]  # Bergen's is not shown
    assert [e["id"] for e in parse(got_all)] == [str(bergen.seq), str(mine.seq)]
    assert mine.wire is not None
    assert mine.wire in got_oslo
    assert got_all.endswith(mine.wire)  # encoded once, the same bytes on both streams
    await oslo.aclose()  # type: ignore[attr-defined]
    await everyone.aclose()  # type: ignore[attr-defined]
    assert live.listeners == 0


async def test_an_idle_stream_pings_with_an_event_a_page_can_see() -> None:
    """FastAPI keeps a stream alive with a comment, which EventSource never shows a page:
    a dead stream looked like a quiet one. Ours is an event, at the start and after every
    `ping_s` of quiet, in FastAPI's bytes for that event, with no `id:` (a reconnect's
    Last-Event-ID still names the last change)."""
    assert sse.PING_INTERVAL_S == fastapi.sse._PING_INTERVAL  # the same default cadence
    live = Broadcaster()
    body = event_stream(live, None, "", lambda _m: True, never_locked_out(), 3000, 0.01)
    first = await anext(body)
    theirs = await fastapi_bytes([ServerSentEvent(event="ping", data={"every_s": 0.01})])
    assert first.endswith(theirs)
    assert await anext(body) == theirs
    assert await anext(body) == theirs
    assert parse(theirs) == [{"event": "ping", "data": '{"every_s": 0.01}'}]
    await body.aclose()  # type: ignore[attr-defined]


def test_the_route_is_documented_as_fastapi_documents_a_stream_of_events() -> None:
    """The OpenAPI operation is what FastAPI wrote when it streamed the route itself."""

    async def as_before(*_a: Any, **_k: Any) -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(comment="")

    params = inspect.signature(stream_route.stream, eval_str=True)
    as_before.__signature__ = params.replace(return_annotation=inspect.Signature.empty)  # type: ignore[attr-defined]
    as_before.__doc__ = stream_route.stream.__doc__
    as_before.__name__ = "stream"
    before = APIRouter(prefix="/api/v1/alarms", tags=["alarms"], responses=responses(401, 403, 422))
    before.add_api_route(
        "/stream",
        as_before,
        response_class=EventSourceResponse,
        responses={
            200: {"description": "Server-sent events: `alarm`, `resync` and `ping`"},
            **responses(429),
        },
    )
    docs = []
    for router in (before, stream_route.router()):
        app = FastAPI()
        app.include_router(router)
        docs.append(app.openapi()["paths"])
    assert docs[0] == docs[1]
    ok = docs[1]["/api/v1/alarms/stream"]["get"]["responses"]["200"]["content"]
    assert ok == {"text/event-stream": {"itemSchema": sse.SSE_EVENT_SCHEMA}}
