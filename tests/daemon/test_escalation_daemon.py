"""Escalation and supervision in the running daemon, on a hand-moved clock, real broker and store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
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
    run_cli,
)

pytestmark = pytest.mark.broker

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # the time native() messages carry


def escalations(db: Path) -> list[tuple[int, int, str, int]]:
    return [
        tuple(r)
        for r in db_rows(
            db, "SELECT round, step, reason, level FROM escalations ORDER BY round, step"
        )
    ]


async def test_an_overdue_step_fires_exactly_once_after_a_restart_and_notifies(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-1", "safety_alarm", "0301")], tmp_path)
    clock = FakeClock(T0)
    settings = hub_settings(tmp_path, broker.url, client_id)
    watcher = Publisher(broker.port, "notify-watcher")
    watcher.subscribe("alarmhub/v1/notify/#")
    pub = Publisher(broker.port)
    try:
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "p1", "button.pressed"))
            assert await async_wait_until(lambda: escalations(db) == [(0, 0, "escalate", 1)], 10)
            clock.advance(timedelta(seconds=30))
            await asyncio.sleep(1.5)
            assert escalations(db) == [(0, 0, "escalate", 1)]  # the 60 s step is not due yet
        # Down across the 60 s deadline (and the 180 s one).
        clock.advance(timedelta(seconds=200))
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert await async_wait_until(lambda: len(escalations(db)) == 3, 10), escalations(db)
            await asyncio.sleep(1.5)  # a second firing would show up now
            assert escalations(db) == [
                (0, 0, "escalate", 1),
                (0, 1, "escalate", 2),
                (0, 2, "escalate", 3),
            ]
            [alarm] = hub.state.alarms.by_id.values()
            assert alarm.escalation_level == 3
            details = [
                orjson.loads(r[0])
                for r in db_rows(
                    db, "SELECT detail FROM timeline WHERE type='escalated' ORDER BY id"
                )
            ]
            assert [d["level"] for d in details] == [1, 2, 3]
            # Each step names the rules it was decided under, as the alarm names those it was raised under.
            assert {d["rules_version"] for d in details} == {hub.rules.version}
            assert alarm.rules_version == hub.rules.version
            # Supervisor and external responder each got one notice, recorded as sent on PUBACK.
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") == 2,
                10,
            )
            assert await async_wait_until(lambda: len(watcher.received) == 2, 5)
            topics = sorted(t for t, _ in watcher.received)
            assert topics == [
                "alarmhub/v1/notify/external_responder",
                "alarmhub/v1/notify/supervisor",
            ]
            # Acknowledging stops the rest of the policy: the next round (at 300 s) never fires.
            result = await hub.act(alarm.id, Action.ACKNOWLEDGE, "op-1", audit=())
            assert result is not None
            clock.advance(timedelta(seconds=200))
            await asyncio.sleep(1.5)
            fired = escalations(db)
            assert all(reason != "escalate" for _, _, reason, _ in fired[3:]), fired
    finally:
        pub.close()
        watcher.close()


async def test_a_wall_clock_jump_fires_no_escalation_and_declares_nobody_offline(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    csv = tmp_path / "d.csv"
    csv.write_text(
        "id,kind,municipality,heartbeat_interval\npend-1,safety_alarm,0301,60\npend-2,safety_alarm,0301,60\n"
    )
    assert (
        run_cli(
            ["devices", "import", str(csv)], {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
        ).returncode
        == 0
    )
    clock = FakeClock(T0)
    pub = Publisher(broker.port)
    try:
        async with AlarmHub(
            hub_settings(tmp_path, broker.url, client_id), clock=clock, serve_http=False
        ) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "p1", "button.pressed"))
            assert await async_wait_until(lambda: len(escalations(db)) == 1, 30)
            clock.jump(timedelta(hours=1))  # NTP step: the wall clock moves, time does not pass
            await asyncio.sleep(2.5)
            assert escalations(db) == [(0, 0, "escalate", 1)]
            assert db_count(db, "SELECT count(*) FROM alarms WHERE kind='device_offline'") == 0
            clock.jump(timedelta(hours=-2))
            await asyncio.sleep(1.5)
            assert escalations(db) == [(0, 0, "escalate", 1)]
            # Real time passing still escalates, once: 60 s after raising.
            clock.advance(timedelta(seconds=61))
            assert await async_wait_until(lambda: len(escalations(db)) == 2, 30)
    finally:
        pub.close()


async def test_silent_device_goes_offline_after_its_misses_and_recovers_when_heard(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    csv = tmp_path / "d.csv"
    csv.write_text(
        "id,kind,municipality,heartbeat_interval\nchatty,safety_alarm,0301,60\nquiet,safety_alarm,0301,60\nslow,safety_alarm,0301,3600\n"
    )
    assert (
        run_cli(
            ["devices", "import", str(csv)], {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
        ).returncode
        == 0
    )
    clock = FakeClock(T0)
    pub = Publisher(broker.port)
    offline = "SELECT device_id FROM alarms WHERE kind='device_offline' AND state != 'resolved' ORDER BY device_id"
    try:
        async with AlarmHub(
            hub_settings(tmp_path, broker.url, client_id), clock=clock, serve_http=False
        ) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            for minute in range(4):  # chatty sends a heartbeat every minute; quiet says nothing
                pub.publish(*native("chatty", f"hb{minute}", "heartbeat"))
                await async_wait_until(
                    lambda m=minute: db_count(db, "SELECT count(*) FROM inbox") == m + 1,  # type: ignore[misc]
                    5,
                )
                clock.advance(timedelta(seconds=61))
                await asyncio.sleep(1.2)
            # 3 x 60 s of silence: quiet is offline; slow (1 h interval) and chatty are not.
            assert await async_wait_until(lambda: db_rows(db, offline) == [("quiet",)], 5)
            pub.publish(*native("quiet", "back", "heartbeat"))
            assert await async_wait_until(lambda: db_rows(db, offline) == [], 5)
            outcome = db_rows(
                db, "SELECT outcome, resolved_by FROM alarms WHERE kind='device_offline'"
            )
            assert outcome == [("auto", "alarmhub")]
    finally:
        pub.close()


async def test_restart_grace_no_offline_storm(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Devices silent while alarmhub was down for an hour are not all declared offline at start."""
    db = tmp_path / "alarmhub.db"
    rows = "".join(f"d{i},safety_alarm,0301,60\n" for i in range(50))
    csv = tmp_path / "d.csv"
    csv.write_text("id,kind,municipality,heartbeat_interval\n" + rows)
    assert (
        run_cli(
            ["devices", "import", str(csv)], {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
        ).returncode
        == 0
    )
    clock = FakeClock(T0 + timedelta(hours=1))
    async with AlarmHub(
        hub_settings(tmp_path, broker.url, client_id), clock=clock, serve_http=False
    ):
        await asyncio.sleep(2.5)
        assert db_count(db, "SELECT count(*) FROM alarms") == 0
        clock.advance(timedelta(seconds=181))  # now they really have been silent for 3 intervals
        assert await async_wait_until(
            lambda: db_count(db, "SELECT count(*) FROM alarms WHERE kind='device_offline'") == 50,
            10,
        )
        # ... and fold into one incident for the municipality, not 50 queue rows.
        assert (
            db_count(db, "SELECT count(*) FROM alarms WHERE kind='incident' AND state='open'") == 1
        )
        assert (
            db_count(
                db,
                "SELECT count(*) FROM alarms WHERE kind='device_offline' AND suppressed_by IS NULL",
            )
            == 0
        )


async def test_a_wall_clock_step_during_a_steps_commit_moves_no_later_step(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """The next step is placed on the monotonic clock from the decision's own instant.

    It used to be placed by reading the wall clock after the commit: an NTP step of
    an hour landing during the commit of the first step made every later step of the
    policy due at once (the flake in test_a_wall_clock_jump_... above).
    """
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-1", "safety_alarm", "0301")], tmp_path)
    clock = FakeClock(T0)
    pub = Publisher(broker.port)
    try:
        async with AlarmHub(
            hub_settings(tmp_path, broker.url, client_id), clock=clock, serve_http=False
        ) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            # The first step commits with the ingest batch that raised the alarm (issue 18).
            real = hub.store.commit_batch
            stepped: list[bool] = []

            async def commit_then_step(*args: Any) -> Any:
                out = await real(*args)
                if out and not stepped:  # the batch recorded a first step
                    stepped.append(True)
                    clock.jump(timedelta(hours=1))  # NTP steps the wall clock mid-commit
                return out

            hub.store.commit_batch = commit_then_step  # type: ignore[method-assign, assignment]
            pub.publish(*native("pend-1", "p1", "button.pressed"))
            assert await async_wait_until(lambda: escalations(db) == [(0, 0, "escalate", 1)], 10)
            [alarm_id] = hub.state.alarms.by_id
            assert await async_wait_until(lambda: hub.escalator._armed.get(alarm_id) == (0, 1), 10)
            await hub.escalator.fire_due()  # whatever is due on the monotonic clock now
            assert escalations(db) == [(0, 0, "escalate", 1)]
            clock.advance(timedelta(seconds=60))  # real time passing still escalates, at 60 s
            await hub.escalator.fire_due()
            assert escalations(db) == [(0, 0, "escalate", 1), (0, 1, "escalate", 2)]
            assert stepped == [True]
    finally:
        pub.close()


async def test_a_new_alarms_first_step_commits_in_the_batch_that_raised_it(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Issue 18: no transaction of the escalator's own for a step due at once; the
    escalator learns it as fired and arms the next; the live feed shows the alarm once,
    at its new level."""
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-1", "safety_alarm", "0301")], tmp_path)
    clock = FakeClock(T0)
    pub = Publisher(broker.port)
    try:
        async with AlarmHub(
            hub_settings(tmp_path, broker.url, client_id), clock=clock, serve_http=False
        ) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            decisions: list[Any] = []
            real = hub.store.commit_decisions

            async def counted(*args: Any) -> Any:
                decisions.append(args[0])
                return await real(*args)

            hub.store.commit_decisions = counted  # type: ignore[method-assign, assignment]
            before = hub.live.seq
            pub.publish(*native("pend-1", "p1", "button.pressed"))
            assert await async_wait_until(lambda: escalations(db) == [(0, 0, "escalate", 1)], 10)
            [alarm_id] = hub.state.alarms.by_id
            assert await async_wait_until(lambda: hub.escalator._armed.get(alarm_id) == (0, 1), 10)
            assert hub.escalator.fired[alarm_id] == {(0, 0)}
            assert decisions == []  # the escalator wrote nothing for the first step
            [stored] = hub.state.alarms.by_id.values()
            assert (stored.escalation_level, stored.rev) == (1, 1)  # one write: raised + step
            shown = hub.live.missed_since(before)
            assert shown is not None
            levels = [c.data["escalation_level"] for c in shown if c.data["id"] == alarm_id]
            assert levels == [1]
            clock.advance(timedelta(seconds=60))
            await hub.escalator.fire_due()
            assert escalations(db) == [(0, 0, "escalate", 1), (0, 1, "escalate", 2)]
            assert len(decisions) == 1  # the 60 s step: the escalator's own, as before
    finally:
        pub.close()


async def test_the_escalator_forgets_the_steps_of_resolved_alarms(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Its memory of decided steps kept an entry for every alarm the process had ever
    handled (found in review, 2026-12-06): now only active alarms have one."""
    db = tmp_path / "alarmhub.db"
    pendants = [(f"pend-{i}", "safety_alarm", "0301") for i in range(30)]
    register(f"sqlite:///{db}", pendants, tmp_path)
    pub = Publisher(broker.port)
    try:
        settings = hub_settings(tmp_path, broker.url, client_id)
        async with AlarmHub(settings, clock=FakeClock(T0), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            for name, _, _ in pendants:
                pub.publish(*native(name, "p1", "button.pressed"))
            assert await async_wait_until(lambda: len(hub.state.alarms.by_id) == 30, 30)
            assert len(hub.escalator.fired) == 30  # each new alarm's first step
            for alarm_id in list(hub.state.alarms.by_id)[:20]:
                await hub.act(alarm_id, Action.ACKNOWLEDGE, "op-1", audit=())
                await hub.act(alarm_id, Action.RESOLVE, "op-1", outcome="false_alarm", audit=())
            assert len(hub.state.alarms.by_id) == 10
            assert set(hub.escalator.fired) == set(hub.state.alarms.by_id)
    finally:
        pub.close()
