"""The demo's seeded history: weeks of resolved alarms that the response-time report can use."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from alarmhub.config.rules import load_rules
from alarmhub.core import reports
from alarmhub.core.model import AlarmState, TimelineType
from alarmhub.core.tenancy import Scope
from alarmhub.sim.history import SEEDED_MSG_PREFIX, past_alarms, seed_history
from alarmhub.sim.operators import SIMULATED_PREFIX, operator_names
from alarmhub.sim.simulator import Simulation, SimulationConfig
from alarmhub.store.sqlite import accounts
from alarmhub.store.sqlite.tenancy import response_rows
from tests.support.helpers import REPO, db_count, sqlite_at

END = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DAYS = 21
RULES = load_rules(REPO / "config" / "rules.toml")


def history(homes: int = 25, seed: int = 17, end: datetime = END):
    devices = Simulation(SimulationConfig(homes=homes, seed=seed)).devices()
    return past_alarms(devices, end, DAYS, seed, operator_names(3), RULES)


def test_the_history_covers_every_day_with_full_timelines_by_simulated_operators():
    past = history()
    assert 200 <= len(past) <= 800
    days = {p.alarm.raised_at.astimezone(ZoneInfo("Europe/Oslo")).date() for p in past}
    assert len(days) >= DAYS
    assert all(END - timedelta(days=DAYS) <= p.alarm.raised_at < END for p in past)
    for p in past:
        a = p.alarm
        assert a.state is AlarmState.RESOLVED
        types = [e.type for e in p.timeline]
        assert types[0] is TimelineType.RAISED
        assert p.timeline[0].detail["seeded"] is True
        assert p.timeline[0].detail["msg_id"].startswith(SEEDED_MSG_PREFIX)
        assert [e.at for e in p.timeline] == sorted(e.at for e in p.timeline)
        assert types[-1] in (TimelineType.RESOLVED, TimelineType.AUTO_RESOLVED)
        for e in p.timeline:
            assert e.actor is None or e.actor.startswith(SIMULATED_PREFIX)
        if a.acknowledged_at is not None:
            assert a.acknowledged_by
            assert a.acknowledged_by.startswith(SIMULATED_PREFIX)
            assert a.raised_at < a.acknowledged_at <= a.resolved_at
    kinds = Counter(p.alarm.kind for p in past)
    assert kinds["button"] > 0
    assert kinds["fall"] > 0
    assert kinds["battery_low"] > 0
    assert any(p.alarm.dispatched_at and p.alarm.on_site_at for p in past)
    # Some late P1s were escalated before anyone acknowledged them.
    assert any(e.type is TimelineType.ESCALATED for p in past for e in p.timeline)


def test_the_history_is_reproducible_from_its_seed():
    assert history() == history()
    assert history() != history(seed=18)


def test_a_night_door_alarm_is_raised_at_night_oslo_time():
    for p in history():
        if p.alarm.kind == "door_open_night":
            hour = p.alarm.raised_at.astimezone(ZoneInfo("Europe/Oslo")).hour
            assert hour >= 22 or hour < 7


async def test_seeding_writes_once_and_the_report_over_the_range_is_not_empty(tmp_path: Path):
    db = tmp_path / "alarmhub.db"
    end = datetime.now(UTC) - timedelta(hours=1)
    past = history(end=end)
    assert await seed_history(db, past, RULES.version) == len(past)
    assert await seed_history(db, past, RULES.version) == 0  # a second run adds nothing
    assert db_count(db, "SELECT count(*) FROM alarms") == len(past)
    assert db_count(db, "SELECT count(*) FROM timeline") == sum(len(p.timeline) for p in past)
    acked = db_count(db, "SELECT count(*) FROM alarms WHERE acknowledged_at IS NOT NULL")
    audited = db_count(
        db,
        "SELECT count(*) FROM audit WHERE action = 'alarm.acknowledge' "
        "AND actor LIKE 'simulated-operator-%' AND json_extract(detail, '$.seeded')",
    )
    assert audited == acked

    with sqlite_at(db) as conn:
        rows = response_rows(
            conn, Scope.everything("test"), "0301", end - timedelta(days=DAYS), end
        )
    groups = reports.response_times(rows, RULES.sla_ack, end)  # type: ignore[arg-type]  # Priority is an int
    assert groups
    p1 = [g for g in groups if g.priority == 1]
    assert p1
    assert all(g.acknowledge.count > 0 and g.acknowledge.median_s for g in p1)
    assert all(g.sla_compliance is not None for g in p1)


@pytest.mark.parametrize("homes", [1, 3])
def test_a_tiny_demo_still_gets_a_history(homes: int):
    assert history(homes=homes)


def test_seeded_actions_are_in_the_audit_log_oldest_first(tmp_path: Path):
    db = tmp_path / "alarmhub.db"
    asyncio.run(seed_history(db, history(homes=3), RULES.version))
    with accounts.connect(db) as conn:
        entries = accounts.list_audit(conn, limit=10_000)
    assert entries
    assert all(e["actor"].startswith(SIMULATED_PREFIX) for e in entries)
    ats = [e["at"] for e in reversed(entries)]
    assert ats == sorted(ats)
