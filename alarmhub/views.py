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
    return out
