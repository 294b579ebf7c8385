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
