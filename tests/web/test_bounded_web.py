"""Bounded web work (issue 13 item 3): device pages and report ranges, over real HTTP.

A municipality has thousands of devices: GET /api/v1/devices answers a page at a
time (still a JSON list; the next page in `Link` and `X-Next-Cursor`), and a
response-time report spans at most `max_report_days`. The live-stream caps are
tested beside the stream (tests/web/test_api_stream.py).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from alarmhub.clock import SystemClock
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.web.paging import DEVICE_PAGE, MAX_DEVICE_PAGE, encode_device_cursor
from tests.support.api_harness import BERGEN_LABEL, stack
from tests.support.helpers import mentions, run_cli

pytestmark = pytest.mark.broker

OSLO = ZoneInfo("Europe/Oslo")
MANY = 250  # more than two default pages


async def import_oslo_devices(c: httpx.AsyncClient, n: int) -> None:
    rows = "".join(f"osl-many-{i:04d},door_sensor,0301,,Flat {i}\n" for i in range(n))
    r = await c.post(
        "/api/v1/devices/import",
        content="id,kind,municipality,heartbeat_interval,label\n" + rows,
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text


async def all_pages(c: httpx.AsyncClient, url: str) -> tuple[list[dict[str, Any]], int]:
    """Every device, following `Link: <…>; rel="next"` as a client would; and the page count."""
    items: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        r = await c.get(next_url)
        assert r.status_code == 200, r.text
        page = r.json()
        assert isinstance(page, list)  # the response shape stays a list
        items += page
        pages += 1
        assert pages <= 100, "the pages never end"
        link = r.headers.get("Link")
        next_url = None
        if link is not None:
            match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
            assert match, link
            next_url = match.group(1)
            assert "cursor=" + r.headers["X-Next-Cursor"] in next_url
        else:
            assert "X-Next-Cursor" not in r.headers
    return items, pages


async def test_devices_come_a_bounded_page_at_a_time_and_the_pages_add_up(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with (
        stack(tmp_path, broker, client_id, alarms=False) as s,
        s.client("madm0301") as m,
        s.client("op0301") as op,
        s.client("root") as root,
    ):
        await import_oslo_devices(m, MANY)
        first = await op.get("/api/v1/devices")
        assert first.status_code == 200
        assert len(first.json()) == DEVICE_PAGE  # not all MANY + 2: bounded by default
        assert first.headers["Link"].endswith('; rel="next"')
        # A client asking for too much is told the bound, not given everything.
        too_big = await op.get("/api/v1/devices", params={"limit": MAX_DEVICE_PAGE + 1})
        assert too_big.status_code == 422
        assert too_big.json()["error"]["fields"][0]["field"] == "query.limit"
        # Following the links gives every device once, in (municipality, id) order.
        items, pages = await all_pages(op, "/api/v1/devices?limit=100")
        ids = [d["id"] for d in items]
        assert len(ids) == MANY + 2 == len(set(ids))
        assert pages == 3
        assert ids == sorted(ids)  # one municipality: id order
        assert {d["municipality"] for d in items} == {"0301"}
        # The filters apply across pages, and keep to them when the link is followed.
        doors, _ = await all_pages(op, "/api/v1/devices?kind=door_sensor&limit=7")
        assert len(doors) == MANY + 1  # the imported ones and osl-door-1
        found, _ = await all_pages(op, "/api/v1/devices?q=flat%2012&limit=3")
        assert sorted(d["label"] for d in found) == sorted(
            f"Flat {i}" for i in range(MANY) if f"Flat {i}".startswith("Flat 12")
        )
        # `%` and `_` are letters in a search, not wildcards.
        assert (await op.get("/api/v1/devices", params={"q": "%"})).json() == []
        assert (await op.get("/api/v1/devices", params={"q": "osl_many"})).json() == []
        # The admin's pages cross municipalities in (municipality, id) order.
        every, _ = await all_pages(root, f"/api/v1/devices?limit={MAX_DEVICE_PAGE}")
        keys = [(d["municipality"], d["id"]) for d in every]
        assert keys == sorted(keys)
        assert len(keys) == MANY + 4
        # Decommissioned devices: `active=false` alone, include_inactive as before.
        assert (await m.delete("/api/v1/devices/osl-many-0007")).status_code == 200
        gone = (await op.get("/api/v1/devices", params={"active": "false"})).json()
        assert [d["id"] for d in gone] == ["osl-many-0007"]
        with_gone, _ = await all_pages(op, "/api/v1/devices?include_inactive=true&limit=1000")
        assert len(with_gone) == MANY + 2
        without, _ = await all_pages(op, "/api/v1/devices?limit=1000")
        assert len(without) == MANY + 1


async def test_a_cursor_never_shows_another_municipality(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with (
        stack(tmp_path, broker, client_id, alarms=False) as s,
        s.client("op0301") as op,
        s.client("root") as root,
    ):
        # Every cursor the admin's pages give out, one device a page: some sit on
        # Bergen's devices. Handed to an Oslo operator, none may show Bergen.
        cursors: list[str] = []
        url: str | None = "/api/v1/devices?limit=1&include_inactive=true"
        while url is not None:
            r = await root.get(url)
            cursors.append(r.headers.get("X-Next-Cursor", ""))
            link = r.headers.get("Link")
            url = link[1 : link.index(">")] if link else None
        forged = [
            encode_device_cursor("0000", ""),
            encode_device_cursor("4601", ""),
            encode_device_cursor("4601", "brg-pend-0"),
        ]
        for cursor in [c for c in cursors if c] + forged:
            for params in ({}, {"municipality": "4601"}, {"include_inactive": "true"}):
                r = await op.get("/api/v1/devices", params={**params, "cursor": cursor})
                assert r.status_code == 200, r.text
                assert {d["municipality"] for d in r.json()} <= {"0301"}
                assert BERGEN_LABEL not in r.text
                assert "brg-" not in r.text
                assert not mentions(r.text, "4601")
        # Starting before everything still gives only Oslo's devices.
        r = await op.get("/api/v1/devices", params={"cursor": encode_device_cursor("0000", "")})
        assert [d["id"] for d in r.json()] == ["osl-door-1", "osl-pend-1"]
        # The longest device id there can be, in 4-byte characters, still makes a usable cursor.
        longest = encode_device_cursor("0301", "\U0001f6a8" * 128)
        assert (await op.get("/api/v1/devices", params={"cursor": longest})).status_code == 200
        # Anything this API did not make is a 422, never a 500 or someone's data.
        for bad in ("x", "bm90IGpzb24", encode_device_cursor("0301", "a") + "!!", "WzEsMl0"):
            r = await op.get("/api/v1/devices", params={"cursor": bad})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"]["fields"][0]["field"] == "query.cursor"


async def test_report_ranges_are_capped(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with (
        stack(tmp_path, broker, client_id, settings={"max_report_days": 7}) as s,
        s.client("madm0301") as m,
    ):
        today = SystemClock().now().astimezone(OSLO).date()
        url = "/api/v1/reports/response-times"
        week = {"from": str(today - timedelta(days=6)), "to": str(today)}
        ok = await m.get(url, params=week)
        assert ok.status_code == 200, ok.text
        assert [g["kind"] for g in ok.json()["groups"]] == ["button"]  # today's Oslo alarm
        over = await m.get(url, params={**week, "from": str(today - timedelta(days=7))})
        assert over.status_code == 422, over.text
        message = over.json()["error"]["message"]
        assert "at most 7 days" in message
        assert "max_report_days" in message
        # The old unbounded call (no range) still works, bounded: the last 7 days.
        default = await m.get(url)
        assert default.status_code == 200
        assert (default.json()["since"], default.json()["until"]) == (week["from"], week["to"])
        assert [g["kind"] for g in default.json()["groups"]] == ["button"]
        decades = await m.get(url, params={"from": "1970-01-01", "to": "9998-12-31"})
        assert decades.status_code == 422
        # The CLI keeps to the same cap.
        env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{s.db}", "ALARMHUB_MAX_REPORT_DAYS": "7"}
        cli = ["report", "response-times", "--format", "csv"]
        long = run_cli([*cli, "--since", "2020-01-01", "--until", "2026-01-01"], env)
        assert long.returncode == 2, long.stdout
        assert "at most 7 days" in long.stderr
        assert "max_report_days" in long.stderr
        short = run_cli(cli, env)
        assert short.returncode == 0, short.stderr
        assert len(short.stdout.splitlines()) == 3  # header; button (Oslo and Bergen) and fall
