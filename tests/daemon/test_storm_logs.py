"""A storm of new alarms logs one `alarms.raised` (and `alarms.escalated`) line per batch.

Issue 18: one info line per new alarm was a measurable share of a storm's profile. A batch
raising more than RAISED_LINES_PER_BATCH alarms logs one info line with counts (each alarm
at debug); a smaller batch logs `alarm.raised` per alarm as before. Which batches the broker
hands over is up to it, so the test checks the accounting, not the batch sizes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.daemon.escalator import ESCALATED_LINES_PER_BATCH
from alarmhub.daemon.ingest import RAISED_LINES_PER_BATCH
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import Publisher, async_wait_until, db_count, hub_settings, native
from tests.support.helpers import register as register_devices

pytestmark = pytest.mark.broker

N = 120


async def test_a_backlog_of_new_alarms_is_logged_per_batch_with_counts(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    pendants = [(f"storm-{i:03d}", "safety_alarm", ("0301", "4601")[i % 2]) for i in range(N)]
    register_devices(f"sqlite:///{db}", pendants, tmp_path)
    settings = hub_settings(tmp_path, broker.url, client_id)
    # Once to subscribe the persistent session; the presses then queue while it is away.
    async with AlarmHub(settings, serve_http=False) as hub:
        assert hub.ingest is not None
        assert await hub.ingest.wait_connected(5)
    pub = Publisher(broker.port)
    try:
        pub.publish_many(native(d, f"m-{d}", "button.pressed") for d, _, _ in pendants)
        with capture_logs() as logs:
            async with AlarmHub(settings, serve_http=False):
                assert await async_wait_until(
                    lambda: db_count(db, "SELECT count(*) FROM alarms") == N, 20
                )
    finally:
        pub.close()
    each = [e for e in logs if e["event"] == "alarm.raised" and e["log_level"] == "info"]
    batches = [e for e in logs if e["event"] == "alarms.raised"]
    # Every new alarm is told once: by its own line or in a batch's count.
    assert len(each) + sum(b["count"] for b in batches) == N
    assert len({e["alarm_id"] for e in each}) == len(each)
    assert all(b["count"] > RAISED_LINES_PER_BATCH for b in batches)
    assert all(b["log_level"] == "info" for b in batches)
    for b in batches:
        assert sum(b["by_municipality"].values()) == b["count"]
        assert b["by_kind"] == {"button": b["count"]}
    # A backlog of 120 presses does not arrive one by one: the storm path ran.
    assert batches, [e["event"] for e in logs][:20]
    # Each alarm's first step (operator queue, at once) fired with its batch and is told
    # the same way: one `alarm.escalated` line each, or a batch's `alarms.escalated` count.
    escalated = [e for e in logs if e["event"] == "alarm.escalated" and e["log_level"] == "info"]
    counted = [e for e in logs if e["event"] == "alarms.escalated"]
    assert len(escalated) + sum(b["count"] for b in counted) == N
    assert all(b["count"] > ESCALATED_LINES_PER_BATCH for b in counted)
    assert all(b["by_level"] == {"1": b["count"]} for b in counted)
    assert counted
