"""The two stores' directories side by side, with the set-up rows each test needs.

A test of the directory contract reads through the ports only; what it reads
(devices, alarms, timeline, inbox rows) is written here, in each store's own SQL,
because those rows come from ingest, which is not under test. The same goes for
the faults injected (an audit insert that fails) and for the statements the
database must refuse (changing the audit log): each is the store's own dialect.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from alarmhub.core.model import Alarm, AlarmState, Priority
from alarmhub.core.people import AuditEntry, Role
from alarmhub.core.suppress import Silence
from alarmhub.core.tenancy import Scope
from alarmhub.store.accounts import ts
from alarmhub.store.ports import Directory
from alarmhub.store.postgres.directory import PostgresDirectory
from alarmhub.store.postgres.migrations import migrate
from alarmhub.store.sqlite.directory import SqliteDirectory
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.helpers import sqlite_at
from tests.support.postgres import PG_ADMIN_URL

ALARM_COLUMNS = [f.name for f in fields(Alarm)]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OSLO = Scope("kari", Role.OPERATOR, frozenset({"0301"}))
NOBODY = Scope("ola", Role.OPERATOR, frozenset())
ALL = Scope.everything("root")
DATABASE_ERRORS = (sqlite3.Error, asyncpg.PostgresError)


@dataclass
class Backend:
    """One store's directory, and raw access to its database for set-up and checks."""

    kind: str  # "sqlite" or "postgres"
    directory: Directory
    path: Path | None = None
    pool: asyncpg.Pool | None = None

    # --- raw statements in the store's dialect -----------------------------------

    async def run(self, sqlite_sql: str, pg_sql: str, *args: Any) -> None:
        if self.pool is not None:
            await self.pool.execute(pg_sql, *args)
            return
        assert self.path is not None
        with sqlite_at(self.path, isolation_level=None) as conn:
            conn.execute(sqlite_sql, [_sqlite_value(a) for a in args])

    async def scalar(self, sql: str) -> Any:
        """A query with no parameters, the same text in both dialects."""
        if self.pool is not None:
            return await self.pool.fetchval(sql)
        assert self.path is not None
        with sqlite_at(self.path) as conn:
            row = conn.execute(sql).fetchone()
        return row[0] if row else None

    # --- rows ingest would have written -------------------------------------------

    async def device(
        self,
        device_id: str,
        municipality: str,
        registered_at: datetime,
        *,
        kind: str = "safety_alarm",
        label: str | None = None,
        active: bool = True,
    ) -> None:
        cols = "id, kind, municipality, label, active, registered_at, updated_at, settings"
        await self.run(
            f"INSERT INTO devices ({cols}) VALUES (?,?,?,?,?,?,?,?)",
            f"INSERT INTO devices ({cols}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            device_id,
            kind,
            municipality,
            label,
            active,
            registered_at,
            registered_at,
            json.dumps({"room": "2"}),
        )

    async def alarm(self, alarm: Alarm) -> None:
        values = [getattr(alarm, c) for c in ALARM_COLUMNS]
        values = [
            v.value if c == "state" else int(v) if c == "priority" else v
            for c, v in zip(ALARM_COLUMNS, values, strict=True)
        ]
        marks = ",".join("?" * len(values))
        numbered = ",".join(f"${i}" for i in range(1, len(values) + 1))
        cols = ", ".join(ALARM_COLUMNS)
        await self.run(
            f"INSERT INTO alarms ({cols}) VALUES ({marks})",
            f"INSERT INTO alarms ({cols}) VALUES ({numbered})",
            *values,
        )

    async def timeline(
        self, alarm_id: str, at: datetime, type_: str, detail: dict[str, Any]
    ) -> None:
        await self.run(
            "INSERT INTO timeline (alarm_id, at, type, actor, detail) VALUES (?,?,?,?,?)",
            "INSERT INTO timeline (alarm_id, at, type, actor, detail) VALUES ($1,$2,$3,$4,$5)",
            alarm_id,
            at,
            type_,
            "device",
            json.dumps(detail),
        )

    async def inbox(
        self,
        fingerprint: str,
        received_at: datetime,
        device_id: str | None,
        municipality: str | None,
        verdict: str,
        *,
        reason: str | None = None,
        events: list[str] | None = None,
    ) -> None:
        cols = (
            "fingerprint, received_at, topic, payload, device_id, municipality, msg_id, "
            "verdict, reason, detail, events, payload_bytes, payload_sha256"
        )
        await self.run(
            f"INSERT INTO inbox ({cols}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            f"INSERT INTO inbox ({cols}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
            fingerprint,
            received_at,
            f"alarmhub/v1/{device_id}/events",
            b"{}",
            device_id,
            municipality,
            fingerprint.rpartition(":")[2],
            verdict,
            reason,
            "detail of " + fingerprint if verdict == "rejected" else None,
            json.dumps(events) if events is not None else None,
            2,
            "sha-" + fingerprint,
        )

    # --- faults ----------------------------------------------------------------------

    async def fail_audit(self, action: str) -> None:
        """From now on, every audit insert of `action` fails inside its transaction."""
        await self.run(
            "CREATE TRIGGER audit_fault BEFORE INSERT ON audit "
            f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
            "CREATE FUNCTION audit_fault() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'injected fault'; END $$; "
            "CREATE TRIGGER audit_fault BEFORE INSERT ON audit FOR EACH ROW "
            f"WHEN (NEW.action = '{action}') EXECUTE FUNCTION audit_fault()",
        )

    async def heal_audit(self) -> None:
        """Undo :meth:`fail_audit`."""
        await self.run(
            "DROP TRIGGER audit_fault",
            "DROP TRIGGER audit_fault ON audit; DROP FUNCTION audit_fault()",
        )


def _sqlite_value(value: Any) -> Any:
    """What the SQLite store keeps for a value: ts() text for times, 0/1 for flags."""
    if isinstance(value, datetime):
        return ts(value)
    if isinstance(value, bool):
        return int(value)
    return value


@asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    path = tmp_path / "alarmhub.db"
    store = await SqliteStore.open(path)  # migrates
    await store.close()
    yield Backend("sqlite", SqliteDirectory(path), path=path)


@asynccontextmanager
async def postgres_backend(url: str) -> AsyncIterator[Backend]:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield Backend("postgres", PostgresDirectory(pool), pool=pool)
    finally:
        await pool.close()


@asynccontextmanager
async def norwegian_database() -> AsyncIterator[str]:
    """Like tests/support/postgres.py's scratch database, sorting text as Norwegian does.

    A response centre's server may well be set up with nb_NO: text then sorts
    "a_b" < "a-b" < "aB", where SQLite (and the C locale of this machine's
    databases) sorts by bytes. The directory must page the same either way.
    """
    name = f"alarmhub_t_nb_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'nb-NO'"
        )
    finally:
        await admin.close()
    try:
        yield PG_ADMIN_URL.rpartition("/")[0] + "/" + name
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- values the tests write through the ports ------------------------------------------


