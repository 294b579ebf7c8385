"""Message identity (issue 12 item 12) as tables: a reused id or a second identical
press is a new call for help; a redelivery within the window is still nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import load_rules
from alarmhub.core.actions import Action, Applied, apply_action
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.dedup import Identity, Prior, Windows, identify
from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    DeviceKind,
    Priority,
    RawMessage,
    Verdict,
)
from alarmhub.core.pipeline import BatchEffects, Context, decode_all, fingerprint, process_batch
from tests.support.helpers import REPO

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
PENDANT = Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")
SOS = Device("0x00158d0001a2b3c4", DeviceKind.SAFETY_ALARM, "0301", bridge="z2m-0301-a")
PHONE = Device("res1/phone", DeviceKind.GPS_TRACKER, "0301")
CTX = Context(
    registry={d.id: d for d in (PENDANT, SOS, PHONE)},
    catalog=load_catalog(REPO / "devices"),
    rules=load_rules(REPO / "config" / "rules.toml"),
    limits=DecodeLimits(),
)
HOUR = 3600


# --- the pure decision -----------------------------------------------------------

IDENTIFY_ROWS = [
    # (case, age of the stored copy in s, same bytes, by content, its alarm still active, expected)
    ("a resend a minute later", 60, True, False, True, Identity.REDELIVERY),
    ("a redelivery after a crash, 23 h later", 23 * HOUR, True, False, True, Identity.REDELIVERY),
    (
        "the same id and bytes after the window",
        25 * HOUR,
        True,
        False,
        True,
        Identity.WINDOW_PASSED,
    ),
    ("an id reused with other content", 2 * HOUR, False, False, True, Identity.ID_REUSED),
    ("a redelivery whose alarm was resolved since", 60, True, False, False, Identity.REDELIVERY),
    ("identical content, its alarm still open", 5, True, True, True, Identity.REDELIVERY),
    (
        "identical content after its alarm was resolved",
        5,
        True,
        True,
        False,
        Identity.ALARM_RESOLVED,
    ),
    ("a wall clock stepped back an hour", -HOUR, True, False, True, Identity.REDELIVERY),
]


@pytest.mark.parametrize(
    ("case", "age_s", "same", "by_content", "active", "expected"),
    IDENTIFY_ROWS,
    ids=[r[0] for r in IDENTIFY_ROWS],
)
def test_identify(
    case: str, age_s: int, same: bool, by_content: bool, active: bool, expected: Identity
) -> None:
    del case
    prior = Prior(T0, b"first", ("a-1",))
    got = identify(
        prior,
        b"first" if same else b"other",
        T0 + timedelta(seconds=age_s),
        Windows().message_id,
        by_content=by_content,
        alarm_active=lambda _id: active,
    )
    assert got is expected


def test_a_request_still_being_resent_is_a_redelivery_after_its_alarm_was_resolved() -> None:
    """A SCAIP request answered HOLD moments ago (`resending`) is the device still
    resending it: the same bytes are that request, even once its alarm was resolved
    between two resends. Other bytes under its `ref` are still another message."""
    prior = Prior(T0, b"first", ("a-1",))
    later = T0 + timedelta(seconds=15)

    def judged(payload: bytes, *, resending: bool) -> Identity:
        return identify(
            prior,
            payload,
            later,
            Windows().message_id,
            by_content=True,
            alarm_active=lambda _id: False,  # resolved since
            resending=resending,
        )

    assert judged(b"first", resending=False) is Identity.ALARM_RESOLVED
    assert judged(b"first", resending=True) is Identity.REDELIVERY
    assert judged(b"other", resending=True) is Identity.ID_REUSED


def test_nothing_stored_is_new() -> None:
    got = identify(None, b"x", T0, timedelta(hours=24), by_content=False, alarm_active=bool)
    assert got is Identity.NEW


@pytest.mark.parametrize("retained", [True, False])
def test_a_retained_copy_of_a_stored_message_is_a_redelivery_however_old(retained: bool) -> None:
    """The broker re-sends a topic's retained message at every subscription."""
    prior = Prior(T0, b"first")
    days_later = T0 + timedelta(days=3)
    got = identify(
        prior,
        b"first",
        days_later,
        Windows().message_id,
        by_content=False,
        alarm_active=bool,
        retained=retained,
    )
    assert got is (Identity.REDELIVERY if retained else Identity.WINDOW_PASSED)
    # Other bytes under the same id are another message, retained or not.
    other = identify(
        prior,
        b"other",
        T0 + timedelta(hours=1),
        Windows().message_id,
        by_content=False,
        alarm_active=bool,
        retained=True,
    )
    assert other is Identity.ID_REUSED


