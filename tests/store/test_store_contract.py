"""One suite of behaviour tests over the AlarmStore ports, run against SQLite and PostgreSQL.

Each test says what a caller of store/ports.py may rely on, whichever store it is
handed (`opened` in tests/store/conftest.py). What only PostgreSQL enforces (the
inbox's unique key, one active alarm per device and kind) is tested in
test_postgres_invariants.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from alarmhub.core.dedup import DEAD_LETTER_KEPT_BYTES, Identity, payload_digest
from alarmhub.core.escalation import Deadline, EscalationDecision, EscalationReason
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    DeviceKind,
    Event,
    EventType,
    Priority,
    RawMessage,
    Rejected,
    RejectReason,
    TimelineEntry,
    TimelineType,
    Verdict,
)
from alarmhub.core.people import AuditEntry
from alarmhub.core.pipeline import BatchEffects, EventOutcome, MessageOutcome
from alarmhub.core.retention import RetainedTable
from alarmhub.store.errors import (
    IdTakenError,
    MoveRefusedError,
    StoreError,
)
from alarmhub.store.ports import DecidedRow, Notification
from tests.store.conftest import OpenedStore

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
PEND = Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")
DOOR = Device("door-1", DeviceKind.DOOR_SENSOR, "4601")
AUDIT = [AuditEntry("tester", "alarm.acknowledged", T0, alarm_id="a-1")]


def press(msg_id: str, at: datetime, alarm_id: str | None, verdict: Verdict) -> MessageOutcome:
    topic = f"alarmhub/v1/{PEND.id}/events"
    payload = f'{{"id": "{msg_id}", "type": "button.pressed"}}'.encode()
    event = Event(PEND.id, msg_id, EventType.BUTTON_PRESSED, at, at)
    return MessageOutcome(
        RawMessage(topic, payload, at),
        f"m:{PEND.id}\x00{msg_id}",
        Verdict.LOGGED,
        PEND,
        msg_id,
        events=[EventOutcome(event, verdict, alarm_id, "press")],
    )


def alarm(alarm_id: str = "a-1", at: datetime = T0, **changes: object) -> Alarm:
    a = Alarm(
        alarm_id, PEND.id, PEND.municipality, "button", Priority.CRITICAL, AlarmState.OPEN, at, at
    )
    return replace(a, **changes)  # type: ignore[arg-type]


def raised(a: Alarm, msg_id: str) -> TimelineEntry:
    return TimelineEntry(a.id, a.raised_at, TimelineType.RAISED, None, {"msg_id": msg_id})


def new_alarm_batch(msg_id: str = "m1", alarm_id: str = "a-1", at: datetime = T0) -> BatchEffects:
    a = alarm(alarm_id, at)
    return BatchEffects(
        messages=[press(msg_id, at, a.id, Verdict.NEW)],
        alarms={a.id: a},
        new_alarm_ids=[a.id],
        timeline=[raised(a, msg_id)],
        device_seen={PEND.id: at},
    )


async def registered(opened: OpenedStore, *devices: Device) -> None:
    await opened.store.register_devices(devices or (PEND, DOOR), T0, audit=())


# --- ingest ------------------------------------------------------------------


async def test_a_batch_commits_its_alarm_timeline_inbox_row_and_last_seen(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await registered(opened)
    await store.commit_batch(new_alarm_batch(), {})

    # Stored at revision 1: the next write of it must name that revision (Alarm.rev).
    assert await store.list_alarms() == [alarm(rev=1)]
    assert await store.get_alarm("a-1") == alarm(rev=1)
    assert await store.load_active_alarms() == [alarm(rev=1)]
    timeline = await store.timeline("a-1")
    assert [(t["type"], t["detail"]) for t in timeline] == [("raised", {"msg_id": "m1"})]
    assert timeline[0]["at"] == "2026-11-22T10:00:00.000000+00:00"
    fp = f"m:{PEND.id}\x00m1"
    prior = (await store.latest_messages([fp, "m:none\x00x"]))[fp]
    assert (prior.received_at, prior.alarm_ids, prior.digest) == (T0, ("a-1",), None)
    assert await store.raising_message("a-1") == (f"alarmhub/v1/{PEND.id}/events", "m1")
    (pend,) = [d for d in await store.list_devices() if d["id"] == PEND.id]
    assert pend["last_seen_at"] == "2026-11-22T10:00:00.000000+00:00"
    assert await opened.count("SELECT count(*) FROM inbox") == 1


async def test_a_redelivery_is_not_stored_again_and_a_later_message_is_the_latest(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await registered(opened)
    await store.commit_batch(new_alarm_batch(), {})
    again = press("m1", T0 + timedelta(seconds=5), None, Verdict.REDELIVERY)
    again.verdict = Verdict.REDELIVERY
    await store.commit_batch(BatchEffects(messages=[again]), {})
    assert await opened.count("SELECT count(*) FROM inbox") == 1

    # The same id and bytes after the window: dedup judged it new, so it is a row of its own.
    later = T0 + timedelta(days=2)
    after_window = press("m1", later, None, Verdict.LOGGED)
    after_window.identity = Identity.WINDOW_PASSED
    await store.commit_batch(BatchEffects(messages=[after_window]), {})
    assert await opened.count("SELECT count(*) FROM inbox") == 2
    fp = f"m:{PEND.id}\x00m1"
    assert (await store.latest_messages([fp]))[fp].received_at == later


async def test_a_dead_letter_keeps_its_first_bytes_its_size_and_its_digest(
    opened: OpenedStore,
) -> None:
    store = opened.store
    payload = b"x" * 2000
    m = MessageOutcome(
        RawMessage("alarmhub/v1/ghost/events", payload, T0),
        "h:ghost",
        Verdict.REJECTED,
        rejected=Rejected(RejectReason.MALFORMED_JSON, "not JSON", device_id="ghost"),
    )
    await store.commit_batch(BatchEffects(messages=[m]), {"ghost": "0301"})
    (letter,) = await store.dead_letters()
    assert letter["received_at"] == "2026-11-22T10:00:00.000000+00:00"
    assert (letter["device_id"], letter["municipality"], letter["reason"]) == (
        "ghost",
        "0301",
        "malformed_json",
    )
    assert letter["payload"] == "x" * DEAD_LETTER_KEPT_BYTES
    assert letter["payload_bytes"] == 2000
    prior = (await store.latest_messages(["h:ghost"]))["h:ghost"]
    assert prior.digest == payload_digest(payload)
    assert prior.same_content(payload)
    assert await store.dead_letters(limit=0) == []


# --- the registry --------------------------------------------------------------


async def test_registration_refuses_a_taken_id_and_a_move_with_open_alarms(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await registered(opened)
    entry = AuditEntry("cli:test", "device.registered", T0, device_id=PEND.id)
    with pytest.raises(IdTakenError) as taken:
        await store.register_devices(
            [replace(PEND, municipality="4601")], T0, audit=[entry], existing_in=frozenset({"4601"})
        )
    assert taken.value.ids == [PEND.id]
    await store.commit_batch(new_alarm_batch(), {})
    with pytest.raises(MoveRefusedError) as refused:
        await store.register_devices([replace(PEND, municipality="4601")], T0, audit=[entry])
    assert "a-1" in str(refused.value)
    assert (await store.get_devices([PEND.id]))[0].municipality == "0301"
    # Nothing of a refused write is kept, its audit entry neither.
    assert await opened.count("SELECT count(*) FROM audit") == 0

    # Resolved, it may move; `keep` leaves a column as it is.
    await store.save_alarms([alarm(state=AlarmState.RESOLVED, resolved_at=T0, rev=1)], [], audit=())
    mark = await store.newest_device_update()
    later = T0 + timedelta(minutes=1)
    await store.register_devices(
        [replace(PEND, municipality="4601", label="new")],
        later,
        frozenset({"label"}),
        audit=[entry],
    )
    (moved,) = await store.get_devices([PEND.id])
    assert (moved.municipality, moved.label) == ("4601", None)
    changed, newest = await store.devices_changed_since(mark)
    assert [d.id for d in changed] == [PEND.id]
    assert newest == "2026-11-22T10:01:00.000000+00:00" == await store.newest_device_update()
    assert await store.devices_changed_since(newest) == ([], newest)
    assert set(await store.load_devices()) == {PEND.id, DOOR.id}
    assert await opened.count("SELECT count(*) FROM audit") == 1


# --- operators' actions ----------------------------------------------------------


async def test_an_action_commits_with_its_audit_entry_or_not_at_all(opened: OpenedStore) -> None:
    store = opened.store
    await registered(opened)
    await store.commit_batch(new_alarm_batch(), {})
    acked = alarm(state=AlarmState.ACKNOWLEDGED, acknowledged_at=T0, acknowledged_by="ola", rev=1)
    entry = TimelineEntry("a-1", T0, TimelineType.ACKNOWLEDGED, "ola")
    broken = [replace(AUDIT[0], actor=None)]  # type: ignore[arg-type]  # NOT NULL refuses it
    with pytest.raises(StoreError):
        await store.save_alarms([acked], [entry], audit=broken)
    assert await store.get_alarm("a-1") == alarm(rev=1)
    assert len(await store.timeline("a-1")) == 1

    await store.save_alarms([acked], [entry], audit=AUDIT)
    assert await store.get_alarm("a-1") == replace(acked, rev=2)
    assert [t["type"] for t in await store.timeline("a-1")] == ["raised", "acknowledged"]
    assert await opened.count("SELECT count(*) FROM audit WHERE actor = 'tester'") == 1


async def test_get_alarms_reads_the_named_alarms_and_leaves_out_unknown_ids(
    opened: OpenedStore,
) -> None:
    """The change follower's one read (daemon/follower.py): every id at its stored revision."""
    store = opened.store
    await registered(opened)
    await store.commit_batch(new_alarm_batch("m1", "a-1"), {})
    other = new_alarm_batch("m2", "a-2")
    await store.commit_batch(replace(other, alarms={"a-2": alarm("a-2", kind="fall")}), {})
    acked = alarm(state=AlarmState.ACKNOWLEDGED, acknowledged_at=T0, acknowledged_by="ola", rev=1)
    await store.save_alarms([acked], [], audit=())
    got = await store.get_alarms(["a-2", "nope", "a-1", "a-2"])
    assert sorted((a.id, a.state, a.rev) for a in got) == [
        ("a-1", AlarmState.ACKNOWLEDGED, 2),
        ("a-2", AlarmState.OPEN, 1),
    ]
    assert await store.get_alarms([]) == []


