"""Issue 13 items 4 and 5: a change and its audit row commit together; CSV import
validates like the API and checks ids inside the write.

Atomicity is proven by behaviour, on the real stack (Mosquitto, the hub, SQLite,
HTTP, the CLI as a subprocess): a trigger makes the audit insert of one action
fail, which happens after the change's own statements and before its commit. A
path that wrote its audit row apart (as all of them once did, on another
connection after the commit) would leave the change applied with no record of
who made it; here it must leave neither.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alarmhub.clock import SystemClock
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.people import AuditEntry
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.api_harness import stack
from tests.support.helpers import async_wait_until, db_count, db_rows, register, run_cli, sqlite_at

pytestmark = pytest.mark.broker

CSV = {"Content-Type": "text/csv"}


@contextmanager
def audit_fails(db: Path, action: str) -> Iterator[None]:
    """Make every audit insert of `action` fail inside its transaction, for a while."""
    with sqlite_at(db, timeout=10) as conn:
        conn.execute(
            "CREATE TRIGGER audit_fault BEFORE INSERT ON audit "
            f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        )
    try:
        yield
    finally:
        with sqlite_at(db, timeout=10) as conn:
            conn.execute("DROP TRIGGER audit_fault")


def audit_rows(db: Path, action: str) -> list[tuple[Any, ...]]:
    return db_rows(
        db, "SELECT actor, device_id, municipality, detail FROM audit WHERE action = ?", (action,)
    )


# --- (a) every surface: both or neither ------------------------------------------------


async def test_api_device_changes_and_import_are_atomic_with_their_audit(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("madm0301") as m:
        with audit_fails(s.db, "device.decommissioned"):
            r = await m.delete("/api/v1/devices/osl-door-1")
            assert r.status_code == 500
        assert db_rows(s.db, "SELECT active FROM devices WHERE id='osl-door-1'") == [(1,)]
        assert audit_rows(s.db, "device.decommissioned") == []
        assert s.hub.state.devices["osl-door-1"].active  # memory changes only after the commit

        r = await m.delete("/api/v1/devices/osl-door-1")
        assert (r.status_code, r.json()["active"]) == (200, False)
        assert audit_rows(s.db, "device.decommissioned") == [
            ("madm0301", "osl-door-1", "0301", "{}")
        ]

        new = {"id": "osl-new", "kind": "door_sensor", "municipality": "0301"}
        with audit_fails(s.db, "device.created"):
            assert (await m.post("/api/v1/devices", json=new)).status_code == 500
        assert db_count(s.db, "SELECT count(*) FROM devices WHERE id='osl-new'") == 0
        assert (await m.post("/api/v1/devices", json=new)).status_code == 201
        assert [r[:3] for r in audit_rows(s.db, "device.created")] == [
            ("madm0301", "osl-new", "0301")
        ]

        csv = "id,kind,municipality\nosl-i1,door_sensor,0301\nosl-i2,fall_sensor,0301\n"
        with audit_fails(s.db, "device.imported"):
            r = await m.post("/api/v1/devices/import", content=csv, headers=CSV)
            assert r.status_code == 500
        assert db_count(s.db, "SELECT count(*) FROM devices WHERE id LIKE 'osl-i%'") == 0
        assert db_count(s.db, "SELECT count(*) FROM audit WHERE actor = 'madm0301' "
                        "AND action = 'device.imported'") == 0  # fmt: skip
        r = await m.post("/api/v1/devices/import", content=csv, headers=CSV)
        assert r.json() == {"imported": 2}
        mine = [r for r in audit_rows(s.db, "device.imported") if r[0] == "madm0301"]
        assert mine == [("madm0301", None, "0301", '{"count": 2}')]


async def test_api_silences_are_atomic_with_their_audit(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("madm0301") as m:
        now = s.hub.clock.now()
        body = {"municipality": "0301", "device_id": "osl-door-1", "reason": "renovation",
                "starts_at": (now - timedelta(hours=1)).isoformat(),
                "ends_at": (now + timedelta(hours=2)).isoformat()}  # fmt: skip
        with audit_fails(s.db, "silence.created"):
            assert (await m.post("/api/v1/silences", json=body)).status_code == 500
        assert db_count(s.db, "SELECT count(*) FROM silences") == 0
        assert audit_rows(s.db, "silence.created") == []

        created = await m.post("/api/v1/silences", json=body)
        assert created.status_code == 201
        sid = created.json()["id"]
        [(actor, device, municipality, _detail)] = audit_rows(s.db, "silence.created")
        assert (actor, device, municipality) == ("madm0301", "osl-door-1", "0301")

        # Ending runs through the hub's until_committed, which retries a failed
        # commit: while the audit insert fails, the silence stays in force.
        with audit_fails(s.db, "silence.ended"):
            ending = asyncio.create_task(m.delete(f"/api/v1/silences/{sid}"))
            assert await async_wait_until(lambda: _commit_failures(s.hub) > 0, 30)
            assert db_rows(s.db, "SELECT deleted_at FROM silences") == [(None,)]
            assert audit_rows(s.db, "silence.ended") == []
            assert not ending.done()
        assert (await asyncio.wait_for(ending, 60)).status_code == 204
        assert db_count(s.db, "SELECT count(*) FROM silences WHERE deleted_by='madm0301'") == 1
        assert len(audit_rows(s.db, "silence.ended")) == 1


async def test_operator_action_is_audited_in_the_hubs_transaction(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s, s.client("op0301") as op:
        alarm = s.alarms["osl-pend-1"]
        with audit_fails(s.db, "alarm.acknowledge"):
            acking = asyncio.create_task(op.post(f"/api/v1/alarms/{alarm}/acknowledge"))
            assert await async_wait_until(lambda: _commit_failures(s.hub) > 0, 30)
            assert db_rows(s.db, "SELECT state FROM alarms WHERE id=?", (alarm,)) == [("open",)]
            assert db_count(s.db, "SELECT count(*) FROM timeline WHERE type='acknowledged'") == 0
            assert audit_rows(s.db, "alarm.acknowledge") == []
        r = await asyncio.wait_for(acking, 60)
        assert (r.status_code, r.json()["state"]) == (200, "acknowledged")
        [(actor, device, municipality, detail)] = audit_rows(s.db, "alarm.acknowledge")
        assert (actor, device, municipality, detail) == (
            "op0301",
            "osl-pend-1",
            "0301",
            '{"with_note": false}',
        )


def _commit_failures(hub: Any) -> float:
    return float(hub.metrics.registry.get_sample_value("alarmhub_commit_failures_total") or 0)


def test_cli_changes_are_atomic_with_their_audit(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
    register(env["ALARMHUB_DATABASE_URL"], [("door-0", "door_sensor", "0301")], tmp_path)
    device = ["devices", "register", "--id", "door-1", "--kind", "door_sensor",
              "--municipality", "0301", "--heartbeat-interval", "600"]  # fmt: skip
    user = ["users", "create", "--name", "kari", "--role", "operator", "--municipality", "0301"]
    token = ["tokens", "create", "--user", "kari"]
    for action, args, table in [
        ("device.registered", device, "devices WHERE id='door-1'"),
        ("user.created", user, "users"),
        ("token.created", token, "api_tokens"),
    ]:
        with audit_fails(db, action):
            assert run_cli(args, env).returncode != 0
        assert db_count(db, f"SELECT count(*) FROM {table}") == 0, action
        assert audit_rows(db, action) == []
        done = run_cli(args, env)
        assert done.returncode == 0, done.stderr
        assert db_count(db, f"SELECT count(*) FROM {table}") == 1, action
        [(actor, *_)] = audit_rows(db, action)
        assert actor.startswith("cli:")
    [(_, device_id, municipality, _)] = audit_rows(db, "device.registered")
    assert (device_id, municipality) == ("door-1", "0301")
    [(_, _, _, detail)] = audit_rows(db, "user.created")
    assert '"user": "kari"' in detail
    # The CLI's CSV import (the set-up above) is audited too.
    assert [r[2:] for r in audit_rows(db, "device.imported")] == [("0301", '{"count": 1}')]


# --- (b) the audit table is append-only in the database ------------------------------


def test_audit_rows_cannot_be_updated_or_deleted(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    register(f"sqlite:///{db}", [("door-0", "door_sensor", "0301")], tmp_path)
    with sqlite_at(db) as conn:
        conn.execute(
            "INSERT INTO audit (at, actor, action, detail) VALUES ('2026-01-01', 'x', 'y', '{}')"
        )
    with sqlite_at(db) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'someone else'")
    with sqlite_at(db) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit")
    assert db_count(db, "SELECT count(*) FROM audit") == 2  # the import's row and ours
    assert db_count(db, "SELECT count(*) FROM audit WHERE actor = 'x'") == 1


# --- item 5: CSV import validates like the API, and checks ids inside the write -----------

BAD_ROWS = [
    # (column header, cell, field named in the error)
    ("resident", "Kari Nordmann, Storgata 1", "resident"),
    ("label", "x" * 201, "label"),
    ("profile", "p" * 65, "profile"),
    (
        "profile",
        "no-such-profile",
        "profile 'no-such-profile' is not one of",
    ),  # would decode nothing
]


async def test_csv_import_validates_each_row_as_the_api_does(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("madm0301") as m:
        for column, cell, field in BAD_ROWS:
            api = await m.post("/api/v1/devices", json={"id": "osl-x", "kind": "door_sensor",
                                                        "municipality": "0301", column: cell})  # fmt: skip
            assert api.status_code == 422, column
            assert field in api.json()["error"]["message"]
            csv = f"id,kind,municipality,{column}\nosl-ok,door_sensor,0301,\nosl-x,door_sensor,0301,{cell}\n"
            r = await m.post("/api/v1/devices/import", content=csv, headers=CSV)
            assert r.status_code == 422, column
            [row_error] = r.json()["error"]["rows"]
            assert row_error.startswith(f"line 3: {field}"), row_error
            path = tmp_path / f"{column}.csv"
            path.write_text(csv)
            env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{s.db}"}
            out = run_cli(["devices", "import", str(path)], env)
            assert out.returncode != 0
            assert f"line 3: {field}" in out.stderr
            out = run_cli(["devices", "register", "--id", "osl-x", "--kind", "door_sensor",
                           "--municipality", "0301", f"--{column}", cell], env)  # fmt: skip
            assert out.returncode != 0
            assert field in out.stderr
        # Nothing written from any rejected file, not even its good rows.
        assert db_count(s.db, "SELECT count(*) FROM devices WHERE id IN ('osl-ok', 'osl-x')") == 0


async def test_concurrent_imports_of_one_new_id_cannot_both_succeed(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, \
            s.client("madm0301") as oslo, s.client("madm4601") as bergen:  # fmt: skip
        for round_ in range(5):
            ids = [f"new-{round_}-{i}" for i in range(3)]
            body = "id,kind,municipality\n"
            r_oslo, r_bergen = await asyncio.gather(
                oslo.post("/api/v1/devices/import", headers=CSV,
                          content=body + "".join(f"{i},door_sensor,0301\n" for i in ids)),
                bergen.post("/api/v1/devices/import", headers=CSV,
                            content=body + "".join(f"{i},door_sensor,4601\n" for i in ids)),
            )  # fmt: skip
            codes = sorted([r_oslo.status_code, r_bergen.status_code])
            assert codes == [200, 422], (round_, r_oslo.text, r_bergen.text)
            winner = "0301" if r_oslo.status_code == 200 else "4601"
            loser = r_bergen if winner == "0301" else r_oslo
            assert loser.json()["error"]["rows"] == [
                f"line {n}: device {i}: that device id is not available"
                for n, i in enumerate(ids, start=2)
            ]
            placeholders = ",".join("?" * len(ids))
            assert db_rows(s.db, f"SELECT DISTINCT municipality FROM devices WHERE id IN ({placeholders})",
                           tuple(ids)) == [(winner,)]  # fmt: skip
            # One audit row per round: only the winner's import happened.
            assert db_count(s.db, "SELECT count(*) FROM audit WHERE action='device.imported' "
                            "AND actor LIKE 'madm%'") == round_ + 1  # fmt: skip


async def test_new_id_is_checked_inside_the_write_across_connections(tmp_path: Path) -> None:
    """Two connections (the daemon and a CLI, say) registering one new id: one wins.

    The check runs inside each write's BEGIN IMMEDIATE, so the second writer sees
    the first's committed row; no asyncio lock is shared between them.
    """
    db = tmp_path / "a.db"
    stores = [await SqliteStore.open(db) for _ in range(2)]
    try:
        now = SystemClock().now()
        for round_ in range(10):
            results = await asyncio.gather(
                *(
                    s.register_devices(
                        [Device(f"new-{round_}", DeviceKind.DOOR_SENSOR, m)],
                        now,
                        audit=[AuditEntry("tester", "device.created", now, municipality=m)],
                        existing_in=frozenset(),
                    )
                    for s, m in zip(stores, ("0301", "4601"), strict=True)
                ),
                return_exceptions=True,
            )
            assert sorted(type(r).__name__ for r in results) == ["IdTakenError", "list"]
    finally:
        for s in stores:
            await s.close()
    assert db_count(db, "SELECT count(*) FROM devices") == 10
    assert db_count(db, "SELECT count(*) FROM audit") == 10  # the loser's entry rolled back
