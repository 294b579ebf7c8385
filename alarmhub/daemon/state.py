"""The daemon's in-memory view of the world: the registry and the active alarms.

It is the single owner's cache of what the store holds. Changes are applied
only after the store committed them, so memory never runs ahead of the disk.
"""

from __future__ import annotations

from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import Alarm, Device
from alarmhub.core.pipeline import BatchEffects


class HubState:
    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.alarms = AlarmIndex()

    def load(self, devices: dict[str, Device], active: list[Alarm], resolved: list[Alarm]) -> None:
        self.devices = devices
        self.alarms.load(resolved)
        self.alarms.load(active)

    def apply(self, effects: BatchEffects) -> None:
        for alarm in effects.alarms.values():
            self.alarms.put(alarm)