# --- escalation and the outbox -------------------------------------------------


def decided(step: int, alarm_id: str = "a-1", rev: int = 1) -> DecidedRow:
    deadline = Deadline(step, step + 1, f"level-{step + 1}", T0 + timedelta(minutes=step), 0)
    a = alarm(alarm_id, escalation_level=step + 1, rev=rev)
    return DecidedRow(
        EscalationDecision(EscalationReason.ESCALATE, deadline, timedelta(0)),
        alarm_id,
        a,
        [TimelineEntry(alarm_id, T0, TimelineType.ESCALATED, None, {"step": step})],
        [Notification(f"level-{step + 1}", "mqtt", "alerts/x", {"alarm": alarm_id})],
    )


async def test_an_escalation_step_fires_once_with_its_notification(opened: OpenedStore) -> None:
    store = opened.store
    await registered(opened)
    await store.commit_batch(new_alarm_batch(), {})
    later = T0 + timedelta(minutes=2)
    assert await store.commit_decisions([decided(0), decided(1), decided(0)], later) == [
        True,
        True,
        False,
    ]
    # Decided on the alarm as the first call stored it (revision 2).
    assert await store.commit_decisions([decided(1, rev=2), decided(2, rev=2)], later) == [
        False,
        True,
    ]
    assert await store.fired_keys(["a-1", "a-9"]) == {"a-1": {(0, 0), (0, 1), (0, 2)}, "a-9": set()}
    assert (await store.get_alarm("a-1")) == alarm(escalation_level=3, rev=3)
    assert [t["type"] for t in await store.timeline("a-1")].count("escalated") == 3

    due = await store.due_outbox(later)
    assert [(i.target, i.channel, i.address, i.attempts) for i in due] == [
        ("level-1", "mqtt", "alerts/x", 0),
        ("level-2", "mqtt", "alerts/x", 0),
        ("level-3", "mqtt", "alerts/x", 0),
    ]
    assert due[0].payload == b'{"alarm":"a-1"}'
    assert await store.due_outbox(T0) == []  # not due before it was queued
    await store.outbox_sent(due[0].id, later)
    await store.outbox_failed(due[1].id, later + timedelta(minutes=5), "refused")
    assert [i.id for i in await store.due_outbox(later)] == [due[2].id]
    retry_at = later + timedelta(minutes=5)
    assert [i.id for i in await store.due_outbox(retry_at)] == [due[2].id, due[1].id]
    assert [i.id for i in await store.due_outbox(retry_at, limit=1)] == [due[2].id]
    # An address with a send in flight is left out, so the page goes to other receivers.
    assert await store.due_outbox(retry_at, busy={"alerts/x"}) == []
    assert len(await store.due_outbox(retry_at, busy=["elsewhere", "x"])) == 2
    rows = await store.outbox_for("a-1")
    assert [(r["target"], r["attempts"], r["last_error"]) for r in rows] == [
        ("level-1", 1, None),
        ("level-2", 1, "refused"),
        ("level-3", 0, None),
    ]
    assert rows[0]["sent_at"] == "2026-11-22T10:02:00.000000+00:00"
    assert rows[2]["sent_at"] is None
    assert await store.commit_decisions([], later) == []


