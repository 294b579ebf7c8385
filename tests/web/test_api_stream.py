"""The live stream (SSE) over real HTTP: scope filtering and resume with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import native

pytestmark = pytest.mark.broker


async def next_event(lines: Any, device: str | None = None, timeout: float = 10) -> dict[str, Any]:
    """The next `alarm`/`resync` event (optionally of one device), parsed; pings are skipped."""

    async def read() -> dict[str, Any]:
        event: dict[str, Any] = {}
        async for line in lines:
            if line.startswith(":"):
                continue
            if line == "":
                if event.get("event") in ("alarm", "resync") and (
                    device is None or event.get("data", {}).get("device_id") == device
                ):
                    return event
                event = {}
                continue
            key, _, value = line.partition(": ")
            event[key] = orjson.loads(value) if key == "data" else value
        raise AssertionError("stream ended")

    return await asyncio.wait_for(read(), timeout)


async def test_stream_shows_own_alarms_only_and_resumes(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("op0301") as c:
        listed = s.hub.live.seq  # what a list page read now would carry (its `seq`)
        async with c.stream("GET", "/api/v1/alarms/stream") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
            # As FastAPI's SSE responses had them: nothing caches it, nginx does not buffer it.
            assert resp.headers["cache-control"] == "no-cache"
            assert resp.headers["x-accel-buffering"] == "no"
            lines = resp.aiter_lines()
            s.pub.publish(*native("brg-pend-1", "b1", "button.pressed"))  # Bergen first
            s.pub.publish(*native("osl-pend-1", "o1", "button.pressed"))
            first = await next_event(lines)
            # Had filtering failed, Bergen's alarm (published first) would be here.
            assert first["event"] == "alarm"
            assert first["data"]["municipality"] == "0301"
            assert first["data"]["device_id"] == "osl-pend-1"
            seen_id = int(first["id"])
        alarm = first["data"]["id"]
        async with s.client("op0301b") as other:
            assert (await other.post(f"/api/v1/alarms/{alarm}/acknowledge")).status_code == 200
        # Reconnect as a browser does after a drop: what was missed is replayed.
        async with c.stream(
            "GET", "/api/v1/alarms/stream", headers={"Last-Event-ID": str(seen_id)}
        ) as resp:
            lines = resp.aiter_lines()
            replayed = []
            while True:
                ev = await next_event(lines, "osl-pend-1")
                replayed.append(ev)
                if ev["data"]["state"] == "acknowledged":
                    break
            assert all(int(e["id"]) > seen_id for e in replayed)
            assert replayed[-1]["data"]["acknowledged_by"] == "op0301b"
        # The admin sees Bergen's alarm on the stream (the filter is by scope, not broken).
        async with (
            s.client("root") as admin,
            admin.stream("GET", "/api/v1/alarms/stream", params={"last_event_id": listed}) as resp,
        ):
            ev = await next_event(resp.aiter_lines(), "brg-pend-1")
            assert ev["data"]["municipality"] == "4601"


async def test_stream_needs_authentication(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client() as c:
        r = await c.get("/api/v1/alarms/stream")
        assert r.status_code == 401
        async with s.client("madm0301") as m, m.stream("GET", "/api/v1/alarms/stream") as resp:
            assert resp.status_code == 200  # read-only view of their alarms


async def open_until_answered(c: Any, stack: contextlib.AsyncExitStack, timeout: float = 20) -> Any:
    """Open a stream, retrying 429 until a slot frees or `timeout`; the response finally got.

    A closed stream's slot is given back when the server notices the client has gone,
    which takes a moment: wait for that condition, never for a fixed time.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await stack.enter_async_context(c.stream("GET", "/api/v1/alarms/stream"))
        if resp.status_code != 429 or asyncio.get_running_loop().time() > deadline:
            return resp
        await resp.aclose()
        await asyncio.sleep(0.1)


