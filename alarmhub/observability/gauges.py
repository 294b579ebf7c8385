"""Gauges recounted from state: the open queue, the oldest wait, devices.

Counters move with each event; these gauges are recounted from the alarms and
the registry, so they can never drift from what the store holds.
"""

from __future__ import annotations

from collections.abc import Iterable

from alarmhub.clock import Clock
from alarmhub.core.model import Alarm, Device, DeviceKind
from alarmhub.observability.metrics import Metrics

QUEUE_GAUGES_EVERY_S = 1.0


class QueueGauges:
    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self._metrics = metrics
        self._clock = clock
        self._municipalities: set[str] = set()
        self._at = float("-inf")

    def update(self, alarms: Iterable[Alarm], *, throttled: bool = False) -> None:
        """Recount from every active alarm.

        The count walks all active alarms; after every batch that cost more than
        the batch itself under load (docs/performance.md). After a batch it runs at
        most every QUEUE_GAUGES_EVERY_S; the registry loop and every operator action
        recount regardless, so a gauge is never staler than a couple of seconds.
        """
        mono = self._clock.monotonic()
        if throttled and mono - self._at < QUEUE_GAUGES_EVERY_S:
            return
        self._at = mono
        now = self._clock.now()
        counts: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        offline: dict[str, int] = dict.fromkeys(self._municipalities, 0)
        for alarm in alarms:
            if alarm.kind == "device_offline":
                offline[alarm.municipality] = offline.get(alarm.municipality, 0) + 1
            p = str(int(alarm.priority))
            counts[(p, alarm.state.value)] = counts.get((p, alarm.state.value), 0) + 1
            if alarm.state.value == "open":
                oldest[p] = max(oldest.get(p, 0.0), (now - alarm.raised_at).total_seconds())
        m = self._metrics
        for p in ("1", "2", "3", "4"):
            for st in ("open", "acknowledged"):
                m.alarms_open.labels(p, st).set(counts.get((p, st), 0))
            m.oldest_unacknowledged.labels(p).set(oldest.get(p, 0.0))
        for municipality, count in offline.items():
            m.devices_offline.labels(municipality).set(count)
        self._municipalities = set(offline)


def device_gauges(metrics: Metrics, devices: Iterable[Device]) -> None:
    counts: dict[str, int] = {}
    municipalities: set[str] = set()
    for d in devices:
        municipalities.add(d.municipality)
        if d.active:
            counts[d.kind.value] = counts.get(d.kind.value, 0) + 1
    metrics.zero_municipalities(municipalities)
    for kind in DeviceKind:
        metrics.devices.labels(kind.value).set(counts.get(kind.value, 0))
