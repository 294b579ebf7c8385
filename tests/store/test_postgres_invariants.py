"""What PostgreSQL enforces itself, where SQLite relies on its single writer process.

The inbox's unique key (a batch committed twice is stored once), at most one active
alarm per device and kind, and a server out of reach reported as the error the write
gate retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest

from alarmhub.core.dedup import Identity
from alarmhub.core.model import AlarmState, TimelineEntry, TimelineType, Verdict
from alarmhub.core.pipeline import BatchEffects
from alarmhub.store.errors import StaleAlarmError, StoreError, StoreUnavailableError
from alarmhub.store.postgres.notify import CHANNEL, parse
from alarmhub.store.postgres.store import PostgresStore
from tests.store.conftest import OpenedStore
from tests.store.test_store_contract import (
    AUDIT,
    PEND,
    T0,
    alarm,
    decided,
    new_alarm_batch,
    press,
    registered,
)
from tests.support.postgres import allow_connections, terminate_backends

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[OpenedStore]:
    """PostgreSQL alone: invariants SQLite leaves to its single writer process."""
    store = await PostgresStore.open(pg_url)
    try:
        yield OpenedStore("postgres", store, url=pg_url)
    finally:
        await store.close()


async def test_a_batch_committed_twice_is_stored_once(pg: OpenedStore) -> None:
    """A retry after a COMMIT whose answer was lost with the connection is a no-op."""
    store = pg.store
    await registered(pg)
    batch = new_alarm_batch()
    await store.commit_batch(batch, {}, [decided(0, rev=0)])
    # Its first step came with it: stored once, and told as recorded (nobody announced it).
    assert await store.commit_batch(batch, {}, [decided(0, rev=0)]) == [True]
    assert await pg.count("SELECT count(*) FROM inbox") == 1
    assert [t["type"] for t in await store.timeline("a-1")] == ["raised", "escalated"]
    assert await pg.count("SELECT count(*) FROM outbox") == 1
    # An identical message judged new (its alarm resolved since) is a row of its own,
    # and its retry again is not.
    again = press("m1", T0 + timedelta(hours=1), None, Verdict.LOGGED)
    again.identity = Identity.ALARM_RESOLVED
    for _ in range(2):
        await store.commit_batch(BatchEffects(messages=[again]), {})
    assert await pg.rows("SELECT occurrence FROM inbox ORDER BY seq") == [(0,), (1,)]


async def test_a_second_active_alarm_of_one_device_and_kind_is_refused(pg: OpenedStore) -> None:
    store = pg.store
    await registered(pg)
    await store.commit_batch(new_alarm_batch("m1", "a-1"), {})
    with pytest.raises(StoreError, match="alarms_one_active"):
        await store.commit_batch(new_alarm_batch("m2", "a-2", T0 + timedelta(minutes=1)), {})
    # The whole batch was refused: not its inbox row either.
    assert await pg.count("SELECT count(*) FROM inbox") == 1
    # Resolving the first in the same batch frees the slot, whatever the order given.
    second = new_alarm_batch("m2", "a-2", T0 + timedelta(minutes=1))
    second.alarms = {
        "a-2": second.alarms["a-2"],
        "a-1": alarm(state=AlarmState.RESOLVED, resolved_at=T0, rev=1),
    }
    await store.commit_batch(second, {})
    assert [a.id for a in await store.list_alarms(state="open")] == ["a-2"]


async def test_a_nul_in_a_message_id_is_stored_not_refused(pg: OpenedStore) -> None:
    """PostgreSQL's text cannot hold U+0000; refusing the row would stall the batch for ever."""
    store = pg.store
    await registered(pg)
    msg_id = "m\x001"
    batch = new_alarm_batch(msg_id)
    await store.commit_batch(batch, {})
    fp = batch.messages[0].fingerprint
    assert fp in await store.latest_messages([fp])
    assert await store.raising_message("a-1") == (f"alarmhub/v1/{PEND.id}/events", "m\ufffd1")


async def test_a_server_out_of_reach_is_store_unavailable_and_the_retry_commits_once(
    pg: OpenedStore,
) -> None:
    """What the write gate retries on: StoreUnavailableError, a StoreError."""
    assert pg.url is not None
    store = pg.store
    await registered(pg)
    await allow_connections(pg.url, False)
    try:
        await terminate_backends(pg.url)
        with pytest.raises(StoreUnavailableError):
            await store.commit_batch(new_alarm_batch(), {})
        with pytest.raises(StoreUnavailableError):
            await store.latest_messages(["m:x"])
    finally:
        await allow_connections(pg.url, True)
    await store.commit_batch(new_alarm_batch(), {})
    await store.commit_batch(new_alarm_batch(), {})  # as if the first COMMIT's answer was lost
    assert await pg.count("SELECT count(*) FROM inbox") == 1
    assert len(await store.timeline("a-1")) == 1


