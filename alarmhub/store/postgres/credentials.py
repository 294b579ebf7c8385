"""A SCAIP device's digest credentials in PostgreSQL: the SQLite module's behaviour, call
for call (tests/store/test_device_credentials.py runs one suite over both)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from alarmhub.core.digest import DeviceCredentials
from alarmhub.core.people import AuditEntry
from alarmhub.core.tenancy import Scope
from alarmhub.store.postgres.accounts import append_audit
from alarmhub.store.postgres.sql import Conn, storable


async def set_device_credentials(
    conn: Conn,
    scope: Scope,
    creds: DeviceCredentials,
    now: datetime,
    audit: Sequence[AuditEntry],
) -> bool:
    """Store (or replace) the device's credentials; False, writing nothing, when the
    device is not registered in a municipality `scope` allows."""
    if not storable(creds.device_id):
        return False
    async with conn.transaction():
        # FOR SHARE: a move of the device to another municipality waits for this write.
        municipality = await conn.fetchval(
            "SELECT municipality FROM devices WHERE id = $1 FOR SHARE", creds.device_id
        )
        if municipality is None or not scope.allows(municipality):
            return False
        await conn.execute(
            "INSERT INTO device_credentials (device_id, realm, ha1_md5, ha1_sha256, updated_at, "
            "municipality) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id) DO UPDATE SET "
            "realm = excluded.realm, ha1_md5 = excluded.ha1_md5, "
            "ha1_sha256 = excluded.ha1_sha256, updated_at = excluded.updated_at, "
            "municipality = excluded.municipality",
            creds.device_id,
            creds.realm,
            creds.ha1_md5,
            creds.ha1_sha256,
            now,
            municipality,
        )
        await append_audit(conn, audit)
    return True


async def device_credentials(conn: Conn, device_id: str) -> DeviceCredentials | None:
    if not storable(device_id):
        return None
    row = await conn.fetchrow(
        "SELECT device_id, realm, ha1_md5, ha1_sha256 FROM device_credentials WHERE device_id = $1",
        device_id,
    )
    return DeviceCredentials(*row) if row else None
