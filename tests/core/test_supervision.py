"""Missing-signal supervision and dose schedules, with a fake `now` throughout."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarmhub.core.supervision import (
    DoseOutcome,
    DoseSchedule,
    DoseWatch,
    Heard,
    OverdueKind,
    Supervisor,
)

OSLO = ZoneInfo("Europe/Oslo")
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ids(items) -> list[str]:
    return [o.device_id for o in items]


# --- Supervisor: tables ----------------------------------------------------------

_DEVICES_MANY = [f"m{i}" for i in range(5)]


def test_silent_device_is_reported_once_after_misses_times_interval():
    sup = Supervisor()
    sup.watch("pendant-1", MIN, 3, at(0))
    assert sup.due(at(3)) == []  # exactly at the limit: not yet exceeded
    [overdue] = sup.due(at(3) + timedelta(microseconds=1))
    assert overdue.device_id == "pendant-1"
    assert overdue.kind is OverdueKind.DEVICE_SILENT
    assert overdue.since == at(0)
    assert overdue.deadline == at(3)
    assert sup.is_silent("pendant-1")
    assert sup.due(at(60)) == []  # never again while it stays silent


def test_heartbeats_keep_a_device_healthy_without_growing_the_heap():
    sup = Supervisor()
    sup.watch("pendant-1", MIN, 3, at(0))
    for minute in range(1, 30):
        assert sup.heard("pendant-1", at(minute)) is Heard.ALIVE
        assert sup.heap_size == 1  # a heartbeat is a dict/array write, not a push
        assert sup.due(at(minute) + 30 * SEC) == []
    [overdue] = sup.due(at(29 + 3) + SEC)
    assert overdue.since == at(29)


def test_heard_after_report_recovers_and_can_be_reported_again():
    sup = Supervisor()
    sup.watch("d", MIN, 2, at(0))
    assert ids(sup.due(at(3))) == ["d"]
    assert sup.heard("d", at(5)) is Heard.RECOVERED
    assert not sup.is_silent("d")
    assert sup.heard("d", at(6)) is Heard.ALIVE
    assert sup.due(at(7)) == []
    assert ids(sup.due(at(8) + SEC)) == ["d"]  # a second silence, reported once


def test_unwatched_and_unknown_devices():
    sup = Supervisor()
    assert sup.heard("nobody", at(0)) is Heard.UNWATCHED
    sup.watch("d", MIN, 1, at(0))
    sup.unwatch("d")
    sup.unwatch("d")  # idempotent
    assert sup.heard("d", at(0)) is Heard.UNWATCHED
    assert sup.due(at(10)) == []
    assert len(sup) == 0


def test_out_of_order_heard_never_moves_last_heard_back():
    sup = Supervisor()
    sup.watch("d", MIN, 1, at(0))
    sup.heard("d", at(5))
    sup.heard("d", at(1))  # a delayed message from earlier
    assert sup.due(at(6)) == []
    assert ids(sup.due(at(6) + SEC)) == ["d"]


def test_due_returns_in_deadline_order_with_mixed_intervals():
    sup = Supervisor()
    sup.watch("hourly", timedelta(hours=1), 2, at(0))
    sup.watch("minutely", MIN, 3, at(0))
    sup.watch("daily", timedelta(days=1), 1, at(0))
    sup.watch("ten", 10 * MIN, 1, at(0))
    assert ids(sup.due(at(24 * 60 + 1))) == ["minutely", "ten", "hourly", "daily"]
    assert sup.next_deadline() is None


def test_rewatch_changes_the_limit_but_not_the_silence():
    sup = Supervisor()
    sup.watch("d", 10 * MIN, 3, at(0))
    sup.watch("d", MIN, 3, at(20))  # config reload: shorter interval, silent since 0
    assert ids(sup.due(at(20))) == ["d"]
    sup2 = Supervisor()
    sup2.watch("d", MIN, 3, at(0))
    sup2.watch("d", 10 * MIN, 3, at(1))  # longer: the early entry is re-armed lazily
    assert sup2.due(at(29)) == []
    assert ids(sup2.due(at(31))) == ["d"]


HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("interval", "misses", "heard", "restarts", "expected_deadline"),
    [
        # Issue 12 item 15, grace edge cases. Grace is 10 s; G = min(grace, interval).
        # No outage: its own deadline.
        (MIN, 3, at(0), [], at(3)),
        # Fell due while alarmhub was away (back at 60): one grace after the return.
        (MIN, 3, at(0), [at(60)], at(60) + 10 * SEC),
        # Due after the return: an outage postpones nothing that was not due in it.
        (HOUR, 2, at(0), [at(60)], at(120)),
        # Heard after the return: its own clock from then.
        (MIN, 3, at(61), [at(60)], at(64)),
        # Due within the grace after the return: moved to the end of the grace, no further.
        (MIN, 3, at(57) + 5 * SEC, [at(60)], at(60) + 10 * SEC),
        # The grace never exceeds one interval: a 4 s heartbeat gets 4 s, not 10.
        (4 * SEC, 3, at(0), [at(60)], at(60) + 4 * SEC),
        # A daily restart with a 24 h heartbeat: silence is never counted again from a
        # restart, so the dead pendant is due 3 days after it was last heard.
        (DAY, 3, at(0), [at(24 * 60), at(48 * 60), at(71 * 60)], at(72 * 60)),
        # Restarts every 30 s (a crash loop) across the deadline: due one grace after
        # the last return, not a limit later.
        (MIN, 3, at(0), [at(2.5), at(3), at(3.5)], at(3.5) + 10 * SEC),
        # A second return long after the first does not move a deadline it did not cover.
        (HOUR, 3, at(0), [at(60), at(120)], at(180)),
    ],
)
def test_restart_grace_once_per_outage_never_more_than_one_interval(
    interval, misses, heard, restarts, expected_deadline
):
    sup = Supervisor(grace=10 * SEC)
    sup.watch("d", interval, misses, at(0), last_heard=heard if heard <= at(0) else None)
    if heard > at(0):
        sup.heard("d", heard)
    for back in restarts:  # alarmhub away until each: no due() calls in between
        sup.restart(back)
    assert sup.due(expected_deadline) == []
    [overdue] = sup.due(expected_deadline + SEC)
    assert overdue.deadline == expected_deadline


@pytest.mark.parametrize(
    ("last_heard", "started", "silent", "expected"),
    [
        # Seeded from the store, the count goes on across a restart (item 15).
        (at(0), at(2), False, [("d", at(3))]),
        # Last heard longer ago than the limit: due once the grace after the start ends.
        (at(-60), at(0), False, [("d", at(0) + 10 * SEC)]),
        # Its offline alarm is still open: not reported a second time.
        (at(-60), at(0), True, []),
        # A last-heard time after `now` (the wall clock was stepped back) counts from now.
        (at(30), at(0), False, [("d", at(3))]),
    ],
)
def test_watch_is_seeded_from_the_stored_last_heard_time(last_heard, started, silent, expected):
    sup = Supervisor(grace=10 * SEC)
    sup.watch("d", MIN, 3, started, last_heard=last_heard, silent=silent)
    sup.restart(started)
    assert sup.is_silent("d") is silent
    assert [(o.device_id, o.deadline) for o in sup.due(at(100))] == expected


def test_a_dead_device_is_reported_though_alarmhub_restarts_more_often_than_its_interval():
    """A new Supervisor per process, seeded each time from the store's last-heard time."""
    last_heard = at(0)
    reported = []
    for run in range(8):  # a restart every 10 h; the limit is 3 x 24 h
        started = at(run * 600)
        sup = Supervisor(grace=timedelta(minutes=1))
        sup.watch("pend", DAY, 3, started, last_heard=last_heard)
        sup.restart(started)
        reported += sup.due(started + timedelta(hours=10) - SEC)
    assert [o.deadline for o in reported] == [at(72 * 60)]


