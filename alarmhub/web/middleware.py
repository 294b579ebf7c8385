"""The ASGI wrappers around the app: body limit and request counting.

Plain ASGI classes rather than `BaseHTTPMiddleware`, which would buffer the
live stream (SSE). `web.api` stacks them in a fixed order.
"""

from __future__ import annotations

from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alarmhub.web.errors import error_response

UNMATCHED = "unmatched"


class BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(413, "the body is larger than 1 MiB")


class BodyLimit:
    """413 in the API's JSON shape for a body over the limit, declared or streamed.

    Instead of FastAPI's `max_body_size`: that one sits outside the app's
    middleware and answers a too-long Content-Length in plain text. A declared
    length is refused before reading; a chunked body is cut off while read, as
    an HTTPException that the JSON error handler renders.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = error_response(413, "too_large", "the body is larger than 1 MiB")
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        await self.app(scope, limited, send)


class RequestCounter:
    """Counts requests by route *template* (bounded labels), as a plain ASGI wrapper.

    Not a `BaseHTTPMiddleware`: that would buffer the SSE stream. An unmatched
    path is counted as "unmatched" so scanners cannot grow the series.
    """

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            self.counter.labels(template, str(status)).inc()
