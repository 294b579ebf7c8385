"""A SCAIP device moved to another municipality keeps its SIP credentials, said loudly.

Before, nothing said that the password the old municipality had set still let
whoever knew it there send alarms and resets as the device into the new
municipality's queue. Clearing it would refuse the moved resident's genuine alarms
(the device still holds it), so the credentials stay, the move says so (the device
shows `sip_credentials: set_before_move`, an import lists `rotate_credentials`,
the CLI warns), and only the new municipality can set new ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import db_rows, run_cli

CID = "4790012345"
CSV = {"Content-Type": "text/csv"}
PASSWORD = {"password": "set in Oslo, known there"}


@pytest.mark.broker
async def test_a_move_keeps_the_credentials_and_says_to_set_new_ones(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, \
            s.client("root") as root, s.client("madm0301") as oslo, \
            s.client("madm4601") as bergen:  # fmt: skip
        body = {"id": CID, "kind": "safety_alarm", "municipality": "0301", "profile": "scaip"}
        r = await oslo.post("/api/v1/devices", json=body)
        assert (r.status_code, r.json()["sip_credentials"]) == (201, None), r.text
        r = await oslo.put(f"/api/v1/devices/{CID}/credentials", json=PASSWORD)
        assert r.status_code == 204, r.text
        assert (await oslo.get(f"/api/v1/devices/{CID}")).json()["sip_credentials"] == "set"
        stored = db_rows(s.db, "SELECT ha1_md5 FROM device_credentials WHERE device_id = ?",
                         (CID,))  # fmt: skip

        with capture_logs() as logs:
            r = await root.patch(f"/api/v1/devices/{CID}", json={"municipality": "4601"})
        assert r.status_code == 200, r.text
        assert r.json()["sip_credentials"] == "set_before_move"
        [logged] = [e for e in logs if e["event"] == "device.credentials_set_before_move"]
        assert (logged["device_ids"], logged["count"]) == ([CID], 1)
        # Kept: the device's own alarms are still accepted.
        assert db_rows(s.db, "SELECT ha1_md5 FROM device_credentials WHERE device_id = ?",
                       (CID,)) == stored  # fmt: skip

        # Oslo can neither see the device nor set its credentials any more.
        assert (await oslo.get(f"/api/v1/devices/{CID}")).status_code == 404
        r = await oslo.put(f"/api/v1/devices/{CID}/credentials", json=PASSWORD)
        assert r.status_code == 404, r.text
        # Bergen sees that they want setting, and sets them.
        r = await bergen.get(f"/api/v1/devices/{CID}")
        assert r.json()["sip_credentials"] == "set_before_move"
        r = await bergen.put(f"/api/v1/devices/{CID}/credentials", json={"password": "Bergen's"})
        assert r.status_code == 204, r.text
        assert (await bergen.get(f"/api/v1/devices/{CID}")).json()["sip_credentials"] == "set"
        assert db_rows(s.db, "SELECT actor, municipality FROM audit WHERE action = "
                       "'device.credentials_set' ORDER BY id") == [
            ("madm0301", "0301"), ("madm4601", "4601")
        ]  # fmt: skip

        # An import that moves it back lists it; one that does not move it, after
        # new credentials were set where it is, does not.
        csv = f"id,kind,municipality,profile\n{CID},safety_alarm,0301,scaip\n"
        r = await root.post("/api/v1/devices/import", content=csv, headers=CSV)
        assert r.json() == {"imported": 1, "rotate_credentials": [CID]}, r.text
        r = await oslo.put(f"/api/v1/devices/{CID}/credentials", json=PASSWORD)
        assert r.status_code == 204, r.text
        r = await root.post("/api/v1/devices/import", content=csv, headers=CSV)
        assert r.json() == {"imported": 1}, r.text


def test_the_cli_warns_when_a_moved_device_keeps_its_credentials(tmp_path: Path) -> None:
    db = tmp_path / "alarmhub.db"
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}

    def register(municipality: str) -> list[str]:
        return ["devices", "register", "--id", CID, "--kind", "safety_alarm",
                "--municipality", municipality, "--profile", "scaip",
                "--heartbeat-interval", "3600"]  # fmt: skip

    assert run_cli(register("0301"), env).returncode == 0
    rows = tmp_path / "credentials.csv"
    rows.write_text(f"id,password\n{CID},set in Oslo and known there\n")
    creds = run_cli(["devices", "credentials", "--from-csv", str(rows)], env)
    assert creds.returncode == 0, creds.stderr
    same = run_cli(register("0301"), env)
    assert same.returncode == 0, same.stderr
    assert "SIP credentials" not in same.stderr

    moved = run_cli(register("4601"), env)
    assert moved.returncode == 0, moved.stderr
    assert f"the SIP credentials of {CID} were set in the municipality they were moved from" in (
        moved.stderr
    )
    assert "alarmhub devices credentials" in moved.stderr
    listed = run_cli(["devices", "list", "--json"], env)
    assert '"sip_credentials": "set_before_move"' in listed.stdout.replace('":"', '": "')
