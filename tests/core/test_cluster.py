"""The lease arithmetic and the instance states (core/cluster.py), as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alarmhub.core.cluster import InstanceState, LeaseTiming, instance_state

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
