"""The typed fields of each event type, checked one by one.

Pure. Separate from the decoder because the check is per field (issue 12 item
10): an optional field that fails is left out and named as :class:`Dropped`, so
that a press is never thrown away for a bad battery reading; only a required
field (a position's lat or lon) makes its event unusable.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from alarmhub.core.model import Dropped, EventType, RejectReason

if TYPE_CHECKING:
    from collections.abc import Mapping as MappingT

# The `field` of a Dropped that stands for a whole event: "event location".
EVENT_PREFIX = "event "

FieldProblem = tuple[RejectReason, str]

# (name, lowest, highest, required) of the numeric fields of each event type.
_NUMBERS: dict[EventType, tuple[tuple[str, float, float, bool], ...]] = {
    EventType.LOCATION: (
        ("lat", -90, 90, True),
        ("lon", -180, 180, True),
        ("accuracy_m", 0, 1e7, False),
        ("battery_pct", 0, 100, False),
    ),
    EventType.BATTERY_LOW: (("battery_pct", 0, 100, False),),
}
_TEXTS = ("dose_id", "code", "note")


def _number(
    payload: dict[str, Any], name: str, lo: float, hi: float, *, required: bool, label: str
) -> float | FieldProblem | None:
    if name not in payload:
        return (RejectReason.MISSING_FIELD, f"missing field '{label}'") if required else None
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return RejectReason.WRONG_TYPE, f"field '{label}' must be a number"
    if not math.isfinite(value) or not lo <= value <= hi:
        return RejectReason.BAD_VALUE, f"field '{label}' must be between {lo:g} and {hi:g}"
    return float(value)


def validate_fields(etype: EventType, payload: dict[str, Any]) -> dict[str, Any] | str:
    """Return the event's typed fields, or the sentence that says which one is wrong.

    Strict, for callers that check a whole request (nothing is dropped here).
    """
    checked = event_fields(etype, payload)
    if isinstance(checked, Dropped):
        return checked.detail
    kept, dropped = checked
    return dropped[0].detail if dropped else kept


def event_fields(
    etype: EventType, payload: dict[str, Any], paths: MappingT[str, str] | None = None
) -> tuple[dict[str, Any], tuple[Dropped, ...]] | Dropped:
    """The event's typed fields and the optional ones left out, or the event dropped.

    An optional field that fails (a battery of 200 %, a note that is a number) is
    left out; a required one (a position's lat or lon) makes the event unusable.
    The decoder must tell a missing field, a wrong type and an out-of-range value
    apart: they are different reasons. `paths` names each field as the payload
    spells it, so that the reason points at what the device sent.
    """
    out: dict[str, Any] = {}
    dropped: list[Dropped] = []
    for name, lo, hi, required in _NUMBERS.get(etype, ()):
        label = paths.get(name, name) if paths else name
        value = _number(payload, name, lo, hi, required=required, label=label)
        if isinstance(value, tuple):
            if required:
                return Dropped(f"{EVENT_PREFIX}{etype}", *value)
            dropped.append(Dropped(label, *value))
        elif value is not None:
            out[name] = value
    for name in _TEXTS:
        if name not in payload:
            continue
        label = paths.get(name, name) if paths else name
        value = payload[name]
        if not isinstance(value, str):
            dropped.append(
                Dropped(label, RejectReason.WRONG_TYPE, f"field '{label}' must be a string")
            )
        elif len(value) > 256:
            dropped.append(
                Dropped(
                    label, RejectReason.BAD_VALUE, f"field '{label}' must be at most 256 characters"
                )
            )
        else:
            out[name] = value
    return out, tuple(dropped)


PARTIAL = "partial"  # the inbox row's `reason` for a message stored with fields left out


def dropped_detail(dropped: tuple[Dropped, ...]) -> str:
    """One line naming each dropped field and why, for the inbox row and the log."""
    return "; ".join(f"{d.reason}: {d.detail}" for d in dropped)
