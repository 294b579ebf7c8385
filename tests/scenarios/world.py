"""The scenario suite's world: devices, and scenario times on the Oslo night (tests/scenarios/scenario.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alarmhub.core.device_settings import parse_settings
from alarmhub.core.model import Device, DeviceKind
from tests.support.helpers import REPO

OSLO = ZoneInfo("Europe/Oslo")
DAY = date(2026, 11, 20)
NOON = time(12)


class ScenarioError(AssertionError):
    """A scenario that cannot go on (time backwards, unknown device, a delivery that never came)."""


def default_rules() -> str:
    """The built-in rules' text, to extend with a municipality section or a rule."""
    return (REPO / "config" / "rules.toml").read_text()


# --- devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    id: str
    kind: DeviceKind
    municipality: str | None = None
    resident: str | None = None
    heartbeat_s: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    bridge: str | None = None  # the Zigbee2MQTT bridge of a Zigbee device

    def device(self, municipality: str) -> Device:
        return Device(
            self.id,
            self.kind,
            self.municipality or municipality,
            profile=self.profile,
            heartbeat_interval_s=self.heartbeat_s,
            resident=self.resident,
            settings=parse_settings(self.settings),
            bridge=self.bridge,
        )


def device(
    id: str,  # noqa: A002 - the protocol's word
    kind: DeviceKind | str,
    *,
    municipality: str | None = None,
    resident: str | None = None,
    heartbeat_s: int | None = None,
    settings: dict[str, Any] | None = None,
    profile: str | None = None,
    bridge: str | None = None,
) -> DeviceSpec:
    return DeviceSpec(
        id, DeviceKind(kind), municipality, resident, heartbeat_s, settings or {}, profile, bridge
    )


def pendant(id: str, **kw: Any) -> DeviceSpec:  # noqa: A002
    return device(id, DeviceKind.SAFETY_ALARM, **kw)


def fall_sensor(id: str, **kw: Any) -> DeviceSpec:  # noqa: A002
    return device(id, DeviceKind.FALL_SENSOR, **kw)


def door(id: str, *, night: str | None = None, **kw: Any) -> DeviceSpec:  # noqa: A002
    """A door sensor; `night="23:00-06:00"` gives it its own night window."""
    settings = dict(kw.pop("settings", None) or {})
    if night is not None:
        start, end = night.split("-")
        settings.setdefault("windows", {})["night"] = [start, end]
    return device(id, DeviceKind.DOOR_SENSOR, settings=settings, **kw)


def tracker(
    id: str,  # noqa: A002
    *,
    geofence: tuple[float, float, float] | None = None,
    max_accuracy_m: float | None = None,
    **kw: Any,
) -> DeviceSpec:
    settings = dict(kw.pop("settings", None) or {})
    if geofence is not None:
        settings["geofence"] = {"lat": geofence[0], "lon": geofence[1], "radius_m": geofence[2]}
    if max_accuracy_m is not None:
        settings["max_accuracy_m"] = max_accuracy_m
    return device(id, DeviceKind.GPS_TRACKER, settings=settings, **kw)


def dispenser(
    id: str,  # noqa: A002
    *,
    doses: Iterable[str] = (),
    window_min: int = 60,
    **kw: Any,
) -> DeviceSpec:
    settings = dict(kw.pop("settings", None) or {})
    if doses:
        settings["dose_schedule"] = {"times": list(doses), "window_min": window_min}
    return device(id, DeviceKind.MEDICATION_DISPENSER, settings=settings, **kw)


# --- time --------------------------------------------------------------------------------

_CLOCK = re.compile(r"^(?:\+(\d+)d\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_RELATIVE = re.compile(r"^\+(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def resolve_time(when: str | datetime, now: datetime, day: date = DAY) -> datetime:
    """A scenario time (see the module docstring) as an aware UTC datetime."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ScenarioError(f"{when!r}: give an aware datetime")
        return when.astimezone(UTC)
    text = when.strip()
    if (m := _RELATIVE.match(text)) and any(m.groups()):
        h, mi, s = (int(g or 0) for g in m.groups())
        return now + timedelta(hours=h, minutes=mi, seconds=s)
    if m := _CLOCK.match(text):
        days, hh, mm, ss = int(m[1] or 0), int(m[2]), int(m[3]), int(m[4] or 0)
        t = time(hh, mm, ss)
        d = day + timedelta(days=days + (0 if t >= NOON else 1))
        return datetime.combine(d, t, tzinfo=OSLO).astimezone(UTC)
    raise ScenarioError(f"{when!r}: not a scenario time (HH:MM[:SS], +Nd HH:MM, +5m, +90s)")


def local(t: datetime) -> str:
    """How a scenario names an instant: local time, with the date when it is not obvious."""
    return t.astimezone(OSLO).strftime("%Y-%m-%d %H:%M:%S")


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class DeviceMessages:
    """What each kind of device says, in the native protocol; a mixin of Scenario (its `send`)."""

    async def send(self, device_id: str, etype: str, **kw: Any) -> str:
        raise NotImplementedError

    async def press(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "button.pressed", **kw)

    async def cancel(self, device_id: str, **kw: Any) -> str:
        """The pendant's own cancel (SCAIP reset): `button.cancelled`."""
        return await self.send(device_id, "button.cancelled", **kw)

    async def fall(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "fall.detected", **kw)

    async def door_opened(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "door.opened", **kw)

    async def door_closed(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "door.closed", **kw)

    async def fix(
        self, device_id: str, lat: float, lon: float, accuracy_m: float = 10, **kw: Any
    ) -> str:
        return await self.send(device_id, "location", lat=lat, lon=lon, accuracy_m=accuracy_m, **kw)

    async def dose_taken(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "dose.taken", **kw)

    async def heartbeat(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "heartbeat", **kw)
