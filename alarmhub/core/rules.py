"""The rule set as frozen core types, and the pure choice of the rule for an event.

Parsing and validation of ``config/rules.toml`` live in :mod:`alarmhub.rules_file`;
this module sees only the validated result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from alarmhub.core.model import Device, DeviceKind, Event, EventType, Priority


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily window in local wall-clock time; `start > end` wraps past midnight."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    event: EventType
    device_kind: DeviceKind | None = None
    alarm: str | None = None  # the alarm kind this rule raises
    priority: Priority | None = None
    window: TimeWindow | None = None  # only active inside this local-time window
    resolves: tuple[str, ...] = ()  # alarm kinds this event auto-resolves
    flap_window: timedelta = timedelta(0)  # re-trigger within this time reopens the alarm

    def applies(self, event: Event, device: Device, tz: ZoneInfo) -> bool:
        if event.type is not self.event:
            return False
        if self.device_kind is not None and device.kind is not self.device_kind:
            return False
        if self.window is not None:
            local = event.ts.astimezone(tz).timetz().replace(tzinfo=None)
            return self.window.contains(local)
        return True


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Oslo"))
    version: str = ""  # content hash of the file the rules came from
    sla_ack: dict[Priority, timedelta] = field(default_factory=dict)

    def match(self, event: Event, device: Device) -> Rule | None:
        """First matching rule wins, like a firewall: the file's order is its meaning."""
        for rule in self.rules:
            if rule.applies(event, device, self.timezone):
                return rule
        return None

    def max_flap_window(self) -> timedelta:
        return max((r.flap_window for r in self.rules), default=timedelta(0))


def local_time(ts: datetime, tz: ZoneInfo) -> time:
    return ts.astimezone(tz).time()
