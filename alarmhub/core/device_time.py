"""What a device's clock is worth: its time formats, and when alarmhub stops believing it.

Kept apart from decode.py, which reads the fields of a payload, because the
clock policy is one idea a reader looks for on its own; this module knows only
times. The device's clock is never a reason to reject (issue 12 item 11):
a time out of bounds is replaced by the time of receipt, and the event says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from alarmhub.core.model import INTERNAL_EVENTS, Event, TsSource
from alarmhub.core.profile import TimestampUnit

__all__ = ["claimed_time", "device_clock", "event_time", "parse_rfc3339", "parse_ts"]


def event_time(
    device_ts: datetime | None,
    received_at: datetime,
    max_future_skew: timedelta,
    max_past_skew: timedelta,
) -> tuple[datetime, TsSource, int | None]:
    """The time an event is judged by, where it came from, and the clamped skew.

    A device clock out of bounds is never a reason to refuse an event: a pendant
    ten minutes fast was told `rejected`, stopped resending, and its press was lost.
    Its time is replaced by the time of receipt and the skew is kept on the event,
    so what the device claimed is still known (`ts + clock_skew_s`).
    """
    if device_ts is None:
        return received_at, TsSource.RECEIPT, None
    skew = device_ts - received_at
    if skew > max_future_skew or -skew > max_past_skew:
        return received_at, TsSource.CLAMPED, int(skew.total_seconds())
    return device_ts, TsSource.DEVICE, None


def device_clock(event: Event) -> datetime | None:
    """The event's time on its device's own clock; None when it is not on that clock.

    Only two times on one clock say which came first, or how old a fix is:
    alarmhub's own events (device.silent, location.fix, dose.late), a time of
    receipt and a clamped clock (:func:`event_time`) are on alarmhub's. A
    dispenser's clock three minutes fast would otherwise make alarmhub's
    `dose.late` look older than the `dose.missed` it settles.
    """
    if event.ts_source is not TsSource.DEVICE or event.type in INTERNAL_EVENTS:
        return None
    return event.ts


def claimed_time(events: Iterable[Event]) -> datetime | None:
    """The newest time the events' device clock gave, clamped or not; None: none gave one.

    A clamped time is what the device said all the same (`ts + clock_skew_s`):
    for a retained message (core/dedup.py) an old time is the honest one.
    """
    claimed = [
        e.ts + timedelta(seconds=e.clock_skew_s or 0)
        for e in events
        if e.ts_source is not TsSource.RECEIPT
    ]
    return max(claimed, default=None)


def parse_rfc3339(text: str) -> datetime | None:
    if len(text) > 40:
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 falls before year 1 in UTC
        return None


def parse_ts(value: Any, unit: TimestampUnit) -> datetime | None:
    if unit is TimestampUnit.RFC3339:
        return parse_rfc3339(value) if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = value / 1000 if unit is TimestampUnit.EPOCH_MS else value
    if not math.isfinite(seconds) or not 0 <= seconds < 32503680000:  # before year 3000
        return None
    return datetime.fromtimestamp(seconds, UTC)
