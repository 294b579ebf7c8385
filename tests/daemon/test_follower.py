"""The change follower alone, on the local PostgreSQL: what another writer commits, by revision.

No hub: a store, the real LISTEN/NOTIFY feed, the daemon's memory and live ring,
and plain lists for the callbacks. The other instance is the test itself,
writing through a second store on the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest

from alarmhub.clock import SystemClock
from alarmhub.config.rules import load_rules
from alarmhub.core.model import Alarm, AlarmState
from alarmhub.daemon.fanout import Broadcaster
from alarmhub.daemon.follower import ChangeFollower
from alarmhub.daemon.state import HubState
from alarmhub.observability.gauges import QueueGauges
from alarmhub.observability.metrics import Metrics
from alarmhub.store.postgres.notify import PgAlarmChangeFeed
from alarmhub.store.postgres.store import PostgresStore
from tests.store.conftest import OpenedStore
from tests.store.test_store_contract import T0, alarm, new_alarm_batch, registered
from tests.support.helpers import REPO, async_wait_until

pytestmark = pytest.mark.postgres

WAIT = 60.0


@dataclass
class Followed:
    follower: ChangeFollower
    state: HubState
    live: Broadcaster
    other: PostgresStore  # another instance's writes
    armed: list[Alarm] = field(default_factory=list)
    resolved: list[Alarm] = field(default_factory=list)

    def shown(self, alarm_id: str) -> list[str]:
        changes = self.live.missed_since(0)
        assert changes is not None
        return [c.data["state"] for c in changes if c.data["id"] == alarm_id]


@contextlib.asynccontextmanager
async def followed(pg_url: str) -> AsyncIterator[Followed]:
    """a-1 raised and held in memory at its stored revision; the follower listening."""
    mine = await PostgresStore.open(pg_url)
    other = await PostgresStore.open(pg_url, migrate=False)
    try:
        await registered(OpenedStore("postgres", mine, url=pg_url))
        await mine.commit_batch(new_alarm_batch("m1", "a-1"), {})
        state = HubState(load_rules(REPO / "config" / "rules.toml"))
        state.alarms.load(await mine.load_active_alarms())
        live = Broadcaster()
        armed: list[Alarm] = []
        resolved: list[Alarm] = []
        follower = ChangeFollower(
            feed=PgAlarmChangeFeed(pg_url, reconnect_min_s=0.05, reconnect_max_s=0.5),
            store=mine,
            state=state,
            lock=asyncio.Lock(),
            live=live,
            queue_gauges=QueueGauges(Metrics(), SystemClock()),
            arm=armed.append,
            on_resolved=resolved.append,
        )
        f = Followed(follower, state, live, other, armed, resolved)
        task = asyncio.ensure_future(f.follower.run())
        try:
            assert await async_wait_until(lambda: f.follower.resyncs >= 1, WAIT)
            yield f
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await other.close()
        await mine.close()


async def test_a_resolution_elsewhere_leaves_the_queue_here_and_is_shown_once(
    pg_url: str,
) -> None:
    async with followed(pg_url) as f:
        held = f.state.alarms.get("a-1")
        assert held is not None
        assert held.rev == 1
        # The first resync found memory at the stored revision: nothing shown.
        assert f.shown("a-1") == []
        done = alarm(state=AlarmState.RESOLVED, resolved_at=T0, resolved_by="ola", rev=1)
        await f.other.save_alarms([done], [], audit=())
        assert await async_wait_until(lambda: f.state.alarms.get("a-1") is None, WAIT)
        assert f.shown("a-1") == ["resolved"]
        assert [(a.id, a.rev) for a in f.resolved] == [("a-1", 2)]
        assert [a.id for a in f.armed] == ["a-1"]  # the escalator drops its deadline
        # Heard again (a resync after a reconnect): the same revision, nothing more.
        assert await f.follower.resync() == 0
        assert await f.follower.follow(["a-1"]) == 0
        assert f.shown("a-1") == ["resolved"]


async def test_only_a_newer_revision_replaces_what_memory_holds(pg_url: str) -> None:
    async with followed(pg_url) as f:
        acked = alarm(state=AlarmState.ACKNOWLEDGED, acknowledged_by="ola", rev=1)
        # Memory already ahead of what the store will hold (this instance's own write
        # applied before its echo is read): the read changes nothing.
        f.state.alarms.put(replace(acked, rev=2))
        await f.other.save_alarms([acked], [], audit=())  # stored at rev 2
        assert await f.follower.follow(["a-1"]) == 0
        assert f.shown("a-1") == []
        # A newer one (rev 3: escalated elsewhere) is taken and shown.
        escalated = replace(acked, escalation_level=1, rev=2)
        await f.other.save_alarms([escalated], [], audit=())
        assert await async_wait_until(lambda: f.shown("a-1") == ["acknowledged"], WAIT)
        held = f.state.alarms.get("a-1")
        assert held is not None
        assert (held.rev, held.escalation_level) == (3, 1)
        assert f.resolved == []
