"""An instance's heartbeat row: registered, beating with what it owns, stopped on exit."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from alarmhub.daemon.presence import Presence
from alarmhub.store.cluster import InstanceInfo
from alarmhub.store.postgres.coordination import PgCoordination
from alarmhub.store.postgres.migrations import migrate

pytestmark = pytest.mark.postgres


async def test_presence_beats_with_what_it_owns_and_says_stopped(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    await migrate(conn)
    await conn.close()
    coord = await PgCoordination.open(pg_url)
    owns: list[str] = []
    seen: list[tuple[str, ...]] = []
    presence = Presence(coord, InstanceInfo("inst-a", "h", 1, "v"), lambda: owns, 0.05)
    task = asyncio.ensure_future(presence.run())
    try:

        async def instance():
            view = await coord.cluster()
            return next((i for i in view.instances if i.id == "inst-a"), None)

        async def owns_intake() -> bool:
            row = await instance()
            if row is not None:
                seen.append(row.owns)
            return row is not None and row.owns == ("intake",)

        owns.append("intake")
        for _ in range(3000):
            if await owns_intake():
                break
            await asyncio.sleep(0.02)
        assert seen[-1] == ("intake",)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        row = await instance()
        assert row is not None
        assert row.stopped_at is not None
        assert row.owns == ()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await coord.close()
