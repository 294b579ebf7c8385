"""Several instances, one owner of the single-owner work: the timing and the states, pure.

The lease arithmetic is written down once here because three parties must agree
on it: the holder (when to renew, when to stop acting), the standby (how often
to try to take over) and `alarmhub cluster status` (when a heartbeat is stale).

Worst case, the holder dies just after a renewal at t0. The database lets nobody
take over before ``t0 + ttl`` (the lease's expiry, in the database's clock); a
standby that tries every ``retry`` takes over by ``t0 + ttl + retry``; then it
needs time to start the work (MQTT connect with the service's client id, the
broker's session takeover, reloading deadlines). With ``ttl = failover / 2`` and
``retry = renew = ttl / 3``, takeover comes by two thirds of the failover time
and the last third is the new owner's start-up budget: 10 s + 5 s at the default
15 s.

The holder stops acting at ``sent + ttl - margin``, where `sent` is the local
monotonic time at which it sent the renewal that succeeded: the database set the
expiry to its own `now()` + ttl when it executed that statement, which was after
it was sent, so the real expiry is never before that local deadline plus the
margin. The margin (ttl / 5) covers a drift between the two clocks' rates and
the time the not-owner callbacks take to stop the work. Renewing every ttl / 3
leaves two failed renewals before the holder gives up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Seconds: the lease's time to live, the renewal and retry period, the holder's margin."""

    ttl_s: float
    renew_s: float
    retry_s: float
    margin_s: float

    @classmethod
    def for_failover(cls, failover_s: float) -> LeaseTiming:
        """The timing that has a dead holder's work taken over within `failover_s`."""
        ttl = failover_s / 2
        return cls(ttl_s=ttl, renew_s=ttl / 3, retry_s=ttl / 3, margin_s=ttl / 5)

    @property
    def takeover_bound_s(self) -> float:
        """The latest a standby holds the lease after the holder's last renewal."""
        return self.ttl_s + self.retry_s


