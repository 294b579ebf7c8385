"""How many live streams (SSE) may be open: per user and in all (issue 13 item 3).

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

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from alarmhub.core.tenancy import Permission, Scope
from alarmhub.web.auth import requires
from alarmhub.web.context import web


async def _stream_slot(
    request: Request,
    scope: Annotated[Scope, Depends(requires(Permission.READ_ALARMS))],
) -> AsyncIterator[Scope]:
    """A slot for the whole response: FastAPI runs the code after `yield` when it has ended.

    A `finally` in the stream's own generator would not do: a client that goes away
    before the generator first runs would never run it, and its slot would be lost.
    """
    slots = web(request).streams
    slots.take(scope.user)
    try:
        yield scope
    finally:
        slots.give_back(scope.user)


# The stream route's scope parameter: authorised to read alarms, and holding a slot.
StreamScope = Annotated[Scope, Depends(_stream_slot)]
