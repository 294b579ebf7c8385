"""What supervision reads back from the store at start (issue 12 item 15).

A restart must not make alarmhub forget how long a device has been silent: the
last-heard time is read back from `devices.last_seen_at` (written with every
batch), or, for a device never heard, its registration time, so a device that
never sent anything is supervised from when it was registered, not from each
start. Read on a connection of its own, once, before ingest starts.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import aiosqlite

_LAST_HEARD = "SELECT id, coalesce(last_seen_at, registered_at) FROM devices WHERE active = 1"


async def load_last_heard(path: Path) -> dict[str, datetime]:
    """Device id -> when it was last heard, or registered if never heard."""
    async with aiosqlite.connect(path) as conn, conn.execute(_LAST_HEARD) as cur:
        return {row[0]: datetime.fromisoformat(row[1]) for row in await cur.fetchall()}