@pytest.mark.parametrize(
    ("heard_after_resolve", "resolved_at", "expected"),
    [
        # Resolved by hand while still silent: raised again one interval later (item 16).
        (None, at(40), [at(50)]),
        # Heard after the resolve: its own count, three intervals from then.
        (at(45), at(40), [at(75)]),
    ],
)
def test_an_offline_alarm_resolved_by_hand_is_raised_again_while_silent(
    heard_after_resolve, resolved_at, expected
):
    sup = Supervisor()
    sup.watch("d", 10 * MIN, 3, at(0))
    assert ids(sup.due(at(31))) == ["d"]
    assert sup.resolved("d", resolved_at)
    if heard_after_resolve is not None:
        assert sup.heard("d", heard_after_resolve) is Heard.ALIVE
    assert [o.deadline for o in sup.due(at(200))] == expected
    assert sup.due(at(400)) == []


def test_resolved_by_hand_is_a_no_op_for_a_device_not_reported():
    sup = Supervisor()
    sup.watch("d", MIN, 3, at(0))
    assert not sup.resolved("d", at(1))
    assert not sup.resolved("nobody", at(1))
    assert [o.deadline for o in sup.due(at(10))] == [at(3)]


def test_restart_does_not_declare_everyone_offline_at_once():
    """After an hour away, a device heard in the broker's backlog within the grace is fine."""
    sup = Supervisor(grace=30 * SEC)
    for i in range(1000):
        sup.watch(f"d{i}", MIN * (1 + i % 5), 3, at(0))
    sup.restart(at(60))
    assert sup.due(at(60) + 30 * SEC) == []  # nobody within the grace
    for i in range(0, 1000, 2):  # the backlog: half of them sent heartbeats meanwhile
        sup.heard(f"d{i}", at(60) + 5 * SEC)
    silent = {o.device_id for o in sup.due(at(60) + 31 * SEC)}
    assert silent == {f"d{i}" for i in range(1, 1000, 2)}  # reported after one grace, not a limit


