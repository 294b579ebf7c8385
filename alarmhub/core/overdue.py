"""What supervision reports: something expected that did not arrive in time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class OverdueKind(StrEnum):
    """What went missing. Bounded: a metric label and the technical alarm's kind."""

    DEVICE_SILENT = "device_silent"
    DOSE_MISSED = "dose_missed"
    NO_USABLE_FIX = "no_usable_fix"  # a geofenced tracker sent no usable fix (item 18)


@dataclass(frozen=True, slots=True)
class Overdue:
    """Something expected did not arrive in time. Reported once per occurrence."""

    device_id: str
    kind: OverdueKind
    since: datetime  # silent: last heard (or when watching began); dose: scheduled time
    deadline: datetime  # the instant it became overdue (since + limit, or + dose window)
