"""The live stream (SSE) over real HTTP: scope filtering and resume with Last-Event-ID."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from alarmhub.mosquitto import LocalBroker
from tests.support import native
from tests.test_api_harness import stack

pytestmark = pytest.mark.broker


async def next_event(lines: Any, device: str | None = None, timeout: float = 10) -> dict[str, Any]:
    """The next `alarm`/`resync` event (optionally of one device), parsed."""

    async def read() -> dict[str, Any]:
        event: dict[str, Any] = {}
        async for line in lines:
            if line.startswith(":"):
                continue
            if line == "":
                if "event" in event and (device is None or event.get("data", {}).get("device_id") == device):
                    return event
                event = {}
                continue
            key, _, value = line.partition(": ")
            event[key] = orjson.loads(value) if key == "data" else value
        raise AssertionError("stream ended")

    return await asyncio.wait_for(read(), timeout)


async def test_stream_shows_own_alarms_only_and_resumes(tmp_path: Path, broker: LocalBroker, client_id: str) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("op0301") as c:
        async with c.stream("GET", "/api/v1/alarms/stream") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
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
        async with c.stream("GET", "/api/v1/alarms/stream",
                            headers={"Last-Event-ID": str(seen_id)}) as resp:
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
        async with s.client("root") as admin, admin.stream(
            "GET", "/api/v1/alarms/stream", params={"last_event_id": 0}
        ) as resp:
            ev = await next_event(resp.aiter_lines(), "brg-pend-1")
            assert ev["data"]["municipality"] == "4601"


async def test_stream_needs_authentication(tmp_path: Path, broker: LocalBroker, client_id: str) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client() as c:
        r = await c.get("/api/v1/alarms/stream")
        assert r.status_code == 401
        async with s.client("madm0301") as m, m.stream("GET", "/api/v1/alarms/stream") as resp:
            assert resp.status_code == 200  # read-only view of their alarms
