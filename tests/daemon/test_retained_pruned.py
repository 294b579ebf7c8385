"""A retained position whose inbox row was pruned is not the phone heard again (found
in review, 2026-12-06).

OwnTracks publishes its positions retained, and the broker re-sends a topic's
retained message at every subscription: at each start and reconnect of alarmhub.
Within the inbox's retention the stored copy makes it a redelivery (core/dedup.py);
once the pruner had deleted that row, the same two-week-old copy was a new message,
the dead phone "heard" and its device_offline alarm resolved. Real Mosquitto, real
SQLite, the hub in-process with a FakeClock; the pruner's own function prunes.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.core.retention import RetainedTable, Retention
from alarmhub.daemon.pruner import Pruner
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.observability.metrics import Metrics
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    register,
)

pytestmark = pytest.mark.broker

T0 = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CEILING_S = 30.0  # a ceiling only: each verdict is whether it happens at all
TOPIC = "owntracks/ola/phone"
OPEN_OFFLINE = "SELECT device_id FROM alarms WHERE kind='device_offline' AND state != 'resolved'"
LAST_SEEN = "SELECT last_seen_at FROM devices WHERE id = 'ola/phone'"


def _received(hub: AlarmHub) -> float:
    return float(hub.metrics.messages_received.labels("gps_tracker")._value.get())


def _deduplicated(hub: AlarmHub) -> float:
    return float(hub.metrics.messages_deduplicated.labels("gps_tracker")._value.get())


async def _prune(db: Path, now: datetime) -> dict[RetainedTable, int]:
    """The pruner's pass as the daemon runs it, with the daemon stopped: no race with
    the retained copy that arrives at the next start."""
    store = await SqliteStore.open(db)
    try:
        retention = Retention(14 * DAY, 30 * DAY)
        pruner = Pruner(store, FakeClock(now), retention, asyncio.Lock(), Metrics().oldest_row_age)
        return await pruner.prune_once()
    finally:
        await store.close()


async def test_a_retained_position_whose_row_was_pruned_does_not_resolve_device_offline(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("ola/phone", "gps_tracker", "0301")], tmp_path)
    settings = hub_settings(tmp_path, broker.url, client_id, inbox_retention_days=14)
    fix = {"_type": "location", "lat": 59.91, "lon": 10.75, "acc": 12, "tst": int(T0.timestamp())}
    pub = Publisher(broker.port)
    try:
        # Day 0: the phone's last position, published retained; then the phone dies.
        async with AlarmHub(settings, clock=FakeClock(T0), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(CEILING_S)
            pub.client.publish(TOPIC, orjson.dumps(fix), qos=1, retain=True).wait_for_publish(10)
            assert await async_wait_until(lambda: db_count(db, "SELECT count(*) FROM inbox") == 1)
        [(last_seen,)] = db_rows(db, LAST_SEEN)

        # Day 1: a restart. The retained copy comes again, a redelivery (its row is kept);
        # the phone, silent for a day, is reported offline one grace after the start.
        clock = FakeClock(T0 + DAY)
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(CEILING_S)
            assert await async_wait_until(lambda: _deduplicated(hub) == 1, CEILING_S)
            clock.advance(hub.rules.restart_grace + timedelta(seconds=1))
            assert await async_wait_until(lambda: db_rows(db, OPEN_OFFLINE) != [], CEILING_S)

        # Day 15: the position's row is past the inbox's 14 days and pruned.
        day15 = T0 + 15 * DAY
        assert (await _prune(db, day15))[RetainedTable.INBOX] == 1
        assert db_count(db, "SELECT count(*) FROM inbox") == 0

        # The restart after: the same retained copy, now with nothing stored under it.
        async with AlarmHub(settings, clock=FakeClock(day15), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(CEILING_S)
            assert await async_wait_until(lambda: _received(hub) == 1, CEILING_S)
            assert db_rows(db, OPEN_OFFLINE) == [("ola/phone",)]  # the phone is still dead
            assert db_rows(db, LAST_SEEN) == [(last_seen,)]  # and was not heard
            assert _deduplicated(hub) == 1  # a redelivery, not a new message
            assert db_count(db, "SELECT count(*) FROM inbox") == 0  # not stored again
    finally:
        pub.client.publish(TOPIC, b"", qos=1, retain=True).wait_for_publish(10)  # unretain
        pub.close()
