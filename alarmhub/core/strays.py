"""Calls for help from devices alarmhub does not know, or no longer knows.

A press from an unregistered device (a pendant handed out before anyone
registered it, a Zigbee button whose friendly name was changed) or from a
decommissioned one (decommissioned by mistake while the resident still wears it)
used to be a dead letter only: visible to admins, and to ops through a metric
alert after several of them. Nobody in the response centre saw the call
(issue 12 item 14).

Such a message is still a dead letter (the device is not registered: it gets no
receipt, it is counted and alerted as before), and when it carries an event
that would raise a person alarm (priority 1-2) for a device like it, it also
raises a technical alarm, `unregistered_device`, that an operator sees and
that escalates like any high-priority alarm:

- a decommissioned device's alarm goes to the queue of the municipality it
  belongs to (its own: its registration is kept). It is raised without its
  former resident: the device may be in someone else's hands now, and that
  resident's alarms must neither inhibit nor be inhibited by it;
- an unknown device's alarm goes to the fallback municipality
  (`unknown_device_municipality`), if one is configured. Without one there is no
  municipality whose operators may see it, so it stays a dead letter, counted and
  alerted (`alarmhub_messages_dead_lettered_total{reason="unknown_device"}`).

What an unknown device is, is guessed from its topic: every profile of the
topic's format is tried, the format's defaults first, and the first reading that
yields a person-alarm event wins. Pure: no I/O, the registry and rules passed in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

from alarmhub.core.decode import Catalog, DecodeLimits, decode
from alarmhub.core.model import (
    Decoded,
    Device,
    Event,
    Priority,
    RawMessage,
    Rejected,
    RejectReason,
)
from alarmhub.core.rules import Rule, RuleSet

STRAY_KIND = "unregistered_device"
# High, not technical: behind the registry fault may be a person on the floor.
STRAY_PRIORITY = Priority.HIGH
_WHY = {
    RejectReason.UNKNOWN_DEVICE: "an unregistered device",
    RejectReason.DECOMMISSIONED_DEVICE: "a decommissioned device",
}


def stray_events(
    raw: RawMessage,
    rejected: Rejected,
    registry: Mapping[str, Device],
    catalog: Catalog,
    limits: DecodeLimits,
    rules: RuleSet,
    fallback_municipality: str | None,
) -> list[tuple[Event, Device, Rule]]:
    """The person-alarm events of a refused message, each with the device and the
    rule to raise its `unregistered_device` alarm with; [] for any other message."""
    why = _WHY.get(rejected.reason)
    if why is None or rejected.device_id is None:
        return []
    for device in _readings(raw.topic, rejected, registry, catalog, fallback_municipality):
        result = decode(raw, {device.id: device}, catalog, limits)
        if not isinstance(result, Decoded):
            continue
        found = [e for e in result.events if _person_alarm(rules.match(e, device))]
        if found:
            return [(e, device, _rule(e, why)) for e in found]
    return []


def _readings(
    topic: str,
    rejected: Rejected,
    registry: Mapping[str, Device],
    catalog: Catalog,
    fallback_municipality: str | None,
) -> Iterator[Device]:
    """The devices the sender could be, as alarmhub would read its message."""
    device_id = rejected.device_id
    assert device_id is not None
    if rejected.reason is RejectReason.DECOMMISSIONED_DEVICE:
        known = registry.get(device_id)
        if known is not None:
            yield replace(known, active=True, resident=None)
        return
    routed = catalog.route(topic)
    if fallback_municipality is None or routed is None:
        return
    fmt = routed.format
    profiles = sorted(
        (p for p in catalog.profiles.values() if p.format == fmt),
        key=lambda p: (not p.default, p.name),
    )
    for profile in profiles:
        for kind in profile.kinds:
            # Read as if paired with the bridge it came through: the bridge account is
            # authenticated, and an unregistered button's press is still a person.
            yield Device(
                device_id,
                kind,
                fallback_municipality,
                profile=profile.name,
                bridge=routed.bridge,
            )


def _person_alarm(rule: Rule | None) -> bool:
    return (
        rule is not None
        and rule.alarm is not None
        and rule.priority is not None
        and rule.priority <= Priority.HIGH
    )


def _rule(event: Event, why: str) -> Rule:
    return Rule(
        f"{event.type} from {why}",
        event.type,
        alarm=STRAY_KIND,
        priority=STRAY_PRIORITY,
    )