def test_reported_devices_stay_reported_across_restart():
    sup = Supervisor()
    sup.watch("d", MIN, 1, at(0))
    assert ids(sup.due(at(2))) == ["d"]
    sup.restart(at(10))
    assert sup.due(at(30)) == []
    assert sup.is_silent("d")


def test_bad_arguments():
    sup = Supervisor()
    with pytest.raises(ValueError):
        sup.watch("d", timedelta(0), 3, at(0))
    with pytest.raises(ValueError):
        sup.watch("d", MIN, 0, at(0))
    with pytest.raises(ValueError):
        Supervisor(grace=-SEC)


def test_garbage_is_compacted():
    sup = Supervisor()
    for round_ in range(5):
        for i in range(2000):
            sup.watch(f"d{i}", MIN, 3, at(round_))
        for i in range(2000):
            sup.unwatch(f"d{i}")
    assert sup.heap_size <= 2 * len(sup) + 1024 + 1


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(st.tuples(st.sampled_from(_DEVICES_MANY), st.integers(1, 20)), max_size=5),
    batch=st.lists(
        st.tuples(
            st.sampled_from(_DEVICES_MANY),
            st.integers(1, 20),
            st.one_of(st.none(), st.integers(-60, 10)),
            st.booleans(),
        ),
        max_size=12,
    ),
    misses=st.integers(1, 4),
    restarted=st.one_of(st.none(), st.integers(-30, 1)),
    restart=st.one_of(st.none(), st.integers(0, 30)),
    probes=st.lists(st.integers(0, 240), max_size=8),
)
def test_watch_many_is_a_watch_per_device(before, batch, misses, restarted, restart, probes):
    """The start-up's bulk path leaves the state a watch() per device leaves, in order:
    devices new and already watched, seeded or not, already reported or not, a
    device twice in one batch, a restart before and after; compared by what due()
    reports when."""
    one, many = Supervisor(grace=5 * MIN), Supervisor(grace=5 * MIN)
    for sup in (one, many):
        for device, interval in before:
            sup.watch(device, interval * MIN, misses, at(0))
        if restarted is not None:  # a floor under the new deadlines
            sup.restart(at(restarted))
    entries = [
        (device, interval * MIN, None if heard is None else at(heard), silent)
        for device, interval, heard, silent in batch
    ]
    for device, interval, heard, silent in entries:
        one.watch(device, interval, misses, at(1), last_heard=heard, silent=silent)
    many.watch_many(iter(entries), misses, at(1))
    if restart is not None:
        one.restart(at(restart))
        many.restart(at(restart))
    assert len(one) == len(many)
    assert one.next_deadline() == many.next_deadline()
    for minute in sorted(probes):
        assert one.due(at(minute)) == many.due(at(minute))
        assert one.next_deadline() == many.next_deadline()
    assert [one.is_silent(d) for d in _DEVICES_MANY] == [many.is_silent(d) for d in _DEVICES_MANY]


