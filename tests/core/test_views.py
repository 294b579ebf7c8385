"""`alarm_json` is the one JSON shape of an alarm (CLI, API, live stream). It is written out
field by field for speed (issue 18); a table of alarms holds it to the shape derived from
`dataclasses.fields`, the way it was first built, so a field added to Alarm and not to the
view fails here."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarmhub.core.model import Alarm, AlarmState, Priority
from alarmhub.core.views import _iso, alarm_json

T0 = datetime(2026, 12, 4, 20, 0, 0, 123456, tzinfo=UTC)


def _from_fields(alarm: Alarm) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(alarm):
        value = getattr(alarm, f.name)
        if isinstance(value, datetime):
            value = value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out[f.name] = value
    out["priority"] = int(alarm.priority)
    out["state"] = alarm.state.value
    for name, end in (
        ("time_to_acknowledge_s", alarm.acknowledged_at),
        ("time_to_on_site_s", alarm.on_site_at),
        ("time_to_resolve_s", alarm.resolved_at),
    ):
        out[name] = round((end - alarm.raised_at).total_seconds(), 3) if end else None
    return out


NEW = Alarm("a-1", "d-1", "0301", "button", Priority.CRITICAL, AlarmState.OPEN, T0, T0)
CASES = [
    NEW,
    Alarm(
        "a-2",
        "d-2",
        "4601",
        "door",
        Priority.NORMAL,
        AlarmState.RESOLVED,
        T0,
        T0 + timedelta(seconds=3),
        repeat_count=2,
        escalation_level=1,
        acknowledged_at=T0 + timedelta(seconds=12.3456),
        acknowledged_by="kari",
        on_site_at=T0 + timedelta(minutes=4),
        resolved_at=T0 + timedelta(minutes=9),
        resolved_by="kari",
        outcome="handled",
        policy="p1",
        escalation_from=T0 + timedelta(seconds=1),
        scheduled_at=datetime(2026, 12, 4, 21, 0, tzinfo=UTC),
        rev=3,
        cause="fall",
        trigger_ts=T0 - timedelta(seconds=40),
    ),
]


@pytest.mark.parametrize("alarm", CASES, ids=lambda a: a.id)
def test_alarm_json_is_the_shape_written_field_by_field(alarm: Alarm) -> None:
    out = alarm_json(alarm)
    assert out == _from_fields(alarm)
    assert list(out) == list(_from_fields(alarm))  # the same keys in the same order


def test_times_are_utc_text_to_the_millisecond() -> None:
    out = alarm_json(CASES[1])
    assert out["raised_at"] == "2026-12-04T20:00:00.123Z"
    assert out["time_to_acknowledge_s"] == 12.346
    assert out["priority"] == 3
    assert out["state"] == "resolved"
    assert (out["acknowledged_at"], out["time_to_acknowledge_s"]) != (None, None)
    assert alarm_json(NEW)["time_to_resolve_s"] is None


@given(
    st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(0))])
        | st.none()
    ),
)
def test_a_time_is_the_keyword_text_whichever_path_formats_it(value: datetime) -> None:
    """The UTC fast path (isoformat() cut) and the others (an offset, a zero offset that
    is not the `UTC` object, a naive time) give the keyword's text, for any year and any
    microsecond."""
    assert _iso(value) == value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 4, 20, 0, 0, 999, tzinfo=UTC),
        datetime(2026, 12, 4, 20, 0, 0, 1000, tzinfo=UTC),
    ],
)
def test_edges_of_the_utc_path(value: datetime) -> None:
    assert _iso(value) == value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert _iso(value).endswith("Z")
    assert len(_iso(value)) == 24
