"""The rows' text stays what it was: `ts` and `alarm_row` took shortcuts for speed (issue 18).

Times are stored as text and compared as text (ORDER BY, `<=`), so a shortcut that
changed one character would misorder rows without failing anything else.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarmhub.core.model import Alarm, AlarmState, Priority
from alarmhub.store import accounts
from alarmhub.store.accounts import ts
from alarmhub.store.columns import ALARM_COLUMNS, TIME_COLUMNS
from alarmhub.store.sqlite.rows import alarm_row

OSLO = ZoneInfo("Europe/Oslo")


def reference_ts(value: datetime | None) -> str | None:
    """The format as first written: UTC, always six digits of microseconds."""
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


@pytest.mark.parametrize(
    "value",
    [
        None,
        datetime(2026, 11, 22, 10, 0, tzinfo=UTC),  # no fraction: isoformat() would drop it
        datetime(2026, 11, 22, 10, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 11, 22, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 0, 0, 0, 500, tzinfo=UTC),  # a year below 1000 is padded
        datetime.max.replace(tzinfo=UTC),
        datetime.fromisoformat("2026-11-22T10:00:00.250000+00:00"),
        datetime(2026, 11, 22, 11, 0, 0, 7, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 11, 22, 11, 0, tzinfo=timezone(timedelta(hours=1))),
        # The same wall time twice in Oslo (the end of summer time): fold tells them apart.
        datetime(2026, 10, 25, 2, 30, 0, 10, tzinfo=OSLO),
        datetime(2026, 10, 25, 2, 30, 0, 10, tzinfo=OSLO, fold=1),
        datetime(2026, 10, 25, 2, 30, tzinfo=OSLO, fold=1),
    ],
)
def test_ts_gives_the_text_of_isoformat_in_utc_with_microseconds(value: datetime | None) -> None:
    assert ts(value) == reference_ts(value)


@given(st.datetimes(timezones=st.sampled_from([UTC, OSLO, timezone(timedelta(hours=-3))])))
def test_ts_matches_isoformat_for_any_aware_time(value: datetime) -> None:
    try:
        expected = reference_ts(value)
    except OverflowError:  # near datetime.min/max, moved to UTC: out of range either way
        with pytest.raises(OverflowError):
            ts(value)
        return
    assert ts(value) == expected


def test_ts_remembers_recent_utc_times_within_its_bound() -> None:
    """Recent answers are kept (a storm formats one time ~7 times), never more than the
    bound, and an equal time built apart gets the same text."""
    start = datetime(2026, 11, 22, 10, 0, 0, 1, tzinfo=UTC)
    for i in range(accounts._TEXT_MAX + 10):
        value = start + timedelta(microseconds=i)
        assert ts(value) == reference_ts(value)
        assert len(accounts._TEXT) <= accounts._TEXT_MAX
    again = start + timedelta(microseconds=accounts._TEXT_MAX + 9)
    assert again in accounts._TEXT
    assert ts(again) == reference_ts(again)
    # Not remembered: a time in another zone (an equal Oslo time may be another instant).
    oslo = datetime(2026, 10, 25, 2, 30, tzinfo=OSLO, fold=1)
    assert ts(oslo) == "2026-10-25T01:30:00.000000+00:00"
    assert oslo not in accounts._TEXT


def reference_row(alarm: Alarm) -> tuple[Any, ...]:
    """alarm_row as it was: column by column."""
    out: list[Any] = []
    for name in ALARM_COLUMNS:
        value = getattr(alarm, name)
        if name in TIME_COLUMNS:
            value = ts(value)
        elif name == "priority":
            value = int(value)
        elif name == "state":
            value = value.value
        elif name == "rev":
            value += 1
        out.append(value)
    return tuple(out)


T0 = datetime(2026, 11, 22, 10, 0, 0, 123_456, tzinfo=UTC)
BARE = Alarm("a-1", "pend-1", "0301", "press", Priority.CRITICAL, AlarmState.OPEN, T0, T0)


def everything_set() -> Alarm:
    """Every column given a value of its own, times at different instants."""
    values: dict[str, Any] = {}
    for i, f in enumerate(fields(Alarm)):
        if f.name in TIME_COLUMNS:
            values[f.name] = T0 + timedelta(seconds=i, microseconds=i)
        elif f.name in ("repeat_count", "escalation_level", "escalation_generation", "rev"):
            values[f.name] = i
        else:
            values[f.name] = f"{f.name}-{i}"
    values["priority"] = Priority.TECHNICAL
    values["state"] = AlarmState.ACKNOWLEDGED
    return Alarm(**values)


@pytest.mark.parametrize("alarm", [BARE, everything_set()], ids=["bare", "every-column"])
def test_alarm_row_is_the_row_built_column_by_column(alarm: Alarm) -> None:
    row = alarm_row(alarm)
    assert row == reference_row(alarm)
    assert [type(v) for v in row] == [type(v) for v in reference_row(alarm)]
