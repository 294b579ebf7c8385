"""The rule set as frozen core types, and the pure choice of the rule for an event.

Parsing and validation of ``config/rules.toml`` live in :mod:`alarmhub.config.rules`;
this module sees only the validated result.

Precedence, most specific first: a device's own settings (its named windows,
geofence, dose schedule) over its municipality's (extra rules tried first, named
windows, policies) over the global defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from alarmhub.core.device_time import device_clock
from alarmhub.core.escalation import Policy
from alarmhub.core.geo import Circle, Geofence, Polygon, ZoneStatus, fix_usable, zone_status
from alarmhub.core.journal.mapping import JournalMapping
from alarmhub.core.model import Device, DeviceKind, Event, EventType, Priority
from alarmhub.core.resolution import Resolutions
from alarmhub.core.scaip import ScaipPolicy
from alarmhub.core.timewindow import in_window, in_window_during


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
    window: TimeWindow | str | None = None  # a window, or the name of one (e.g. "night")
    zone: ZoneStatus | None = None  # for location events: only when inside/outside the fence
    resolves: tuple[str, ...] = ()  # alarm kinds this event auto-resolves
    flap_window: timedelta = timedelta(0)  # re-trigger within this time reopens the alarm
    policy: str | None = None  # escalation policy; default: the one named "p<priority>"
    # May this rule's `resolves` close a priority 1-2 (person) alarm? By default no:
    # the clearing event is recorded and the alarm waits for an operator (judge.clear).
    auto_resolve_person_alarm: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    """Where an escalation step is delivered besides the queue itself."""

    name: str
    mqtt: bool = False  # publish to alarmhub/v1/notify/<name>
    webhook: str | None = None


@dataclass(frozen=True, slots=True)
class StormPolicy:
    """Many technical alarms of one municipality within minutes are one incident.

    A mains or mobile-network outage silences hundreds of homes at once; the
    operators need one row that says so, not hundreds. Person alarms (button,
    fall) are never folded: they are not in `kinds` (the rules file refuses any
    kind a rule raises at priority 1-2). An incident absorbs a new alarm only
    within `window` of the last one it absorbed: an outage is minutes, and a
    device going offline weeks later is a device of its own.
    """

    kinds: frozenset[str] = frozenset({"device_offline", "power_lost"})
    threshold: int = 10
    window: timedelta = timedelta(minutes=5)
    priority: Priority = Priority.HIGH
    incident_kind: str = "incident"
    # The incident's escalation policy (None: the one named "p<priority>"): an outage
    # leaves residents without a working alarm, and someone must act on it.
    policy: str | None = None

    def policy_name(self) -> str:
        return self.policy or f"p{int(self.priority)}"


@dataclass(frozen=True, slots=True)
class MunicipalityRules:
    rules: tuple[Rule, ...] = ()
    windows: dict[str, TimeWindow] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    scaip: ScaipPolicy | None = None  # None: the rule set's


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Oslo"))
    version: str = ""  # content hash of the file the rules came from
    sla_ack: dict[Priority, timedelta] = field(default_factory=dict)
    windows: dict[str, TimeWindow] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    municipalities: dict[str, MunicipalityRules] = field(default_factory=dict)
    storm: StormPolicy | None = None
    heard_resolves: tuple[str, ...] = ()  # alarm kinds any message from the device resolves
    offline_after_misses: int = 3
    # A silence of a whole municipality lasts at most this long, and this long when it
    # names no end (issue 12 item 8; suppress.silence_end).
    municipality_silence_max: timedelta = timedelta(hours=24)
    # Supervision (issue 12 items 15, 16, 18; core/supervision.py says why).
    restart_grace: timedelta = timedelta(seconds=60)  # after a restart, at most one interval
    # Heartbeat interval of a device registered without one, per kind: never unsupervised.
    heartbeat_defaults: dict[DeviceKind, timedelta] = field(default_factory=dict)
    # A geofenced tracker with no usable fix for this long raises `no_usable_fix`.
    no_fix_after: timedelta | None = None
    # A trigger joins the device's active alarm of its kind only if that alarm was
    # raised at most this long ago; otherwise it raises a new one (judge.merge_refused).
    merge_max_age: timedelta | None = timedelta(hours=6)
    # Alarm kind -> its journal note's codes and choices (issue 17, core/journal/).
    journal: JournalMapping = field(default_factory=JournalMapping)
    # How SCAIP alarms are answered, unless a municipality says otherwise (docs/scaip.md).
    scaip: ScaipPolicy = field(default_factory=ScaipPolicy)
    # The causes and actions an operator picks from on resolving, per alarm kind.
    resolutions: Resolutions = field(default_factory=Resolutions)
    # The rules that could match an event type, in file order, per municipality
    # (None: one without rules of its own). Every event is matched, most against
    # rules of other types: built on first use, since a RuleSet never changes.
    _candidates: dict[tuple[str | None, EventType], tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def scaip_policy(self, municipality: str) -> ScaipPolicy:
        own = self.municipalities.get(municipality)
        return own.scaip if own is not None and own.scaip is not None else self.scaip

    def match(self, event: Event, device: Device) -> Rule | None:
        """First matching rule wins, like a firewall: the file's order is its meaning.

        A municipality's own rules are tried before the global ones.
        """
        for rule in self._candidates_for(device.municipality, event.type):
            if self._applies(rule, event, device):
                return rule
        return None

    def _candidates_for(self, municipality: str, etype: EventType) -> tuple[Rule, ...]:
        local = self.municipalities.get(municipality)
        key = (municipality if local is not None else None, etype)
        found = self._candidates.get(key)
        if found is None:
            ordered = (*local.rules, *self.rules) if local is not None else self.rules
            found = self._candidates[key] = tuple(r for r in ordered if r.event is etype)
        return found

    def _applies(self, rule: Rule, event: Event, device: Device) -> bool:
        if event.type is not rule.event:
            return False
        if rule.device_kind is not None and device.kind is not rule.device_kind:
            return False
        if rule.window is not None:
            window = self.window_for(rule.window, device)
            if window is None or not self._in(window, rule, event):
                return False
        if rule.zone is not None:
            return zone_of(event, device) is rule.zone
        return True

    def _in(self, window: TimeWindow, rule: Rule, event: Event) -> bool:
        """Whether the event falls in the window; for an event whose time is uncertain
        (a backlog delivered after an outage), whether it may have, when the rule
        raises an alarm: a door opened at 23:30 and delivered at 07:05 is a night door.
        """
        if event.ts_earliest is not None and rule.alarm is not None:
            return in_window_during(
                window.start, window.end, event.ts_earliest, event.ts, self.timezone
            )
        return in_window(window.start, window.end, event.ts, self.timezone)

    def window_for(self, window: TimeWindow | str, device: Device) -> TimeWindow | None:
        """Resolve a named window: the device's own, then its municipality's, then global."""
        if isinstance(window, TimeWindow):
            return window
        for name, start, end in device.settings.windows:
            if name == window:
                return TimeWindow(parse_hhmm(start), parse_hhmm(end))
        local = self.municipalities.get(device.municipality)
        if local is not None and window in local.windows:
            return local.windows[window]
        return self.windows.get(window)

    def policy_for(self, rule: Rule, priority: Priority, municipality: str) -> Policy | None:
        name = rule.policy or f"p{int(priority)}"
        local = self.municipalities.get(municipality)
        if local is not None and name in local.policies:
            return local.policies[name]
        return self.policies.get(name)

    def policy_named(self, name: str | None, municipality: str) -> Policy | None:
        if name is None:
            return None
        local = self.municipalities.get(municipality)
        if local is not None and name in local.policies:
            return local.policies[name]
        return self.policies.get(name)

    def heartbeat_interval(self, device: Device) -> timedelta | None:
        """The device's own interval, else its kind's default; None: not supervised."""
        if device.heartbeat_interval_s:
            return _seconds(device.heartbeat_interval_s)
        return self.heartbeat_defaults.get(device.kind)

    def max_flap_window(self) -> timedelta:
        every = [*self.rules, *(r for m in self.municipalities.values() for r in m.rules)]
        return max((r.flap_window for r in every), default=timedelta(0))

    def alarm_kinds(self) -> list[str]:
        every = [*self.rules, *(r for m in self.municipalities.values() for r in m.rules)]
        kinds = {r.alarm for r in every if r.alarm}
        if self.storm is not None:
            kinds.add(self.storm.incident_kind)
        return sorted(kinds)


def geofence_of(device: Device) -> Geofence | None:
    s = device.settings
    if s.geofence_circle is not None:
        lat, lon, radius = s.geofence_circle
        return Circle(lat, lon, radius)
    if s.geofence_polygon is not None:
        return Polygon.of(s.geofence_polygon)
    return None


def zone_of(event: Event, device: Device) -> ZoneStatus | None:
    """Where a location event puts the device relative to its fence; None without one."""
    fence = geofence_of(device)
    if fence is None or event.type is not EventType.LOCATION:
        return None
    accuracy = float(event.fields.get("accuracy_m", 0.0))
    return zone_status(
        fence, event.fields["lat"], event.fields["lon"], accuracy, device.settings.max_accuracy_m
    )


def current_fix(event: Event, device: Device, no_fix_after: timedelta) -> bool:
    """Does this location event show the tracker's safe zone is watched *now*?

    A usable fix (core.geo.fix_usable) taken, on the device's clock, at most
    `no_fix_after` before alarmhub received it. A fix buffered out of coverage and
    delivered hours late shows where the person was, not where they are: counted,
    it resolved `no_usable_fix` and restarted the no-fix count, although the
    tracker had still not shown a position from the last `no_fix_after`. A fix
    without a device time (or with a clamped one) is as old as its receipt.
    """
    f = event.fields
    try:
        lat, lon = float(f["lat"]), float(f["lon"])
        accuracy = float(f.get("accuracy_m", 0.0))
    except (KeyError, TypeError, ValueError):
        return False
    if not fix_usable(lat, lon, accuracy, device.settings.max_accuracy_m):
        return False
    taken = device_clock(event)
    return taken is None or event.received_at - taken <= no_fix_after


def parse_hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def local_time(ts: datetime, tz: ZoneInfo) -> time:
    return ts.astimezone(tz).time()


@lru_cache(maxsize=256)
def _seconds(seconds: int) -> timedelta:
    """One timedelta per distinct interval: asked once per device at start-up (1 M)."""
    return timedelta(seconds=seconds)