def alarm(
    alarm_id: str,
    municipality: str,
    raised: datetime,
    priority: Priority = Priority.CRITICAL,
    state: AlarmState = AlarmState.OPEN,
) -> Alarm:
    return Alarm(
        alarm_id, "dev-" + alarm_id, municipality, "press", priority, state, raised, raised
    )


def silence(sid: str, municipality: str, device: str | None = None) -> Silence:
    return Silence(
        sid,
        municipality,
        NOW - timedelta(hours=1),
        NOW + timedelta(hours=1),
        device_id=device,
        reason="renovation",
        created_by="kari",
        created_at=NOW - timedelta(hours=1),
    )


def entry(action: str, **detail: object) -> AuditEntry:
    return AuditEntry("cli:root", action, NOW, detail=dict(detail))


async def seed_two_municipalities(b: Backend) -> None:
    """Oslo (0301) and Bergen (4601): a device, an alarm, its timeline, messages, a silence each."""
    await b.device("osl-1", "0301", NOW - timedelta(days=2), label="Kari stue")
    await b.device("brg-1", "4601", NOW - timedelta(days=1), label="Bergen gang")
    await b.alarm(alarm("a-osl", "0301", NOW - timedelta(minutes=10)))
    await b.alarm(alarm("a-brg", "4601", NOW - timedelta(minutes=9)))
    await b.timeline("a-osl", NOW - timedelta(minutes=10), "raised", {"event": "button.pressed"})
    await b.timeline("a-brg", NOW - timedelta(minutes=9), "raised", {"event": "button.pressed"})
    await b.inbox(
        "f:osl-1:m1", NOW - timedelta(minutes=10), "osl-1", "0301", "new", events=["button.pressed"]
    )
    await b.inbox(
        "f:brg-1:m1", NOW - timedelta(minutes=9), "brg-1", "4601", "new", events=["button.pressed"]
    )
    await b.inbox(
        "f:osl-1:m2", NOW - timedelta(minutes=8), "osl-1", "0301", "rejected", reason="bad_json"
    )
    await b.inbox(
        "f:brg-1:m2", NOW - timedelta(minutes=7), "brg-1", "4601", "rejected", reason="bad_json"
    )
    await b.inbox(
        "f:ghost:m1", NOW - timedelta(minutes=6), None, None, "rejected", reason="unknown_device"
    )
    await b.directory.insert_silence(silence("s-osl", "0301"), [])
    await b.directory.insert_silence(silence("s-brg", "4601", "brg-1"), [])
