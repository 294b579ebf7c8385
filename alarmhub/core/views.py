"""The JSON shape of an alarm, shared by the CLI, the API and the live stream."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alarmhub.core.model import Alarm


def _iso(value: datetime) -> str:
    """UTC text to the millisecond, `Z` for UTC: isoformat(timespec="milliseconds") with
    "+00:00" replaced, which truncates the microseconds.

    A UTC time (every time alarmhub's clock reads) is cut from isoformat()'s own text
    instead: the keyword costs twice the call without it, and a storm formats three or
    four times per new alarm for the live feed (issue 18: 3.8 % of a storm's GIL).
    tests/core/test_views.py holds both paths to the keyword's text.
    """
    if value.tzinfo is UTC:
        text = value.isoformat()  # YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00
        return text[:23] + "Z" if value.microsecond else text[:19] + ".000Z"
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _opt(value: datetime | None) -> str | None:
    return None if value is None else _iso(value)


def alarm_json(a: Alarm) -> dict[str, Any]:
    """Every field of the alarm (times as UTC text to the millisecond), then the
    response times the service must be able to prove, derived once here.

    Written out field by field: in a storm every new alarm is shown on the live feed, and
    walking `dataclasses.fields()` with a getattr and an isinstance per field was a third
    of what ingest spent after the commit (issue 18; 8 -> 3.2 us per new alarm).
    tests/core/test_views.py holds it to every field of Alarm, in order.
    """
    raised = a.raised_at
    raised_text = _iso(raised)
    seen = a.last_seen_at
    ack, on_site, resolved = a.acknowledged_at, a.on_site_at, a.resolved_at
    return {
        "id": a.id,
        "device_id": a.device_id,
        "municipality": a.municipality,
        "kind": a.kind,
        "priority": int(a.priority),
        "state": a.state._value_,
        "raised_at": raised_text,
        # A new alarm was last seen when it was raised: one instant, formatted once.
        "last_seen_at": raised_text if seen is raised else _iso(seen),
        "repeat_count": a.repeat_count,
        "escalation_level": a.escalation_level,
        "acknowledged_at": _opt(ack),
        "acknowledged_by": a.acknowledged_by,
        "dispatched_at": _opt(a.dispatched_at),
        "on_site_at": _opt(on_site),
        "resolved_at": _opt(resolved),
        "resolved_by": a.resolved_by,
        "outcome": a.outcome,
        "rules_version": a.rules_version,
        "suppressed_by": a.suppressed_by,
        "resident": a.resident,
        "policy": a.policy,
        "escalation_from": _opt(a.escalation_from),
        "escalation_generation": a.escalation_generation,
        "escalation_exhausted_at": _opt(a.escalation_exhausted_at),
        "clearing_event": a.clearing_event,
        "clearing_at": _opt(a.clearing_at),
        "scheduled_at": _opt(a.scheduled_at),
        "superseded_by": a.superseded_by,
        "rev": a.rev,
        "cause": a.cause,
        "cause_text": a.cause_text,
        "action_taken": a.action_taken,
        "action_text": a.action_text,
        "trigger_ts": _opt(a.trigger_ts),
        "time_to_acknowledge_s": round((ack - raised).total_seconds(), 3) if ack else None,
        "time_to_on_site_s": round((on_site - raised).total_seconds(), 3) if on_site else None,
        "time_to_resolve_s": round((resolved - raised).total_seconds(), 3) if resolved else None,
    }
