"""Logs carry no personal data, and a repeating error is logged once, not per message.

The hub runs in-process with the simulator's traffic through a real broker and
its JSON log captured. The registry labels carry fake resident names on
purpose: they are the canaries that must never reach a log line.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import structlog

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock, SystemClock
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.observability.logs import configure_logging
from alarmhub.sim.simulator import Simulation, SimulationConfig
from alarmhub.store.residents import UNREADABLE, ResidentRegister
from alarmhub.store.sealing import Keyring
from alarmhub.store.sqlite.residents import SqliteResidentRows
from tests.sim.test_simulator import run_whole_plan
from tests.support.api_harness import stack
from tests.support.helpers import Publisher, async_wait_until, db_count, db_rows, hub_settings
from tests.support.helseid_server import HelseIdServer, registered_client
from tests.support.journal_server import JournalServer
from tests.support.national_ids import KARI

pytestmark = pytest.mark.broker

NAMES = ("Kari Nordmann", "Ola Nordmann", "Ingrid Bakken", "Per Hansen", "Åse Solberg")


def fresh_loggers(monkeypatch: pytest.MonkeyPatch) -> int:
    """Module loggers keep the stream of their first use (cache_logger_on_first_use), so
    after an earlier test they would ignore this test's stream: give each a fresh proxy."""
    replaced = 0
    for name, module in list(sys.modules.items()):
        proxy = getattr(module, "log", None)
        if name.startswith("alarmhub") and type(proxy).__name__ == "BoundLoggerLazyProxy":
            args = getattr(proxy, "_logger_factory_args", ()) or ()
            monkeypatch.setattr(module, "log", structlog.get_logger(*args))
            replaced += 1
    return replaced