def test_watch_many_keeps_what_it_took_when_its_devices_raise():
    """The caller's generator does the rest of each device's watch and may raise: a
    device taken before that is still reported when silent (its heap entry is kept)."""
    sup = Supervisor()

    def devices():
        yield ("a", MIN, None, False)
        raise RuntimeError("the caller's own part failed")

    with pytest.raises(RuntimeError):
        sup.watch_many(devices(), 3, at(0))
    assert ids(sup.due(at(4))) == ["a"]


def test_watch_many_checks_its_arguments():
    with pytest.raises(ValueError):
        Supervisor().watch_many([("d", timedelta(0), None, False)], 3, at(0))
    with pytest.raises(ValueError):
        Supervisor().watch_many([("d", MIN, None, False)], 0, at(0))


# --- Supervisor: properties against a reference model -------------------------------------

_DEVICES = [f"dev{i}" for i in range(6)]
_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("watch"), st.sampled_from(_DEVICES), st.integers(1, 20), st.integers(1, 4)
        ),
        st.tuples(st.just("heard"), st.sampled_from(_DEVICES)),
        st.tuples(st.just("unwatch"), st.sampled_from(_DEVICES)),
        st.tuples(st.just("advance"), st.integers(0, 50)),
        st.tuples(
            st.just("due"),
        ),
        st.tuples(
            st.just("restart"),
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops)
def test_matches_a_brute_force_model(ops):
    """Each silence is reported exactly once, at the first due() after it exceeds the limit.

    The model recomputes every device's silence from scratch on each due().
    """
    sup = Supervisor()
    now = T0
    # device -> [last_heard, limit, reported]
    model: dict[str, list] = {}
    floor = None
    for op in ops:
        match op:
            case ("watch", dev, interval, misses):
                limit = interval * SEC * misses
                if dev in model:
                    model[dev][1] = limit
                else:
                    model[dev] = [now, limit, False]
                sup.watch(dev, interval * SEC, misses, now)
            case ("heard", dev):
                expected = Heard.UNWATCHED
                if dev in model:
                    expected = Heard.RECOVERED if model[dev][2] else Heard.ALIVE
                    model[dev][0] = max(model[dev][0], now)
                    model[dev][2] = False
                assert sup.heard(dev, now) is expected
            case ("unwatch", dev):
                model.pop(dev, None)
                sup.unwatch(dev)
            case ("advance", seconds):
                now += seconds * SEC
            case ("restart",):
                floor = now if floor is None else max(floor, now)
                sup.restart(now)
            case ("due",):
                expected_due: set[str] = set()
                for dev, state in model.items():
                    deadline = state[0] + state[1]
                    if floor is not None:  # due while away: due at the return (grace 0)
                        deadline = max(deadline, floor)
                    if not state[2] and now > deadline:
                        expected_due.add(dev)
                        state[2] = True
                got = ids(sup.due(now))
                assert len(got) == len(set(got))  # once
                assert set(got) == expected_due
    # Finally: everything silent long enough is reported, nothing else, never twice.
    now += timedelta(days=1)
    got = ids(sup.due(now))
    assert set(got) == {d for d, s in model.items() if not s[2]}
    assert sup.due(now) == []


@settings(max_examples=100, deadline=None)
@given(
    heartbeat=st.integers(1, 60),
    interval=st.integers(61, 600),
    misses=st.integers(1, 3),
    steps=st.lists(st.integers(1, 59), min_size=1, max_size=50),
)
def test_devices_heard_within_their_limit_are_never_reported(heartbeat, interval, misses, steps):
    sup = Supervisor()
    now = T0
    sup.watch("d", interval * SEC, misses, now)
    for step in steps:
        now += min(step, heartbeat) * SEC
        sup.heard("d", now)
        assert sup.due(now + (interval * misses - 1) * SEC) == []


# --- memory sanity with 100,000 devices ---------------------------------------------------