RETENTION = timedelta(days=14)
STALE_RETAINED_ROWS = [
    # (case, retained, stored copy (age in days, same bytes) or None, device time's age in
    #  days or None, expected)
    ("its row pruned, the copy 15 days old", True, None, 15, Identity.STALE_RETAINED),
    ("never stored, 13 days old: may be news", True, None, 13, Identity.NEW),
    ("no device time: cannot be dated", True, None, None, Identity.NEW),
    ("not retained: the device's own late message", False, None, 15, Identity.NEW),
    ("its row still kept", True, (13, True), 15, Identity.REDELIVERY),
    ("other bytes under its id, itself 15 days old", True, (1, False), 15, Identity.STALE_RETAINED),
    ("other bytes under its id, fresh", True, (1, False), 0, Identity.ID_REUSED),
]


@pytest.mark.parametrize(
    ("case", "retained", "stored", "device_days", "expected"),
    STALE_RETAINED_ROWS,
    ids=[r[0] for r in STALE_RETAINED_ROWS],
)
def test_a_retained_copy_older_than_the_inbox_keeps_is_stale(
    case: str,
    retained: bool,
    stored: tuple[int, bool] | None,
    device_days: int | None,
    expected: Identity,
) -> None:
    """A retained message whose inbox row was pruned used to be NEW: the dead phone heard."""
    prior = None
    if stored is not None:
        days, same = stored
        prior = Prior(T0 - timedelta(days=days), b"position" if same else b"other")
    got = identify(
        prior,
        b"position",
        T0,
        Windows().message_id,
        by_content=False,
        alarm_active=bool,
        retained=retained,
        device_time=None if device_days is None else T0 - timedelta(days=device_days),
        retained_max_age=RETENTION,
    )
    assert got is expected, case


# --- through the pipeline: what an operator would see --------------------------


def press(msg_id: str, ts: datetime, received_at: datetime) -> RawMessage:
    payload = {"id": msg_id, "ts": ts.isoformat(), "type": "button.pressed"}
    return RawMessage("alarmhub/v1/pend-1/events", orjson.dumps(payload), received_at)


def sos_press(received_at: datetime) -> RawMessage:
    """A Zigbee2MQTT SOS button: no message id, so its id is made from the bytes."""
    payload = b'{"action":"emergency","battery":90,"linkquality":120}'
    return RawMessage(f"zigbee2mqtt/{SOS.bridge}/{SOS.id}", payload, received_at)


def run(raws: list[RawMessage], index: AlarmIndex, stored: dict[str, Prior]) -> BatchEffects:
    """One batch as the daemon runs it; `stored` plays the inbox (what dedup reads)."""
    decoded = decode_all(raws, CTX)
    fps = [fingerprint(r, d) for r, d in zip(raws, decoded, strict=True)]
    effects = process_batch(raws, decoded, fps, dict(stored), index, CTX)
    for a in effects.alarms.values():
        index.put(a)
    for m in effects.messages:
        if m.verdict is not Verdict.REDELIVERY:
            ids = tuple(e.alarm_id for e in m.events if e.alarm_id)
            stored[m.fingerprint] = Prior(m.raw.received_at, m.raw.payload, ids)
    return effects


def resolve(index: AlarmIndex, alarm: Alarm, at: datetime) -> None:
    result = apply_action(alarm, Action.RESOLVE, "op-1", at, outcome="false_alarm")
    assert isinstance(result, Applied)
    index.put(result.alarm)


PENDANT_ROWS = [
    # (case, the second copy: same bytes?, hours after the first, expected verdict of the
    #  second press, does it raise an alarm of its own?)
    ("a resend of the same press, 1 min later", True, 1 / 60, Verdict.REDELIVERY, False),
    ("a redelivery after a crash, 23 h later", True, 23, Verdict.REDELIVERY, False),
    ("a pendant's counter restarted: id reused 30 days later", False, 30 * 24, Verdict.NEW, True),
    ("a pendant's counter restarted: id reused 2 h later", False, 2, Verdict.NEW, True),
    ("the same id and bytes a day and a half later", True, 36, Verdict.NEW, True),
]


