"""The lease arithmetic and the instance states (core/cluster.py), as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alarmhub.core.cluster import (
    BrokerTiming,
    BrokerVerdict,
    InstanceState,
    LeaseTiming,
    ListenTiming,
    Stalled,
    StallTiming,
    broker_verdict,
    instance_state,
    stalled_for,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("failover_s", [2.0, 15.0, 60.0])
def test_a_dead_holder_is_taken_over_within_two_thirds_of_the_failover_time(failover_s) -> None:
    t = LeaseTiming.for_failover(failover_s)
    assert t.takeover_bound_s == pytest.approx(failover_s * 2 / 3)
    # At least two renewals fit before the holder's own deadline.
    assert 2 * t.renew_s < t.ttl_s - t.margin_s < t.ttl_s
    assert t.margin_s > 0


def test_default_failover_figures() -> None:
    t = LeaseTiming.for_failover(15.0)
    assert (t.ttl_s, t.renew_s, t.retry_s, t.margin_s) == (7.5, 2.5, 2.5, 1.5)


@pytest.mark.parametrize(
    ("age_s", "stopped", "expected"),
    [
        (0, False, InstanceState.LIVE),
        (15, False, InstanceState.LIVE),
        (15.1, False, InstanceState.STALE),
        (3600, False, InstanceState.STALE),
        (3600, True, InstanceState.STOPPED),
        (0, True, InstanceState.STOPPED),
    ],
)
def test_instance_state(age_s, stopped, expected) -> None:
    beat = T0 - timedelta(seconds=age_s)
    assert instance_state(beat, T0 if stopped else None, T0, 15.0) is expected


def test_default_broker_figures_fit_the_failover_time() -> None:
    b = BrokerTiming.for_failover(15.0)
    assert (b.keepalive_s, b.grace_s, b.hold_off_s, b.max_grace_s) == (3, 3.0, 7.5, 30.0)
    t = LeaseTiming.for_failover(15.0)
    # A silent cut noticed and stepped down from, then a standby's retry: inside 15 s
    # with room for the new owner's start.
    assert b.step_down_bound_s + t.retry_s == 11.5
    # The hold-off gives every standby at least three tries.
    assert b.hold_off_s >= 3 * t.retry_s


@pytest.mark.parametrize(
    ("unreachable_s", "strikes", "epoch", "stepped_down", "expected"),
    [
        (None, 0, 5, None, BrokerVerdict.KEEP),  # connected
        (2.9, 0, 5, None, BrokerVerdict.KEEP),  # within the grace (3 s)
        (3.0, 0, 5, None, BrokerVerdict.STEP_DOWN),
        (5.9, 1, 7, 5, BrokerVerdict.KEEP),  # second time: the grace doubled (6 s)
        (6.0, 1, 7, 5, BrokerVerdict.STEP_DOWN),  # epoch 6 was someone else's
        (6.0, 1, 6, 5, BrokerVerdict.ALONE),  # got it straight back: nobody else can
        (29.0, 9, 20, 18, BrokerVerdict.KEEP),  # capped at 2 x failover (30 s)
        (30.0, 9, 20, 18, BrokerVerdict.STEP_DOWN),
        (None, 3, 6, 5, BrokerVerdict.KEEP),  # alone, but the broker is back
    ],
)
def test_broker_verdict(unreachable_s, strikes, epoch, stepped_down, expected) -> None:
    timing = BrokerTiming.for_failover(15.0)
    assert broker_verdict(unreachable_s, strikes, epoch, stepped_down, timing) is expected


@pytest.mark.parametrize(
    ("since", "granted_at", "now", "expected"),
    [
        (100.0, 50.0, 130.0, 30.0),  # failing since after the grant: from its first attempt
        (10.0, 50.0, 130.0, 80.0),  # failing since before the grant: from the grant only
        (None, 50.0, 130.0, 80.0),  # a term's start: from the grant
        (130.0, 50.0, 130.0, 0.0),  # failing since just now
    ],
)
def test_stalled_for(since, granted_at, now, expected) -> None:
    assert stalled_for(Stalled(since, "commit", "refused"), granted_at, now) == expected


def test_nothing_failing_is_no_stall() -> None:
    assert stalled_for(None, 50.0, 1e9) == 0.0


def test_default_stall_figures() -> None:
    t = LeaseTiming.for_failover(15.0)
    s = StallTiming.for_failover(15.0, 30.0)
    assert (s.limit_s, s.hold_off_s, s.check_s) == (30.0, 7.5, 1.0)
    # A few lease ttls: a passing fault costs retries, not a term.
    assert s.limit_s == 4 * t.ttl_s
    # The hold-off gives every standby at least three tries.
    assert s.hold_off_s >= 3 * t.retry_s


def test_default_listen_figures_fit_the_failover_time() -> None:
    """An owner that cannot bind a SCAIP address steps down after half the failover time,
    and a standby takes the lease one retry later: SCAIP is taken over inside the failover
    time, with room for the new owner's start, as after a dead owner."""
    listen = ListenTiming.for_failover(15.0)
    assert (listen.grace_s, listen.hold_off_s, listen.max_grace_s) == (7.5, 7.5, 120.0)
    assert listen.check_s == 1.0
    assert listen.grace_s + listen.check_s + LeaseTiming.for_failover(15.0).retry_s == 11.0
    # The shortest failover allowed still leaves the term a second to bind.
    assert ListenTiming.for_failover(2.0).grace_s == 1.0


@pytest.mark.parametrize(
    ("unbound_s", "strikes", "epoch", "stepped_down", "expected"),
    [
        (None, 0, 5, None, BrokerVerdict.KEEP),  # it listens
        (7.4, 0, 5, None, BrokerVerdict.KEEP),  # within the grace (7.5 s)
        (7.5, 0, 5, None, BrokerVerdict.STEP_DOWN),
        (14.9, 1, 7, 5, BrokerVerdict.KEEP),  # second time: the grace doubled (15 s)
        (15.0, 1, 7, 5, BrokerVerdict.STEP_DOWN),  # epoch 6 was someone else's
        (15.0, 1, 6, 5, BrokerVerdict.ALONE),  # got it straight back: nobody else took it
        (119.0, 9, 20, 18, BrokerVerdict.KEEP),  # capped at 8 x failover (120 s)
        (120.0, 9, 20, 18, BrokerVerdict.STEP_DOWN),
    ],
)
def test_listen_verdict(unbound_s, strikes, epoch, stepped_down, expected) -> None:
    timing = ListenTiming.for_failover(15.0)
    assert broker_verdict(unbound_s, strikes, epoch, stepped_down, timing) is expected
