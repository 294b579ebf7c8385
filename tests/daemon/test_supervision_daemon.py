"""Supervision across restarts and operators' actions: real broker, real store, virtual clock.

Issue 12 items 15 and 16. The daemon's supervision step runs on real seconds
(STEP_S); the clock is a FakeClock moved by hand, and each check polls with a
ceiling.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.core.actions import Action
from alarmhub.core.model import Alarm, Device, DeviceKind, DeviceSettings
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    native,
)

pytestmark = pytest.mark.broker

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
OPEN_OFFLINE = (
    "SELECT device_id FROM alarms WHERE kind='device_offline' AND state != 'resolved' "
    "ORDER BY device_id"
)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def owntracks(at: datetime, lat: float, lon: float, accuracy_m: float) -> tuple[str, bytes]:
    """An OwnTracks fix from tracker `ola/phone` (its profile's topic and payload)."""
    fix = {
        "_type": "location",
        "lat": lat,
        "lon": lon,
        "acc": accuracy_m,
        "tst": int(at.timestamp()),
    }
    return "owntracks/ola/phone", orjson.dumps(fix)


async def test_a_device_silent_across_restarts_shorter_than_its_interval_is_reported(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Restarted every 500 s with a 600 s heartbeat (limit 1,800 s): `dead` is still reported.

    Before the fix every start counted silence from zero, so `dead` never was.
    """
    db = tmp_path / "alarmhub.db"
    clock = FakeClock(T0)
    settings = hub_settings(tmp_path, broker.url, client_id)
    pub = Publisher(broker.port)
    try:
        for run in range(5):
            async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
                assert hub.ingest is not None
                assert await hub.ingest.wait_connected(5)
                if run == 0:
                    await hub.register_devices(
                        [
                            Device(d, DeviceKind.SAFETY_ALARM, "0301", heartbeat_interval_s=600)
                            for d in ("alive", "dead")
                        ],
                        audit=(),
                    )
                pub.publish(*native("alive", f"hb{run}", "heartbeat", iso(clock.now())))
                assert await async_wait_until(
                    lambda r=run: db_count(db, "SELECT count(*) FROM inbox") == r + 1,  # type: ignore[misc]
                    10,
                )
                if run < 4:
                    assert await hub.supervision.step() == 0
                    assert db_rows(db, OPEN_OFFLINE) == []
                    clock.advance(timedelta(seconds=500))
                    continue
                # Run 5 starts at 2,000 s: `dead` was last heard (registered) at 0, so it
                # fell due while alarmhub was away: reported one grace after the start.
                assert await hub.supervision.step() == 0
                clock.advance(hub.rules.restart_grace + timedelta(seconds=1))
                assert await async_wait_until(lambda: db_rows(db, OPEN_OFFLINE) == [("dead",)], 10)
    finally:
        pub.close()


async def test_offline_resolved_by_hand_is_raised_again_and_default_interval_applies(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """A pendant registered without an interval gets its kind's default (item 16); an
    offline alarm resolved by hand while it stays silent comes back one interval later.
    """
    db = tmp_path / "alarmhub.db"
    clock = FakeClock(T0)
    settings = hub_settings(tmp_path, broker.url, client_id)
    async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
        assert hub.ingest is not None
        assert await hub.ingest.wait_connected(5)
        await hub.register_devices([Device("quiet", DeviceKind.SAFETY_ALARM, "0301")], audit=())
        interval = hub.rules.heartbeat_defaults[DeviceKind.SAFETY_ALARM]
        clock.advance(3 * interval + timedelta(seconds=1))
        assert await async_wait_until(lambda: db_rows(db, OPEN_OFFLINE) == [("quiet",)], 10)

        # The row is visible to another connection a moment before the hub applies the
        # committed batch to its own state: wait for that too, then act on it.
        def offline() -> list[Alarm]:
            return [a for a in hub.state.alarms.by_id.values() if a.kind == "device_offline"]

        assert await async_wait_until(lambda: len(offline()) == 1, 10)
        [alarm] = offline()
        assert (
            await hub.act(alarm.id, Action.RESOLVE, "op-1", outcome="checked", audit=()) is not None
        )
        assert db_rows(db, OPEN_OFFLINE) == []
        clock.advance(interval - timedelta(seconds=5))
        assert await hub.supervision.step() == 0  # not yet: one interval after the resolve
        assert db_rows(db, OPEN_OFFLINE) == []
        clock.advance(timedelta(seconds=10))
        assert await async_wait_until(lambda: db_rows(db, OPEN_OFFLINE) == [("quiet",)], 10)
        # A second alarm, not the resolved one reopened: its history stays as the operator left it.
        assert db_count(db, "SELECT count(*) FROM alarms WHERE kind='device_offline'") == 2


async def test_a_tracker_with_only_poor_fixes_raises_no_usable_fix_and_a_good_fix_resolves_it(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Item 18: poor fixes keep a tracker alive, but its safe zone is not watched."""
    db = tmp_path / "alarmhub.db"
    clock = FakeClock(T0)
    settings = hub_settings(tmp_path, broker.url, client_id)
    open_kind = "SELECT kind FROM alarms WHERE state != 'resolved' ORDER BY kind"
    home = (59.91, 10.75)
    pub = Publisher(broker.port)
    try:
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            fence = DeviceSettings(geofence_circle=(*home, 500.0))
            await hub.register_devices(
                [
                    Device(
                        "ola/phone",
                        DeviceKind.GPS_TRACKER,
                        "0301",
                        heartbeat_interval_s=300,
                        settings=fence,
                    )
                ],
                audit=(),
            )
            no_fix_after = hub.rules.no_fix_after
            assert no_fix_after is not None
            step = timedelta(seconds=240)
            sent = 0
            while sent * step <= no_fix_after:  # a poor fix (400 m) at home every 4 minutes
                pub.publish(*owntracks(clock.now(), *home, accuracy_m=400))
                sent += 1
                assert await async_wait_until(
                    lambda n=sent: db_count(db, "SELECT count(*) FROM inbox") == n,  # type: ignore[misc]
                    10,
                )
                clock.advance(step)
            assert await async_wait_until(
                lambda: db_rows(db, open_kind) == [("no_usable_fix",)], 10
            )
            pub.publish(*owntracks(clock.now(), *home, accuracy_m=20))
            assert await async_wait_until(lambda: db_rows(db, open_kind) == [], 10)
            outcome = db_rows(db, "SELECT outcome FROM alarms WHERE kind = 'no_usable_fix'")
            assert outcome == [("auto",)]
    finally:
        pub.close()


async def test_a_dose_missed_while_alarmhub_was_down_is_reported_once(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Item 17: down from 07:00 to 21:00 Oslo time: the 08:00 dose is reported at start, once."""
    db = tmp_path / "alarmhub.db"
    clock = FakeClock(datetime(2026, 11, 25, 6, 0, tzinfo=UTC))  # 07:00 in Oslo
    settings = hub_settings(tmp_path, broker.url, client_id)
    missed = "SELECT count(*) FROM alarms WHERE kind = 'dose_missed'"
    schedule = DeviceSettings(dose_times=("08:00",), dose_window_min=60)
    async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
        await hub.register_devices(
            [Device("disp", DeviceKind.MEDICATION_DISPENSER, "4601", settings=schedule)],
            audit=(),
        )
        assert await hub.supervision.step() == 0
    clock.advance(timedelta(hours=14))  # down across the 08:00-09:00 window
    for _ in range(2):  # a second restart must not report it again
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            assert await async_wait_until(lambda: db_count(db, missed) == 1, 10)
            await hub.supervision.step()
        assert db_count(db, missed) == 1
    raised = db_rows(db, "SELECT detail FROM timeline WHERE type = 'raised'")
    assert len(raised) == 1
    assert orjson.loads(raised[0][0])["msg_id"] == "dose:2026-11-25T07:00:00+00:00"
