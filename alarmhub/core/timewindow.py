"""Daily local-time windows and schedules that stay right across DST changes.

A rule like "door opened between 22:00 and 07:00" or a dose at 02:30 names a
*wall-clock* time; alarmhub must turn it into *instants*. Twice a year that is
not one-to-one in Europe/Oslo:

- spring (last Sunday of March): 02:00 jumps to 03:00, so 02:00-02:59 do not exist;
- autumn (last Sunday of October): 03:00 falls back to 02:00, so 02:00-02:59 happen twice.

The rule this module applies everywhere (windows and dose schedules alike):
**each local time names exactly one instant per calendar day.**

- a time that does not exist (in the gap) means the first instant after the gap:
  a window starting at 02:30 on 29 March 2026 opens at 03:00 CEST;
- a time that occurs twice means its first occurrence (``fold=0``): a window
  ending at 02:30 on 25 October 2026 closes at 02:30 CEST and stays closed
  through the repeated 02:00-02:59 CET.

So every window opens and closes at most once a day, a scheduler can sleep until
:func:`next_boundary` and a 02:30 dose is due once on both days, never twice or
never. (Cron implementations such as cronie make the same choice.)

Equivalently, :func:`in_window` is the naive local-time test on the
*fold-resolved* local time: the wall clock, except that during the second pass
of a repeated hour the clock counts as stopped just before it turned back,
because every boundary in that hour has already happened once. Outside that one
hour a year it is exactly the naive test :class:`alarmhub.core.rules.TimeWindow`
does; inside it, the naive test would open or close a window twice when a
boundary lies between 02:00 and 03:00.

A window with ``start == end`` is empty, as in ``TimeWindow``. Instants come
back in UTC (see :func:`resolve_local` for why); convert them only for display.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

_ONE_DAY = timedelta(days=1)


def resolve_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The one instant that local wall time `at` on `day` names in `tz` (see module doc).

    Returns the instant in UTC. Not in `tz`, on purpose: Python compares two
    datetimes of the *same* zone by wall time, ignoring ``fold`` (so 02:45 CEST
    sorts after 02:15 CET, which comes later), and a datetime in a repeated
    hour never compares equal to one in another zone (PEP 495). UTC has neither
    trap. `at` must be naive: the zone is `tz`.
    """
    if at.tzinfo is not None:
        raise ValueError("resolve_local takes a naive wall-clock time; the zone is `tz`")
    # fold=0 means the first occurrence if ambiguous; a caller's fold is ignored
    # because the rule, not the caller, decides which occurrence a schedule means.
    wall = datetime.combine(day, at.replace(fold=0), tzinfo=tz)
    instant = wall.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return instant
    # `at` falls in a gap. Reading it with the offsets before (fold=0) and after
    # (fold=1) the change brackets the transition instant; find it by bisection.
    # tzdata transitions are whole seconds, so bisecting seconds is exact.
    before = wall.replace(fold=1).astimezone(UTC)  # earlier instant, old offset still in force
    after = instant  # later instant, new offset in force
    lo, hi = int(before.timestamp()), int(after.timestamp())
    offset_after = after.astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _intervals(
    start: time, end: time, at: datetime, tz: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """The window's [open, close) instants for the local days around `at`, in order."""
    today = at.astimezone(tz).date()
    spans = []
    for offset in (-1, 0, 1, 2):
        day = today + offset * _ONE_DAY
        close_day = day if start < end else day + _ONE_DAY
        spans.append((resolve_local(day, start, tz), resolve_local(close_day, end, tz)))
    return spans


def in_window(window_start: time, window_end: time, at: datetime, tz: ZoneInfo) -> bool:
    """Whether the instant `at` lies in the daily window [start, end) of local time in `tz`.

    `start > end` wraps past midnight (22:00-07:00 is a night). Boundaries in a
    DST gap or overlap are resolved as the module doc says.
    """
    if window_start == window_end:
        return False
    at = at.astimezone(UTC)  # compare instants, never wall times (see resolve_local)
    return any(
        opens <= at < closes for opens, closes in _intervals(window_start, window_end, at, tz)
    )


def in_window_during(
    window_start: time, window_end: time, earliest: datetime, latest: datetime, tz: ZoneInfo
) -> bool:
    """Whether any instant of [earliest, latest] lies in the daily window.

    For an event whose time is only known to lie in that span (a backlog
    delivered after an outage, issue 12 item 11): it may have happened in the
    window, so a rule that raises an alarm in the window must not miss it.
    """
    if in_window(window_start, window_end, earliest, tz):
        return True
    opens = next_boundary(window_start, window_end, earliest, tz)
    return opens is not None and opens <= latest


def next_boundary(
    window_start: time, window_end: time, at: datetime, tz: ZoneInfo
) -> datetime | None:
    """The first instant after `at` at which :func:`in_window` changes value, in UTC.

    None for an empty window (it never changes). A day whose open and close
    both fall in the same DST gap collapses to nothing and is skipped, so the
    result is always a real change the shell can sleep until.
    """
    if window_start == window_end:
        return None
    at = at.astimezone(UTC)
    now_in = in_window(window_start, window_end, at, tz)
    candidates = sorted(
        {
            instant
            for span in _intervals(window_start, window_end, at, tz)
            for instant in span
            if instant > at
        }
    )
    for instant in candidates:
        if in_window(window_start, window_end, instant, tz) != now_in:
            return instant
    return None  # pragma: no cover - four days always hold a real change