@pytest.mark.parametrize(
    ("case", "same_bytes", "hours", "verdict", "raises"),
    PENDANT_ROWS,
    ids=[r[0] for r in PENDANT_ROWS],
)
def test_a_reused_message_id_is_a_new_press_a_redelivery_is_not(
    case: str, same_bytes: bool, hours: float, verdict: Verdict, raises: bool
) -> None:
    """The first press is resolved by an operator; then message id "7" comes again."""
    del case
    index, stored = AlarmIndex(), dict[str, Prior]()
    first = run([press("7", T0, T0)], index, stored)
    [earlier] = first.alarms.values()
    resolve(index, earlier, T0 + timedelta(minutes=10))
    later = T0 + timedelta(hours=hours)
    again = press("7", T0 if same_bytes else later, later)
    second = run([again], index, stored)
    [message] = second.messages
    got = message.events[0].verdict if message.events else message.verdict
    assert got is verdict
    assert bool(second.new_alarm_ids) is raises
    if raises:
        # Its own alarm, beside the earlier one: never the earlier alarm's id, which
        # would overwrite that alarm's record.
        [new_id] = second.new_alarm_ids
        assert new_id != earlier.id
        assert second.alarms[new_id].is_active


@pytest.mark.parametrize("resolved", [True, False], ids=["resolved", "still-open"])
def test_an_id_reused_after_its_inbox_row_was_pruned_does_not_take_the_stored_alarms_id(
    resolved: bool,
) -> None:
    """Inbox rows are pruned after inbox_retention_days, alarms are not: the reused
    id is new to dedup, and judge would mint the stored alarm's own id. The store
    refused that write for ever (every later message held unacknowledged); the
    alarm is now keyed apart from any id the index knows is taken."""
    index, stored = AlarmIndex(), dict[str, Prior]()
    first = run([press("7", T0, T0)], index, stored)
    [earlier] = first.alarms.values()
    if resolved:
        resolve(index, earlier, T0 + timedelta(minutes=10))
        # Resolved alarms leave memory; the shell learns the id when the store
        # refuses to write over it (WriteGate.deciding -> AppState.reload).
        index.learn_taken(earlier.id)
    stored.clear()  # the pruner deleted the inbox row
    later = T0 + timedelta(days=30)
    second = run([press("7", later, later)], index, stored)
    [message] = second.messages
    assert message.identity is Identity.NEW
    assert message.events[0].verdict is Verdict.NEW
    [new_id] = second.new_alarm_ids
    assert new_id != earlier.id
    assert second.alarms[new_id].is_active
    if not resolved:
        # Too old to merge into (merge_max_age): it stays in the queue, set aside.
        assert second.alarms[earlier.id].is_active
        assert second.alarms[earlier.id].superseded_by == new_id


def test_an_identical_press_after_its_alarm_was_resolved_is_a_new_alarm() -> None:
    """Two presses of a Zigbee SOS button are identical bytes: once the first alarm
    is resolved, the second press is a new call for help, not a redelivery."""
    index, stored = AlarmIndex(), dict[str, Prior]()
    first = run([sos_press(T0)], index, stored)
    [alarm] = first.alarms.values()
    resent = run([sos_press(T0 + timedelta(seconds=2))], index, stored)
    assert [m.verdict for m in resent.messages] == [Verdict.REDELIVERY]
    resolve(index, alarm, T0 + timedelta(seconds=8))
    second = run([sos_press(T0 + timedelta(seconds=12))], index, stored)
    assert len(second.new_alarm_ids) == 1
    assert second.new_alarm_ids[0] != alarm.id
    assert second.messages[0].identity is Identity.ALARM_RESOLVED


def test_a_reused_id_within_one_batch_is_two_messages_a_copy_is_one() -> None:
    index: AlarmIndex = AlarmIndex()
    later = T0 + timedelta(minutes=5)
    effects = run([press("7", T0, T0), press("7", T0, T0), press("7", later, later)], index, {})
    assert [m.identity for m in effects.messages] == [
        Identity.NEW,
        Identity.REDELIVERY,
        Identity.ID_REUSED,
    ]
    # The press with the reused id joins the open alarm the first one raised.
    assert [m.events[0].verdict for m in effects.messages if m.events] == [
        Verdict.NEW,
        Verdict.REPEAT,
    ]


