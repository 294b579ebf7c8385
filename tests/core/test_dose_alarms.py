"""Issue 12 item 17: each scheduled dose missed is a dose_missed alarm of its own.

The pure core end to end: DoseWatch says which dose was missed or taken late, the
shell turns that into `dose.overdue` / `dose.late` events carrying the dose's
scheduled instant (core.doses.dose_event), and the pipeline keys the alarm on
(device, kind, scheduled dose). Before, the index keyed on (device, kind): doses
missed within the rules' merge age joined one alarm, and a late take of one dose
could not close its own alarm while another dose's was open.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import load_rules
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.doses import DoseOutcome, DoseSchedule, DoseWatch, dose_event
from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import Device, DeviceKind, EventType, TimelineType
from alarmhub.core.pipeline import BatchEffects, Context, process_internal
from alarmhub.store.sqlite.schema import MIGRATIONS
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.helpers import REPO

RULES = load_rules(REPO / "config" / "rules.toml")
CATALOG = load_catalog(REPO / "devices")
OSLO = ZoneInfo("Europe/Oslo")
D = date(2026, 11, 17)
# The migration that added alarms.scheduled_at: found by what it does, not its number.
SCHEDULED = next(i for i, m in enumerate(MIGRATIONS) if "COLUMN scheduled_at" in m)
DISPENSER = Device("disp-1", DeviceKind.MEDICATION_DISPENSER, "0301")


def oslo(hh: int, mm: int = 0) -> datetime:
    return datetime.combine(D, time(hh, mm), tzinfo=OSLO).astimezone(UTC)


class Shell:
    """What daemon/supervisor.py does with DoseWatch's answers, and the index after commit."""

    def __init__(self, *times: time, since: datetime) -> None:
        self.watch = DoseWatch()
        self.watch.track(DISPENSER.id, DoseSchedule(times, OSLO, timedelta(minutes=60)), since)
        self.index = AlarmIndex()
        self.ctx = Context({DISPENSER.id: DISPENSER}, CATALOG, RULES, DecodeLimits())

    def tick(self, now: datetime) -> BatchEffects:
        missed = self.watch.due(now)
        return self._judge(
            [dose_event(DISPENSER.id, EventType.DOSE_OVERDUE, m.since, now) for m in missed]
        )

    def take(self, at: datetime) -> BatchEffects:
        result = self.watch.taken(DISPENSER.id, at)
        events = [
            dose_event(DISPENSER.id, EventType.DOSE_OVERDUE, m.since, at) for m in result.missed
        ]
        if result.settles_missed and result.scheduled_at is not None:
            events.append(dose_event(DISPENSER.id, EventType.DOSE_LATE, result.scheduled_at, at))
        return self._judge(events)

    def _judge(self, events: list) -> BatchEffects:
        effects = process_internal([(e, DISPENSER) for e in events], self.index, self.ctx)
        for alarm in effects.alarms.values():
            self.index.put(alarm)
        return effects

    def open_doses(self) -> list[datetime | None]:
        return sorted(
            (a.scheduled_at for a in self.index.by_id.values() if a.kind == "dose_missed"),
            key=str,
        )


@pytest.mark.parametrize(
    ("steps", "still_open"),
    [
        # 08:00 and 12:00 both missed: two alarms, not one listing both (they are
        # within the rules' 6 h merge age, so they used to join one).
        ([("tick", (13, 1))], [(8, 0), (12, 0)]),
        # 08:00 taken late at 09:30: its own alarm closes; 12:00 missed later stays.
        ([("tick", (9, 1)), ("take", (9, 30)), ("tick", (13, 1))], [(12, 0)]),
        # Both missed; a late take at 13:30 is the 12:00 dose: only its alarm closes.
        ([("tick", (13, 1)), ("take", (13, 30))], [(8, 0)]),
        # ... and a second late take is the 08:00 dose: that one closes too.
        ([("tick", (13, 1)), ("take", (13, 30)), ("take", (13, 40))], []),
        # 08:00 missed and open; the 12:00 dose missed while alarmhub was down, raised
        # at the restart (14:00) with its own key, beside the 08:00 alarm.
        ([("tick", (9, 1)), ("tick", (14, 0))], [(8, 0), (12, 0)]),
        # A late take that finds both windows closed before the timer ran: both raised
        # (taken() reports them), the take settles 12:00, the 08:00 alarm stays.
        ([("take", (13, 30))], [(8, 0)]),
    ],
)
def test_each_missed_dose_is_its_own_alarm(steps, still_open):
    shell = Shell(time(8), time(12), since=oslo(7))
    for what, (hh, mm) in steps:
        getattr(shell, what)(oslo(hh, mm))
    assert shell.open_doses() == [oslo(hh, mm) for hh, mm in still_open]


