"""Daily windows across the 2026 Europe/Oslo DST days (29 March and 25 October)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarmhub.core.rules import TimeWindow
from alarmhub.core.timewindow import in_window, next_boundary, resolve_local

OSLO = ZoneInfo("Europe/Oslo")
SPRING = date(2026, 3, 29)  # 02:00 CET -> 03:00 CEST at 01:00 UTC
AUTUMN = date(2026, 10, 25)  # 03:00 CEST -> 02:00 CET at 01:00 UTC
SETTINGS = settings(max_examples=300, deadline=None)

WINDOWS = [
    (time(22), time(7)),  # a night window: both DST changes fall inside it
    (time(2, 30), time(7)),  # opens at a time that is missing / doubled
    (time(22), time(2, 30)),  # closes at a time that is missing / doubled
    (time(2, 15), time(2, 45)),  # both boundaries in the DST hour
    (time(2, 45), time(2, 15)),  # the complement of that, wrapping
    (time(1, 30), time(3, 30)),  # spans the DST hour
    (time(8), time(16)),  # daytime: untouched by DST
    (time(0), time(2)),  # ends exactly where the gap begins
    (time(3), time(2)),  # starts exactly where the gap ends, wraps
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type, misc]


def fold_resolved(at: datetime) -> time:
    """The Oslo wall clock, stopped at 02:59:59.999999 during the repeated hour's second pass."""
    local = at.astimezone(OSLO)
    if local.fold == 1:  # zoneinfo sets fold=1 only on the second occurrence
        return time(2, 59, 59, 999_999)
    return local.time()


def naive(start: time, end: time, at: datetime) -> bool:
    return TimeWindow(start, end).contains(fold_resolved(at))


# --- resolve_local ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "wall", "expected_utc"),
    [
        (SPRING, time(1, 59), utc(2026, 3, 29, 0, 59)),
        (SPRING, time(2, 0), utc(2026, 3, 29, 1, 0)),  # missing: first instant after the gap
        (SPRING, time(2, 30), utc(2026, 3, 29, 1, 0)),
        (SPRING, time(2, 59, 59), utc(2026, 3, 29, 1, 0)),
        (SPRING, time(3, 0), utc(2026, 3, 29, 1, 0)),
        (SPRING, time(3, 1), utc(2026, 3, 29, 1, 1)),
        (AUTUMN, time(1, 59), utc(2026, 10, 24, 23, 59)),
        (AUTUMN, time(2, 0), utc(2026, 10, 25, 0, 0)),  # doubled: first occurrence (CEST)
        (AUTUMN, time(2, 30), utc(2026, 10, 25, 0, 30)),
        (AUTUMN, time(3, 0), utc(2026, 10, 25, 2, 0)),
        (date(2026, 6, 1), time(12, 0), utc(2026, 6, 1, 10, 0)),
    ],
)
def test_resolve_local_in_oslo(day, wall, expected_utc):
    got = resolve_local(day, wall, OSLO)
    assert got == expected_utc
    assert got.tzinfo is UTC  # UTC on purpose: see resolve_local's docstring


def test_resolve_local_with_a_half_hour_shift():
    """Lord Howe Island moves its clocks by 30 minutes: the bisection is not hour-bound."""
    tz = ZoneInfo("Australia/Lord_Howe")
    got = resolve_local(date(2026, 10, 4), time(2, 10), tz)
    assert got.astimezone(tz).time() == time(2, 30)
    assert got.astimezone(tz).utcoffset() == timedelta(hours=11)


def test_resolve_local_rejects_aware_times():
    with pytest.raises(ValueError):
        resolve_local(SPRING, time(2, 30, tzinfo=UTC), OSLO)


# --- decision tables on the DST days ------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "at", "expected"),
    [
        # 22:00-07:00 night: both DST changes happen inside it.
        (time(22), time(7), utc(2026, 3, 28, 20, 59), False),  # 21:59 CET
        (time(22), time(7), utc(2026, 3, 28, 21, 0), True),  # 22:00 CET
        (time(22), time(7), utc(2026, 3, 29, 0, 59), True),  # 01:59 CET, just before the gap
        (time(22), time(7), utc(2026, 3, 29, 1, 0), True),  # 03:00 CEST
        (time(22), time(7), utc(2026, 3, 29, 4, 59), True),  # 06:59 CEST
        (time(22), time(7), utc(2026, 3, 29, 5, 0), False),  # 07:00 CEST: an 8-hour night
        (time(22), time(7), utc(2026, 10, 24, 20, 0), True),  # 22:00 CEST
        (time(22), time(7), utc(2026, 10, 25, 1, 30), True),  # 02:30 CET, second pass
        (time(22), time(7), utc(2026, 10, 25, 5, 59), True),  # 06:59 CET
        (time(22), time(7), utc(2026, 10, 25, 6, 0), False),  # 07:00 CET: a 10-hour night
        # Opens at 02:30.
        (time(2, 30), time(7), utc(2026, 3, 29, 0, 59), False),  # 01:59 CET
        (time(2, 30), time(7), utc(2026, 3, 29, 1, 0), True),  # 03:00 CEST: after the gap
        (time(2, 30), time(7), utc(2026, 10, 25, 0, 29), False),  # 02:29 CEST
        (time(2, 30), time(7), utc(2026, 10, 25, 0, 30), True),  # 02:30 CEST: first one
        (time(2, 30), time(7), utc(2026, 10, 25, 1, 0), True),  # 02:00 CET: stays open
        (time(2, 30), time(7), utc(2026, 10, 25, 1, 29), True),  # 02:29 CET: stays open
        (time(2, 30), time(7), utc(2026, 10, 25, 1, 30), True),  # 02:30 CET
        # Closes at 02:30.
        (time(22), time(2, 30), utc(2026, 3, 29, 0, 59), True),  # 01:59 CET
        (time(22), time(2, 30), utc(2026, 3, 29, 1, 0), False),  # 03:00 CEST: closed
        (time(22), time(2, 30), utc(2026, 10, 25, 0, 29), True),  # 02:29 CEST
        (time(22), time(2, 30), utc(2026, 10, 25, 0, 30), False),  # 02:30 CEST: first one
        (time(22), time(2, 30), utc(2026, 10, 25, 1, 15), False),  # 02:15 CET: stays closed
        # Both boundaries inside the missing hour: no window at all that night.
        (time(2, 15), time(2, 45), utc(2026, 3, 29, 1, 0), False),
        (time(2, 45), time(2, 15), utc(2026, 3, 29, 1, 0), True),
        # Empty window.
        (time(5), time(5), utc(2026, 6, 1, 3, 0), False),
    ],
)
def test_in_window_table(start, end, at, expected):
    assert in_window(start, end, at, OSLO) is expected


