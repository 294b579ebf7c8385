"""What the transport decides: cookie names and flags, and HSTS (issue 13 item 8).

A request is https when uvicorn serves TLS itself, or when a trusted reverse proxy
(FORWARDED_ALLOW_IPS) says so with X-Forwarded-Proto; uvicorn then sets the
scope's scheme, and nothing here reads a forwarded header itself (anyone can send
one). Over https the cookies are `__Host-` prefixed and `Secure`: the prefix makes
the browser refuse a cookie without Secure, with a Domain or a Path other than /,
so a neighbouring host or plain-HTTP page cannot plant or overwrite the session.
Over plain HTTP (loopback, or `ALARMHUB_HTTP_ALLOW_PLAIN`) a browser would drop a
Secure cookie, so they keep their plain names: the demo and tests on 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = b"max-age=31536000"  # a year; no includeSubDomains: other hosts are not ours
HOST_PREFIX = "__Host-"


@dataclass(frozen=True, slots=True)
class CookieNames:
    session: str
    csrf: str
    secure: bool


def cookie_names(scheme: str, session: str, csrf: str) -> CookieNames:
    """The cookies' names and Secure flag for a request of this scheme."""
    if scheme == "https":
        return CookieNames(HOST_PREFIX + session, HOST_PREFIX + csrf, secure=True)
    return CookieNames(session, csrf, secure=False)


class Hsts:
    """Adds Strict-Transport-Security to every response to an https request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"strict-transport-security", HSTS))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)
