"""The queue gauges are recounted from the active alarms: a table of alarms, the values read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alarmhub.clock import FakeClock
from alarmhub.core.model import Alarm, AlarmState, Priority
from alarmhub.observability.gauges import QueueGauges
from alarmhub.observability.metrics import Metrics

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)


def _alarm(
    n: int, priority: Priority, state: AlarmState, age_s: float, kind: str = "button"
) -> Alarm:
    at = NOW - timedelta(seconds=age_s)
    return Alarm(f"a-{n}", f"d-{n}", ("0301", "4601")[n % 2], kind, priority, state, at, at)


ALARMS = [
    _alarm(0, Priority.CRITICAL, AlarmState.OPEN, 5),
    _alarm(1, Priority.CRITICAL, AlarmState.OPEN, 42.5),
    _alarm(2, Priority.CRITICAL, AlarmState.ACKNOWLEDGED, 900),  # taken: not waiting
    _alarm(3, Priority.NORMAL, AlarmState.ACKNOWLEDGED, 3),
    _alarm(4, Priority.HIGH, AlarmState.OPEN, 7, kind="device_offline"),
    _alarm(6, Priority.HIGH, AlarmState.OPEN, 1, kind="device_offline"),
    _alarm(7, Priority.HIGH, AlarmState.OPEN, 2, kind="device_offline"),
]


def test_the_gauges_count_the_queue_and_its_oldest_wait_per_priority() -> None:
    metrics = Metrics()
    QueueGauges(metrics, FakeClock(NOW)).update(ALARMS)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    opened = "alarmhub_alarms_open"
    assert value(opened, priority="1", state="open") == 2
    assert value(opened, priority="1", state="acknowledged") == 1
    assert value(opened, priority="2", state="open") == 3
    assert value(opened, priority="3", state="acknowledged") == 1
    assert value(opened, priority="3", state="open") == 0
    assert value(opened, priority="4", state="open") == 0
    oldest = "alarmhub_oldest_unacknowledged_alarm_age_seconds"
    assert value(oldest, priority="1") == 42.5
    assert value(oldest, priority="2") == 7
    assert value(oldest, priority="3") == 0  # only an acknowledged one
    offline = "alarmhub_devices_offline"
    assert value(offline, municipality="0301") == 2
    assert value(offline, municipality="4601") == 1


def test_a_municipality_whose_offline_alarms_ended_reads_zero_not_its_last_count() -> None:
    metrics = Metrics()
    gauges = QueueGauges(metrics, FakeClock(NOW))
    gauges.update(ALARMS)
    gauges.update(ALARMS[:4])
    assert (
        metrics.registry.get_sample_value("alarmhub_devices_offline", {"municipality": "0301"}) == 0
    )
