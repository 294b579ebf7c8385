"""The JSON shape of an alarm, shared by the CLI, the API and the live stream."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from alarmhub.core.model import Alarm


def alarm_json(alarm: Alarm) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(alarm):
        value = getattr(alarm, f.name)
        if isinstance(value, datetime):
            value = value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out[f.name] = value
    out["priority"] = int(alarm.priority)
    out["state"] = alarm.state.value
    # The response times the service must be able to prove, derived once here.
    for name, end in (
        ("time_to_acknowledge_s", alarm.acknowledged_at),
        ("time_to_on_site_s", alarm.on_site_at),
        ("time_to_resolve_s", alarm.resolved_at),
    ):
        out[name] = round((end - alarm.raised_at).total_seconds(), 3) if end else None
    return out