async def test_streams_are_capped_per_user_and_in_total_and_a_closed_one_frees_its_slot(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    limits = {"max_streams_per_user": 2, "max_streams": 3}
    async with (
        stack(tmp_path, broker, client_id, alarms=False, settings=limits) as s,
        s.client("op0301") as c,
        s.client("op0301b") as b,
        s.client("root") as root,
        contextlib.AsyncExitStack() as held,
    ):
        first = await held.enter_async_context(c.stream("GET", "/api/v1/alarms/stream"))
        second = await held.enter_async_context(c.stream("GET", "/api/v1/alarms/stream"))
        assert (first.status_code, second.status_code) == (200, 200)
        # The third of one user: refused before any stream opens, saying what to do.
        third = await c.get("/api/v1/alarms/stream")
        assert third.status_code == 429, third.text
        assert int(third.headers["Retry-After"]) > 0
        error = third.json()["error"]
        assert error["code"] == "too_many_streams"
        assert "max_streams_per_user" in error["message"]
        assert "close a tab" in error["message"]
        # Another user is not held up by op0301's limit...
        other = await held.enter_async_context(b.stream("GET", "/api/v1/alarms/stream"))
        assert other.status_code == 200
        # ...but the server's total is reached now: the admin is refused, naming that limit.
        full = await root.get("/api/v1/alarms/stream")
        assert full.status_code == 429, full.text
        assert "max_streams" in full.json()["error"]["message"]
        assert "Retry-After" in full.headers
        # The refused requests took no slot; a closed stream gives its slot back.
        await first.aclose()
        async with contextlib.AsyncExitStack() as retry:
            reopened = await open_until_answered(c, retry)
            assert reopened.status_code == 200
            # It is live, not merely accepted: a change arrives on it.
            s.pub.publish(*native("osl-pend-1", "o1", "button.pressed"))
            event = await next_event(reopened.aiter_lines(), "osl-pend-1")
            assert event["data"]["municipality"] == "0301"
        # Every slot comes back when the streams end: all users can open again.
        await second.aclose()
        await other.aclose()
        async with contextlib.AsyncExitStack() as again:
            for client in (root, c, c):
                assert (await open_until_answered(client, again)).status_code == 200


async def test_one_municipality_cannot_take_every_stream_slot(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """A municipality admin may create operators, each with max_streams_per_user streams:
    without a cap per municipality its users could hold every slot of the server and
    leave Bergen's operators, and the centre's admin, with a page that does not update."""
    limits = {"max_streams_per_user": 5, "max_streams": 10, "max_streams_per_municipality": 2}
    async with (
        stack(tmp_path, broker, client_id, alarms=False, settings=limits) as s,
        s.client("op0301") as oslo_a,
        s.client("op0301b") as oslo_b,
        s.client("op4601") as bergen,
        s.client("root") as root,
        contextlib.AsyncExitStack() as held,
    ):
        for c in (oslo_a, oslo_b):
            opened = await held.enter_async_context(c.stream("GET", "/api/v1/alarms/stream"))
            assert opened.status_code == 200
        # Oslo's third stream, from a user under the per-user limit: refused, naming the limit.
        third = await oslo_a.get("/api/v1/alarms/stream")
        assert third.status_code == 429, third.text
        assert "max_streams_per_municipality" in third.json()["error"]["message"]
        assert "0301" in third.json()["error"]["message"]
        # Bergen's operator and the admin still get theirs, and Bergen's is live.
        theirs = await held.enter_async_context(bergen.stream("GET", "/api/v1/alarms/stream"))
        assert theirs.status_code == 200
        admin = await held.enter_async_context(root.stream("GET", "/api/v1/alarms/stream"))
        assert admin.status_code == 200
        s.pub.publish(*native("brg-pend-1", "b1", "button.pressed"))
        event = await next_event(theirs.aiter_lines(), "brg-pend-1")
        assert event["data"]["municipality"] == "4601"


async def test_a_page_s_new_stream_replaces_its_old_one_whose_peer_went_quiet(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """The page replaces a stream it has not heard from; the old one, its peer gone without
    a word, held its slot until TCP gave up, and the page's next streams met the per-user
    limit (429) and it stayed disconnected. A stream of the same user and `stream_id` now
    ends the old one and takes its slot; other pages of the user count as before."""
    limits = {"max_streams_per_user": 2, "max_streams": 10}
    page = {"stream_id": "page0123456789ab"}
    async with (
        stack(tmp_path, broker, client_id, alarms=False, settings=limits) as s,
        s.client("op0301") as c,
        s.client("op0301b") as b,
        contextlib.AsyncExitStack() as held,
    ):
        older = []
        for _ in range(5):  # never read again, never closed: like a peer that vanished
            resp = await held.enter_async_context(
                c.stream("GET", "/api/v1/alarms/stream", params=page)
            )
            assert resp.status_code == 200, await resp.aread()
            older.append(resp)
        newest = older.pop()
        # Each replaced stream ends (its body is finished by the server).
        for resp in older:
            rest = await asyncio.wait_for(resp.aread(), 60)
            assert rest.startswith(b"retry:") or b"event: ping" in rest
        # The user's other page still counts: one more fits, the next is refused.
        other = await held.enter_async_context(
            c.stream("GET", "/api/v1/alarms/stream", params={"stream_id": "page-other-0001"})
        )
        assert other.status_code == 200
        assert (await c.get("/api/v1/alarms/stream")).status_code == 429
        # Another user's stream_id of the same value is theirs: it replaces nothing of op0301.
        theirs = await held.enter_async_context(
            b.stream("GET", "/api/v1/alarms/stream", params=page)
        )
        assert theirs.status_code == 200
        assert s.hub is not None
        s.pub.publish(*native("osl-pend-1", "o1", "button.pressed"))
        event = await next_event(newest.aiter_lines(), "osl-pend-1")
        assert event["data"]["municipality"] == "0301"
        # Not a name a page makes: refused before any stream opens.
        odd = await c.get("/api/v1/alarms/stream", params={"stream_id": "x"})
        assert odd.status_code == 422