def test_structures_stay_linear_for_100k_devices():
    n = 100_000
    names = [f"device-{i:07d}" for i in range(n)]  # allocated before tracing: not ours
    tracemalloc.start()
    try:
        sup = Supervisor()
        for i, name in enumerate(names):
            sup.watch(name, timedelta(minutes=1 + i % 60), 3, T0)
        built, _ = tracemalloc.get_traced_memory()
        assert sup.heap_size == n
        # Every device sends a heartbeat: no heap growth at all.
        later = T0 + timedelta(seconds=30)
        for name in names:
            sup.heard(name, later)
        assert sup.heap_size == n
        # Every first deadline passes; all were heard, so each entry is re-armed in place.
        assert sup.due(T0 + timedelta(minutes=3, seconds=1)) == []
        assert sup.heap_size == n
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert built / n < 200, f"{built / n:.0f} bytes per device"
    assert after / n < 200, f"{after / n:.0f} bytes per device"
    assert len(sup) == n


# --- dose schedules ----------------------------------------------------------------------


def _schedule(*times: time, window: timedelta = 30 * MIN, early: timedelta = timedelta(0)):
    return DoseSchedule(times, OSLO, window, early)


def oslo(d: date, hh: int, mm: int = 0, fold: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm, fold=fold), tzinfo=OSLO).astimezone(UTC)


@pytest.mark.parametrize(
    ("times", "after", "expected"),
    [
        ((time(8), time(20)), oslo(date(2026, 5, 4), 7), oslo(date(2026, 5, 4), 8)),
        ((time(8), time(20)), oslo(date(2026, 5, 4), 8), oslo(date(2026, 5, 4), 20)),
        ((time(8), time(20)), oslo(date(2026, 5, 4), 21), oslo(date(2026, 5, 5), 8)),
        # Spring: 02:30 does not exist; the dose is due at 03:00 CEST.
        ((time(2, 30),), oslo(date(2026, 3, 28), 12), datetime(2026, 3, 29, 1, tzinfo=UTC)),
        # Autumn: 02:30 happens twice; due once, at the first.
        ((time(2, 30),), oslo(date(2026, 10, 24), 12), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        (
            (time(2, 30),),
            datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
            oslo(date(2026, 10, 26), 2, 30),
        ),
        # 08:00 is 6:00 UTC in summer and 7:00 UTC in winter.
        ((time(8),), oslo(date(2026, 10, 24), 9), datetime(2026, 10, 25, 7, tzinfo=UTC)),
        ((time(8),), oslo(date(2026, 3, 28), 9), datetime(2026, 3, 29, 6, tzinfo=UTC)),
    ],
)
def test_next_due_is_dst_correct(times, after, expected):
    assert _schedule(*times).next_due(after) == expected


def test_dose_schedule_validation():
    with pytest.raises(ValueError):
        _schedule()
    with pytest.raises(ValueError):
        _schedule(time(20), time(8))
    with pytest.raises(ValueError):
        _schedule(time(8), window=timedelta(0))
    with pytest.raises(ValueError):
        _schedule(time(8, tzinfo=UTC))


def test_dose_taken_on_time_and_missed_and_late():
    day = date(2026, 5, 4)
    watch = DoseWatch()
    watch.track("disp-1", _schedule(time(8), time(20)), since=oslo(day, 0))
    assert watch.due(oslo(day, 8, 30)) == []  # window still open at its very end
    # Taken at 08:10: on time for 08:00.
    taken = watch.taken("disp-1", oslo(day, 8, 10))
    assert (taken.outcome, taken.scheduled_at, taken.missed) == (
        DoseOutcome.ON_TIME,
        oslo(day, 8),
        (),
    )
    # 20:00 not taken by 20:30 -> dose_missed once.
    [missed] = watch.due(oslo(day, 20, 31))
    assert missed.kind is OverdueKind.DOSE_MISSED
    assert (missed.since, missed.deadline) == (oslo(day, 20), oslo(day, 20, 30))
    assert watch.due(oslo(day, 23)) == []
    # Taken at 21:15: late, resolves the missed 20:00 dose.
    late = watch.taken("disp-1", oslo(day, 21, 15))
    assert (late.outcome, late.scheduled_at) == (DoseOutcome.LATE, oslo(day, 20))
    # A second extra dose.taken is unscheduled.
    assert watch.taken("disp-1", oslo(day, 21, 20)).outcome is DoseOutcome.UNSCHEDULED


def test_late_dose_before_the_timer_ran_reports_missed_and_late_together():
    day = date(2026, 5, 4)
    watch = DoseWatch()
    watch.track("disp-1", _schedule(time(8)), since=oslo(day, 0))
    taken = watch.taken("disp-1", oslo(day, 9))  # due() has not run since 08:30
    assert [m.since for m in taken.missed] == [oslo(day, 8)]
    assert (taken.outcome, taken.scheduled_at) == (DoseOutcome.LATE, oslo(day, 8))
    assert watch.due(oslo(day, 12)) == []  # not reported a second time


def test_early_tolerance_and_untracked_devices():
    day = date(2026, 5, 4)
    watch = DoseWatch()
    watch.track("d", _schedule(time(8), early=10 * MIN), since=oslo(day, 0))
    assert watch.taken("d", oslo(day, 7, 45)).outcome is DoseOutcome.UNSCHEDULED
    assert watch.taken("d", oslo(day, 7, 55)).outcome is DoseOutcome.ON_TIME
    assert watch.due(oslo(day, 9)) == []
    assert watch.taken("other", oslo(day, 8)).outcome is DoseOutcome.UNSCHEDULED
    watch.untrack("d")
    assert watch.due(oslo(day + timedelta(days=3), 0)) == []


def test_doses_across_the_autumn_night_are_due_once():
    watch = DoseWatch()
    watch.track("d", _schedule(time(2, 30), window=20 * MIN), since=oslo(date(2026, 10, 24), 12))
    missed = watch.due(datetime(2026, 10, 25, 12, tzinfo=UTC))
    assert [m.since for m in missed] == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]