@pytest.mark.parametrize(
    ("start", "end", "at", "expected"),
    [
        (time(22), time(7), utc(2026, 3, 28, 12), utc(2026, 3, 28, 21)),
        (time(22), time(7), utc(2026, 3, 28, 22), utc(2026, 3, 29, 5)),  # 07:00 CEST
        (time(22), time(7), utc(2026, 10, 24, 22), utc(2026, 10, 25, 6)),  # 07:00 CET
        (time(2, 30), time(7), utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),  # 03:00 CEST
        (time(2, 30), time(7), utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30)),  # once only
        (time(2, 30), time(7), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 6)),
        (time(22), time(2, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 21)),  # 22:00 CET
        # The spring night with both boundaries in the gap is skipped entirely.
        (time(2, 15), time(2, 45), utc(2026, 3, 28, 12), utc(2026, 3, 30, 0, 15)),
        (time(5), time(5), utc(2026, 3, 28, 12), None),
    ],
)
def test_next_boundary_table(start, end, at, expected):
    assert next_boundary(start, end, at, OSLO) == expected


def test_local_datetimes_in_the_doubled_hour_are_compared_as_instants():
    """Python compares same-zone datetimes by wall time, ignoring fold: in_window must not."""
    second_pass = utc(2026, 10, 25, 1, 15).astimezone(OSLO)  # 02:15 CET, fold=1
    assert second_pass.fold == 1
    assert in_window(time(22), time(2, 30), second_pass, OSLO) is False
    assert in_window(time(2, 30), time(7), second_pass, OSLO) is True
    assert next_boundary(time(2, 30), time(7), second_pass, OSLO) == utc(2026, 10, 25, 6)


# --- exhaustive scans of both DST days ---------------------------------------------


@pytest.mark.parametrize("day", [SPRING, AUTUMN], ids=["spring", "autumn"])
@pytest.mark.parametrize(("start", "end"), WINDOWS, ids=[f"{s}-{e}" for s, e in WINDOWS])
def test_every_minute_of_a_dst_day(day, start, end):
    """Minute by minute from noon before to noon after: the value, the changes, next_boundary."""
    first = datetime.combine(day - timedelta(days=1), time(10), tzinfo=UTC)
    instants = [first + timedelta(minutes=m) for m in range(48 * 60)]
    values = [in_window(start, end, at, OSLO) for at in instants]
    for at, value in zip(instants, values, strict=True):
        assert value == naive(start, end, at), at
    changes = [
        b for a, b, v, w in zip(instants, instants[1:], values, values[1:], strict=False) if v != w
    ]
    # Each boundary happens at most once per local day: never twice in the doubled hour.
    opens = [at for at in changes if in_window(start, end, at, OSLO)]
    closes = [at for at in changes if not in_window(start, end, at, OSLO)]
    for kind in (opens, closes):
        days = [at.astimezone(OSLO).date() for at in kind]
        assert len(days) == len(set(days)), kind
    # next_boundary agrees with the scan (all boundaries are on whole minutes).
    for i in range(0, len(instants), 13):
        at = instants[i]
        expected = next((c for c in changes if c > at), None)
        got = next_boundary(start, end, at, OSLO)
        if expected is not None:
            assert got == expected, at
        else:
            assert got is None or got > instants[-1]


# --- properties ------------------------------------------------------------------------

_times = st.times().map(lambda t: t.replace(microsecond=0))
_dst_days = st.sampled_from([SPRING, AUTUMN, date(2025, 3, 30), date(2025, 10, 26)])
_instants = st.one_of(
    st.datetimes(datetime(2000, 1, 1), datetime(2037, 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda d, seconds: datetime.combine(d, time(), tzinfo=UTC) + timedelta(seconds=seconds),
        _dst_days,
        st.floats(-3 * 3600, 6 * 3600),
    ),
)


@SETTINGS
@given(start=_times, end=_times, at=_instants)
def test_in_window_is_the_naive_test_on_the_fold_resolved_local_time(start, end, at):
    assert in_window(start, end, at, OSLO) == naive(start, end, at)


@SETTINGS
@given(start=_times, end=_times, at=_instants, f=st.floats(0, 1))
def test_next_boundary_is_the_next_change(start, end, at, f):
    got = next_boundary(start, end, at, OSLO)
    if start == end:
        assert got is None
        return
    assert got is not None
    assert got > at
    before = in_window(start, end, at, OSLO)
    assert in_window(start, end, got, OSLO) != before
    # Nothing changes in between.
    assert in_window(start, end, got - timedelta(microseconds=1), OSLO) == before
    assert in_window(start, end, at + (got - at) * f, OSLO) == before or at + (got - at) * f >= got
    # A day and an hour at most, or two when a spring night's window collapsed.
    assert got - at <= timedelta(hours=49)
