"""UTC instants as text, each formatted once: shared by the store's rows and the live feed.

A storm's new alarm has its receipt time and its device time formatted for the inbox row
(store/inbox.py), and then again, to the millisecond, for the live feed (core/views.py,
`raised_at` and `trigger_ts`): `isoformat()` costs ~1.1 us here each time. One bounded
memo of recent answers serves both: the feed's text is the row's cut to milliseconds.

Keyed by value only for tzinfo UTC, where equal means the same instant and so the same
text (two Oslo times one hour apart can compare equal across fold). Bounded by clearing;
dict operations are atomic under the GIL, so threads (the store's writer) may share it.
A memo of a pure function: what it returns never depends on what it holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

_TEXT: dict[datetime, str] = {}
_TEXT_MAX = 4096


@overload
def utc_text(value: datetime) -> str: ...
@overload
def utc_text(value: None) -> None: ...
@overload
def utc_text(value: datetime | None) -> str | None: ...


def utc_text(value: datetime | None) -> str | None:
    """`value.isoformat(timespec="microseconds")` in UTC: "YYYY-MM-DDTHH:MM:SS.ffffff+00:00";
    None for None (an optional column's time).

    Remembered for tzinfo UTC only (see the module's docstring); any other zone is
    converted to UTC first and not remembered.
    """
    if value is None:
        return None
    if value.tzinfo is not UTC:
        return _format(value.astimezone(UTC))
    text = _TEXT.get(value)
    if text is None:
        text = _format(value)
        if len(_TEXT) >= _TEXT_MAX:
            _TEXT.clear()
        _TEXT[value] = text
    return text


def _format(value: datetime) -> str:
    # The same text: isoformat() leaves the fraction out only when it is zero, and
    # without the keyword it costs half (0.9 against 1.9 us here; tests/store/test_rows.py
    # holds it to the keyword's text).
    if value.microsecond:
        return value.isoformat()
    return value.isoformat(timespec="microseconds")
