"""A decision the store refuses round after round is a stall: counted, said, paged, handed over.

A batch is decided on the alarms and devices in memory and committed; a commit
refused because the rows moved (StaleAlarmError, DeviceMovedError) reloads them
and decides again (WriteGate.deciding). A refusal that reloading never cures (a
corrupt row, a bug that decides the same refused write again: the reused message
id of 2026-12-06 was one, a trigger here) held the write gate's lock for ever:
nothing was recorded or acknowledged, `alarmhub_store_writable` stayed 1, no metric
counted it, the owner's stall watch never saw it (only a failing store counted), so
a PostgreSQL owner kept its lease and no alert fired. Nothing was lost (the broker
kept every message) but nothing arrived either, and only the log said so.

Now each refusal counts (`alarmhub_decisions_refused_total{reason}`), the rounds
of the decision in hand show (`alarmhub_decision_refused_rounds`, alert
AlarmhubDecisionRefused), the refusal is a stall from its first round (`waiting`
`refused`: an owner on PostgreSQL steps down after ALARMHUB_OWNER_STALL_S), and the
log says it once a minute with counts. Nothing of the refused batch is stored or
acknowledged until the store takes it; then it is, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.core.model import Device, DeviceKind
from alarmhub.daemon.gate import (
    ALARM_CHANGED,
    DEVICE_MOVED,
    RETRIES_UNDER,
    STALE_ROUNDS_BEFORE_ERROR,
    WriteGate,
)
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.observability.metrics import REFUSAL_REASONS, Metrics
from alarmhub.store.cluster import Fence
from alarmhub.store.errors import DeviceMovedError, LeaseLostError, StaleAlarmError
from tests.daemon.test_instances import FAILOVER_S, WAIT, eventually, holder
from tests.daemon.test_instances import register as register_pg
from tests.daemon.test_stalled_owner import count, execute, step_downs
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    native,
    register,
    sample,
)

T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
REFUSED = "alarmhub_decisions_refused_total"
ROUNDS = "alarmhub_decision_refused_rounds"


def refused(metrics: Metrics, reason: str) -> float:
    return sample(metrics, REFUSED, reason=reason)


def rounds(metrics: Metrics) -> float:
    return sample(metrics, ROUNDS)


def gate_on(clock: FakeClock, metrics: Metrics) -> WriteGate:
    return WriteGate(metrics, asyncio.Event(), clock)


# --- the write gate alone, on a FakeClock ---------------------------------------------


def test_the_metric_names_every_refusal_reason() -> None:
    assert set(REFUSAL_REASONS) == {ALARM_CHANGED, DEVICE_MOVED}


async def test_a_refused_decision_is_a_stall_from_its_first_round_and_counted() -> None:
    clock = FakeClock(T0)
    metrics = Metrics()
    gate = gate_on(clock, metrics)
    refusing = [True]
    tries = 0

    async def attempt() -> str:
        nonlocal tries
        tries += 1
        if refusing[0]:
            raise StaleAlarmError(["a-1"]) if tries % 2 else DeviceMovedError(["d-1"])
        return "committed"

    started = clock.monotonic()
    task = asyncio.ensure_future(gate.deciding(attempt))
    try:
        assert await async_wait_until(lambda: tries >= 3, WAIT)
        clock.advance(timedelta(seconds=40))
        stalled = gate.stalled()
        assert stalled is not None
        # Since the first refusal, not the latest: the owner is judged on the whole wait.
        assert stalled.since == started
        assert stalled.what == "refused"
        assert "changed since read" in stalled.error or "moved since read" in stalled.error
        assert refused(metrics, "alarm_changed") >= 1
        assert refused(metrics, "device_moved") >= 1
        assert rounds(metrics) >= 2
        # A refusal is no store fault: the store answers, and says so.
        assert sample(metrics, "alarmhub_store_writable") == 1
        assert sample(metrics, "alarmhub_commit_failures_total") == 0
        refusing[0] = False
        assert await asyncio.wait_for(task, WAIT) == "committed"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert gate.stalled() is None
    assert rounds(metrics) == 0


async def test_a_decision_refused_under_an_ended_term_stops_at_its_next_refusal() -> None:
    """A batch whose ingest was cancelled with its term goes on alone (daemon/ingest.py).
    Refused for ever, it went on deciding under the instance's next grant, holding the
    gate's lock and so the next term's start. It ends with LeaseLostError now, as a
    failing write of an ended term does (gate.RETRIES_UNDER); nothing was acknowledged."""
    gate = gate_on(FakeClock(T0), Metrics())
    fence = Fence("intake", "inst-a", 1)
    current: list[Fence | None] = [fence]
    tries = 0

    def grant() -> Fence:
        if current[0] != fence:
            raise LeaseLostError(fence.name, fence.holder, fence.epoch)
        return fence

    async def attempt() -> str:
        nonlocal tries
        tries += 1
        raise StaleAlarmError(["a-1"])

    async def term_work() -> str:
        RETRIES_UNDER.set(grant)
        return await gate.deciding(attempt)

    task = asyncio.ensure_future(term_work())
    assert await async_wait_until(lambda: tries >= 2, WAIT)
    current[0] = None
    with pytest.raises(LeaseLostError):
        await asyncio.wait_for(task, WAIT)
    assert gate.stalled() is None


async def test_the_backoff_comes_before_the_reload_so_the_reload_is_fresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each round used to reload the rows and then wait (from the fourth round, up to
    5 s) before deciding on them: any change of those rows during the wait refused the
    round again. The wait comes first now, the decision right after the reload."""
    gate = gate_on(FakeClock(T0), Metrics())
    order: list[str] = []

    async def reload(ids: list[str]) -> None:
        order.append("reload")

    async def sleep(_s: float) -> None:
        order.append("sleep")

    async def attempt() -> str:
        order.append("attempt")
        if order.count("attempt") <= 5:
            raise StaleAlarmError(["a-1"])
        return "committed"

    gate.reload_alarms = reload
    monkeypatch.setattr(asyncio, "sleep", sleep)  # the backoff, seen in order, not waited
    assert await gate.deciding(attempt) == "committed"
    # Three rounds at once, then a wait before each reload.
    assert order == [
        *("attempt", "reload") * 3,
        "attempt",
        "sleep",
        "reload",
        "attempt",
        "sleep",
        "reload",
        "attempt",
    ]


