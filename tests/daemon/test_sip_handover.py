"""An owner that cannot bind its SCAIP port hands intake to an instance that can.

The SIP listener is single-owner work: only the holder of the `intake` lease listens.
Before the step-down on an unbound listener, an owner whose SCAIP port was taken (a
leftover process, a SIP proxy on its host, a floating address not on it) kept the lease
while it retried the bind: MQTT intake went on, but no instance heard a SCAIP device,
although a standby on another host could have bound its own.

The integration test runs two AlarmHub instances on a PostgreSQL database of its own and
the local Mosquitto; the first instance's SCAIP port is held by a socket the test binds
itself. Its verdict is the other instance answering SIP on its port and storing the
alarm, waited for under a generous ceiling, never how soon that happened. The others run
the lease and its watch on a FakeClock over a lease table in memory (as
tests/daemon/test_stalled_owner.py does), so the grace, the hold-off and the doubling
are read on the clock the test moves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.core.cluster import BrokerVerdict, ListenTiming
from alarmhub.core.digest import credentials_for
from alarmhub.core.scaip import parse_answer
from alarmhub.core.sipcodes import Rebind
from alarmhub.core.tenancy import Scope
from alarmhub.daemon.leadership import Leadership, LossReason
from alarmhub.daemon.sipwatch import SipWatch
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.observability.metrics import Metrics
from alarmhub.sip import server as server_module
from alarmhub.store.cluster import Fence
from tests.daemon.test_failover_gaps import settings
from tests.daemon.test_instances import WAIT, holder, register, value
from tests.daemon.test_scaip_daemon import scaip_device
from tests.daemon.test_stalled_owner import T0, TIMING, MemoryLeases
from tests.sip.support import authorization, request, udp_peer
from tests.sip.test_sip_bind import readyz, taken_udp_port
from tests.support.helpers import async_wait_until, sample

DEVICE, PASSWORD = "4790012345", "pendant-secret"  # tests/sip/support.py's device
ADDRESS = "udp://127.0.0.1:5060"
ADDRESS_ANY = "udp://127.0.0.1:0"  # the standby's own port, any free one
# On the test's clock: a grace far longer than anything real time adds, so a verdict
# depends only on how far the test moved the clock.
LISTEN = ListenTiming(grace_s=10.0, hold_off_s=5.0, max_grace_s=40.0, check_s=0.01)


def listening(hub: AlarmHub, transport: str = "udp") -> float:
    return sample(hub.metrics, "alarmhub_sip_listening", transport=transport)


def step_downs(hub: AlarmHub, reason: str) -> float:
    got = hub.metrics.registry.get_sample_value(
        "alarmhub_lease_step_downs_total", {"lease": "intake", "reason": reason}
    )
    return got or 0.0


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest.mark.broker
@pytest.mark.postgres
async def test_an_owner_that_cannot_bind_its_sip_port_hands_intake_to_one_that_can(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A owns intake but its SCAIP port is taken; B's (another host's, here another port)
    is free. On the old code A kept the lease for ever, retrying the bind: B never owned
    and no SCAIP request was answered by anyone. Now A steps down once its listener has
    been unbound for the grace, B takes intake, listens, and stores the device's alarm."""
    monkeypatch.setattr(server_module, "REBIND", Rebind(first_s=0.05, most_s=0.5))
    await register(pg_url, [scaip_device(DEVICE, {"scaip": {"inline": True}})])
    with taken_udp_port() as (_, port), capture_logs() as logs:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                AlarmHub(
                    settings(
                        tmp_path,
                        client_id,
                        "inst-a",
                        pg_url,
                        broker.url,
                        scaip_listen=f"udp://127.0.0.1:{port}",
                    ),
                )
            )
            assert a.owns == ["intake"]
            creds = credentials_for(DEVICE, a.settings.scaip_realm, PASSWORD)
            assert await a.directory.set_device_credentials(
                Scope.everything("t"), creds, datetime.now(UTC), []
            )
            b = await stack.enter_async_context(
                AlarmHub(
                    settings(
                        tmp_path, client_id, "inst-b", pg_url, broker.url, scaip_listen=ADDRESS_ANY
                    ),
                )
            )
            # The mechanism, not a time: B owns and listens on its port.
            assert await async_wait_until(
                lambda: b.owns == ["intake"] and listening(b) == 1, WAIT
            ), [e for e in logs if e["event"].startswith(("lease.", "sip."))]
            assert await holder(pg_url) == "inst-b"
            assert a.owns == []
            assert listening(a) == 0
            assert step_downs(a, "sip") == 1
            assert step_downs(a, "broker") == step_downs(a, "stalled") == 0
            # /readyz: the owner shows its listener; a standby does not listen at all.
            assert (await readyz(b))["sip_listening"] == {"udp": True}
            assert "sip_listening" not in await readyz(a)
            [said] = [e for e in events(logs, "lease.stepped_down") if e["reason"] == "sip"]
            assert said["unbound"] == [f"udp://127.0.0.1:{port}"]
            assert "ALARMHUB_SCAIP_LISTEN" in said["hint"]
            assert b.sip is not None
            b_port = b.sip.port("udp")
            async with udp_peer(b_port) as peer:
                assert (await peer.ask(request("OPTIONS", port=b_port), WAIT)).code == 200
                first = request(port=b_port)
                challenge = await peer.ask(first, WAIT)
                auth = authorization(challenge, first)
                answered = await peer.ask(request(port=b_port, cseq=2, authorization=auth), WAIT)
            assert answered.code == 200
            assert parse_answer(answered.body)["snu"] == "0"
            got = await value(pg_url, "SELECT count(*) FROM alarms WHERE device_id = $1", DEVICE)
            assert got == 1
            # A stays a standby (its hold-off, then B's healthy grant): no flapping back.
            assert step_downs(a, "sip") == 1


