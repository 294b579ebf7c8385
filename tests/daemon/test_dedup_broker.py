"""Issue 12 item 12 against a real Mosquitto and a real SQLite file: a pendant that
reuses message ids after a battery change gets new alarms; a resend does not."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.core.actions import Action
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    native,
    register,
    sqlite_at,
)

pytestmark = pytest.mark.broker


def stored(pub: Publisher) -> list[dict[str, object]]:
    """The `accepted` receipts (the operator's resolve also sends a `handled` one)."""
    receipts = [orjson.loads(p) for _, p in pub.received]
    return [r for r in receipts if r["status"] == "accepted"]


async def test_a_pendant_reusing_ids_after_a_battery_change_raises_new_alarms(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-1", "safety_alarm", "0301")], tmp_path)
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    settings = hub_settings(tmp_path, broker.url, client_id)
    before = native("pend-1", "1", "button.pressed", ts="2026-11-25T10:00:00Z")
    after = native("pend-1", "1", "button.pressed", ts="2026-11-25T10:20:00Z")
    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*before)
            pub.publish(*before)  # the device did not hear the receipt: a resend
            assert await async_wait_until(lambda: len(pub.received) == 2, 30), pub.received
            [first] = list(hub.state.alarms.by_id)
            await hub.act(first, Action.RESOLVE, "op-1", outcome="false_alarm", audit=())
            # New batteries: the counter starts over at "1", the press is a new one.
            pub.publish(*after)
            pub.publish(*after)  # and its own resend
            assert await async_wait_until(lambda: len(stored(pub)) == 4, 30), pub.received
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM alarms") == 2, 10
            )
            receipts = stored(pub)
            assert [r.get("duplicate", False) for r in receipts] == [False, True, False, True]
            alarms = db_rows(db, "SELECT id, state FROM alarms ORDER BY raised_at")
            assert alarms == [(first, "resolved"), (alarms[1][0], "open")]
            assert alarms[1][0] != first
            inbox = db_rows(db, "SELECT msg_id, identity FROM inbox ORDER BY seq")
            assert inbox == [("1", None), ("1", "id_reused")]
    finally:
        pub.close()


async def test_an_id_reused_after_the_inbox_was_pruned_raises_its_alarm_and_holds_nobody(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Weeks later the pruner has deleted the first press's inbox row; its alarm is kept.

    The new press with the reused id was new to dedup and got the stored alarm's
    id; the store refused to write over it, round after round, and held every later
    message of every device unacknowledged. Now one refusal teaches the id, and the
    next round keys the alarm apart.
    """
    db = tmp_path / "alarmhub.db"
    register(
        f"sqlite:///{db}",
        [("pend-1", "safety_alarm", "0301"), ("pend-2", "safety_alarm", "0301")],
        tmp_path,
    )
    pub = Publisher(broker.port)
    settings = hub_settings(tmp_path, broker.url, client_id)
    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "1", "button.pressed", ts="2026-11-25T10:00:00Z"))
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM alarms") == 1, 30
            )
            [first] = list(hub.state.alarms.by_id)
            await hub.act(first, Action.RESOLVE, "op-1", outcome="false_alarm", audit=())
        with sqlite_at(db) as conn:
            conn.execute("DELETE FROM inbox")  # what the retention pruner does
        conn.close()
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "1", "button.pressed", ts="2026-12-20T10:00:00Z"))
            pub.publish(*native("pend-2", "a", "button.pressed", ts="2026-12-20T10:00:01Z"))
            # A ceiling: the stall this guards against never ended.
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 2, 30
            ), db_rows(db, "SELECT id, device_id, state, rev FROM alarms")
            alarms = db_rows(db, "SELECT id, device_id, state FROM alarms ORDER BY raised_at")
            assert alarms[0] == (first, "pend-1", "resolved")
            assert sorted(a[1:] for a in alarms[1:]) == [("pend-1", "open"), ("pend-2", "open")]
            assert first not in {a[0] for a in alarms[1:]}
    finally:
        pub.close()