@dataclass(frozen=True, slots=True)
class BrokerTiming:
    """Seconds: when an owner that cannot reach the broker hands the lease over.

    An owner cut from the broker but not from PostgreSQL renews its lease as
    usual, so nobody else may take intake over and devices' messages wait. It
    therefore watches its own broker connection: without one for ``grace`` it
    steps down (releases the lease) and lets others try for ``hold_off``.

    - A silent cut is noticed by MQTT's keepalive: a PINGREQ after `keepalive` of
      silence, the connection dropped after another `keepalive` without an
      answer. The owner's keepalive is capped at ``failover / 5`` (at least 2 s),
      so a cut is seen within ``2 x keepalive``.
    - ``grace = failover / 5`` (at least 1 s: the term's own connect and SUBACK
      must fit in it) after that, the owner steps down: at the default 15 s,
      6 + 3 = 9 s after the cut; a standby then holds the lease within its retry
      (2.5 s), leaving the rest of the failover time for its term's start.
    - ``hold_off = failover / 2``: three of a standby's retries. It is a delay,
      not a ban: an instance that gets the lease back at the very next epoch knows
      nobody else took it in a whole hold-off (no other live instance, or none
      that reaches the broker either) and keeps it without the broker, so
      escalations, supervision and webhooks go on; its broker connection coming
      back ends that. Each further step down without a connection in between
      doubles the grace (up to ``2 x failover``): two instances that both lack
      the broker pass the lease between them ever more rarely.
    """

    keepalive_s: int
    grace_s: float
    hold_off_s: float
    max_grace_s: float

    @classmethod
    def for_failover(cls, failover_s: float) -> BrokerTiming:
        return cls(
            keepalive_s=max(2, int(failover_s // 5)),
            grace_s=max(1.0, failover_s / 5),
            hold_off_s=failover_s / 2,
            max_grace_s=2 * failover_s,
        )

    def grace(self, strikes: int) -> float:
        """The grace after `strikes` step-downs with no broker connection in between."""
        return min(self.max_grace_s, self.grace_s * (1 << min(strikes, 16)))

    @property
    def step_down_bound_s(self) -> float:
        """The latest an owner steps down after a silent cut (first time)."""
        return 2 * self.keepalive_s + self.grace_s


@dataclass(frozen=True, slots=True)
class ListenTiming:
    """Seconds: when an owner that cannot bind a SCAIP address hands the lease over.

    Only the owner listens for SCAIP devices (sip/listeners.py retries a bind that
    fails), and its lease renews as usual: without this, no instance heard a SCAIP
    device while a standby on another host could have bound its own address. So an
    owner whose running term has not listened on every address of
    ALARMHUB_SCAIP_LISTEN for ``grace`` steps down (daemon/sipwatch.py):

    - ``grace = failover / 2`` (at least 1 s): a standby holds the lease one retry
      after the release, so SCAIP is taken over within about the failover time, as
      after a dead owner. It spans the rebind's first tries (1, 2, 4 s at the default
      15 s), enough for what passes by itself: an old process closing its socket, a
      floating address arriving on this host.
    - ``hold_off = failover / 2`` after the release, as after a broker cut; an owner
      that gets the lease straight back (the next epoch: nobody else took it) keeps
      it without the listener (ALONE): MQTT intake, escalations and supervision go on.
    - each further step-down without having listened in between doubles the grace, up
      to ``8 x failover`` (2 minutes at 15 s): instances that all cannot bind pass the
      lease (and with it a few seconds of MQTT intake) between them ever more rarely.
    - ``check`` is how often the owner looks: a fifth of the grace, at most 1 s.
    """

    grace_s: float
    hold_off_s: float
    max_grace_s: float
    check_s: float

    @classmethod
    def for_failover(cls, failover_s: float) -> ListenTiming:
        grace = max(1.0, failover_s / 2)
        return cls(
            grace_s=grace,
            hold_off_s=failover_s / 2,
            max_grace_s=max(grace, 8 * failover_s),
            check_s=min(1.0, grace / 5),
        )

    def grace(self, strikes: int) -> float:
        """The grace after `strikes` step-downs with no listening term in between."""
        return min(self.max_grace_s, self.grace_s * (1 << min(strikes, 16)))


class Graced(Protocol):
    """A timing whose grace grows with each step-down (BrokerTiming, ListenTiming)."""

    def grace(self, strikes: int) -> float: ...


class BrokerVerdict(enum.StrEnum):
    """What an owner does about its broker connection, or its SCAIP listener."""

    KEEP = "keep"  # connected, or not yet for the grace
    STEP_DOWN = "step_down"  # no connection for the grace: let another instance own
    ALONE = "alone"  # got the lease straight back after stepping down: nobody else can


def broker_verdict(
    unreachable_s: float | None,
    strikes: int,
    epoch: int,
    stepped_down_epoch: int | None,
    timing: Graced,
) -> BrokerVerdict:
    """`unreachable_s`: how long the owner has had no broker connection (None: it has one);
    for the SCAIP listener (daemon/sipwatch.py), how long an address has been unbound."""
    if unreachable_s is None or unreachable_s < timing.grace(strikes):
        return BrokerVerdict.KEEP
    if stepped_down_epoch is not None and epoch == stepped_down_epoch + 1:
        return BrokerVerdict.ALONE
    return BrokerVerdict.STEP_DOWN


@dataclass(frozen=True, slots=True)
class StallTiming:
    """Seconds: when an owner whose work cannot commit hands the lease over.

    An owner whose writes keep failing (its writer connection broken or stuck, a
    local fault) while its lease renewals go through on their own connection
    keeps the lease: nobody else may take intake over, nothing is acknowledged,
    every alarm waits at the broker. So an owner whose work has waited on a
    failing store for ``limit`` under its current grant steps down (releases the
    lease) and lets others try for ``hold_off``:

    - ``limit`` is ``ALARMHUB_OWNER_STALL_S`` (30 s by default, four lease ttls at
      the default failover): long beside a commit (milliseconds) and beside the
      write gate's longest retry pause (5 s), so a passing fault (a lock, a
      restarted connection) costs a few retries, not a term. Only work that has
      failed counts (a slow commit that succeeds is no stall), measured from its
      first attempt, and never from before the grant: each term gets the whole
      limit.
    - ``hold_off = failover / 2`` (three of a standby's retries), as after a
      broker step-down: a delay, not a ban. A lone instance takes the lease back
      after it and tries again; it loses nothing by having stepped down, since
      while its writes failed it committed nothing (the failing batch holds the
      write gate, so escalations and supervision waited too) and acknowledged
      nothing (the broker keeps the batch for whoever owns next).
    - ``check`` is how often the owner looks: a tenth of the limit, at most 1 s.
    """

    limit_s: float
    hold_off_s: float
    check_s: float

    @classmethod
    def for_failover(cls, failover_s: float, limit_s: float) -> StallTiming:
        return cls(limit_s=limit_s, hold_off_s=failover_s / 2, check_s=min(1.0, limit_s / 10))


@dataclass(frozen=True, slots=True)
class Stalled:
    """The owner's oldest work waiting on a failing store: what it is, and the last error.

    `since` is the monotonic time of its first attempt; None: since the grant (a
    term's start, which begins with its grant).
    """

    since: float | None
    # "commit": a write (or its read) through the write gate failed; "refused": a decision
    # the store refused (the rows moved) and the gate decides again; "start": a term's reads
    what: str
    error: str


def stalled_for(stalled: Stalled | None, granted_at: float, now: float) -> float:
    """How long the owner's work has waited on a failing store under the current grant.

    Counted from the grant at the earliest: work that began failing under an earlier
    grant (an action retried across a step-down) does not cut a new term short.
    """
    if stalled is None:
        return 0.0
    since = granted_at if stalled.since is None else max(stalled.since, granted_at)
    return max(0.0, now - since)


class InstanceState(enum.StrEnum):
    """What `alarmhub cluster status` says of an instance's heartbeat."""

    LIVE = "live"
    STALE = "stale"  # no heartbeat for longer than the failover time: dead or cut off
    STOPPED = "stopped"  # said goodbye (a clean shutdown)


def instance_state(
    heartbeat_at: datetime, stopped_at: datetime | None, now: datetime, failover_s: float
) -> InstanceState:
    """Live, stale or stopped; `now` is the database's, as the heartbeat is."""
    if stopped_at is not None:
        return InstanceState.STOPPED
    if (now - heartbeat_at).total_seconds() > failover_s:
        return InstanceState.STALE
    return InstanceState.LIVE