@settings(max_examples=200, deadline=None)
@given(
    taken_offsets=st.lists(st.integers(-120, 24 * 60), max_size=8),
    ticks=st.lists(st.integers(1, 600), min_size=1, max_size=20),
)
def test_every_dose_is_missed_or_taken_exactly_once(taken_offsets, ticks):
    """Over three days: each scheduled dose is either taken on time or reported missed once."""
    start = oslo(date(2026, 10, 24), 0)
    schedule = _schedule(time(2, 30), time(8), time(20), window=45 * MIN)
    watch = DoseWatch()
    watch.track("d", schedule, since=start)
    events = sorted(start + timedelta(minutes=m + 600) for m in taken_offsets)
    on_time: list[datetime] = []
    missed: list[datetime] = []
    now = start
    for tick in ticks:
        now += timedelta(minutes=tick * 2)
        while events and events[0] <= now:
            result = watch.taken("d", events.pop(0))
            missed.extend(m.since for m in result.missed)
            if result.outcome is DoseOutcome.ON_TIME:
                on_time.append(result.scheduled_at)  # type: ignore[arg-type]  # on time: set
        missed.extend(m.since for m in watch.due(now))
    scheduled = []
    t = schedule.next_due(start)
    while t + schedule.window < now:
        scheduled.append(t)
        t = schedule.next_due(t)
    settled = sorted(on_time + missed)
    assert len(settled) == len(set(settled))
    assert [s for s in settled if s + schedule.window < now] == scheduled


# --- issue 12 item 17: missed doses are never forgotten -----------------------------------

D17 = date(2026, 5, 4)


@pytest.mark.parametrize(
    ("first", "retrack", "retrack_at", "expected_missed"),
    [
        # A registry change while the 08:00 window is open (08:30): it was re-tracked
        # from 08:30 and the 08:00 dose vanished. The same schedule keeps its state.
        ((time(8), time(20)), (time(8), time(20)), (8, 30), [(8, 0), (20, 0)]),
        # A changed schedule continues from the last settled dose, not from now.
        ((time(8),), (time(8), time(12)), (8, 30), [(8, 0), (12, 0)]),
        # No change at all: the baseline.
        ((time(8), time(20)), None, None, [(8, 0), (20, 0)]),
    ],
)
def test_a_registry_change_does_not_drop_a_pending_dose(
    first, retrack, retrack_at, expected_missed
):
    watch = DoseWatch()
    watch.track("d", _schedule(*first), since=oslo(D17, 0))
    if retrack is not None:
        watch.track("d", _schedule(*retrack), since=oslo(D17, *retrack_at))
    missed = watch.due(oslo(D17, 23, 59))
    assert [m.since for m in missed] == [oslo(D17, h, m) for h, m in expected_missed]


