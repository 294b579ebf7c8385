"""Every suppression that could apply to an alarm, and when each would end.

For `alarmhub rules explain` (issue 12, "How it is proven"): an operator or a
municipality asking "why was this not in the queue?" — or "would it be?" —
gets each cause by name with its end, in the order :func:`suppress.decide`
tries them. Pure: the silences and active alarms come in as values.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from alarmhub.core.model import Alarm, Device, Priority
from alarmhub.core.rules import StormPolicy
from alarmhub.core.suppress import Silence


def suppressions(
    kind: str,
    priority: Priority,
    device: Device,
    at: datetime,
    silences: Iterable[Silence],
    active: Iterable[Alarm],
    storm: StormPolicy | None,
) -> list[dict[str, Any]]:
    """Each cause that could hide a `kind` alarm of `priority` from `device` raised `at`.

    `applies` says whether it would hide this alarm at `at`; `ends` when (a time)
    or on what (a condition) it would let go, after which the alarm is released
    into the queue and escalates from then.
    """
    alarms = list(active)
    out: list[dict[str, Any]] = []
    for s in sorted(silences, key=lambda s: s.starts_at):
        if s.municipality != device.municipality or s.ends_at <= at:
            continue
        if not s.covers(device, max(at, s.starts_at)):
            continue
        scope = (
            f"device {s.device_id}"
            if s.device_id
            else f"resident {s.resident}"
            if s.resident
            else f"municipality {s.municipality}"
        )
        spares_p1 = priority is Priority.CRITICAL and not s.include_priority_1
        out.append(
            {
                "by": f"silence:{s.id}",
                "what": f"silence of {scope}: {s.reason}",
                "applies": s.starts_at <= at and not spares_p1,
                "starts": s.starts_at.isoformat(),
                "ends": s.ends_at.isoformat(),
                **({"note": "priority 1 is not silenced by it"} if spares_p1 else {}),
            }
        )
    if device.resident:
        out.extend(
            {
                "by": f"inhibited:{a.id}",
                "what": f"open priority {int(a.priority)} {a.kind} alarm of resident "
                f"{device.resident} (raised {a.raised_at.isoformat()})",
                "applies": True,
                "ends": "when that alarm is resolved",
            }
            for a in sorted(alarms, key=lambda a: (a.priority, a.raised_at))
            if a.is_active
            and a.suppressed_by is None
            and a.municipality == device.municipality
            and a.resident == device.resident
            and a.priority < priority
        )
    if storm is not None and kind in storm.kinds:
        out.extend(_outage(device, at, alarms, storm))
    return out


def _outage(
    device: Device, at: datetime, alarms: list[Alarm], storm: StormPolicy
) -> list[dict[str, Any]]:
    open_incidents = [
        a
        for a in alarms
        if a.kind == storm.incident_kind and a.is_active and a.municipality == device.municipality
    ]
    out = [
        {
            "by": f"incident:{a.id}",
            "what": f"outage incident of {a.municipality} ({a.repeat_count + 1} alarms)",
            "applies": at - a.last_seen_at <= storm.window,
            "absorbs_until": (a.last_seen_at + storm.window).isoformat(),
            "ends": "when the incident is resolved (by hand, or when every device recovered)",
        }
        for a in open_incidents
    ]
    if not any(o["applies"] for o in out):
        out.append(
            {
                "by": "incident",
                "what": f"an outage incident if {storm.threshold}+ of {sorted(storm.kinds)} "
                f"alarms in {device.municipality} within {storm.window.total_seconds():g} s",
                "applies": False,
                "ends": "when the incident is resolved (by hand, or when every device recovered)",
            }
        )
    return out
