"""A device moved to another municipality leaves its resident reference behind.

References are per municipality: in the new one "r-17" is another person, whose
national id the moved device's alarms showed and whose record they would journal to.
A move by PATCH, API import or CLI import clears `resident` unless the same change
names one; the PATCH's audit entry says which reference it cleared.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import db_rows, run_cli

RESIDENT = "SELECT municipality, resident FROM devices WHERE id = 'osl-pend-1'"
CSV = {"Content-Type": "text/csv"}


@pytest.mark.broker
async def test_a_patch_that_moves_a_device_clears_its_resident(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("root") as root:
        assert (
            await root.patch("/api/v1/devices/osl-pend-1", json={"resident": "r-17"})
        ).is_success
        # Another change where it is keeps the resident.
        r = await root.patch("/api/v1/devices/osl-pend-1", json={"label": "hall"})
        assert r.json()["resident"] == "r-17"

        r = await root.patch(
            "/api/v1/devices/osl-pend-1", json={"municipality": "4601", "label": "moved"}
        )
        assert r.status_code == 200, r.text
        assert (r.json()["municipality"], r.json()["resident"]) == ("4601", None)
        assert db_rows(s.db, RESIDENT) == [("4601", None)]
        assert s.hub.state.devices["osl-pend-1"].resident is None
        [(detail,)] = db_rows(
            s.db,
            "SELECT detail FROM audit WHERE action = 'device.changed' ORDER BY id DESC LIMIT 1",
        )
        assert json.loads(detail)["resident_cleared"] == "r-17"
        assert json.loads(detail)["moved_to"] == "4601"

        # A move that names the resident in the same change sets it.
        r = await root.patch(
            "/api/v1/devices/osl-pend-1", json={"municipality": "0301", "resident": "r-5"}
        )
        assert (r.json()["municipality"], r.json()["resident"]) == ("0301", "r-5")


@pytest.mark.broker
async def test_an_import_that_moves_a_device_clears_its_resident(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("root") as root:
        assert (
            await root.patch("/api/v1/devices/osl-pend-1", json={"resident": "r-17"})
        ).is_success
        # Re-imported where it is, from a file without residents: kept.
        stay = "id,kind,municipality\nosl-pend-1,safety_alarm,0301\n"
        assert (await root.post("/api/v1/devices/import", content=stay, headers=CSV)).is_success
        assert db_rows(s.db, RESIDENT) == [("0301", "r-17")]

        move = "id,kind,municipality\nosl-pend-1,safety_alarm,4601\n"
        r = await root.post("/api/v1/devices/import", content=move, headers=CSV)
        assert r.status_code == 200, r.text
        assert db_rows(s.db, RESIDENT) == [("4601", None)]
        assert s.hub.state.devices["osl-pend-1"].resident is None

        # The CLI's import, beside the running daemon, the same way.
        r = await root.patch("/api/v1/devices/osl-pend-1", json={"resident": "r-9"})
        assert r.is_success
        file = tmp_path / "back.csv"
        file.write_text("id,kind,municipality\nosl-pend-1,safety_alarm,0301\n")
        env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{s.db}"}
        cli = await asyncio.to_thread(run_cli, ["devices", "import", str(file)], env)
        assert cli.returncode == 0, cli.stderr
        assert db_rows(s.db, RESIDENT) == [("0301", None)]
