"""Every instance's presence in PostgreSQL: registered at start, heartbeat, stopped.

The times are the database's `now()`, like the leases', so `alarmhub cluster
status` compares a heartbeat's age on one clock. A heartbeat is an upsert: an
instance whose row was deleted by hand (or never written, the database having
been away at start) reappears with its next heartbeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from alarmhub.store.cluster import InstanceInfo, InstanceRow
from alarmhub.store.postgres.leases import Conn

_REGISTER = """
INSERT INTO instances AS i (id, host, pid, version, started_at, heartbeat_at, stopped_at, owns)
VALUES ($1, $2, $3, $4, now(), now(), NULL, '[]')
ON CONFLICT (id) DO UPDATE
    SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
        started_at = now(), heartbeat_at = now(), stopped_at = NULL, owns = '[]'
"""

# started_at is kept: a heartbeat of a known instance is not a new start.
_HEARTBEAT = """
INSERT INTO instances AS i (id, host, pid, version, started_at, heartbeat_at, stopped_at, owns)
VALUES ($1, $2, $3, $4, now(), now(), NULL, $5::jsonb)
ON CONFLICT (id) DO UPDATE
    SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
        heartbeat_at = now(), stopped_at = NULL, owns = EXCLUDED.owns
"""

_STOPPED = """
UPDATE instances SET stopped_at = now(), heartbeat_at = now(), owns = '[]' WHERE id = $1
"""

_ALL = """
SELECT id, host, pid, version, started_at, heartbeat_at, stopped_at, owns::text AS owns
FROM instances ORDER BY id
"""


async def register(conn: Conn, info: InstanceInfo) -> None:
    await conn.execute(_REGISTER, info.id, info.host, info.pid, info.version)


async def heartbeat(conn: Conn, info: InstanceInfo, owns: Sequence[str]) -> None:
    owned = orjson.dumps(sorted(owns)).decode()
    await conn.execute(_HEARTBEAT, info.id, info.host, info.pid, info.version, owned)


async def mark_stopped(conn: Conn, instance_id: str) -> None:
    await conn.execute(_STOPPED, instance_id)


async def all_instances(conn: Conn) -> list[InstanceRow]:
    return [
        InstanceRow(
            id=r["id"],
            host=r["host"],
            pid=r["pid"],
            version=r["version"],
            started_at=r["started_at"],
            heartbeat_at=r["heartbeat_at"],
            stopped_at=r["stopped_at"],
            owns=tuple(orjson.loads(r["owns"])),
        )
        for r in await conn.fetch(_ALL)
    ]


async def database_now(conn: Conn) -> datetime:
    now: datetime = await conn.fetchval("SELECT now()")
    return now
