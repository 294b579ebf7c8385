"""Leadership through a PostgreSQL lease: one owner at a time, takeover, fencing, outages.

Two (or three) Leadership services stand for instances, each on its own pool. The
verdicts are read from the database and from the order of recorded events, never
from how long something took: "exactly one owner" is checked by fenced writes
(their epochs never go back in commit order), "the owner stops before the other
starts" by the lost-callback's wall time against the new grant's `acquired_at`
(the database's `now()` on the same machine).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from alarmhub.clock import FakeClock, SystemClock
from alarmhub.core.cluster import LeaseTiming
from alarmhub.daemon.leadership import Leadership, LossReason, SoleOwnership
from alarmhub.store.cluster import Fence
from alarmhub.store.errors import LeaseLostError
from alarmhub.store.postgres import leases
from alarmhub.store.postgres.coordination import PgCoordination
from alarmhub.store.postgres.migrations import migrate
from tests.support.helpers import async_wait_until
from tests.support.pg_server import PgServer
from tests.support.tcp_proxy import TcpProxy

TIMING = LeaseTiming.for_failover(3.0)  # ttl 1.5 s: short, but not flapping on a busy machine
WAIT = 60.0


@dataclass
class Instance:
    """One contender: its pool, its Leadership, and what its callbacks saw."""

    id: str
    coord: PgCoordination
    leadership: Leadership | None = None
    task: asyncio.Task[None] | None = None
    acquired: list[Fence] = field(default_factory=list)
    lost: list[tuple[datetime, Fence, LossReason]] = field(default_factory=list)

    def start(self) -> None:
        async def on_acquired(fence: Fence) -> None:
            self.acquired.append(fence)

        async def on_lost(fence: Fence, reason: LossReason) -> None:
            self.lost.append((datetime.now(UTC), fence, reason))

        self.leadership = Leadership(
            self.coord, SystemClock(), self.id, TIMING, on_acquired=on_acquired, on_lost=on_lost
        )
        self.task = asyncio.ensure_future(self.leadership.run())

    async def crash(self) -> None:
        """Stop contending without releasing: to the others, a kill -9."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def owns(self) -> bool:
        return self.leadership is not None and self.leadership.is_owner

    @property
    def fence(self) -> Fence | None:
        return None if self.leadership is None else self.leadership.fence


async def _instance(url: str, name: str) -> Instance:
    return Instance(name, await PgCoordination.open(url, command_timeout_s=2.0))