async def test_a_batch_commits_its_new_alarms_first_steps_with_it(opened: OpenedStore) -> None:
    """Issue 18: the first step in the batch's own transaction, written as commit_decisions
    writes it: the decided row, the alarm at its new level, the entry, the outbox row."""
    store = opened.store
    await registered(opened)
    step = decided(0, rev=0)  # decided on the new alarm, before it was ever stored
    assert await store.commit_batch(new_alarm_batch(), {}, [step]) == [True]
    assert await store.fired_keys(["a-1"]) == {"a-1": {(0, 0)}}
    assert (await store.get_alarm("a-1")) == alarm(escalation_level=1, rev=1)
    assert [t["type"] for t in await store.timeline("a-1")] == ["raised", "escalated"]
    [note] = await store.due_outbox(T0 + timedelta(minutes=1))
    assert (note.target, note.payload) == ("level-1", b'{"alarm":"a-1"}')
    # Without steps a batch says so with an empty list.
    assert await store.commit_batch(BatchEffects(), {}) == []


async def test_a_first_step_decided_before_is_not_written_again_by_a_batch(
    opened: OpenedStore,
) -> None:
    """At most once: a step already stored is not recorded, its effects are not written
    again, and the batch's own alarm row is written instead of the escalated one."""
    store = opened.store
    await registered(opened)
    await store.commit_batch(new_alarm_batch(), {})
    assert await store.commit_decisions([decided(0)], T0) == [True]  # a-1 at revision 2
    again = new_alarm_batch("m2", "a-1")
    again = replace(again, alarms={"a-1": alarm(rev=2)})
    assert await store.commit_batch(again, {}, [decided(0, rev=2)]) == [False]
    assert (await store.get_alarm("a-1")) == alarm(rev=3)
    assert [t["type"] for t in await store.timeline("a-1")].count("escalated") == 1
    assert len(await store.due_outbox(T0 + timedelta(minutes=1))) == 1