# --- the watch on a FakeClock ----------------------------------------------------------


@dataclass
class Owner:
    """One instance's lease with the SIP watch, and what its listener does not listen on."""

    leadership: Leadership
    metrics: Metrics
    unbound: list[list[str] | None] = field(default_factory=lambda: [[ADDRESS]])
    looks: list[int] = field(default_factory=lambda: [0])
    lost: list[tuple[Fence, LossReason]] = field(default_factory=list)

    @property
    def fence(self) -> Fence | None:
        return self.leadership.fence

    def step_downs(self) -> float:
        got = self.metrics.registry.get_sample_value(
            "alarmhub_lease_step_downs_total", {"lease": "intake", "reason": "sip"}
        )
        return got or 0.0

    async def looked(self) -> None:
        """Until the watch has looked again under the current grant: what it saw from
        now on is measured from the clock as it stands (never from real time)."""
        seen = self.looks[0]
        assert await async_wait_until(lambda: self.looks[0] >= seen + 2, WAIT)


def owner(leases: MemoryLeases, clock: FakeClock) -> Owner:
    metrics = Metrics()
    unbound: list[list[str] | None] = [[ADDRESS]]
    looks, lost = [0], []

    def listener() -> list[str] | None:
        looks[0] += 1
        return unbound[0]

    async def on_lost(fence: Fence, reason: LossReason) -> None:
        lost.append((fence, reason))

    leadership = Leadership(
        leases,
        clock,
        "inst-a",
        TIMING,
        on_lost=on_lost,
        step_downs=metrics.lease_step_downs,
        watches=[SipWatch(listener, LISTEN, clock)],
    )
    return Owner(leadership, metrics, unbound, looks, lost)