@pytest.mark.parametrize(
    ("settled", "restarted", "expected_missed"),
    [
        # Down from 07:00 to 21:00: both doses' windows closed while down; both reported.
        ((7, 0), (21, 0), [(8, 0), (20, 0)]),
        # Settled through 08:00 (taken before the outage): only 20:00 is missed.
        ((8, 0), (21, 0), [(20, 0)]),
        # Back at 20:10, inside the 20:00 window: not missed (yet), nothing lost.
        ((8, 0), (20, 10), []),
    ],
)
def test_doses_missed_while_alarmhub_was_down_are_reported(settled, restarted, expected_missed):
    """Tracked from the last settled instant the store gives, not from the restart."""
    watch = DoseWatch()
    watch.track("d", _schedule(time(8), time(20)), since=oslo(D17, *settled))
    missed = watch.due(oslo(D17, *restarted))
    assert [m.since for m in missed] == [oslo(D17, h, m) for h, m in expected_missed]
    assert watch.due(oslo(D17, *restarted)) == []  # each once


def test_settled_moves_with_taken_and_missed_doses():
    watch = DoseWatch()
    watch.track("d", _schedule(time(8), time(20)), since=oslo(D17, 0))
    assert watch.settled("d") == oslo(D17, 0)
    watch.taken("d", oslo(D17, 8, 5))
    assert watch.settled("d") == oslo(D17, 8)
    watch.due(oslo(D17, 21))
    assert watch.settled("d") == oslo(D17, 20)
    assert watch.settled("other") is None


@pytest.mark.parametrize(
    ("missed_by", "taken_at", "outcome", "scheduled", "settles"),
    [
        # 08:00 missed; the 20:00 dose taken on time: it settles 20:00, not the 08:00 alarm
        # (the "dose taken" rule used to resolve any dose_missed: issue 12 item 17).
        ((8, 31), (20, 5), DoseOutcome.ON_TIME, (20, 0), False),
        # 08:00 missed, taken late at 08:45: that dose, and nothing else missed: settles.
        ((8, 31), (8, 45), DoseOutcome.LATE, (8, 0), True),
        # 08:00 and 20:00 missed; a late take at 20:45 settles 20:00: its own alarm may
        # close, while 08:00's (an alarm of its own) stays for home care.
        ((20, 31), (20, 45), DoseOutcome.LATE, (20, 0), True),
    ],
)
def test_a_dose_taken_settles_only_its_own_dose(missed_by, taken_at, outcome, scheduled, settles):
    watch = DoseWatch()
    watch.track("d", _schedule(time(8), time(20)), since=oslo(D17, 0))
    assert watch.due(oslo(D17, *missed_by))
    result = watch.taken("d", oslo(D17, *taken_at))
    assert (result.outcome, result.scheduled_at, result.settles_missed) == (
        outcome,
        oslo(D17, *scheduled),
        settles,
    )


def test_resolving_by_hand_settles_the_listed_doses():
    """An alarm not about one dose (a dispenser's own, or one raised before item 17)."""
    watch = DoseWatch()
    watch.track("d", _schedule(time(8), time(20)), since=oslo(D17, 0))
    assert len(watch.due(oslo(D17, 20, 31))) == 2
    watch.resolved("d")
    assert watch.taken("d", oslo(D17, 20, 45)).outcome is DoseOutcome.UNSCHEDULED


def test_resolving_one_doses_alarm_by_hand_keeps_where_a_late_take_belongs():
    """20:00's alarm closed by hand: a take at 20:45 is still that dose's, not 08:00's."""
    watch = DoseWatch()
    watch.track("d", _schedule(time(8), time(20)), since=oslo(D17, 0))
    assert len(watch.due(oslo(D17, 20, 31))) == 2
    watch.resolved("d", oslo(D17, 20))
    assert watch.taken("d", oslo(D17, 20, 45)).scheduled_at == oslo(D17, 20)
