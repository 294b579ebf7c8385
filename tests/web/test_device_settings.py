"""Per-device settings through the API and the importers: set, used, never wiped by accident."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import async_wait_until, db_rows, run_cli

pytestmark = pytest.mark.broker

FENCE = {"geofence": {"lat": 59.9139, "lon": 10.7522, "radius_m": 500.0}}


def stored_settings(db: Path, device: str) -> dict:
    return orjson.loads(db_rows(db, "SELECT settings FROM devices WHERE id = ?", (device,))[0][0])


async def test_geofence_set_over_the_api_survives_patch_decommission_and_reimport(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("madm0301") as c:
        created = await c.post(
            "/api/v1/devices",
            json={
                "id": "gps-7",
                "kind": "gps_tracker",
                "municipality": "0301",
                "resident": "r-7",
                "settings": FENCE,
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["settings"] == FENCE
        bad = await c.post(
            "/api/v1/devices",
            json={
                "id": "gps-8",
                "kind": "gps_tracker",
                "municipality": "0301",
                "settings": {"geofence": {"lat": 91, "lon": 0, "radius_m": 5}},
            },
        )
        assert bad.status_code == 422
        assert "settings.geofence.lat" in bad.text
        # The daemon uses the fence at once: a fix 2 km north raises left_safe_zone.
        s.pub.publish(
            "alarmhub/v1/gps-7/events",
            {
                "id": "l1",
                "ts": "2026-11-25T10:00:00Z",
                "type": "location",
                "lat": 59.9319,
                "lon": 10.7522,
                "accuracy_m": 10,
            },
        )
        sql = "SELECT kind, resident FROM alarms WHERE device_id = 'gps-7'"
        assert await async_wait_until(lambda: db_rows(s.db, sql) == [("left_safe_zone", "r-7")], 10)
        patched = await c.patch("/api/v1/devices/gps-7", json={"label": "Tracker 7"})
        assert patched.status_code == 200, patched.text
        assert stored_settings(s.db, "gps-7") == FENCE
        reimport = await c.post(
            "/api/v1/devices/import",
            content="id,kind,municipality\ngps-7,gps_tracker,0301\n",
            headers={"content-type": "text/csv"},
        )
        assert reimport.status_code == 200, reimport.text
        assert stored_settings(s.db, "gps-7") == FENCE
        assert db_rows(s.db, "SELECT resident FROM devices WHERE id='gps-7'") == [("r-7",)]
        gone = await c.delete("/api/v1/devices/gps-7")
        assert gone.status_code == 200, gone.text
        assert stored_settings(s.db, "gps-7") == FENCE
        assert s.hub.state.devices["gps-7"].settings.geofence_circle == (59.9139, 10.7522, 500.0)
        assert not s.hub.state.devices["gps-7"].active


async def test_two_creates_of_one_new_id_one_wins(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s:
        async with s.client("madm0301") as a, s.client("madm4601") as b:
            r1, r2 = await asyncio.gather(
                a.post(
                    "/api/v1/devices",
                    json={"id": "race-1", "kind": "door_sensor", "municipality": "0301"},
                ),
                b.post(
                    "/api/v1/devices",
                    json={"id": "race-1", "kind": "door_sensor", "municipality": "4601"},
                ),
            )
        assert sorted([r1.status_code, r2.status_code]) == [201, 409]
        assert len(db_rows(s.db, "SELECT municipality FROM devices WHERE id='race-1'")) == 1


def test_cli_csv_with_settings_column_and_without_it(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    csv = tmp_path / "d.csv"
    csv.write_text(
        "id,kind,municipality,resident,settings\n"
        'disp-1,medication_dispenser,4601,r-1,"{""dose_schedule"": {""times"": [""08:00""]}}"\n'
    )
    assert run_cli(["devices", "import", str(csv)], env).returncode == 0
    plain = tmp_path / "plain.csv"
    plain.write_text("id,kind,municipality\ndisp-1,medication_dispenser,4601\n")
    assert run_cli(["devices", "import", str(plain)], env).returncode == 0
    [row] = orjson.loads(run_cli(["devices", "list", "--json"], env).stdout)
    assert row["resident"] == "r-1"
    assert row["settings"] == {"dose_schedule": {"times": ["08:00"], "window_min": 60}}
    broken = tmp_path / "broken.csv"
    broken.write_text(
        'id,kind,municipality,settings\nx,door_sensor,4601,"{""windows"": {""night"": [""25:00"", ""06:00""]}}"\n'
    )
    result = run_cli(["devices", "import", str(broken)], env)
    assert result.returncode == 1
    assert "line 2" in result.stderr
    assert "25:00" in result.stderr