# --- the daemon on SQLite, with a real Mosquitto ---------------------------------------

# Every update of one alarm is skipped: the store sees its write refused (StaleAlarmError)
# at every round, and the reload finds the row as it was. A corrupt row or a bug that
# decides the same refused write again looks the same to the gate.
SQLITE_REFUSE = (
    "CREATE TRIGGER refuse_alarm BEFORE UPDATE ON alarms WHEN OLD.id = '{id}' "
    "BEGIN SELECT RAISE(IGNORE); END"
)


def _sql(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            conn.execute(sql)
    finally:
        conn.close()


def _in_step(hub: AlarmHub, db: Path, alarm_id: str) -> bool:
    """Memory and the row agree (the escalator's first step may write it too)."""
    alarm = hub.state.alarms.get(alarm_id)
    return alarm is not None and alarm.rev == db_rows(db, "SELECT rev FROM alarms")[0][0]


def _said(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == event]


@pytest.mark.broker
async def test_a_batch_refused_every_round_is_counted_said_and_held_not_dropped_sqlite(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(
        f"sqlite:///{db}",
        [("pend-1", "safety_alarm", "0301"), ("pend-2", "safety_alarm", "0301")],
        tmp_path,
    )
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    try:
        async with AlarmHub(hub_settings(tmp_path, broker.url, client_id), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "m0", "button.pressed"))
            assert await async_wait_until(lambda: len(pub.received) == 1, WAIT)
            [alarm_id] = list(hub.state.alarms.by_id)
            assert await async_wait_until(lambda: _in_step(hub, db, alarm_id), WAIT)
            _sql(db, SQLITE_REFUSE.format(id=alarm_id))
            # Dropped whatever the verdict: a refused batch holds the daemon's stop too (the
            # drain retries it until systemd's SIGKILL, deploy/systemd/alarmhub.service).
            try:
                await _refused_every_round(hub, db, pub, alarm_id)
            finally:
                _sql(db, "DROP TRIGGER IF EXISTS refuse_alarm")
            # Once the store takes it, the held batch is stored and answered, once.
            assert await async_wait_until(lambda: len(pub.received) == 3, WAIT), pub.received
            assert db_count(db, "SELECT count(*) FROM inbox") == 3
            assert db_rows(db, "SELECT repeat_count FROM alarms WHERE id = ?", (alarm_id,)) == [
                (1,)
            ]
            assert hub.gate.stalled() is None
            assert rounds(hub.metrics) == 0
    finally:
        pub.close()


async def _refused_every_round(hub: AlarmHub, db: Path, pub: Publisher, alarm_id: str) -> None:
    with capture_logs() as logs:
        # A repeat press (it updates the refused alarm), then another resident's.
        pub.publish(*native("pend-1", "m1", "button.pressed", ts="2026-11-25T10:00:10Z"))
        pub.publish(*native("pend-2", "m2", "button.pressed", ts="2026-11-25T10:00:11Z"))
        assert await async_wait_until(lambda: bool(_said(logs, "store.alarms_refused_again")), WAIT)
        # Held, not dropped and not acknowledged: nothing of it stored (a dead letter is
        # an inbox row too) or answered.
        assert db_count(db, "SELECT count(*) FROM inbox") == 1
        assert len(pub.received) == 1
        stalled = hub.gate.stalled()
        assert stalled is not None
        assert stalled.what == "refused"
        assert alarm_id in stalled.error
        assert refused(hub.metrics, "alarm_changed") >= STALE_ROUNDS_BEFORE_ERROR
        assert rounds(hub.metrics) >= STALE_ROUNDS_BEFORE_ERROR
        said = _said(logs, "store.alarms_refused_again")
        assert said[0]["log_level"] == "error"
        assert said[0]["rounds"] >= STALE_ROUNDS_BEFORE_ERROR
        assert said[0]["reason"] == "alarm_changed"
        assert alarm_id in said[0]["ids"]
        assert "refused_for_s" in said[0]
        # Each round at info only until the error says it: no line per round for ever.
        each = _said(logs, "store.alarms_changed_elsewhere")
        assert len(each) <= STALE_ROUNDS_BEFORE_ERROR


# --- the daemon on PostgreSQL: a lone owner steps down, takes intake back, commits once ---

PG_REFUSE = """
CREATE FUNCTION refuse_alarm() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END $$;
CREATE TRIGGER refuse_alarm BEFORE UPDATE ON alarms
    FOR EACH ROW WHEN (OLD.id = '{id}') EXECUTE FUNCTION refuse_alarm();
"""
STALL_S = 3.0  # ALARMHUB_OWNER_STALL_S here: two lease ttls at FAILOVER_S 3


@pytest.mark.broker
@pytest.mark.postgres
async def test_an_owner_whose_batch_is_refused_every_round_steps_down_postgres(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """The owner's store answers, its lease renews, but its batch is refused every round.
    On the old code it kept the lease and decided for ever: no step-down, no alert."""
    await register_pg(
        pg_url,
        [
            Device("pend-1", DeviceKind.SAFETY_ALARM, "0301"),
            Device("pend-2", DeviceKind.SAFETY_ALARM, "0301"),
        ],
    )
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    s = hub_settings(
        tmp_path,
        broker.url,
        client_id,
        database_url=pg_url,
        instance_id="inst-a",
        failover_s=FAILOVER_S,
        owner_stall_s=STALL_S,
    )
    try:
        async with AlarmHub(s, serve_http=False) as a:
            assert a.ingest is not None
            assert await a.ingest.wait_connected(WAIT)
            pub.publish(*native("pend-1", "m0", "button.pressed"))
            assert await eventually(lambda: _count_at_least(pg_url, "inbox", 1))
            [alarm_id] = list(a.state.alarms.by_id)
            await execute(pg_url, PG_REFUSE.format(id=alarm_id))
            try:  # dropped whatever the verdict: the refused batch holds the stop too
                await _stepped_down(a, pg_url, pub, alarm_id)
            finally:
                await execute(pg_url, "DROP TRIGGER IF EXISTS refuse_alarm ON alarms")
            assert await eventually(lambda: _count_at_least(pg_url, "inbox", 3))
            assert await count(pg_url, "SELECT count(*) FROM inbox") == 3
            assert (
                await count(pg_url, f"SELECT repeat_count FROM alarms WHERE id = '{alarm_id}'") == 1
            )
            assert await holder(pg_url) == "inst-a"
    finally:
        pub.close()


async def _stepped_down(a: AlarmHub, pg_url: str, pub: Publisher, alarm_id: str) -> None:
    with capture_logs() as logs:
        pub.publish(*native("pend-1", "m1", "button.pressed", ts="2026-11-25T10:00:10Z"))
        pub.publish(*native("pend-2", "m2", "button.pressed", ts="2026-11-25T10:00:11Z"))
        assert await async_wait_until(lambda: step_downs(a, "stalled") >= 1, WAIT)
    said = _said(logs, "lease.stepped_down")
    assert said[0]["reason"] == "stalled"
    assert said[0]["waiting"] == "refused"
    assert alarm_id in said[0]["error"]
    assert refused(a.metrics, "alarm_changed") >= 1
    assert await count(pg_url, "SELECT count(*) FROM inbox") == 1
    # Nobody else to hand over to: back under a new grant after the hold-off.
    assert await async_wait_until(lambda: a.owns == ["intake"], WAIT)


async def _count_at_least(url: str, table: str, n: int) -> bool:
    return await count(url, f"SELECT count(*) FROM {table}") >= n
