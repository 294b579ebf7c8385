"""Time to acknowledge in the response-time report is the alarm's first answer.

An acknowledged alarm left unresolved past `ack_timeout_s` is put back in the queue
by its reminder, and a resolve then acknowledges it again: `alarms.acknowledged_at`
moves to that moment. The report read the column, so a 20 s answer read as 1,880 s
and a missed target (found in review, 2026-12-06); the Prometheus histogram always
counted the first acknowledgement only. Real daemon, Mosquitto and SQLite; the
daemon's clock is moved by hand, so the reminder's half hour passes at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alarmhub.clock import FakeClock
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import async_wait_until, db_rows

pytestmark = pytest.mark.broker


async def test_a_reminder_then_a_resolve_keeps_the_first_answer_as_time_to_acknowledge(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    clock = FakeClock(t0)
    async with stack(tmp_path, broker, client_id, alarms=False, clock=clock) as s:
        alarm = await s.raise_alarm("osl-pend-1", "o1")
        clock.advance(timedelta(seconds=20))
        async with s.client("op0301") as c:
            assert (await c.post(f"/api/v1/alarms/{alarm}/acknowledge")).status_code == 200
        clock.advance(timedelta(minutes=31))  # past the p1 policy's ack_timeout_s (1800)
        state = "SELECT state FROM alarms WHERE id = ?"
        assert await async_wait_until(lambda: db_rows(s.db, state, (alarm,))[0][0] == "open", 60)
        async with s.client("op0301") as c:
            r = await c.post(f"/api/v1/alarms/{alarm}/resolve", json={"outcome": "helped"})
            assert r.status_code == 200, r.text
        types = db_rows(s.db, "SELECT type FROM timeline WHERE alarm_id = ? ORDER BY id", (alarm,))
        assert [t for (t,) in types].count("acknowledged") == 2  # answered twice
        span = {
            "municipality": "0301",
            "from": (t0.date() - timedelta(days=1)).isoformat(),
            "to": (t0.date() + timedelta(days=1)).isoformat(),
        }
        async with s.client("madm0301") as c:
            r = await c.get("/api/v1/reports/response-times", params=span)
        assert r.status_code == 200, r.text
        [group] = r.json()["groups"]
        assert group["acknowledge"]["median_s"] == 20.0
        assert (group["sla_met"], group["sla_decided"]) == (1, 1)
        # The page's chart reads the same answer's daily series: the first answer too.
        # It used to fetch the alarms list and time `acknowledged_at`, the latest.
        [day] = r.json()["daily"]
        assert (day["priority"], day["acknowledge"]["median_s"]) == (1, 20.0)
