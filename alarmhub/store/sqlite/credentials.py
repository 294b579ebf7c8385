"""A SCAIP device's digest credentials in SQLite (issue 16): HA1 per algorithm, never a password.

Written by `alarmhub devices credentials` and `PUT /api/v1/devices/{id}/credentials`
with their audit entries in one transaction; read by the SIP server once per
authenticated request (on a short-lived connection of its own, like the rest of
the directory).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from alarmhub.core.digest import DeviceCredentials
from alarmhub.core.people import AuditEntry
from alarmhub.core.tenancy import Scope
from alarmhub.store.sqlite.accounts import append_audit, transaction, ts


def set_device_credentials(
    conn: sqlite3.Connection,
    scope: Scope,
    creds: DeviceCredentials,
    now: datetime,
    audit: Sequence[AuditEntry],
) -> bool:
    """Store (or replace) the device's credentials; False, writing nothing, when the
    device is not registered in a municipality `scope` allows."""
    with transaction(conn):
        row = conn.execute(
            "SELECT municipality FROM devices WHERE id = ?", (creds.device_id,)
        ).fetchone()
        if row is None or not scope.allows(row[0]):
            return False
        # With the municipality they are set in: a move later shows them as
        # `set_before_move` (store/columns.py) until they are set again there.
        conn.execute(
            "INSERT INTO device_credentials (device_id, realm, ha1_md5, ha1_sha256, updated_at, "
            "municipality) VALUES (?,?,?,?,?,?) ON CONFLICT (device_id) DO UPDATE SET "
            "realm = excluded.realm, ha1_md5 = excluded.ha1_md5, "
            "ha1_sha256 = excluded.ha1_sha256, updated_at = excluded.updated_at, "
            "municipality = excluded.municipality",
            (creds.device_id, creds.realm, creds.ha1_md5, creds.ha1_sha256, ts(now), row[0]),
        )
        append_audit(conn, audit)
    return True


def device_credentials(conn: sqlite3.Connection, device_id: str) -> DeviceCredentials | None:
    row = conn.execute(
        "SELECT device_id, realm, ha1_md5, ha1_sha256 FROM device_credentials WHERE device_id = ?",
        (device_id,),
    ).fetchone()
    return DeviceCredentials(*row) if row else None