@asynccontextmanager
async def running(a: Owner) -> AsyncIterator[None]:
    task = asyncio.ensure_future(a.leadership.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_lone_owner_without_its_listener_steps_down_once_then_keeps_the_lease() -> None:
    """Nobody else to hand over to: one step-down, then the lease taken straight back is
    kept without the listener (MQTT intake and escalations go on), however long the port
    stays taken. Listening again starts the count afresh."""
    clock = FakeClock(T0)
    leases = MemoryLeases(clock)
    a = owner(leases, clock)
    with capture_logs() as logs:
        async with running(a):
            assert await async_wait_until(lambda: a.fence is not None, WAIT)
            first = a.fence
            assert first is not None
            await a.looked()
            clock.advance(timedelta(seconds=LISTEN.grace_s - 1))
            await a.looked()
            assert a.fence == first  # within the grace
            clock.advance(timedelta(seconds=1))
            stepped_down_at = clock.monotonic()
            assert await async_wait_until(lambda: leases.released == [first], WAIT)
            assert a.lost == [(first, LossReason.SIP)]
            assert a.step_downs() == 1
            # The hold-off: others' turn first (three of a standby's retries by default).
            clock.advance(timedelta(seconds=LISTEN.hold_off_s))
            assert await async_wait_until(lambda: a.fence is not None, WAIT)
            again = a.fence
            assert again is not None
            assert again.epoch == first.epoch + 1
            assert min(leases.asked_by("inst-a", stepped_down_at)) >= (
                stepped_down_at + LISTEN.hold_off_s
            )
            await a.looked()
            clock.advance(timedelta(seconds=2 * LISTEN.grace_s))  # the doubled grace
            assert await async_wait_until(
                lambda: bool(events(logs, "lease.kept_without_sip")), WAIT
            )
            # Long past every grace (within the lease's ttl), many looks later: kept, said once.
            clock.advance(timedelta(seconds=10 * LISTEN.max_grace_s))
            await a.looked()
            await a.looked()
            assert a.fence == again
            assert a.step_downs() == 1
            [kept] = events(logs, "lease.kept_without_sip")
            assert (kept["epoch"], kept["unbound"]) == (again.epoch, [ADDRESS])
            # The port is free and binds: a fresh start, so a later failure under this
            # grant gets the first grace and is handed over again (nobody is known to
            # have failed to take it this time).
            a.unbound[0] = []
            await a.looked()
            a.unbound[0] = [ADDRESS]
            await a.looked()
            clock.advance(timedelta(seconds=LISTEN.grace_s))
            assert await async_wait_until(lambda: len(a.lost) == 2, WAIT)
            assert a.lost[1] == (again, LossReason.SIP)
    said = [e for e in events(logs, "lease.stepped_down") if e["reason"] == "sip"]
    assert [e["strikes"] for e in said] == [1, 1]
    assert said[0]["unbound"] == [ADDRESS]
    assert said[0]["unbound_s"] == LISTEN.grace_s
    assert said[0]["next_grace_s"] == 2 * LISTEN.grace_s


class Lease:
    """What the watch uses of Leadership: the grant it holds and `step_down`."""

    def __init__(self) -> None:
        self.fence: Fence | None = None
        self.stepped: list[tuple[int, dict[str, Any]]] = []

    def step_down(self, held: Fence, reason: LossReason, hold_off_s: float, **why: Any) -> None:
        assert (reason, hold_off_s) == (LossReason.SIP, LISTEN.hold_off_s)
        self.stepped.append((held.epoch, why))
        self.fence = None


def test_instances_that_all_cannot_bind_pass_the_lease_ever_more_rarely() -> None:
    """The watch of one instance whose grants alternate with another's (which cannot bind
    either): each step-down doubles its grace up to the cap, so the lease is passed ever
    more rarely; a term still starting is not judged at all."""
    clock = FakeClock(T0)
    lease = Lease()
    unbound: list[list[str] | None] = [None]
    watch = SipWatch(lambda: unbound[0], LISTEN, clock)
    as_leadership: Any = lease  # the two members the watch uses
    graces: list[float] = []
    for epoch in (1, 3, 5, 7, 9):  # the even ones were the other instance's
        lease.fence = Fence("intake", "inst-a", epoch)
        unbound[0] = None  # the term starts: not judged, however long it takes
        clock.advance(timedelta(seconds=1000))
        assert watch.look(as_leadership) is None
        unbound[0] = [ADDRESS]
        assert watch.look(as_leadership) is BrokerVerdict.KEEP
        waited = 0.0
        while lease.fence is not None:
            clock.advance(timedelta(seconds=1))
            waited += 1
            watch.look(as_leadership)
        graces.append(waited)
    assert graces == [10.0, 20.0, 40.0, 40.0, 40.0]
    assert [why["strikes"] for _e, why in lease.stepped] == [1, 2, 3, 4, 5]