async def _migrated(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute(
            "CREATE TABLE claims (id bigserial PRIMARY KEY, holder text, epoch bigint)"
        )
    finally:
        await conn.close()


async def _fenced_claim(pool: asyncpg.Pool, fence: Fence) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await leases.check_fence(conn, fence)
        await conn.execute(
            "INSERT INTO claims (holder, epoch) VALUES ($1, $2)", fence.holder, fence.epoch
        )


async def _writer(pool: asyncpg.Pool, inst: Instance, refused: list[Fence]) -> None:
    """Write while this instance believes it owns: the single-owner work, fenced."""
    while True:
        fence = inst.fence
        if fence is not None:
            try:
                await _fenced_claim(pool, fence)
            except LeaseLostError:
                refused.append(fence)
        await asyncio.sleep(0.01)


async def _zombie(pool: asyncpg.Pool, fence: Fence, refused: list[Fence]) -> None:
    """A paused process waking up: it still believes in `fence` and writes with it."""
    while not refused:
        with contextlib.suppress(LeaseLostError):
            await _fenced_claim(pool, fence)
            continue
        refused.append(fence)


async def _assert_one_owner_at_a_time(url: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT holder, epoch FROM claims ORDER BY id")
    finally:
        await conn.close()
    epochs = [r["epoch"] for r in rows]
    assert epochs == sorted(epochs), "a write of an older grant committed after a newer one"
    holders: dict[int, set[str]] = {}
    for r in rows:
        holders.setdefault(r["epoch"], set()).add(r["holder"])
    assert all(len(h) == 1 for h in holders.values()), holders
    return sorted((next(iter(h)), e) for e, h in holders.items())


async def _renewed(url: str) -> None:
    """Wait until the holder has renewed its grant at least once."""
    conn = await asyncpg.connect(url)
    try:
        first = await conn.fetchval("SELECT expires_at FROM leases WHERE name = 'intake'")
        for _ in range(3000):
            now = await conn.fetchval("SELECT expires_at FROM leases WHERE name = 'intake'")
            if now > first:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the holder never renewed")
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_exactly_one_owner_and_a_crashed_owner_is_taken_over_and_fenced(
    pg_url: str,
) -> None:
    await _migrated(pg_url)
    a, b = await _instance(pg_url, "inst-a"), await _instance(pg_url, "inst-b")
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=4)
    refused: list[Fence] = []
    writers = []
    try:
        a.start()
        b.start()
        writers = [asyncio.ensure_future(_writer(pool, i, refused)) for i in (a, b)]
        for _round in range(3):
            assert await async_wait_until(lambda: a.owns() or b.owns(), WAIT)
            owner, other = (a, b) if a.owns() else (b, a)
            fence = owner.fence
            assert fence is not None
            await owner.crash()
            assert not owner.owns()
            zombie_refused: list[Fence] = []
            zombie = asyncio.ensure_future(_zombie(pool, fence, zombie_refused))
            assert await async_wait_until(other.owns, WAIT)
            await asyncio.wait_for(zombie, WAIT)
            assert zombie_refused == [fence]  # its write after the takeover was rolled back
            new = other.fence
            assert new is not None
            assert new.epoch > fence.epoch
            owner.start()  # the crashed instance comes back, as a standby
        owners = await _assert_one_owner_at_a_time(pg_url)
        assert {h for h, _ in owners} == {"inst-a", "inst-b"}
        assert a.lost
        assert all(reason == LossReason.STOPPED for _, _, reason in a.lost)
    finally:
        for w in writers:
            w.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        for i in (a, b):
            if i.task is not None:
                await i.crash()
            await i.coord.close()
        await pool.close()


@pytest.mark.postgres
async def test_owner_cut_off_from_the_database_stops_before_the_other_takes_over(
    pg_url: str,
) -> None:
    await _migrated(pg_url)
    port = int(pg_url.rsplit(":", 1)[1].split("/", 1)[0])
    database = pg_url.rsplit("/", 1)[1]
    async with TcpProxy(port) as proxy:
        a = await _instance(proxy.url(database), "inst-a")
        b = await _instance(pg_url, "inst-b")
        try:
            a.start()
            assert await async_wait_until(a.owns, WAIT)
            await _renewed(pg_url)  # its deadline now comes from a renewal, not the grant
            b.start()
            fence = a.fence
            assert fence is not None
            proxy.cut()
            assert await async_wait_until(b.owns, WAIT)
            assert await async_wait_until(lambda: any(f == fence for _, f, _ in a.lost), WAIT)
            [(lost_at, reason)] = [(t, r) for t, f, r in a.lost if f == fence]
            assert reason == LossReason.DEADLINE
            assert not a.owns()
            conn = await asyncpg.connect(pg_url)
            try:
                granted = await conn.fetchrow(
                    "SELECT holder, epoch, acquired_at FROM leases WHERE name = 'intake'"
                )
                assert granted is not None
                assert (granted["holder"], granted["epoch"]) == ("inst-b", fence.epoch + 1)
                assert lost_at < granted["acquired_at"]
                # The cut-off instance's write, were it to reach the database, is refused.
                with pytest.raises(LeaseLostError):
                    async with conn.transaction():
                        await leases.check_fence(conn, fence)
            finally:
                await conn.close()
            proxy.restore()  # it comes back: the lease is b's, a stays a standby
            await b.crash()
            assert await async_wait_until(a.owns, WAIT)
            assert a.fence is not None
            assert a.fence.epoch > fence.epoch + 1
        finally:
            proxy.restore()
            for i in (a, b):
                if i.task is not None:
                    await i.crash()
                await i.coord.close()


@pytest.mark.postgres
async def test_owner_loses_ownership_while_the_database_is_down_and_one_owns_after(
    tmp_path,
) -> None:
    with PgServer() as server:
        admin = await asyncpg.connect(server.url())
        await admin.execute("CREATE DATABASE coord")
        await admin.close()
        url = server.url("coord")
        await _migrated(url)
        a, b = await _instance(url, "inst-a"), await _instance(url, "inst-b")
        try:
            a.start()
            b.start()
            assert await async_wait_until(lambda: a.owns() or b.owns(), WAIT)
            owner = a if a.owns() else b
            fence = owner.fence
            assert fence is not None
            server.stop()  # immediate: as a crash of the database host
            assert await async_wait_until(lambda: not a.owns() and not b.owns(), WAIT)
            # Ownership clears at once; on_lost is delivered by the announcer task after:
            # wait for that too before reading what it was told.
            assert await async_wait_until(lambda: any(f == fence for _, f, _ in owner.lost), WAIT)
            assert [r for _, f, r in owner.lost if f == fence] == [LossReason.DEADLINE]
            server.start()
            assert await async_wait_until(lambda: a.owns() or b.owns(), WAIT)
            assert not (a.owns() and b.owns())
            now_owner = a if a.owns() else b
            conn = await asyncpg.connect(url)
            try:
                row = await conn.fetchrow("SELECT holder, epoch FROM leases")
            finally:
                await conn.close()
            assert row is not None
            assert row["holder"] == now_owner.id
            assert row["epoch"] > fence.epoch
            assert now_owner.fence == Fence("intake", now_owner.id, row["epoch"])
        finally:
            for i in (a, b):
                if i.task is not None:
                    await i.crash()
                await i.coord.close()


@pytest.mark.postgres
async def test_resign_releases_so_the_standby_need_not_wait(pg_url: str) -> None:
    await _migrated(pg_url)
    slow = LeaseTiming(ttl_s=600.0, renew_s=200.0, retry_s=0.2, margin_s=120.0)
    coord_a, coord_b = await PgCoordination.open(pg_url), await PgCoordination.open(pg_url)
    a = Leadership(coord_a, SystemClock(), "inst-a", slow)
    b = Leadership(coord_b, SystemClock(), "inst-b", slow)
    ta = asyncio.ensure_future(a.run())
    tb = None
    try:
        assert await async_wait_until(lambda: a.is_owner, WAIT)
        tb = asyncio.ensure_future(b.run())
        ta.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ta
        await a.resign()
        # With a ten-minute ttl, only the release lets b in within the wait.
        assert await async_wait_until(lambda: b.is_owner, WAIT)
        assert b.fence == Fence("intake", "inst-b", 2)
    finally:
        for t in (ta, tb):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        await coord_a.close()
        await coord_b.close()


async def test_sole_ownership_owns_from_start_to_stop() -> None:
    seen: list[tuple[str, Fence]] = []

    async def on_acquired(f: Fence) -> None:
        seen.append(("acquired", f))

    async def on_lost(f: Fence, _r: LossReason) -> None:
        seen.append(("lost", f))

    sole = SoleOwnership("solo", on_acquired=on_acquired, on_lost=on_lost)
    assert sole.fence is None
    task = asyncio.ensure_future(sole.run())
    assert await async_wait_until(sole.owner.is_set, WAIT)
    assert sole.fence == Fence("intake", "solo", 0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert sole.fence is None
    assert sole.standby.is_set()
    assert seen == [("acquired", Fence("intake", "solo", 0)), ("lost", Fence("intake", "solo", 0))]


class _SlowRenewals:
    """Leases in memory whose renewals wait for the test to answer them."""

    def __init__(self) -> None:
        self.epoch = 0
        self.answer = asyncio.Event()
        self.renewing = asyncio.Event()
        self.released: list[Fence] = []

    async def acquire(self, name: str, holder: str, ttl_s: float) -> Fence | None:
        self.epoch += 1
        return Fence(name, holder, self.epoch)

    async def renew(self, fence: Fence, ttl_s: float) -> bool:
        self.renewing.set()
        await self.answer.wait()
        return True

    async def release(self, fence: Fence) -> None:
        self.released.append(fence)


async def test_a_renewal_answered_past_the_deadline_ends_the_grant_it_can_no_longer_vouch_for() -> (
    None
):
    """Past the local deadline `fence` is None, so a fenced writer is refused and the
    owner's term ends by itself (owner.py). A renewal answered after that, before
    the watchdog ran, used to extend the grant: the lease held, no term running, no
    intake, no standby let in. Now that grant is lost and released."""
    clock = FakeClock(datetime(2026, 12, 6, tzinfo=UTC))
    leases = _SlowRenewals()
    timing = LeaseTiming(ttl_s=60.0, renew_s=0.0, retry_s=30.0, margin_s=10.0)
    lost: list[tuple[Fence, LossReason]] = []

    async def on_lost(fence: Fence, reason: LossReason) -> None:
        lost.append((fence, reason))

    leadership = Leadership(leases, clock, "a", timing, on_lost=on_lost)
    task = asyncio.ensure_future(leadership.run())
    try:
        await asyncio.wait_for(leases.renewing.wait(), WAIT)
        first = leadership.fence
        assert first is not None
        clock.advance(timedelta(seconds=51))  # past ttl - margin, on the fake clock only
        assert leadership.fence is None  # what a writer sees now: refused, the term ends
        leases.answer.set()  # the renewal's answer arrives late, still "renewed"
        assert await async_wait_until(lambda: bool(lost) and bool(leases.released), WAIT)
        assert lost[0] == (first, LossReason.DEADLINE)
        assert leases.released[0] == first
        # Contending again, it gets a new grant, and with it a new term.
        assert await async_wait_until(
            lambda: leadership.fence is not None and leadership.fence.epoch > first.epoch, WAIT
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _AnswerLate:
    """Leases whose first granted acquire answers after the caller's bound: a slow network.

    The grant is made in the database at once; only its answer is late, as when the
    acquire waited on a fenced transaction's lock, or the reply sat in a congested link.
    """

    def __init__(self, inner: PgCoordination, late_s: float) -> None:
        self._inner = inner
        self._late_s = late_s
        self.late: list[Fence] = []

    async def acquire(self, name: str, holder: str, ttl_s: float) -> Fence | None:
        got = await self._inner.acquire(name, holder, ttl_s)
        if got is not None and not self.late:
            self.late.append(got)
            await asyncio.sleep(self._late_s)
        return got

    async def renew(self, fence: Fence, ttl_s: float) -> bool:
        return await self._inner.renew(fence, ttl_s)

    async def release(self, fence: Fence) -> None:
        await self._inner.release(fence)


@pytest.mark.postgres
async def test_a_grant_answered_after_the_acquire_bound_is_not_left_to_expire(
    pg_url: str,
) -> None:
    """The acquire's bound (retry_s) ran out after the database had granted the lease.

    The grant's answer was dropped with the cancelled call: nobody acted under it and
    nobody else could take the lease until it expired, a whole ttl (ten minutes here,
    7.5 s by default) past the failover time. The late answer is now taken up.
    """
    await _migrated(pg_url)
    slow = LeaseTiming(ttl_s=600.0, renew_s=200.0, retry_s=0.2, margin_s=120.0)
    coord = await PgCoordination.open(pg_url)
    leases_ = _AnswerLate(coord, late_s=1.0)
    a = Leadership(leases_, SystemClock(), "inst-a", slow)
    task = asyncio.ensure_future(a.run())
    try:
        # With a ten-minute ttl, only a grant taken up (or handed back) owns within the wait.
        assert await async_wait_until(lambda: a.is_owner, WAIT)
        assert leases_.late, "the first grant was not answered late"
        assert a.fence is not None
        conn = await asyncpg.connect(pg_url)
        try:
            row = await conn.fetchrow("SELECT holder, epoch FROM leases WHERE name = 'intake'")
        finally:
            await conn.close()
        assert row is not None
        assert a.fence == Fence("intake", row["holder"], row["epoch"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await coord.close()


@pytest.mark.postgres
async def test_a_renewal_lost_on_a_silent_connection_costs_the_holder_nothing(
    pg_url: str,
) -> None:
    """One renewal's connection goes silent for good; new connections work.

    The renewal's bound ran out and its connection was handed back to the pool,
    which first waits for a cancel and then runs a reset query on it, bounded only
    by the command timeout (ten minutes here, 5 s by default): the holder's loop
    stood still past its own deadline and a lone holder lost its lease.
    """
    await _migrated(pg_url)
    timing = LeaseTiming(ttl_s=20.0, renew_s=0.5, retry_s=1.0, margin_s=4.0)
    port = int(pg_url.rsplit(":", 1)[1].split("/", 1)[0])
    async with TcpProxy(port) as proxy:
        url = proxy.url(pg_url.rsplit("/", 1)[1])
        coord = await PgCoordination.open(url, command_timeout_s=600.0)
        inst = Instance("inst-a", coord)
        try:
            inst.start()
            assert await async_wait_until(inst.owns, WAIT)
            first = inst.fence
            # The next renewal (its parameters name the holder) goes unanswered.
            proxy.swallow(b"inst-a")
            assert await async_wait_until(lambda: proxy.swallowed == 1, WAIT)
            swallowed_at = datetime.now(UTC)
            conn = await asyncpg.connect(pg_url)
            try:

                async def renewed_since() -> bool:
                    expires = await conn.fetchval("SELECT expires_at FROM leases")
                    return bool(expires - timedelta(seconds=timing.ttl_s) > swallowed_at)

                for _ in range(int(WAIT * 10)):
                    if await renewed_since():
                        break
                    await asyncio.sleep(0.1)
                assert await renewed_since(), "no renewal after the silent one"
            finally:
                await conn.close()
            assert inst.lost == []
            assert inst.fence == first
        finally:
            if inst.task is not None:
                await inst.crash()
            await coord.close(timeout_s=1.0)
