"""A journal service for tests (JFT's shape, issue 17), on loopback, over real HTTP.

`POST /v1/Bundle` answers `202 Accepted` with a `Location` (`/v1/status/<n>`);
polling it answers `202` until the note is journaled, then `200` with
`{"status": "confirmed"}` (or `{"status": "refused", "reason": …}`). A Bundle whose
identifier the server has seen gets the first one's Location back: no second note.
`notes` counts notes by Bundle identifier, `posts` every request taken.

Faults for the tests: `fail_next` answers that many requests 500; `hang_s` holds
each request that long (a client timeout); `stop()` / `start()` take it down and
bring it back on the same port. `check` is the hook for request checks: a callable
taking the request and returning a response to answer instead, or None to go on;
`guard_with(helseid.guard())` plugs in the real HelseID + DPoP checks
(tests/support/helseid_server.py ResourceGuard). `after_post` runs once a note is
recorded, before the 202 is answered (the crash test kills alarmhub there).
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Check = Callable[[Request], Awaitable[Response | None]]
AfterPost = Callable[[str], Awaitable[None]]


class Guard(Protocol):
    """tests/support/helseid_server.py ResourceGuard: None lets a request through."""

    def check(
        self, method: str, url: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes] | None: ...


@dataclass
class Note:
    identifier: str
    polls: int = 0
    bundle: dict[str, object] = field(default_factory=dict)


class JournalServer:
    def __init__(self) -> None:
        self.notes: dict[str, Note] = {}  # by status number
        self.posts: list[str] = []  # the identifier of every POST taken (resends too)
        self.fail_next = 0
        self.hang_s = 0.0
        self.polls_to_confirm = 1  # the EPJ answers at this poll
        self.refuse: str | None = None  # the EPJ refuses, with this reason
        self.check: Check | None = None
        self.after_post: AfterPost | None = None
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/Bundle", self._post, methods=["POST"]),
                Route("/v1/status/{n}", self._poll, methods=["GET"]),
            ]
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def guard_with(self, guard: Guard) -> None:
        """Take only requests the guard lets through (a HelseID DPoP-bound token and proof)."""

        async def check(request: Request) -> Response | None:
            # The URL the client signed (`htu`): this server's, without query or fragment.
            url = f"http://127.0.0.1:{self.port}{request.url.path}"
            refused = guard.check(request.method, url, dict(request.headers))
            if refused is None:
                return None
            status, headers, body = refused
            return Response(body, status_code=status, headers=headers)

        self.check = check

    def note_count(self) -> Counter[str]:
        """Notes journaled by Bundle identifier: exactly once is a count of 1 each."""
        return Counter(n.identifier for n in self.notes.values())

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None

    async def _gate(self, request: Request) -> Response | None:
        if self.check is not None and (answer := await self.check(request)) is not None:
            return answer
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=500)
        return None

    async def _post(self, request: Request) -> Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        bundle = orjson.loads(await request.body())
        identifier = bundle["identifier"]["value"]
        self.posts.append(identifier)
        known = next((n for n, note in self.notes.items() if note.identifier == identifier), None)
        if known is None:
            known = str(len(self.notes) + 1)
            self.notes[known] = Note(identifier, bundle=bundle)
        if self.after_post is not None:
            await self.after_post(identifier)
        return Response(status_code=202, headers={"location": f"/v1/status/{known}"})

    async def _poll(self, request: Request) -> Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        note = self.notes.get(request.path_params["n"])
        if note is None:
            return JSONResponse({"reason": "no such request"}, status_code=404)
        note.polls += 1
        if note.polls < self.polls_to_confirm:
            return Response(status_code=202)
        if self.refuse is not None:
            return JSONResponse({"status": "refused", "reason": self.refuse})
        return JSONResponse({"status": "confirmed"})
