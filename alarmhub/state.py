"""The daemon's in-memory view of the world: the registry and the active alarms.

It is the single owner's cache of what the store holds. Changes are applied
only after the store committed them, so memory never runs ahead of the disk.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from alarmhub.core.model import Alarm, Device
from alarmhub.core.pipeline import AlarmKey, BatchEffects


class HubState:
    def __init__(self, flap_window: timedelta) -> None:
        self.devices: dict[str, Device] = {}
        self.active_by_key: dict[AlarmKey, Alarm] = {}
        self.by_id: dict[str, Alarm] = {}
        self._resolved: dict[AlarmKey, Alarm] = {}
        self.flap_window = flap_window

    # AlarmView
    def active(self, key: AlarmKey) -> Alarm | None:
        return self.active_by_key.get(key)

    def recently_resolved(self, key: AlarmKey) -> Alarm | None:
        return self._resolved.get(key)

    def load(self, devices: dict[str, Device], active: list[Alarm], resolved: list[Alarm]) -> None:
        self.devices = devices
        for alarm in resolved:
            self.put(alarm)
        for alarm in active:
            self.put(alarm)

    def put(self, alarm: Alarm) -> None:
        key = (alarm.device_id, alarm.kind)
        if alarm.is_active:
            self.active_by_key[key] = alarm
            self.by_id[alarm.id] = alarm
            self._resolved.pop(key, None)
        else:
            if self.active_by_key.get(key, alarm).id == alarm.id:
                self.active_by_key.pop(key, None)
            self.by_id.pop(alarm.id, None)
            if alarm.outcome == "auto":
                self._resolved[key] = alarm

    def apply(self, effects: BatchEffects) -> None:
        for alarm in effects.alarms.values():
            self.put(alarm)

    def forget_resolved_before(self, cutoff: datetime) -> None:
        """Drop auto-resolved alarms older than the flap window: they can no longer reopen."""
        stale = [k for k, a in self._resolved.items() if a.resolved_at and a.resolved_at < cutoff]
        for key in stale:
            del self._resolved[key]
