"""The time of the last message alarmhub stored: at start-up, the earliest a backlog began."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import aiosqlite

from alarmhub.store.sqlite.refusals import as_store_error


async def last_received(path: Path) -> datetime | None:
    """When the newest inbox row arrived (None for an empty inbox); a refusal is a StoreError."""
    sql = "SELECT received_at FROM inbox ORDER BY seq DESC LIMIT 1"
    with as_store_error():
        async with aiosqlite.connect(path) as conn, conn.execute(sql) as cur:
            row = await cur.fetchone()
    return datetime.fromisoformat(row[0]) if row else None
