"""The live stream's bytes: server-sent events written straight from the fan-out (issue 18).

FastAPI's own SSE support did, per event and per stream: a pydantic model,
`jsonable_encoder` and `json.dumps` of the alarm, a producer task and two memory
streams, a cancel scope for the keep-alive and a checkpoint — about 490 us of the
event loop per event with one stream open, on the loop that also runs ingest
and its acks. Here a change is encoded once (`LiveChange.wire`) and every stream sends
the same bytes; what a stream finds queued when it wakes is sent as one write;
and the keep-alive is the timeout of the one wait for the next changes.

What clients see is what FastAPI's encoder writes for the same events
(tests/web/test_sse_wire.py holds it to it): the opening comment with `retry:`,
each event as `event:`, `data:` (the JSON on one line, as `json.dumps` writes
it), `id:`. Several events in one write are the same bytes as the same events
written one by one.

The keep-alive is an event, `event: ping` with `{"every_s": N}`, at the start and
after every `ping_s` seconds with nothing sent, where FastAPI sends a comment.
A browser's EventSource never shows comments to the page, so with one a page
could not tell a quiet stream from a dead one: a connection whose peer vanished
(a NAT entry dropped, an instance's machine gone, a proxy that lost it) stays
open for the browser, and the page said "Live" while nothing arrived. Hearing
no event for about twice `every_s`, the page knows (static/js/live.js). It has
no `id:`, so a reconnect's `Last-Event-ID` still names the last change.

An open stream also re-checks its caller, so a lock-out reaches it too (issue 13
#6): every other request is authenticated as it arrives, but a stream is one
request that may stay open for a whole shift. `still_allowed` is asked again
every `every_s` seconds — whether or not changes are flowing — and the stream
ends the first time the answer is no (user disabled, token revoked or expired,
session logged out). The browser's EventSource then reconnects and gets 401.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from alarmhub.web.context import StreamSlot
from alarmhub.web.ports import LiveChange, LiveFeed

# FastAPI's interval (`fastapi.sse._PING_INTERVAL`): the default of `stream_ping_s`.
PING_INTERVAL_S = 15.0
# How FastAPI documents one event of a server-sent-events route (`fastapi.sse`):
# the route keeps the OpenAPI description it had when FastAPI streamed it.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
# At most this many events per write: a stream that is far behind sends ~80 kB at
# a time, not its whole backlog copied into one buffer per stream.
CHUNK_MAX = 100


def opening(retry_ms: int, ping_s: float = PING_INTERVAL_S) -> bytes:
    """The first bytes of every stream: a comment, how long to wait before reconnecting,
    and a first ping, so the page knows at once how often to expect one."""
    return f": alarmhub live\nretry: {retry_ms}\n\n".encode() + ping(ping_s)


def ping(every_s: float) -> bytes:
    """The keep-alive: an event a page can see, saying when to expect the next one."""
    return f"event: ping\ndata: {json.dumps({'every_s': every_s})}\n\n".encode()


def event_bytes(change: LiveChange) -> bytes:
    """`change` as one server-sent event; encoded by the first stream to send it, then shared.

    `json.dumps` with its defaults, as FastAPI wrote it (ASCII, `", "` and `": "`):
    the same bytes as before for every client. Its output never holds a line break,
    so `data:` is one line.
    """
    wire = change.wire
    if wire is None:
        data = json.dumps(change.data)
        wire = change.wire = f"event: {change.kind}\ndata: {data}\nid: {change.seq}\n\n".encode()
    return wire


async def event_stream(
    live: LiveFeed,
    last_seq: int | None,
    peer: str,
    allows: Callable[[str | None], bool],
    recheck: Recheck,
    retry_ms: int,
    ping_s: float = PING_INTERVAL_S,
    slot: StreamSlot | None = None,
) -> AsyncIterator[bytes]:
    """The stream's body: the opening, then the changes `allows` lets through, as bytes,
    and a ping after every `ping_s` seconds with nothing sent.

    Ends when the listener is cut off for not reading, when the re-check says no, or
    when its `slot` is ended (its page opened another; the listener is woken for it).
    The listener is registered while this generator runs, and only then.
    """
    loop = asyncio.get_running_loop()
    yield opening(retry_ms, ping_s)
    keepalive = ping(ping_s)
    ping_at = loop.time() + ping_s
    with live.listening(last_seq, peer) as listener:
        if slot is not None:
            if slot.ended.is_set():
                return
            slot.wake = listener.end
        while not listener.ended:
            check_in = recheck.seconds_left()
            now = loop.time()
            batch = await listener.next_batch(max(0.0, min(check_in, ping_at - now)), CHUNK_MAX)
            chunk = b"".join(
                [
                    event_bytes(c)
                    for c in batch
                    if c.kind == "resync" or allows(c.data.get("municipality"))
                ]
            )
            if chunk:
                yield chunk
                ping_at = loop.time() + ping_s
            elif not batch and loop.time() >= ping_at:
                yield keepalive
                ping_at = loop.time() + ping_s
            # Read the clocks after the yield: the client may have taken a while over it.
            waited_out = not batch and loop.time() >= now + check_in
            if (waited_out or recheck.due()) and not await recheck.allowed():
                return


class Recheck:
    """When an open stream asks again whether its caller may still read it.

    A check is due when `every_s` seconds of `monotonic` (the hub's clock) have
    passed, and also whenever `every_s` real seconds pass with no change: a quiet
    stream is checked even under a fake clock that does not move.
    """

    def __init__(
        self,
        still_allowed: Callable[[], Awaitable[bool]],
        every_s: float,
        monotonic: Callable[[], float],
    ) -> None:
        self._still_allowed = still_allowed
        self._every_s = every_s
        self._monotonic = monotonic
        self._next = monotonic() + every_s

    def seconds_left(self) -> float:
        """How long (by the hub's clock) until the next check is due."""
        return self._next - self._monotonic()

    def due(self) -> bool:
        return self._monotonic() >= self._next

    async def allowed(self) -> bool:
        """Ask now, and count the next interval from the answer."""
        ok = await self._still_allowed()
        self._next = self._monotonic() + self._every_s
        return ok
