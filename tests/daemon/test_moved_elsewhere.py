"""A device moved by another process is decided where it is now, before the registry poll.

The CLI (or another instance's API on a shared PostgreSQL) writes the registry
without this instance's lock; the instance's poll (daemon/registry.py) learns of a
move up to REGISTRY_POLL_S later. A batch decided in between, with the device where
it was, used to raise its alarm in the old municipality, about the old resident,
and store its messages there (promise 3). The batch's commit checks, in its own
transaction, that each device it was decided with is still where it was
(DeviceMovedError), and the batch is decided again on the devices as stored.

The poll is held off here (an hour), so the window is certain, not a matter of
how fast the machine is; the move is the real CLI's, writing the database directly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from alarmhub.app import AlarmHub
from alarmhub.core.model import Event, EventType
from alarmhub.daemon import registry
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import (
    Publisher,
    db_rows,
    hub_settings,
    native,
    run_cli,
)

pytestmark = pytest.mark.broker

REGISTERED = (
    "id,kind,municipality,resident\n"
    "pend-1,safety_alarm,0301,r-oslo-1\n"
    "pend-2,safety_alarm,0301,r-oslo-2\n"
    "pend-3,safety_alarm,0301,r-oslo-3\n"
    "pend-4,safety_alarm,0301,r-oslo-4\n"
)
MOVED = (
    "id,kind,municipality,resident\n"
    "pend-1,safety_alarm,4601,r-bergen-1\n"
    "pend-2,safety_alarm,4601,r-bergen-2\n"
    "pend-3,safety_alarm,4601,r-bergen-3\n"
    "pend-4,safety_alarm,4601,r-bergen-4\n"
)


class Database:
    """Reads of the hub's database, SQLite or PostgreSQL, from outside the hub."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite:///"):
            path = Path(self.url.removeprefix("sqlite:///"))
            return await asyncio.to_thread(db_rows, path, sql)
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def count(self, sql: str) -> int:
        return int((await self.rows(sql))[0][0])

    async def import_devices(self, tmp_path: Path, name: str, csv: str) -> None:
        """What an administrator's `alarmhub devices import` does: beside the daemon."""
        file = tmp_path / name
        file.write_text(csv)
        env = {"ALARMHUB_DATABASE_URL": self.url}
        cli = await asyncio.to_thread(run_cli, ["devices", "import", str(file)], env)
        assert cli.returncode == 0, cli.stderr


async def _until(db: Database, sql: str, want: int) -> bool:
    async def check() -> bool:
        return await db.count(sql) >= want

    for _ in range(300):
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def _moved_in_the_window(
    tmp_path: Path, broker: LocalBroker, client_id: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "REGISTRY_POLL_S", 3600.0)
    db = Database(url)
    await db.import_devices(tmp_path, "registered.csv", REGISTERED)
    pub = Publisher(broker.port)
    settings = hub_settings(tmp_path, broker.url, client_id, database_url=url)
    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            await db.import_devices(tmp_path, "moved.csv", MOVED)
            # The window: the move is committed, and this instance has not polled.
            assert hub.state.devices["pend-1"].municipality == "0301"

            # A press, and a power alarm cleared by the event that ends it.
            pub.publish(*native("pend-1", "press-1", "button.pressed"))
            pub.publish(*native("pend-2", "lost-1", "power.lost"))
            assert await _until(db, "SELECT count(*) FROM alarms", 2)
            later = "2026-11-25T10:00:30Z"
            pub.publish(*native("pend-2", "restored-1", "power.restored", ts=later))
            # A clearing event with nothing to clear, the device's first word since the move.
            pub.publish(*native("pend-3", "restored-1", "power.restored", ts=later))
            assert await _until(db, "SELECT count(*) FROM inbox", 4)

            alarms = await db.rows(
                "SELECT device_id, kind, municipality, resident, state FROM alarms "
                "ORDER BY device_id"
            )
            assert [a[:4] for a in alarms] == [
                ("pend-1", "button", "4601", "r-bergen-1"),
                ("pend-2", "power_lost", "4601", "r-bergen-2"),
            ]
            # Resolved by the clearing event, in the municipality it was raised in.
            assert alarms[1][4] == "resolved"
            inbox = await db.rows("SELECT device_id, msg_id, municipality FROM inbox ORDER BY seq")
            assert sorted(inbox) == [
                ("pend-1", "press-1", "4601"),
                ("pend-2", "lost-1", "4601"),
                ("pend-2", "restored-1", "4601"),
                ("pend-3", "restored-1", "4601"),
            ]
            # alarmhub's own event about a device (supervision found it silent), decided
            # with the registry entry supervision holds: the one from before the move.
            assert hub.pipeline is not None
            wall = hub.clock.now()
            since = {"since": wall.isoformat()}
            silent = Event("pend-4", "silent:1", EventType.DEVICE_SILENT, wall, wall, since)
            await hub.pipeline.process_internal([(silent, hub.state.devices["pend-4"])])
            assert await db.rows(
                "SELECT kind, municipality, resident FROM alarms WHERE device_id = 'pend-4'"
            ) == [("device_offline", "4601", "r-bergen-4")]

            # Learnt from the store before any poll: memory holds the devices where they are.
            assert hub.state.devices["pend-3"].municipality == "4601"
            assert hub.state.devices["pend-3"].resident == "r-bergen-3"
            # Nothing of theirs reached the old municipality, in memory either.
            assert all(a.municipality == "4601" for a in hub.state.alarms.by_id.values())
            assert await db.count("SELECT count(*) FROM alarms WHERE municipality = '0301'") == 0
    finally:
        pub.close()


async def test_a_device_moved_by_the_cli_is_decided_where_it_is_now_on_sqlite(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'alarmhub.db'}"
    await _moved_in_the_window(tmp_path, broker, client_id, url, monkeypatch)


@pytest.mark.postgres
async def test_a_device_moved_by_the_cli_is_decided_where_it_is_now_on_postgresql(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _moved_in_the_window(tmp_path, broker, client_id, pg_url, monkeypatch)
