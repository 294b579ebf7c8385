"""Response-time arithmetic as tables of plain values."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from alarmhub.core.reports import (
    DailyReport,
    ResponseRow,
    Stats,
    daily_acknowledge,
    percentile,
    report_days,
    response_times,
    stats,
    to_csv,
    to_table,
)

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
SLA = {1: timedelta(seconds=60), 2: timedelta(seconds=300)}


def row(
    kind: str,
    priority: int,
    ack_s: float | None,
    site_s: float | None = None,
    resolve_s: float | None = None,
    raised: datetime = T0,
) -> ResponseRow:
    def at(s: float | None) -> datetime | None:
        return None if s is None else raised + timedelta(seconds=s)

    return ResponseRow(kind, priority, raised, at(ack_s), at(site_s), at(resolve_s))


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 90, 4.0),
        ([float(i) for i in range(1, 101)], 90, 90.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 11)], 99, 10.0),
        ([float(i) for i in range(1, 11)], 1, 1.0),
    ],
)
def test_nearest_rank_percentile(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], Stats(0, None, None, None)),
        ([30.0], Stats(1, 30.0, 30.0, 30.0)),
        ([40.0, 10.0, 30.0, 20.0], Stats(4, 25.0, 40.0, 40.0)),
        ([10.0, 20.0, 30.0], Stats(3, 20.0, 30.0, 30.0)),
    ],
)
def test_stats(values: list[float], expected: Stats) -> None:
    assert stats(values) == expected


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing"):
        percentile([], 50)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # (kind, priority) -> (alarms, ack count, ack median, sla met, sla decided, compliance)
        ([row("button", 1, 30), row("button", 1, 90)], {("button", 1): (2, 2, 60.0, 1, 2, 0.5)}),
        # exactly on target counts as met
        ([row("button", 1, 60)], {("button", 1): (1, 1, 60.0, 1, 1, 1.0)}),
        # open and past target: decided, not met; open within target: not decided yet
        (
            [row("button", 1, None), row("button", 1, None, raised=NOW - timedelta(seconds=10))],
            {("button", 1): (2, 0, None, 0, 1, 0.0)},
        ),
        # no target for priority 4: compliance unknown
        ([row("tamper", 4, 5)], {("tamper", 4): (1, 1, 5.0, 0, 0, None)}),
        # grouped per priority and kind
        (
            [row("fall", 1, 10), row("button", 1, 20), row("button", 2, 400)],
            {
                ("button", 1): (1, 1, 20.0, 1, 1, 1.0),
                ("fall", 1): (1, 1, 10.0, 1, 1, 1.0),
                ("button", 2): (1, 1, 400.0, 0, 1, 0.0),
            },
        ),
    ],
)
def test_response_times(
    rows: list[ResponseRow], expected: dict[tuple[str, int], tuple[object, ...]]
) -> None:
    got = {
        (g.kind, g.priority): (
            g.alarms,
            g.acknowledge.count,
            g.acknowledge.median_s,
            g.sla_met,
            g.sla_decided,
            g.sla_compliance,
        )
        for g in response_times(rows, SLA, NOW)
    }
    assert got == expected


def test_order_and_on_site_and_resolve() -> None:
    rows = [row("button", 2, 10, 600, 900), row("fall", 1, 5, 300, None), row("button", 1, 1)]
    groups = response_times(rows, SLA, NOW)
    assert [(g.priority, g.kind) for g in groups] == [(1, "button"), (1, "fall"), (2, "button")]
    assert groups[1].on_site == Stats(1, 300.0, 300.0, 300.0)
    assert groups[1].resolve == Stats(0, None, None, None)
    assert groups[2].resolve.median_s == 900.0


def test_csv_and_table() -> None:
    groups = response_times([row("button", 1, 30)], SLA, NOW)
    lines = to_csv(groups).splitlines()
    assert lines[0].startswith("priority,kind,alarms,acknowledge_count,acknowledge_median_s")
    assert lines[1].startswith("1,button,1,1,30.0,30.0,30.0,0,,,")
    assert "100.0 %" in to_table(groups)
    assert to_table([]) == "(no alarms in the period)"


TODAY = date(2026, 12, 3)
D = date.fromisoformat


@pytest.mark.parametrize(
    ("since", "until", "max_days", "expected"),
    [
        # Both given, within the cap: used as they are (both ends included).
        (D("2026-01-01"), D("2026-12-31"), 366, (D("2026-01-01"), D("2026-12-31"))),
        (D("2024-01-01"), D("2024-12-31"), 366, (D("2024-01-01"), D("2024-12-31"))),  # leap year
        (D("2026-12-01"), D("2026-12-07"), 7, (D("2026-12-01"), D("2026-12-07"))),
        (D("2026-12-03"), D("2026-12-03"), 1, (D("2026-12-03"), D("2026-12-03"))),
        # One day over the cap is refused, naming the cap and the setting.
        (
            D("2026-12-01"),
            D("2026-12-08"),
            7,
            (
                "2026-12-01..2026-12-08 is 8 days; a report may "
                "span at most 7 days (max_report_days): ask for a shorter range, or several"
            ),
        ),
        (D("1970-01-01"), D("9998-12-31"), 366, "max_report_days"),
        # Open ends are filled in, not refused: no `to` ends today, no `from` starts
        # max_days before the end.
        (None, None, 7, (D("2026-11-27"), D("2026-12-03"))),
        (None, D("2026-06-30"), 30, (D("2026-06-01"), D("2026-06-30"))),
        (D("2026-12-01"), None, 7, (D("2026-12-01"), D("2026-12-03"))),
        (D("2026-12-10"), None, 7, (D("2026-12-10"), D("2026-12-10"))),  # a future start
        (D("2025-01-01"), None, 366, "2025-01-01..2026-12-03 is 702 days"),
        (D("2026-12-05"), D("2026-12-04"), 7, "the last day is before the first"),
    ],
)
def test_report_days_are_capped(
    since: date | None, until: date | None, max_days: int, expected: object
) -> None:
    got = report_days(since, until, TODAY, max_days)
    if isinstance(expected, str):
        assert isinstance(got, str)
        assert expected in got
    else:
        assert got == expected


def test_daily_series_groups_first_answers_by_priority_and_local_day() -> None:
    """The reports page's chart: per priority and per Oslo day the alarm was raised.

    23:30 UTC on 1 December is already 2 December in Oslo; an unanswered alarm has no
    time to acknowledge and makes no point; priorities are kept apart.
    """
    late = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    noon = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    rows = [
        row("button.pressed", 1, 20.0, raised=noon),
        row("button.pressed", 1, 40.0, raised=noon),
        row("fall.detected", 1, 90.0, raised=late),
        row("button.pressed", 1, None, raised=late),
        row("door.opened", 2, 300.0, raised=noon),
    ]
    assert daily_acknowledge(rows, ZoneInfo("Europe/Oslo")) == [
        DailyReport(1, date(2026, 12, 1), Stats(2, 30.0, 40.0, 40.0)),
        DailyReport(1, date(2026, 12, 2), Stats(1, 90.0, 90.0, 90.0)),
        DailyReport(2, date(2026, 12, 1), Stats(1, 300.0, 300.0, 300.0)),
    ]
    assert daily_acknowledge([row("button.pressed", 1, None)], ZoneInfo("Europe/Oslo")) == []
