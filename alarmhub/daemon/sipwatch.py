"""The lease's watch on the SCAIP listener: an owner that cannot listen hands intake over.

Only the holder of the `intake` lease listens for SCAIP devices (docs/scaip.md). A port
it cannot bind (another process holds it, a floating address not on its host) is
retried with back-off (sip/listeners.py) while everything else goes on, and the lease
renews as usual: on several instances, no instance heard a SCAIP device although a
standby on another host could have bound its own address, and the devices' alarms
went unheard. So the owner's term is watched from the lease (daemon/leadership.py
`watches`):

- a running term that has not listened on every address of ALARMHUB_SCAIP_LISTEN for
  the grace (core/cluster.py ListenTiming: half the failover time) **steps down**: the
  term ends (its MQTT intake too: the broker keeps what was not acknowledged for the
  next owner), the lease is released, and this instance holds off before contending
  again. `lease.stepped_down reason=sip`, with the addresses and a hint, says why once
  per step-down; `alarmhub_lease_step_downs_total{reason="sip"}` counts it;
- an owner that gets the lease straight back (the next epoch: nobody else took it in
  a whole hold-off) **keeps** it without the listener (`lease.kept_without_sip`, once
  per grant): MQTT intake, escalations and supervision are worth more than a handover
  that helps nobody, and its retries bind the port as soon as it is free;
- each step-down without a listening term in between doubles the grace, so instances
  that all cannot bind pass the lease between them ever more rarely, never in a loop;
  a term that listens on every address starts the count afresh.

A term still starting (its state loading, its MQTT client connecting) is not judged:
its listener has not been asked to bind yet. SQLite has nobody to hand over to
(SoleOwnership): there the listener retries for ever and the daemon keeps running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from alarmhub.clock import Clock
from alarmhub.core.cluster import BrokerVerdict, ListenTiming, broker_verdict
from alarmhub.daemon.leadership import Leadership, LossReason

log = structlog.get_logger("alarmhub.leadership")

# The addresses this owner's running term does not listen on ([]: it listens on every
# one), or None while no term of it runs (not judged).
Unbound = Callable[[], list[str] | None]

STEP_DOWN_HINT = (
    "this owner could not bind these SCAIP addresses (see sip.bind_failed for why), so it "
    "hands intake to an instance that can; free the port or fix ALARMHUB_SCAIP_LISTEN here"
)
KEPT_HINT = (
    "no other instance took intake: this one keeps it (MQTT intake, escalations) and keeps "
    "retrying the bind; SCAIP devices are not heard until the port is free"
)


class SipWatch:
    """Decides, for the lease, whether its holder may keep it without its SCAIP listener."""

    def __init__(self, unbound: Unbound, timing: ListenTiming, clock: Clock) -> None:
        self._unbound = unbound
        self._t = timing
        self._clock = clock
        self._strikes = 0  # step-downs since this instance last listened on every address
        self._stepped_down: int | None = None  # the epoch of the last step-down
        self._kept: int | None = None  # the epoch kept without the listener (logged once)
        self._since: float | None = None  # monotonic: unbound since, in this grant's term
        self._epoch: int | None = None  # the grant `_since` was seen under

    async def __call__(self, lease: Leadership) -> None:
        """Look every `check_s` until cancelled (with the lease's `run`)."""
        while True:
            await asyncio.sleep(self._t.check_s)
            self.look(lease)

    def look(self, lease: Leadership) -> BrokerVerdict | None:
        """One look: step down, keep, or wait; None when there is nothing to judge."""
        held, unbound = lease.fence, self._unbound()
        if held is None or unbound is None:
            self._since = None
            return None
        if not unbound:  # it listens: a fresh start
            self._strikes, self._stepped_down, self._since = 0, None, None
            return BrokerVerdict.KEEP
        now = self._clock.monotonic()
        if self._since is None or self._epoch != held.epoch:
            self._since, self._epoch = now, held.epoch
        unbound_s = now - self._since
        verdict = broker_verdict(unbound_s, self._strikes, held.epoch, self._stepped_down, self._t)
        if verdict is BrokerVerdict.STEP_DOWN:
            self._strikes += 1
            self._stepped_down, self._since = held.epoch, None
            lease.step_down(
                held,
                LossReason.SIP,
                self._t.hold_off_s,
                unbound=unbound,
                unbound_s=round(unbound_s, 2),
                strikes=self._strikes,
                next_grace_s=self._t.grace(self._strikes),
                hint=STEP_DOWN_HINT,
            )
        elif verdict is BrokerVerdict.ALONE and self._kept != held.epoch:
            self._kept = held.epoch
            log.warning(
                "lease.kept_without_sip",
                lease=held.name,
                epoch=held.epoch,
                unbound=unbound,
                hint=KEPT_HINT,
            )
        return verdict


def sip_watches(
    listener: Callable[[], list[str]] | None,
    running: asyncio.Event,
    failover_s: float,
    clock: Clock,
) -> tuple[SipWatch, ...]:
    """The lease's watch on `listener` (what it does not listen on), judged while a term
    runs (`running`, the owner's term); none without a SCAIP listener configured."""
    if listener is None:
        return ()

    def unbound() -> list[str] | None:
        return listener() if running.is_set() else None

    return (SipWatch(unbound, ListenTiming.for_failover(failover_s), clock),)
