"""An answered alarm's journal export, end to end in-process (issue 17).

The real stack (tests/support/api_harness.py: Mosquitto, the hub, SQLite, HTTP on
loopback) with a journal server on loopback: the resolve over the API writes the
export row in its own transaction, the owner's journal worker delivers it, and the
alarm's detail shows its state; a refusal shows the journal's reason and counts.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import Stack, stack
from tests.support.helpers import db_rows
from tests.support.journal_server import JournalServer
from tests.support.national_ids import KARI

pytestmark = pytest.mark.broker
KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
async def journal() -> AsyncIterator[JournalServer]:
    server = JournalServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings(server: JournalServer) -> dict[str, Any]:
    return {
        "resident_key": KEY,
        "journal_url": server.url,
        "journal_municipalities": "0301",
        "journal_organisation_name": "Responssenteret i Oslo",
        "journal_organisation_number": "974778807",
        "journal_poll_s": 0.05,
        "journal_retry_base_s": 0.05,
        "journal_retry_max_s": 0.2,
    }


async def answered(s: Stack, c: httpx.AsyncClient) -> str:
    async with s.client("root") as root:
        r = await root.patch("/api/v1/devices/osl-pend-1", json={"resident": "r-17"})
        assert r.status_code == 200, r.text
    async with s.client("madm0301") as admin:
        r = await admin.put(
            "/api/v1/residents/r-17", json={"municipality": "0301", "national_id": KARI}
        )
        assert r.status_code == 201, r.text
    alarm = await s.raise_alarm("osl-pend-1", "o1")  # raised for r-17: the resident is on it
    body = {"outcome": "helped", "cause": "needed_help", "action_taken": "home_care"}
    r = await c.post(f"/api/v1/alarms/{alarm}/resolve", json=body)
    assert r.status_code == 200, r.text
    return alarm


async def journal_state(c: httpx.AsyncClient, alarm: str, *states: str) -> dict[str, Any]:
    """The detail's journal field once it reaches one of `states` (a ceiling of 15 s)."""
    for _ in range(300):
        shown: dict[str, Any] = (await c.get(f"/api/v1/alarms/{alarm}")).json()["journal"]
        if shown["state"] in states:
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"journal still {shown}")


async def test_a_resolved_alarm_is_journaled_once_and_shown_confirmed(
    tmp_path: Path, broker: LocalBroker, client_id: str, journal: JournalServer
) -> None:
    journal.polls_to_confirm = 2
    async with stack(tmp_path, broker, client_id, alarms=False, settings=settings(journal)) as s:
        async with s.client("op0301") as c:
            alarm = await answered(s, c)
            shown = await journal_state(c, alarm, "confirmed")
        assert shown["sent_at"] is not None
        assert shown["finished_at"] is not None
        assert list(journal.note_count().values()) == [1]
        assert s.hub.metrics.journal_confirmations._value.get() == 1
        # The export row came with the resolve.
        assert db_rows(s.db, "SELECT alarm_id FROM journal_exports") == [(alarm,)]
        reads = db_rows(s.db, "SELECT actor FROM audit WHERE action = 'resident.national_id_read'")
        assert reads == [("journal-export",)]


async def test_a_refusal_is_shown_with_its_reason_and_counted(
    tmp_path: Path, broker: LocalBroker, client_id: str, journal: JournalServer
) -> None:
    journal.refuse = "pasienten finnes ikke i EPJ"
    async with stack(tmp_path, broker, client_id, alarms=False, settings=settings(journal)) as s:
        async with s.client("op0301") as c:
            alarm = await answered(s, c)
            shown = await journal_state(c, alarm, "refused")
        assert shown["reason"] == "pasienten finnes ikke i EPJ"
        refusals = s.hub.metrics.journal_refusals.labels("journal")._value.get()
        assert refusals == 1
        async with httpx.AsyncClient() as h:
            text = (await h.get(f"{s.base}/metrics")).text
        assert 'alarmhub_journal_refusals_total{reason="journal"} 1.0' in text