def test_a_phone_dead_for_days_is_not_heard_from_its_retained_position() -> None:
    """OwnTracks keeps positions retained; alarmhub subscribes again at each connect.

    The retained copy, three days after it was stored, used to be a new message:
    its time clamped to its arrival, the phone counted as heard, its open
    device_offline alarm resolved by alarmhub.
    """
    stored_at = T0 - timedelta(days=3)
    position = {"_type": "location", "lat": 59.9139, "lon": 10.7522, "acc": 12, "batt": 40}
    payload = orjson.dumps({**position, "tst": int(stored_at.timestamp()), "tid": "ph"})
    offline = Alarm(
        "off-1",
        PHONE.id,
        "0301",
        "device_offline",
        Priority.TECHNICAL,
        AlarmState.OPEN,
        T0 - timedelta(days=2),
        T0 - timedelta(days=2),
    )
    index = AlarmIndex()
    index.load([offline])
    raw = RawMessage(f"owntracks/{PHONE.id}", payload, T0, retained=True)
    [decoded] = decode_all([raw], CTX)
    fp = fingerprint(raw, decoded)
    effects = process_batch([raw], [decoded], [fp], {fp: Prior(stored_at, payload)}, index, CTX)
    [message] = effects.messages
    assert message.verdict is Verdict.REDELIVERY
    assert "off-1" not in effects.alarms
    assert PHONE.id not in effects.device_seen


def test_a_phone_dead_for_weeks_is_not_heard_from_a_retained_position_whose_row_was_pruned() -> (
    None
):
    """Past the inbox's retention the stored copy is gone, and the broker still re-sends
    the retained position at each reconnect: it was a new message again (15 days old,
    clamped to its arrival), the phone heard, its device_offline resolved."""
    sent_at = T0 - timedelta(days=15)
    position = {"_type": "location", "lat": 59.9139, "lon": 10.7522, "acc": 12, "batt": 40}
    payload = orjson.dumps({**position, "tst": int(sent_at.timestamp()), "tid": "ph"})
    offline = Alarm(
        "off-1",
        PHONE.id,
        "0301",
        "device_offline",
        Priority.TECHNICAL,
        AlarmState.OPEN,
        T0 - timedelta(days=14),
        T0 - timedelta(days=14),
    )
    ctx = replace(CTX, retained_max_age=RETENTION)
    for retained, verdict in ((True, Verdict.REDELIVERY), (False, Verdict.LOGGED)):
        index = AlarmIndex()
        index.load([offline])
        raw = RawMessage(f"owntracks/{PHONE.id}", payload, T0, retained=retained)
        [decoded] = decode_all([raw], ctx)
        fp = fingerprint(raw, decoded)
        effects = process_batch([raw], [decoded], [fp], {}, index, ctx)  # nothing stored
        [message] = effects.messages
        assert message.verdict is verdict
        assert message.identity is (Identity.STALE_RETAINED if retained else Identity.NEW)
        # Not retained, it is the phone's own message, however late: heard (as before).
        assert ("off-1" in effects.alarms) is not retained
        assert (PHONE.id in effects.device_seen) is not retained


SCAIP_PENDANT = Device("4790012345", DeviceKind.SAFETY_ALARM, "0301", profile="scaip")
SCAIP_BODY = b"<mrq><ref>F1</ref><cid>4790012345</cid><dty>0003</dty><stc>0010</stc></mrq>"


@pytest.mark.parametrize("resending", [True, False], ids=["still-resent", "after-its-session"])
def test_a_scaip_request_resent_after_a_fast_resolve_answers_its_alarm(resending: bool) -> None:
    """Under hold_until_taken an operator may take and resolve the alarm between two of
    the device's resends: that resend (`resending`, set by the intake) is the request
    again, about the resolved alarm; the same bytes once the device heard its answer
    (a ref counter restart) are a new alarm, as before."""
    ctx = replace(CTX, registry={**CTX.registry, SCAIP_PENDANT.id: SCAIP_PENDANT})
    index, stored = AlarmIndex(), dict[str, Prior]()
    first = RawMessage(
        f"scaip/{SCAIP_PENDANT.id}", SCAIP_BODY, T0, content_type="application/scaip+xml"
    )
    [decoded] = decode_all([first], ctx)
    effects = process_batch([first], [decoded], [fingerprint(first, decoded)], {}, index, ctx)
    [alarm] = effects.alarms.values()
    [message] = effects.messages
    stored[message.fingerprint] = Prior(T0, SCAIP_BODY, (alarm.id,))
    index.put(alarm)
    resolve(index, alarm, T0 + timedelta(seconds=10))
    again = replace(first, received_at=T0 + timedelta(seconds=15), resending=resending)
    [decoded] = decode_all([again], ctx)
    fp = fingerprint(again, decoded)
    second = process_batch([again], [decoded], [fp], stored, index, ctx)
    [message] = second.messages
    if resending:
        assert message.verdict is Verdict.REDELIVERY
        assert message.earlier_alarm_ids == (alarm.id,)
        assert second.new_alarm_ids == []
    else:
        assert message.identity is Identity.ALARM_RESOLVED
        [new_id] = second.new_alarm_ids
        assert new_id != alarm.id
