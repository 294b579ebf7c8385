"""Issue 13 item 9: a Zigbee device's messages are believed only through its own bridge.

One `zigbee2mqtt` account used to write every Zigbee device's topic in every
municipality: any bridge (or whoever held its password) could raise or mask any
resident's alarms. Now each bridge has its own account and base topic
`zigbee2mqtt/<bridge>` (the broker's ACL: tests/deploy/test_deploy_mosquitto.py), the
registry records each Zigbee device's bridge, and a message for a device through
any other bridge is a `wrong_bridge` dead letter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.config.profiles import load_catalog
from alarmhub.core.bridges import check_bridge, valid_bridge
from alarmhub.core.decode import DecodeLimits, decode
from alarmhub.core.model import Decoded, Device, DeviceKind, RawMessage, Rejected, RejectReason
from alarmhub.core.registry import parse_device_csv
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import (
    REPO,
    Publisher,
    assign_bridge,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    register,
    run_cli,
)

T0 = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)  # 14:00 in Oslo
OSLO_BRIDGE = "z2m-0301-a"
ASKER_BRIDGE = "z2m-3203-a"
SOS = "0xa4c1380000000105"
PRESS = {"action": "emergency", "battery": 100, "linkquality": 87}
CATALOG = load_catalog(REPO / "devices")


def _device(bridge: str | None) -> Device:
    return Device(SOS, DeviceKind.SAFETY_ALARM, "0301", bridge=bridge)


# --- the pure decision -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "via", "refused"),
    [
        (OSLO_BRIDGE, OSLO_BRIDGE, False),  # its own bridge
        (OSLO_BRIDGE, ASKER_BRIDGE, True),  # another municipality's bridge
        (OSLO_BRIDGE, "z2m-0301-b", True),  # another bridge of the same municipality
        (None, OSLO_BRIDGE, True),  # no bridge recorded: believed from none, not from all
        (None, None, False),  # a topic that names no bridge (native, OwnTracks)
        (OSLO_BRIDGE, None, False),
    ],
)
def test_check_bridge(registered: str | None, via: str | None, refused: bool) -> None:
    verdict = check_bridge(_device(registered), via)
    if not refused:
        assert verdict is None
        return
    assert isinstance(verdict, Rejected)
    assert verdict.reason is RejectReason.WRONG_BRIDGE
    assert verdict.device_id == SOS
    assert str(via) in verdict.detail


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("z2m-0301-a", True),
        ("bridge_2.hall", True),
        ("", False),
        ("a/b", False),  # a topic level: would shift the device id
        ("a+", False),  # Mosquitto grants nothing to a %u with + or #
        ("a#", False),
        ("a b", False),
        ("x" * 65, False),
    ],
)
def test_valid_bridge(value: str, ok: bool) -> None:
    assert valid_bridge(value) is ok


def test_decode_reads_the_bridge_from_the_topic() -> None:
    registry = {SOS: _device(OSLO_BRIDGE)}
    payload = orjson.dumps(PRESS)
    own = decode(
        RawMessage(f"zigbee2mqtt/{OSLO_BRIDGE}/{SOS}", payload, T0),
        registry,
        CATALOG,
        DecodeLimits(),
    )
    assert isinstance(own, Decoded)
    other = decode(
        RawMessage(f"zigbee2mqtt/{ASKER_BRIDGE}/{SOS}", payload, T0),
        registry,
        CATALOG,
        DecodeLimits(),
    )
    assert isinstance(other, Rejected)
    assert other.reason is RejectReason.WRONG_BRIDGE
    # The old single-bridge layout names no bridge: no profile claims it any more.
    old = decode(RawMessage(f"zigbee2mqtt/{SOS}", payload, T0), registry, CATALOG, DecodeLimits())
    assert isinstance(old, Rejected)
    assert old.reason is RejectReason.UNKNOWN_TOPIC


# --- registration ----------------------------------------------------------------------


def test_csv_bridge_column() -> None:
    devices, errors = parse_device_csv(
        f"id,kind,municipality,bridge\n{SOS},safety_alarm,0301,{OSLO_BRIDGE}\npend-1,safety_alarm,0301,\n"
    )
    assert errors == []
    assert [d.bridge for d in devices] == [OSLO_BRIDGE, None]
    _, errors = parse_device_csv(f"id,kind,municipality,bridge\n{SOS},safety_alarm,0301,a/b\n")
    assert len(errors) == 1
    assert "bridge 'a/b' is not valid" in errors[0]


def test_cli_records_the_bridge_and_requires_it_for_a_zigbee_profile(tmp_path: Path) -> None:
    db = tmp_path / "alarmhub.db"
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
    base = ["devices", "register", "--kind", "safety_alarm", "--municipality", "0301"]
    zigbee = [*base, "--id", SOS, "--profile", "zigbee2mqtt-sos-button"]

    refused = run_cli(zigbee, env)
    assert refused.returncode != 0
    assert "--bridge" in refused.stderr
    assert "wrong_bridge" in refused.stderr

    done = run_cli([*zigbee, "--bridge", OSLO_BRIDGE], env)
    assert done.returncode == 0, done.stderr
    assert db_rows(db, "SELECT bridge FROM devices WHERE id = ?", (SOS,)) == [(OSLO_BRIDGE,)]

    # A device without a profile may be native or Zigbee: registered, with a warning.
    warned = run_cli([*base, "--id", "0xa4c1380000000106"], env)
    assert warned.returncode == 0, warned.stderr
    assert "no --bridge" in warned.stderr

    # Re-importing a plain list must not unpair a device from its bridge.
    csv = tmp_path / "plain.csv"
    csv.write_text(f"id,kind,municipality,label\n{SOS},safety_alarm,0301,hall\n")
    imported = run_cli(["devices", "import", str(csv)], env)
    assert imported.returncode == 0, imported.stderr
    assert db_rows(db, "SELECT bridge, label FROM devices WHERE id = ?", (SOS,)) == [
        (OSLO_BRIDGE, "hall")
    ]


# --- through the shell: real Mosquitto, real SQLite, the hub in-process --------------


@pytest.mark.broker
async def test_a_press_through_another_bridge_is_a_dead_letter_and_no_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [(SOS, "safety_alarm", "0301", OSLO_BRIDGE)], tmp_path)
    pub = Publisher(broker.port)
    settings = hub_settings(tmp_path, broker.url, client_id)
    try:
        with capture_logs() as logs:
            async with AlarmHub(settings, clock=FakeClock(T0), serve_http=False) as hub:
                assert hub.ingest is not None
                assert await hub.ingest.wait_connected(5)
                dead = hub.metrics.messages_dead_lettered.labels("wrong_bridge", "safety_alarm")
                assert dead._value.get() == 0  # pre-created at zero

                # Asker's bridge account publishes under its own base topic, naming
                # Oslo's button. Then the same press through the button's own bridge;
                # one publisher keeps QoS 1 order, so once the second is stored the
                # first has been handled.
                pub.publish(f"zigbee2mqtt/{ASKER_BRIDGE}/{SOS}", orjson.dumps(PRESS))
                own = {**PRESS, "linkquality": 90}
                pub.publish(f"zigbee2mqtt/{OSLO_BRIDGE}/{SOS}", orjson.dumps(own))
                assert await async_wait_until(
                    lambda: db_count(db, "SELECT count(*) FROM inbox") == 2, 30
                )

                rows = db_rows(db, "SELECT topic, verdict, reason FROM inbox ORDER BY seq")
                assert rows == [
                    (f"zigbee2mqtt/{ASKER_BRIDGE}/{SOS}", "rejected", "wrong_bridge"),
                    (f"zigbee2mqtt/{OSLO_BRIDGE}/{SOS}", "logged", None),
                ]
                # One alarm, from the press through the device's own bridge.
                alarms = db_rows(db, "SELECT kind, state FROM alarms WHERE device_id = ?", (SOS,))
                assert alarms == [("button", "open")]
                [(raised,)] = db_rows(db, "SELECT count(*) FROM timeline WHERE type = 'raised'")
                assert raised == 1
                # The counter moves after the commit the rows above were read from.
                assert await async_wait_until(lambda: dead._value.get() == 1, 30)
    finally:
        pub.close()
    [logged] = [e for e in logs if e.get("reason") == "wrong_bridge"]
    assert logged["event"] == "message.dead_lettered"
    assert logged["device_id"] == SOS
    assert ASKER_BRIDGE in logged["detail"]


@pytest.mark.broker
async def test_api_records_the_bridge_and_requires_it_for_a_zigbee_profile(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    body = {
        "id": SOS,
        "kind": "safety_alarm",
        "municipality": "0301",
        "profile": "zigbee2mqtt-sos-button",
    }
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("madm0301") as m:
        refused = await m.post("/api/v1/devices", json=body)
        assert refused.status_code == 422, refused.text
        assert "bridge" in refused.json()["error"]["message"]
        bad = await m.post("/api/v1/devices", json={**body, "bridge": "a/b"})
        assert bad.status_code == 422, bad.text

        # A municipality admin registers only on bridges assigned to their municipality.
        for bridge in (OSLO_BRIDGE, "z2m-0301-b"):
            assign_bridge(f"sqlite:///{s.db}", bridge, "0301")
        created = await m.post("/api/v1/devices", json={**body, "bridge": OSLO_BRIDGE})
        assert created.status_code == 201, created.text
        assert created.json()["bridge"] == OSLO_BRIDGE
        # Re-paired with another bridge of the home.
        moved = await m.patch(f"/api/v1/devices/{SOS}", json={"bridge": "z2m-0301-b"})
        assert moved.status_code == 200, moved.text
        assert (await m.get(f"/api/v1/devices/{SOS}")).json()["bridge"] == "z2m-0301-b"
        # Clearing it would leave a Zigbee profile without a bridge.
        cleared = await m.patch(f"/api/v1/devices/{SOS}", json={"bridge": None})
        assert cleared.status_code == 422, cleared.text

        csv = f"id,kind,municipality,profile,bridge\n{SOS},safety_alarm,0301,zigbee2mqtt-sos-button,\n"
        r = await m.post(
            "/api/v1/devices/import", content=csv, headers={"Content-Type": "text/csv"}
        )
        assert r.status_code == 422, r.text
        assert "bridge" in r.json()["error"]["rows"][0]
        csv = csv.replace(",\n", f",{OSLO_BRIDGE}\n")
        r = await m.post(
            "/api/v1/devices/import", content=csv, headers={"Content-Type": "text/csv"}
        )
        assert r.json() == {"imported": 1}
    assert db_rows(s.db, "SELECT bridge FROM devices WHERE id = ?", (SOS,)) == [(OSLO_BRIDGE,)]