async def test_a_write_retried_after_it_committed_adds_no_timeline_entry(pg: OpenedStore) -> None:
    """The gate retries a write whose COMMIT's answer was lost: it may have committed.

    A batch of alarmhub's own events has no inbox row to recognise it by, and an
    operator's action none either: the alarm's revision does (Alarm.rev). The retry
    names the revision the committed write already moved on from, so it is refused
    whole, and the daemon decides again on what was stored (WriteGate.deciding).
    """
    store = pg.store
    await registered(pg)
    internal = new_alarm_batch()
    internal.messages = []
    await store.commit_batch(internal, {})
    with pytest.raises(StaleAlarmError):
        await store.commit_batch(internal, {})
    acked = alarm(state=AlarmState.ACKNOWLEDGED, acknowledged_at=T0, acknowledged_by="ola", rev=1)
    entry = TimelineEntry("a-1", T0 + timedelta(seconds=3), TimelineType.ACKNOWLEDGED, "ola")
    await store.save_alarms([acked], [entry], audit=())
    with pytest.raises(StaleAlarmError):
        await store.save_alarms([acked], [entry], audit=())
    assert [t["type"] for t in await store.timeline("a-1")] == ["raised", "acknowledged"]
    # Two entries of one batch with the same time and type are both kept.
    repeats = [TimelineEntry("a-1", T0 + timedelta(seconds=5), TimelineType.REPEATED)] * 2
    await store.save_alarms([replace(acked, rev=2)], repeats, audit=())
    assert [t["type"] for t in await store.timeline("a-1")].count("repeated") == 2
    # Entries of separate writes that differ only in their detail (two notes, two steps).
    notes = [
        TimelineEntry("a-1", T0 + timedelta(seconds=7), TimelineType.NOTE, "ola", {"note": n})
        for n in ("one", "two")
    ]
    for rev, note in enumerate(notes, start=3):
        await store.save_alarms([replace(acked, rev=rev)], [note], audit=())
    assert [t["detail"] for t in await store.timeline("a-1") if t["type"] == "note"] == [
        {"note": "one"},
        {"note": "two"},
    ]


async def test_an_alarm_set_aside_for_a_newer_one_leaves_the_key_to_it(pg: OpenedStore) -> None:
    """A trigger that cannot join an active alarm raises one beside it (core/judge.py).

    The old one stays active, set aside (`superseded_by`) in the same write, and the
    one-active-alarm index counts only the alarm the key finds.
    """
    store = pg.store
    await registered(pg)
    await store.commit_batch(new_alarm_batch("m1", "a-1"), {})
    beside = new_alarm_batch("m2", "a-2", T0 + timedelta(hours=7))
    beside.alarms = {"a-1": alarm(superseded_by="a-2", rev=1), **beside.alarms}
    await store.commit_batch(beside, {})
    stored = {a.id: a.superseded_by for a in await store.load_active_alarms()}
    assert stored == {"a-1": "a-2", "a-2": None}


async def test_every_write_of_alarms_announces_its_ids_at_commit_and_a_refused_one_nothing(
    pg: OpenedStore,
) -> None:
    """Ingest, an action, an escalation step: one notification each, naming their alarms.

    PostgreSQL delivers to a listener in commit order, so a write refused as stale
    (rolled back) is shown to have announced nothing by the next notification being
    the next write's.
    """
    store = pg.store
    await registered(pg)
    heard: asyncio.Queue[list[str] | None] = asyncio.Queue()
    assert pg.url is not None
    listener = await asyncpg.connect(pg.url)
    try:
        await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(parse(args[3])))

        async def next_heard() -> list[str] | None:
            return await asyncio.wait_for(heard.get(), 60)

        await store.commit_batch(new_alarm_batch("m1", "a-1"), {})
        assert await next_heard() == ["a-1"]
        acked = alarm(state=AlarmState.ACKNOWLEDGED, acknowledged_by="ola", rev=1)
        await store.save_alarms([acked], [], audit=AUDIT)
        assert await next_heard() == ["a-1"]
        with pytest.raises(StaleAlarmError):
            await store.save_alarms([acked], [], audit=())  # decided on rev 1, stored rev 2
        await store.commit_decisions([decided(0, rev=2)], T0)
        assert await next_heard() == ["a-1"]
        # Two alarms in one transaction: one notification naming both.
        batch = new_alarm_batch("m2", "a-2", T0 + timedelta(days=1))
        closed = alarm(state=AlarmState.RESOLVED, resolved_at=T0, rev=3)
        await store.commit_batch(replace(batch, alarms={"a-1": closed, **batch.alarms}), {})
        got = await next_heard()
        assert got is not None
        assert sorted(got) == ["a-1", "a-2"]
        assert heard.empty()
    finally:
        await listener.close()
