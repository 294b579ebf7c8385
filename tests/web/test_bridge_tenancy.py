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

import orjson
import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import assign_bridge, db_count, db_rows, run_cli

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
        assign_bridge(f"sqlite:///{s.db}", OSLO_BRIDGE, "0301")
        assign_bridge(f"sqlite:///{s.db}", "z2m-4601-a", "4601")
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
    # Two registrations, and the first one's assignment of the bridge it opened.
    assert db_count(db, "SELECT count(*) FROM audit") == 3
    assert db_rows(db, "SELECT id, municipality FROM bridges") == [(OSLO_BRIDGE, "0301")]


NEW_BRIDGE = "z2m-4601-care"


@pytest.mark.broker
async def test_a_new_bridge_is_assigned_by_a_system_admin_before_anyone_registers_on_it(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Oslo's admin could claim the bridge a care home in Bergen was about to set up by
    registering the first device on it; now the system admin assigns it first."""
    async with stack(tmp_path, broker, client_id, alarms=False) as s, \
            s.client("madm0301") as oslo, s.client("madm4601") as bergen:  # fmt: skip
        # Unassigned: refused to both, with what to do and who must do it.
        for client, municipality in ((oslo, "0301"), (bergen, "4601")):
            r = await client.post("/api/v1/devices", json=_body(GUESS, municipality, NEW_BRIDGE))
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert (error["code"], error["bridge"]) == ("bridge_unassigned", NEW_BRIDGE)
            assert (
                f"bridge {NEW_BRIDGE} is not assigned to a municipality; a system admin "
                f"assigns it with `alarmhub bridges assign {NEW_BRIDGE} --municipality "
                f"{municipality}`"
            ) in error["message"]
        csv = f"id,kind,municipality,profile,bridge\n{GUESS},safety_alarm,0301,{PROFILE},{NEW_BRIDGE}\n"
        r = await oslo.post("/api/v1/devices/import", content=csv, headers=CSV)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "bridge_unassigned"), r.text
        [row] = r.json()["error"]["rows"]
        assert row.startswith(f"line 2: device {GUESS}: bridge {NEW_BRIDGE} is not assigned")
        assert db_count(s.db, "SELECT count(*) FROM devices WHERE id = ?", (GUESS,)) == 0

        # The system admin assigns it to Bergen (audited); Oslo is refused as on any
        # other municipality's bridge, and not told whose it is; Bergen registers.
        assign_bridge(f"sqlite:///{s.db}", NEW_BRIDGE, "4601")
        r = await oslo.post("/api/v1/devices", json=_body(GUESS, "0301", NEW_BRIDGE))
        assert (r.status_code, r.json()["error"]["code"]) == (409, "bridge_taken"), r.text
        assert r.json()["error"]["message"].count("4601") == 1  # only in the bridge's name
        r = await oslo.post("/api/v1/devices", json=_body(GUESS, "0301", "z2m-0301-x"))
        assert (r.status_code, r.json()["error"]["code"]) == (409, "bridge_unassigned"), r.text
        r = await bergen.post("/api/v1/devices", json=_body(GUESS, "4601", NEW_BRIDGE))
        assert r.status_code == 201, r.text

    assert db_rows(s.db, "SELECT municipality FROM devices WHERE bridge = ?", (NEW_BRIDGE,)) == [
        ("4601",)
    ]
    rows = db_rows(s.db, "SELECT actor, municipality, detail FROM audit WHERE action = ?",
                   ("bridge.assigned",))  # fmt: skip
    assert [(a.startswith("cli:"), m, NEW_BRIDGE in d) for a, m, d in rows] == [
        (True, "4601", True)
    ]


def test_the_cli_assigns_a_bridge_but_not_away_from_its_devices(tmp_path: Path) -> None:
    db = tmp_path / "alarmhub.db"
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
    assigned = run_cli(["bridges", "assign", NEW_BRIDGE, "--municipality", "4601"], env)
    assert assigned.returncode == 0, assigned.stderr
    assert f"assigned bridge {NEW_BRIDGE} to 4601" in assigned.stdout
    # A system admin's registration of another municipality's device on it: refused,
    # saying how to reassign a bridge that has no devices yet.
    register = ["devices", "register", "--id", SOS, "--kind", "safety_alarm",
                "--profile", PROFILE, "--bridge", NEW_BRIDGE, "--municipality"]  # fmt: skip
    refused = run_cli([*register, "0301"], env)
    assert refused.returncode != 0
    assert f"`alarmhub bridges assign {NEW_BRIDGE} --municipality 0301` reassigns" in (
        refused.stderr
    )
    assert run_cli([*register, "4601"], env).returncode == 0
    # With a device on it, its devices decide: no reassignment away from them.
    moved = run_cli(["bridges", "assign", NEW_BRIDGE, "--municipality", "0301"], env)
    assert moved.returncode == 1
    assert f"bridge {NEW_BRIDGE} has devices in 4601" in moved.stderr
    bad = run_cli(["bridges", "assign", "a/b", "--municipality", "0301"], env)
    assert bad.returncode == 2
    assert db_rows(db, "SELECT id, municipality FROM bridges") == [(NEW_BRIDGE, "4601")]
    listed = run_cli(["bridges", "list", "--json"], env)
    assert [(b["id"], b["municipality"]) for b in orjson.loads(listed.stdout)] == [
        (NEW_BRIDGE, "4601")
    ]
