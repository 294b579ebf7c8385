"""Setting a SCAIP device's SIP digest credentials (issue 16): the API and the CLI.

`PUT /api/v1/devices/{id}/credentials` and `alarmhub devices credentials --id ID
--password-stdin` store HA1 for MD5 and SHA-256 in the configured realm, never the
password: it is not echoed, not audited, not logged. A municipality admin sets
credentials for its own devices only; another municipality's device is a 404, as
for every device out of scope. Operators may not set them at all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alarmhub.core.digest import MD5, SHA256, ha1
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import REPO, db_rows, register

SECRET = "Pendant-Secret-0042"


async def test_api_sets_credentials_in_scope_and_audits_without_the_password(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s:
        path = "/api/v1/devices/osl-pend-1/credentials"
        async with s.client("madm0301") as oslo:
            r = await oslo.put(path, json={"password": SECRET})
            assert r.status_code == 204, r.text
            assert r.content == b""
            short = await oslo.put(path, json={"password": "short"})
            assert short.status_code == 422
            assert SECRET not in short.text
            # Another municipality's device: as unknown as one that does not exist.
            other = await oslo.put(
                "/api/v1/devices/brg-pend-1/credentials", json={"password": SECRET}
            )
            ghost = await oslo.put("/api/v1/devices/ghost/credentials", json={"password": SECRET})
            assert other.status_code == ghost.status_code == 404
            assert other.json() == ghost.json()
        async with s.client("op0301") as operator:
            denied = await operator.put(path, json={"password": SECRET})
            assert denied.status_code == 403
        rows = db_rows(s.db, "SELECT device_id, realm, ha1_md5, ha1_sha256 FROM device_credentials")
        audit = db_rows(
            s.db,
            "SELECT actor, device_id, municipality, detail FROM audit "
            "WHERE action = 'device.credentials_set'",
        )
        stored = await s.hub.directory.device_credentials("osl-pend-1")
    assert rows == [
        (
            "osl-pend-1",
            "alarmhub",
            ha1(MD5, "osl-pend-1", "alarmhub", SECRET),
            ha1(SHA256, "osl-pend-1", "alarmhub", SECRET),
        )
    ]
    assert stored is not None
    assert stored.realm == "alarmhub"
    assert [(a, d, m) for a, d, m, _ in audit] == [("madm0301", "osl-pend-1", "0301")]
    assert SECRET not in str(audit)


def test_cli_reads_the_password_from_stdin_and_stores_ha1(tmp_path: Path) -> None:
    db = tmp_path / "alarmhub.db"
    url = f"sqlite:///{db}"
    register(url, [("4790012345", "safety_alarm", "0301")], tmp_path)

    def cli(*args: str, stdin: str, realm: str = "centre-a") -> subprocess.CompletedProcess[str]:
        env = {"ALARMHUB_DATABASE_URL": url, "ALARMHUB_SCAIP_REALM": realm, "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [sys.executable, "-m", "alarmhub.cli", "devices", "credentials", *args],
            input=stdin,
            env={**env, "ALARMHUB_RULES": str(REPO / "config" / "rules.toml")},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )

    ok = cli("--id", "4790012345", "--password-stdin", stdin=SECRET + "\n")
    assert ok.returncode == 0, ok.stderr
    assert "realm 'centre-a'" in ok.stdout
    assert SECRET not in ok.stdout + ok.stderr
    [(realm, md5)] = db_rows(db, "SELECT realm, ha1_md5 FROM device_credentials")
    assert (realm, md5) == ("centre-a", ha1(MD5, "4790012345", "centre-a", SECRET))

    unknown = cli("--id", "nobody", "--password-stdin", stdin=SECRET + "\n")
    assert unknown.returncode != 0
    assert "no device nobody is registered" in unknown.stderr
    empty = cli("--id", "4790012345", "--password-stdin", stdin="")
    assert empty.returncode != 0
    assert "8 to 256 characters" in empty.stderr
    [(count,)] = db_rows(db, "SELECT count(*) FROM audit WHERE action = 'device.credentials_set'")
    assert count == 1

    # Many at once from a CSV: every row checked first, one bad row and nothing is set.
    register(url, [("4790000001", "safety_alarm", "0301")], tmp_path)
    rows = tmp_path / "credentials.csv"
    rows.write_text(f"id,password\n4790012345,{SECRET}-2\n4790000001,short\n")
    refused = cli("--from-csv", str(rows), stdin="")
    assert refused.returncode != 0
    assert "line 3 (4790000001)" in refused.stderr
    assert SECRET not in refused.stdout + refused.stderr
    rows.write_text(f"id,password\n4790012345,{SECRET}-2\nnobody,{SECRET}\n")
    unknown_row = cli("--from-csv", str(rows), stdin="")
    assert "no device nobody is registered" in unknown_row.stderr
    assert db_rows(db, "SELECT ha1_md5 FROM device_credentials") == [(md5,)]  # untouched
    rows.write_text(f"id,password\n4790012345,{SECRET}-2\n4790000001,{SECRET}-1\n")
    bulk = cli("--from-csv", str(rows), stdin="")
    assert bulk.returncode == 0, bulk.stderr
    assert "credentials set for 2 device(s)" in bulk.stdout
    stored = dict(db_rows(db, "SELECT device_id, ha1_md5 FROM device_credentials"))
    assert stored == {
        "4790012345": ha1(MD5, "4790012345", "centre-a", SECRET + "-2"),
        "4790000001": ha1(MD5, "4790000001", "centre-a", SECRET + "-1"),
    }
    [(count,)] = db_rows(db, "SELECT count(*) FROM audit WHERE action = 'device.credentials_set'")
    assert count == 3