async def test_no_names_labels_or_positions_in_logs_and_repeats_logged_once(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    assert fresh_loggers(monkeypatch) > 0
    sim = Simulation(SimulationConfig(homes=20, seed=11, speed=1200, duration_s=4))
    devices = [
        dataclasses.replace(d, label=f"{NAMES[i % len(NAMES)]}, {d.label}")
        for i, d in enumerate(sim.devices())
    ]
    positions = {f"{h.lat}" for h in sim.homes} | {f"{h.lon}" for h in sim.homes}
    noisy = next(d.id for d in devices if d.id.startswith("pend-"))
    db = tmp_path / "alarmhub.db"
    pub = Publisher(broker.port, client_id + "-bad")
    try:
        async with AlarmHub(hub_settings(tmp_path, broker.url, client_id), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            await hub.register_devices(devices, audit=(), assign_bridges=True)
            # The same fault from the same device, again and again: once identical
            # bytes (redeliveries) and once with a fresh id each time.
            for _ in range(20):
                pub.publish(f"alarmhub/v1/{noisy}/events", b"{not json")
            for i in range(30):
                pub.publish(
                    f"alarmhub/v1/{noisy}/events",
                    {"id": f"bad-{i}", "ts": "2026-01-01T00:00:00Z", "type": "teleport"},
                )
            # The whole plan, however long this machine takes to send it (run_whole_plan).
            stats = await run_whole_plan(sim, broker.url, client_id + "-sim")
            assert stats.sent > 200
            deadline = asyncio.get_running_loop().time() + 10
            # Identical bytes are one message to the hub (a redelivery): 1 + 30 bad ones.
            while db_count(db, "SELECT count(*) FROM inbox") < stats.sent + 31:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
    finally:
        pub.close()
    # The data that must not leak was really there: labels registered, positions received.
    assert db_count(db, "SELECT count(*) FROM devices WHERE label LIKE '%Nordmann%'") > 0
    assert db_count(db, "SELECT count(*) FROM inbox WHERE topic LIKE 'owntracks/%'") > 0
    assert (
        db_count(
            db, "SELECT count(*) FROM inbox WHERE device_id = ? AND verdict = 'rejected'", (noisy,)
        )
        == 31
    )
    fixes = {
        text
        for (payload,) in db_rows(db, "SELECT payload FROM inbox WHERE topic LIKE 'owntracks/%'")
        for text in (str(orjson.loads(payload)["lat"]), str(orjson.loads(payload)["lon"]))
    }
    positions |= fixes

    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) > 10
    events = []
    for line in lines:
        entry = orjson.loads(line)  # every line is one JSON object …
        assert isinstance(entry, dict)
        assert isinstance(entry.get("event"), str), line  # … with a stable event name
        assert not {"lat", "lon", "label", "name"} & set(entry), line
        events.append(entry)
    for secret in (*NAMES, "Nordmann", *(d.label for d in sim.devices()), *positions):
        assert secret not in text, secret  # type: ignore[operator]  # the sim labels every device
    dead = [
        e for e in events if e["event"] == "message.dead_lettered" and e.get("device_id") == noisy
    ]
    assert sorted(e["reason"] for e in dead) == ["malformed_json", "unknown_type"], dead


async def test_no_national_identity_number_in_logs_metrics_errors_or_dead_letters(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: a resident's number is set, mistyped, viewed, listed, sent in a device's
    message, sent to the journal (which fails once, then refuses quoting the number) and
    read with the wrong key; none of its digits past the birth date may reach a log line,
    a metric, an error message, a dead letter's reason or a journal export row."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    assert fresh_loggers(monkeypatch) > 0
    key = base64.b64encode(bytes(range(32))).decode()
    typo = KARI[:-1] + str((int(KARI[-1]) + 1) % 10)
    seen: list[str] = []  # every response body
    # The real auth: a local HelseID with 0301's client, the journal checking DPoP.
    helseid = HelseIdServer(SystemClock().now)
    journal = JournalServer()
    journal.guard_with(helseid.guard())
    journal.fail_next = 1
    journal.refuse = f"ukjent pasient {KARI}"
    await journal.start()
    settings = {
        "resident_key": key,
        "journal_url": journal.url,
        "journal_helseid": {"0301": registered_client(helseid, tmp_path, "0301")},
        "journal_organisation_name": "Responssenteret i Oslo",
        "journal_organisation_number": "974778807",
        "journal_poll_s": 0.05,
        "journal_retry_base_s": 0.05,
    }
    async with stack(tmp_path, broker, client_id, alarms=False, settings=settings) as s:
        async with s.client("root") as c:
            await c.patch("/api/v1/devices/osl-pend-1", json={"resident": "r-17"})
        async with s.client("madm0301") as c:
            for number in (KARI, typo, KARI + "9", f"{KARI[:5]}x{KARI[6:]}"):
                body = {"municipality": "0301", "national_id": number}
                seen.append((await c.put("/api/v1/residents/r-17", json=body)).text)
            seen.append((await c.get("/api/v1/residents", params={"municipality": "0301"})).text)
        alarm = await s.raise_alarm("osl-pend-1", "o1")
        # A device that sends a number in its message: a dead letter, counted and logged.
        s.pub.publish(
            "alarmhub/v1/osl-pend-1/events",
            {"id": "nid-1", "ts": "2026-01-01T00:00:00Z", "type": KARI},
        )
        await async_wait_until(
            lambda: bool(db_rows(s.db, "SELECT 1 FROM inbox WHERE verdict = 'rejected'")), 10
        )
        async with s.client("op0301") as c:
            resolve = {"outcome": "helped", "cause": "needed_help"}
            seen.append((await c.post(f"/api/v1/alarms/{alarm}/resolve", json=resolve)).text)
            refused = "SELECT 1 FROM journal_exports WHERE state = 'refused'"
            assert await async_wait_until(lambda: bool(db_rows(s.db, refused)), 15)
            seen.append((await c.get(f"/api/v1/alarms/{alarm}")).text)
            seen.append((await c.get("/metrics")).text)
        async with s.client("root") as c:
            seen.append((await c.get("/api/v1/dead-letters")).text)
            seen.append((await c.get("/api/v1/audit")).text)
    await journal.stop()
    helseid.close()
    assert len(journal.posts) == 1  # taken after one 500: the number was sent
    assert len(helseid.log.issued) == 1  # sent authenticated
    # The same database read with another key: the number cannot open, which is logged.
    other = ResidentRegister(
        SqliteResidentRows(s.db), Keyring((bytes(32),)), FakeClock(datetime.now(UTC))
    )
    assert [e.national_id for e in await other.listing("0301", lambda _: [])] == [UNREADABLE]
    assert any(KARI[:6] + "*****" in text for text in seen)  # it was there, and shown masked
    text = stream.getvalue()
    assert "resident.unreadable" in text
    assert "journal.refused" in text
    assert "journal.retry" in text
    exports = db_rows(s.db, "SELECT * FROM journal_exports")
    assert KARI[:6] + "*****" in str(exports)  # the journal's reason, kept redacted
    hidden = {KARI[6:], typo[6:]}
    reasons = db_rows(s.db, "SELECT coalesce(reason, '') || ' ' || coalesce(detail, '') FROM inbox")
    for where, content in (
        ("logs", text),
        *(("response", t) for t in seen),
        *(("dead letter", str(r)) for r in reasons),
        ("journal export", str(exports)),
    ):
        for secret in hidden:
            assert secret not in content, f"{where}: {content[:300]}"
