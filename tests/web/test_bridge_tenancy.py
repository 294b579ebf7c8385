"""A Zigbee2MQTT bridge serves one municipality: the API and the CLI refuse the rest.

Bergen's admin could register a device id with Oslo's bridge `z2m-0301-a`: a
device that bridge pairs and Oslo has not registered yet (or whose id Bergen
guesses) would then report a resident's door, fall and SOS events into Bergen's
queue, hidden from Oslo. Now a bridge's municipality is fixed by its devices
(core/bridges.py), checked inside the registry write (tests/store/test_bridge_tenancy.py
for the race).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import db_count, db_rows, run_cli

OSLO_BRIDGE = "z2m-0301-a"
SOS = "0xa4c1380000000105"
DOOR = "0xa4c1380000000106"
GUESS = "0xa4c1380000000107"
CSV = {"Content-Type": "text/csv"}
PROFILE = "zigbee2mqtt-sos-button"


def _body(device_id: str, municipality: str, bridge: str = OSLO_BRIDGE) -> dict[str, str]:
    return {
        "id": device_id,
        "kind": "safety_alarm",
        "municipality": municipality,
        "profile": PROFILE,
        "bridge": bridge,
    }


def _bridge_audit(db: Path) -> int:
    return db_count(db, "SELECT count(*) FROM audit WHERE device_id LIKE '0xa4c138%'")


@pytest.mark.broker
async def test_a_municipality_cannot_register_a_device_on_another_s_bridge(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, \
            s.client("madm0301") as oslo, s.client("madm4601") as bergen:  # fmt: skip
        r = await oslo.post("/api/v1/devices", json=_body(SOS, "0301"))
        assert r.status_code == 201, r.text
        r = await oslo.post("/api/v1/devices", json=_body(DOOR, "0301"))  # same municipality
        assert r.status_code == 201, r.text
        audited = _bridge_audit(s.db)
        assert audited == 2

        # Bergen registers a guessed id on Oslo's bridge: refused, and told what to do
        # without being told whose the bridge is.
        r = await bergen.post("/api/v1/devices", json=_body(GUESS, "4601"))
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert (error["code"], error["bridge"]) == ("bridge_taken", OSLO_BRIDGE)
        assert "a bridge of 4601" in error["message"]
        assert error["message"].count("0301") == 1  # only in the bridge's own name

        # Nor by re-pairing a device of its own, nor by an import.
        r = await bergen.post("/api/v1/devices", json=_body(GUESS, "4601", "z2m-4601-a"))
        assert r.status_code == 201, r.text
        audited += 1
        r = await bergen.patch(f"/api/v1/devices/{GUESS}", json={"bridge": OSLO_BRIDGE})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "bridge_taken"), r.text
        csv = (
            "id,kind,municipality,profile,bridge\n"
            f"0xa4c1380000000108,safety_alarm,4601,{PROFILE},z2m-4601-a\n"
            f"0xa4c1380000000109,safety_alarm,4601,{PROFILE},{OSLO_BRIDGE}\n"
        )
        r = await bergen.post("/api/v1/devices/import", content=csv, headers=CSV)
        assert r.status_code == 409, r.text
        [row] = r.json()["error"]["rows"]
        assert row.startswith(f"line 3: device 0xa4c1380000000109: bridge '{OSLO_BRIDGE}'")
        assert db_count(s.db, "SELECT count(*) FROM devices WHERE id IN (?, ?)",
                        ("0xa4c1380000000108", "0xa4c1380000000109")) == 0  # fmt: skip

        # Nothing of a refused change is written, nor audited.
        assert db_rows(s.db, "SELECT DISTINCT municipality FROM devices WHERE bridge = ?",
                       (OSLO_BRIDGE,)) == [("0301",)]  # fmt: skip
        assert _bridge_audit(s.db) == audited


@pytest.mark.broker
async def test_a_move_takes_the_bridge_only_with_all_its_devices(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("root") as root:
        for device_id in (SOS, DOOR):
            r = await root.post("/api/v1/devices", json=_body(device_id, "0301"))
            assert r.status_code == 201, r.text

        # One device to Bergen while its bridge stays with Oslo's other device: refused.
        r = await root.patch(f"/api/v1/devices/{SOS}", json={"municipality": "4601"})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "bridge_taken"), r.text
        assert db_rows(s.db, "SELECT municipality FROM devices WHERE id = ?", (SOS,)) == [("0301",)]
        # With a bridge of Bergen's, in the same change: moved, and audited.
        r = await root.patch(
            f"/api/v1/devices/{SOS}", json={"municipality": "4601", "bridge": "z2m-4601-a"}
        )
        assert r.status_code == 200, r.text
        assert (r.json()["municipality"], r.json()["bridge"]) == ("4601", "z2m-4601-a")
        [(detail,)] = db_rows(
            s.db, "SELECT detail FROM audit WHERE action = 'device.changed' AND device_id = ?",
            (SOS,),
        )  # fmt: skip
        assert '"moved_to": "4601"' in detail or '"moved_to":"4601"' in detail

        # The whole bridge moves in one import: every device of it at once.
        csv = (
            "id,kind,municipality,profile,bridge\n"
            f"{SOS},safety_alarm,4601,{PROFILE},{OSLO_BRIDGE}\n"
            f"{DOOR},safety_alarm,4601,{PROFILE},{OSLO_BRIDGE}\n"
        )
        r = await root.post("/api/v1/devices/import", content=csv, headers=CSV)
        assert r.json() == {"imported": 2}, r.text
        assert db_rows(s.db, "SELECT DISTINCT municipality FROM devices WHERE bridge = ?",
                       (OSLO_BRIDGE,)) == [("4601",)]  # fmt: skip


def test_the_cli_refuses_a_device_on_another_municipality_s_bridge(tmp_path: Path) -> None:
    db = tmp_path / "alarmhub.db"
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}

    def register(device_id: str, municipality: str) -> list[str]:
        return ["devices", "register", "--id", device_id, "--kind", "safety_alarm",
                "--municipality", municipality, "--profile", PROFILE, "--bridge", OSLO_BRIDGE]  # fmt: skip

    assert run_cli(register(SOS, "0301"), env).returncode == 0
    assert run_cli(register(DOOR, "0301"), env).returncode == 0
    refused = run_cli(register(GUESS, "4601"), env)
    assert refused.returncode != 0
    # The CLI is a system admin's: it says whose the bridge is.
    assert f"bridge '{OSLO_BRIDGE}' serves another municipality" in refused.stderr
    assert "its devices are in 0301" in refused.stderr

    csv = tmp_path / "bergen.csv"
    csv.write_text(
        f"id,kind,municipality,profile,bridge\n{GUESS},safety_alarm,4601,{PROFILE},{OSLO_BRIDGE}\n"
    )
    imported = run_cli(["devices", "import", str(csv)], env)
    assert imported.returncode != 0
    assert f"line 2: device {GUESS}: bridge '{OSLO_BRIDGE}'" in imported.stderr
    assert "nothing imported" in imported.stderr
    assert db_rows(db, "SELECT DISTINCT municipality FROM devices") == [("0301",)]
    assert db_count(db, "SELECT count(*) FROM audit") == 2