# --- silences --------------------------------------------------------------------


async def test_ending_a_silence_releases_its_alarms_once(opened: OpenedStore) -> None:
    store = opened.store
    await registered(opened)
    sql = (
        "INSERT INTO silences (id, municipality, device_id, starts_at, ends_at, reason, "
        "created_by, created_at, include_priority_1) VALUES (?,?,?,?,?,?,?,?,?)"
    )
    ends = T0 + timedelta(hours=1)
    times: tuple[object, ...] = (T0, ends, T0)
    if opened.kind == "sqlite":
        times = tuple(t.isoformat(timespec="microseconds") for t in (T0, ends, T0))
    flag: object = 0 if opened.kind == "sqlite" else False
    await opened.rows(
        sql, "s-1", "0301", PEND.id, times[0], times[1], "repair", "ola", times[2], flag
    )
    (silence,) = await store.active_silences(T0)
    assert (silence.id, silence.device_id, silence.starts_at, silence.ends_at) == (
        "s-1",
        PEND.id,
        T0,
        ends,
    )
    assert await store.active_silences(ends) == []

    held = alarm(suppressed_by="silence:s-1")
    await store.commit_batch(replace(new_alarm_batch(), alarms={"a-1": held}), {})
    released = alarm(rev=1)
    entry = TimelineEntry("a-1", T0, TimelineType.RELEASED, None, {})
    args = ("s-1", "ola", T0 + timedelta(minutes=1), [released], [entry])
    assert await store.end_silence_releasing(*args, audit=AUDIT) is True
    assert await store.get_alarm("a-1") == alarm(rev=2)
    assert await store.active_silences(T0) == []
    assert await store.end_silence_releasing(*args, audit=AUDIT) is False
    assert [t["type"] for t in await store.timeline("a-1")] == ["raised", "released"]
    assert await opened.count("SELECT count(*) FROM audit") == 1


