"""Buffered OwnTracks fixes delivered late, out of order, through a real broker and store.

A phone out of coverage buffers its fixes and sends them when it is back; each
carries its own time (`tst`). An older fix must not tell the operator the person
is back in the zone (A), nor say the tracker's zone is watched again (B). The
FakeClock is the time of receipt; each check polls with a generous ceiling.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.core.model import Device, DeviceKind, DeviceSettings, Verdict
from alarmhub.dev.mosquitto import LocalBroker
from tests.daemon.test_supervision_daemon import owntracks
from tests.support.helpers import Publisher, async_wait_until, db_count, db_rows, hub_settings

pytestmark = pytest.mark.broker

T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
HOME = (59.91, 10.75)
AWAY = (59.93, 10.75)  # ~2.2 km north of a 500 m fence
PHONE = Device(
    "ola/phone",
    DeviceKind.GPS_TRACKER,
    "0301",
    heartbeat_interval_s=300,
    settings=DeviceSettings(geofence_circle=(*HOME, 500.0)),
)
ZONE_ALARM = "SELECT state, clearing_event FROM alarms WHERE kind = 'left_safe_zone'"
OPEN_KINDS = "SELECT kind FROM alarms WHERE state != 'resolved' ORDER BY kind"


def verdicts(db: Path) -> list[str]:
    """The verdict of each stored message's event, in arrival order."""
    rows = db_rows(db, "SELECT events FROM inbox ORDER BY seq")
    return [e["verdict"] for (events,) in rows for e in orjson.loads(events)]


async def test_an_older_inside_fix_delivered_late_leaves_left_safe_zone_as_it_was(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    clock = FakeClock(T0)
    pub = Publisher(broker.port)
    try:
        settings = hub_settings(tmp_path, broker.url, client_id)
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(30)
            await hub.register_devices([PHONE], audit=())
            clock.advance(timedelta(minutes=10))
            pub.publish(*owntracks(T0 + timedelta(minutes=10), *AWAY, accuracy_m=20))
            assert await async_wait_until(lambda: db_rows(db, ZONE_ALARM) == [("open", None)], 30)

            # Taken at 01:05, inside; delivered at 01:12, after the 01:10 fix outside.
            clock.advance(timedelta(minutes=2))
            pub.publish(*owntracks(T0 + timedelta(minutes=5), *HOME, accuracy_m=10))
            # The message, its event and any change to the alarm commit together.
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 2, 30
            )
            assert db_rows(db, ZONE_ALARM) == [("open", None)]
            assert verdicts(db) == [Verdict.NEW, Verdict.STALE]

            # A fix taken after the one outside still shows the person is back.
            clock.advance(timedelta(minutes=2))
            pub.publish(*owntracks(T0 + timedelta(minutes=13), *HOME, accuracy_m=10))
            assert await async_wait_until(
                lambda: db_rows(db, ZONE_ALARM) == [("open", "location")], 30
            )
            assert verdicts(db)[-1] == Verdict.HELD
    finally:
        pub.close()


async def test_a_usable_fix_hours_old_does_not_resolve_no_usable_fix(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    clock = FakeClock(T0)
    pub = Publisher(broker.port)
    try:
        settings = hub_settings(tmp_path, broker.url, client_id)
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(30)
            await hub.register_devices([PHONE], audit=())
            no_fix_after = hub.rules.no_fix_after
            assert no_fix_after is not None
            step, sent = timedelta(seconds=240), 0
            while sent * step <= no_fix_after:  # a poor fix (400 m) at home every 4 minutes
                pub.publish(*owntracks(clock.now(), *HOME, accuracy_m=400))
                sent += 1
                assert await async_wait_until(
                    lambda n=sent: db_count(db, "SELECT count(*) FROM inbox") == n,  # type: ignore[misc]
                    30,
                )
                clock.advance(step)
            assert await async_wait_until(
                lambda: db_rows(db, OPEN_KINDS) == [("no_usable_fix",)], 30
            )

            # A good fix, but taken two hours ago: buffered, delivered now.
            logged = hub.metrics.events.labels(Verdict.LOGGED.value)
            before = logged._value.get()
            pub.publish(*owntracks(clock.now() - timedelta(hours=2), *HOME, accuracy_m=10))
            # Counted after supervision was told of it (daemon/ingest.py _count).
            assert await async_wait_until(lambda: logged._value.get() == before + 1, 30)
            assert hub.supervision.fixes.is_silent(PHONE.id)
            await hub.supervision.step()  # what a usable fix would have raised, raised now
            assert db_rows(db, OPEN_KINDS) == [("no_usable_fix",)]

            # A current one resolves it.
            pub.publish(*owntracks(clock.now(), *HOME, accuracy_m=10))
            assert await async_wait_until(lambda: db_rows(db, OPEN_KINDS) == [], 30)
    finally:
        pub.close()
