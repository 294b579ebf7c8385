"""The daemon's in-memory view of the world: the registry, the active alarms, and the
rules and silences in force.

It is the single owner's cache of what the store holds. Changes are applied
only after the store committed them, so memory never runs ahead of the disk.
The services share this one object instead of the composition root: the rules
and silences are swapped here whole (a reload is all-or-nothing), so every
service reads the ones in force at the moment it decides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import Alarm, Device
from alarmhub.core.pipeline import BatchEffects
from alarmhub.core.rules import RuleSet
from alarmhub.core.suppress import Silence


class HubState:
    def __init__(self, rules: RuleSet) -> None:
        self.devices: dict[str, Device] = {}
        self.alarms = AlarmIndex()
        self.rules = rules
        self.silences: tuple[Silence, ...] = ()

    def load(self, devices: dict[str, Device], active: list[Alarm], resolved: list[Alarm]) -> None:
        self.devices = devices
        self.alarms.load(resolved)
        self.alarms.load(active)

    def reload_alarms(self, active: list[Alarm], resolved: list[Alarm]) -> None:
        """The alarms as stored now, replacing memory whole: a new owner's term starts
        from what the previous owner (another instance) committed, not from this
        instance's older copy."""
        self.alarms = AlarmIndex()
        self.alarms.load(resolved)
        self.alarms.load(active)

    def apply(self, effects: BatchEffects) -> None:
        """Put a committed batch's alarms, each at the revision the store wrote.

        The batch's own view is brought to those revisions too, so what is published
        after the commit (the live stream, logs) shows the alarm as stored.
        """
        for alarm_id, alarm in effects.alarms.items():
            effects.alarms[alarm_id] = self.alarms.committed(alarm)

    async def reload(
        self, get_alarms: Callable[[list[str]], Awaitable[list[Alarm]]], ids: list[str]
    ) -> None:
        """Replace these alarms with what the store holds now (after a StaleAlarmError).

        One query for all of them: a stale ingest batch may name hundreds.
        """
        for alarm in await get_alarms(list(dict.fromkeys(ids))):
            self.alarms.put(alarm)
            # Resolved long ago, it is not kept in memory, but a new alarm must not
            # take its id (AlarmIndex.taken).
            self.alarms.learn_taken(alarm.id)
