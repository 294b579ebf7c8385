"""A batch decided with a device another process moved since is refused whole, on both stores.

The daemon decides with the registry it holds in memory; the CLI or another instance
writes the registry without this instance's lock. commit_batch compares, inside its
own transaction, where each device the batch was decided with
(BatchEffects.decided_with) is stored now, and raises DeviceMovedError naming the
moved ones with nothing written: the daemon reloads them and decides again
(daemon/gate.py, WriteGate.deciding).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    DeviceKind,
    Event,
    EventType,
    Priority,
    RawMessage,
    TimelineEntry,
    TimelineType,
    Verdict,
)
from alarmhub.core.pipeline import BatchEffects, EventOutcome, MessageOutcome
from alarmhub.store.errors import DeviceMovedError
from tests.store.conftest import OpenedStore

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
PEND = Device("pend-1", DeviceKind.SAFETY_ALARM, "0301", resident="r-1")
OTHER = Device("pend-2", DeviceKind.SAFETY_ALARM, "0301")


def _press(device: Device, alarm_id: str) -> BatchEffects:
    """A press of `device` as the pipeline decides it with that registry entry."""
    topic = f"alarmhub/v1/{device.id}/events"
    event = Event(device.id, "m1", EventType.BUTTON_PRESSED, T0, T0)
    message = MessageOutcome(
        RawMessage(topic, b'{"id": "m1", "type": "button.pressed"}', T0),
        f"m:{device.id}\x00m1",
        Verdict.LOGGED,
        device,
        "m1",
        events=[EventOutcome(event, Verdict.NEW, alarm_id, "press")],
    )
    alarm = Alarm(
        alarm_id,
        device.id,
        device.municipality,
        "button",
        Priority.CRITICAL,
        AlarmState.OPEN,
        T0,
        T0,
        resident=device.resident,
    )
    return BatchEffects(
        messages=[message],
        alarms={alarm_id: alarm},
        new_alarm_ids=[alarm_id],
        timeline=[TimelineEntry(alarm_id, T0, TimelineType.RAISED, None, {"msg_id": "m1"})],
        device_seen={device.id: T0},
        decided_with={device.id: device},
    )


async def _nothing_written(opened: OpenedStore) -> None:
    assert await opened.count("SELECT count(*) FROM inbox") == 0
    assert await opened.count("SELECT count(*) FROM alarms") == 0
    assert await opened.count("SELECT count(*) FROM timeline") == 0
    assert await opened.rows("SELECT last_seen_at FROM devices WHERE id = ?", PEND.id) == [(None,)]


@pytest.mark.parametrize(
    "stored",
    [
        replace(PEND, municipality="4601", resident=None),
        replace(PEND, municipality="4601"),  # the same reference, another person there
        replace(PEND, resident="r-2"),
        replace(PEND, resident=None),
    ],
    ids=["moved", "moved-same-reference", "another-resident", "resident-cleared"],
)
async def test_a_batch_decided_with_a_device_moved_since_is_refused_whole(
    opened: OpenedStore, stored: Device
) -> None:
    store = opened.store
    await store.register_devices([PEND, OTHER], T0, audit=())
    await store.register_devices([stored], T0, audit=())  # as the CLI does, meanwhile
    batch = _press(PEND, "a-1")
    batch.device_seen[OTHER.id] = T0  # a device of the batch that did not move
    batch.decided_with[OTHER.id] = OTHER
    with pytest.raises(DeviceMovedError) as refused:
        await store.commit_batch(batch, {})
    assert refused.value.ids == [PEND.id]
    await _nothing_written(opened)

    # Decided again with the device as stored, the batch commits.
    await store.commit_batch(_press(stored, "a-2"), {})
    assert await opened.rows("SELECT id, municipality, resident FROM alarms") == [
        ("a-2", stored.municipality, stored.resident)
    ]
    assert await opened.rows("SELECT municipality FROM inbox") == [(stored.municipality,)]


async def test_a_device_the_batch_did_not_hear_from_is_checked_too(opened: OpenedStore) -> None:
    """An alarm of alarmhub's own (a silent device) or a dead letter's: no message heard."""
    store = opened.store
    await store.register_devices([PEND], T0, audit=())
    await store.register_devices([replace(PEND, municipality="4601")], T0, audit=())
    internal = _press(PEND, "a-1")
    internal.messages, internal.device_seen = [], {}
    with pytest.raises(DeviceMovedError) as refused:
        await store.commit_batch(internal, {})
    assert refused.value.ids == [PEND.id]
    await _nothing_written(opened)


async def test_a_batch_where_its_devices_are_commits_and_marks_them_heard(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await store.register_devices([PEND], T0, audit=())
    await store.commit_batch(_press(PEND, "a-1"), {})
    assert await opened.rows("SELECT id, municipality, resident FROM alarms") == [
        ("a-1", "0301", "r-1")
    ]
    [(seen,)] = await opened.rows("SELECT last_seen_at FROM devices WHERE id = ?", PEND.id)
    assert seen is not None
