"""Logs carry no personal data, and a repeating error is logged once, not per message.

The hub runs in-process with the simulator's traffic through a real broker and
its JSON log captured. The registry labels carry fake resident names on
purpose: they are the canaries that must never reach a log line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sys
from pathlib import Path

import orjson
import pytest
import structlog

from alarmhub.app import AlarmHub
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.observability.logs import configure_logging
from alarmhub.sim.simulator import Simulation, SimulationConfig
from tests.sim.test_simulator import run_whole_plan
from tests.support.helpers import Publisher, db_count, db_rows, hub_settings

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
            await hub.register_devices(devices, audit=())
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