def test_doses_missed_during_downtime_are_each_raised_with_their_own_key():
    """Tracked from the last settled instant (07:00); back at 21:01: 08:00 and 20:00."""
    shell = Shell(time(8), time(20), since=oslo(7))
    effects = shell.tick(oslo(21, 1))
    raised = sorted(effects.alarms.values(), key=lambda a: a.raised_at)
    assert [a.scheduled_at for a in raised] == [oslo(8), oslo(20)]
    assert len({a.id for a in raised}) == 2
    # The timeline says which dose each alarm is about.
    details = [e.detail for e in effects.timeline if e.type is TimelineType.RAISED]
    assert sorted(d["scheduled_at"] for d in details) == [oslo(8).isoformat(), oslo(20).isoformat()]


def test_a_late_take_settles_its_own_dose_even_with_another_still_missed():
    watch = DoseWatch()
    watch.track("d", DoseSchedule((time(8), time(12)), OSLO, timedelta(minutes=60)), oslo(7))
    assert len(watch.due(oslo(13, 1))) == 2
    result = watch.taken("d", oslo(13, 30))
    # 08:00 is still missed, but the 12:00 dose's own alarm may close.
    assert (result.outcome, result.scheduled_at, result.settles_missed) == (
        DoseOutcome.LATE,
        oslo(12),
        True,
    )


def test_an_alarm_not_about_one_dose_keeps_the_device_kind_key():
    """A dose_missed the dispenser reported itself has no scheduled dose: plain key."""
    shell = Shell(time(8), since=oslo(7))
    shell.tick(oslo(9, 1))
    [alarm] = shell.index.by_id.values()
    assert shell.index.active((DISPENSER.id, "dose_missed")) is None
    assert shell.index.active((DISPENSER.id, "dose_missed", oslo(8).isoformat())) == alarm


async def test_an_open_dose_alarm_from_before_finds_its_dose_after_the_upgrade(tmp_path: Path):
    """A database made before item 17: the migration reads the dose from the msg id of
    the alarm's raising entry, so a late take of that dose still closes it."""
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, script in enumerate(MIGRATIONS[:SCHEDULED], start=1):
        conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    raised = oslo(9, 1).isoformat(timespec="microseconds")
    for alarm_id, state, msg_id, event in (
        ("a-dose", "open", f"dose:{oslo(8).isoformat()}", "dose.overdue"),
        ("a-own", "open", "disp-msg-7", "dose.missed"),  # the dispenser's own report
    ):
        conn.execute(
            "INSERT INTO alarms (id, device_id, municipality, kind, priority, state, raised_at, "
            "last_seen_at) VALUES (?, 'disp-1', '0301', 'dose_missed', 3, ?, ?, ?)",
            (alarm_id, state, raised, raised),
        )
        detail = orjson.dumps({"event": event, "msg_id": msg_id, "rule": "r"}).decode()
        conn.execute(
            "INSERT INTO timeline (alarm_id, at, type, detail) VALUES (?, ?, 'raised', ?)",
            (alarm_id, raised, detail),
        )
    conn.commit()
    conn.close()
    store = await SqliteStore.open(db)
    try:
        alarms = {a.id: a for a in await store.load_active_alarms()}
    finally:
        await store.close()
    assert (alarms["a-dose"].scheduled_at, alarms["a-own"].scheduled_at) == (oslo(8), None)
    shell = Shell(time(8), since=oslo(7))
    shell.index.load(alarms.values())
    shell.tick(oslo(9, 1))  # 08:00 missed again after the restart: the same alarm repeats
    shell.take(oslo(9, 30))
    assert {a.id: a.state.value for a in shell.index.by_id.values()} == {"a-own": "open"}