# --- retention -------------------------------------------------------------------


async def test_prune_deletes_old_rows_but_keeps_the_message_of_an_active_alarm(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await registered(opened)
    assert await store.oldest_received(RetainedTable.INBOX) is None
    await store.commit_batch(new_alarm_batch("m1", "a-1", T0), {})
    old_logged = press("m2", T0 + timedelta(seconds=1), None, Verdict.LOGGED)
    await store.commit_batch(BatchEffects(messages=[old_logged]), {})
    recent = press("m3", T0 + timedelta(days=10), None, Verdict.LOGGED)
    await store.commit_batch(BatchEffects(messages=[recent]), {})
    assert await store.oldest_received(RetainedTable.INBOX) == T0
    assert await store.oldest_received(RetainedTable.DEAD_LETTERS) is None

    before = T0 + timedelta(days=5)
    assert await store.prune(RetainedTable.DEAD_LETTERS, before, 100) == 0
    assert await store.prune(RetainedTable.INBOX, before, 100) == 1  # m2; m1 raised a-1
    assert await store.prune(RetainedTable.INBOX, before, 100) == 0
    assert sorted(r[0] for r in await opened.rows("SELECT msg_id FROM inbox")) == ["m1", "m3"]

    await store.save_alarms([alarm(state=AlarmState.RESOLVED, resolved_at=T0, rev=1)], [], audit=())
    assert await store.prune(RetainedTable.INBOX, before, 100) == 1
    assert await store.oldest_received(RetainedTable.INBOX) == T0 + timedelta(days=10)


# --- reads -------------------------------------------------------------------------


async def test_lists_come_in_queue_order_filtered_and_limited(opened: OpenedStore) -> None:
    store = opened.store
    await registered(opened)
    door = Alarm(
        "a-door", DOOR.id, DOOR.municipality, "door_open", Priority.NORMAL, AlarmState.OPEN, T0, T0
    )
    late = alarm("a-late", T0 + timedelta(minutes=1), kind="fall")
    done = alarm("a-done", T0, kind="other", state=AlarmState.RESOLVED, resolved_at=T0)
    effects = BatchEffects(alarms={a.id: a for a in (door, late, done, alarm())})
    await store.commit_batch(effects, {})
    assert [a.id for a in await store.list_alarms()] == ["a-1", "a-done", "a-late", "a-door"]
    assert [a.id for a in await store.list_alarms(state="open")] == ["a-1", "a-late", "a-door"]
    assert [a.id for a in await store.list_alarms(limit=2)] == ["a-1", "a-done"]
    assert [a.id for a in await store.list_alarms(municipalities=["4601"])] == ["a-door"]
    assert [a.id for a in await store.load_resolved_since(T0)] == ["a-done"]
    assert await store.load_resolved_since(T0 + timedelta(seconds=1)) == []
    assert await store.get_alarm("a-none") is None
    assert await store.raising_message("a-door") is None
    devices = await store.list_devices()
    assert [(d["id"], d["municipality"], d["active"]) for d in devices] == [
        (PEND.id, "0301", True),
        (DOOR.id, "4601", True),
    ]
    assert devices[0]["registered_at"] == "2026-11-22T10:00:00.000000+00:00"
    assert [d["id"] for d in await store.list_devices("4601")] == [DOOR.id]
    assert await store.get_devices([]) == []


# --- what supervision and the backlog read back at start ------------------------------


async def test_supervision_reads_back_last_heard_and_doses_and_the_backlog_its_start(
    opened: OpenedStore,
) -> None:
    store = opened.store
    disp = Device("disp-1", DeviceKind.MEDICATION_DISPENSER, "0301")
    await registered(opened, PEND, DOOR, disp)
    assert await opened.last_received() is None
    heard = T0 + timedelta(minutes=1)
    await store.commit_batch(new_alarm_batch(at=heard), {})
    taken_at = T0 + timedelta(minutes=10)
    taken = Event(disp.id, "t1", EventType.DOSE_TAKEN, taken_at, taken_at)
    message = MessageOutcome(
        RawMessage(f"alarmhub/v1/{disp.id}/events", b'{"id": "t1"}', taken_at),
        f"m:{disp.id}\x00t1",
        Verdict.LOGGED,
        disp,
        "t1",
        events=[EventOutcome(taken, Verdict.LOGGED, None, "dose")],
    )
    await store.commit_batch(BatchEffects(messages=[message], device_seen={disp.id: taken_at}), {})
    assert await opened.last_received() == taken_at
    assert await opened.history.last_heard() == {PEND.id: heard, DOOR.id: T0, disp.id: taken_at}

    now = T0 + timedelta(hours=1)
    doses = await opened.history.dose_history([disp.id], now, timedelta(hours=24))
    assert (doses[disp.id].since, doses[disp.id].taken) == (T0, (taken_at,))
    # A dose reported missed after it: the history starts there, the earlier dose settled.
    missed = Alarm(
        "a-dose", disp.id, "0301", "dose_missed", Priority.HIGH, AlarmState.OPEN, now, now
    )
    scheduled = T0 + timedelta(minutes=30)
    entry = TimelineEntry(
        missed.id, now, TimelineType.RAISED, None, {"msg_id": f"dose:{scheduled.isoformat()}"}
    )
    await store.commit_batch(BatchEffects(alarms={missed.id: missed}, timeline=[entry]), {})
    doses = await opened.history.dose_history([disp.id], now, timedelta(hours=24))
    assert (doses[disp.id].since, doses[disp.id].taken) == (scheduled, ())
