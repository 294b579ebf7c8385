"""The journal outbox (store/journal_outbox.py) on both stores: written with the resolve,
moved through its states, listed and aged (issue 17)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from alarmhub.core.journal_status import JournalState
from alarmhub.core.model import AlarmState, TimelineEntry, TimelineType
from alarmhub.store.errors import StaleAlarmError
from alarmhub.store.journal_outbox import JournalExport
from tests.store.conftest import OpenedStore
from tests.store.test_store_contract import AUDIT, T0, alarm, new_alarm_batch, registered

RESOLVED_AT = T0 + timedelta(minutes=5)


async def resolved_with_export(opened: OpenedStore, alarm_id: str = "a-1") -> JournalExport:
    await opened.store.commit_batch(new_alarm_batch(f"m-{alarm_id}", alarm_id), {})
    stored = await opened.store.get_alarm(alarm_id)
    assert stored is not None
    done = replace(
        stored, state=AlarmState.RESOLVED, resolved_at=RESOLVED_AT, resolved_by="kari", outcome="ok"
    )
    entry = TimelineEntry(alarm_id, RESOLVED_AT, TimelineType.RESOLVED, "kari", {"outcome": "ok"})
    export = JournalExport.new(alarm_id, "0301", RESOLVED_AT)
    await opened.store.save_alarms([done], [entry], audit=AUDIT, journal=[export])
    return export


async def test_the_export_row_commits_with_the_resolve_and_once_per_alarm(
    opened: OpenedStore,
) -> None:
    await registered(opened)
    export = await resolved_with_export(opened)
    assert await opened.store.journal_exports(["a-1"]) == [export]
    # A second resolve (a reopened alarm) keeps the first row: one note per alarm.
    again = replace(export, created_at=RESOLVED_AT + timedelta(hours=1))
    stored = await opened.store.get_alarm("a-1")
    assert stored is not None
    await opened.store.save_alarms([stored], [], audit=(), journal=[again])
    assert await opened.store.journal_exports(["a-1"]) == [export]


async def test_a_resolve_that_fails_leaves_no_export(opened: OpenedStore) -> None:
    """All or nothing: an alarm written on a stale revision rolls the export back too."""
    await registered(opened)
    await opened.store.commit_batch(new_alarm_batch(), {})
    stale = alarm(state=AlarmState.RESOLVED, resolved_at=RESOLVED_AT, rev=0)  # stored is rev 1
    with pytest.raises(StaleAlarmError):
        await opened.store.save_alarms(
            [stale], [], audit=(), journal=[JournalExport.new("a-1", "0301", RESOLVED_AT)]
        )
    assert await opened.store.journal_exports() == []


async def test_the_worker_moves_an_export_through_its_states(opened: OpenedStore) -> None:
    await registered(opened)
    export = await resolved_with_export(opened)
    assert await opened.store.due_journal(RESOLVED_AT - timedelta(seconds=1)) == []
    assert await opened.store.due_journal(RESOLVED_AT) == [export]
    assert await opened.store.oldest_waiting_journal() == RESOLVED_AT

    later = RESOLVED_AT + timedelta(seconds=30)
    failing = replace(export, attempts=1, next_at=later, last_error="ConnectError: refused")
    await opened.store.journal_save(failing)
    assert await opened.store.due_journal(RESOLVED_AT) == []
    assert await opened.store.journal_exports(failed=True) == [failing]

    sent = replace(
        failing,
        state=JournalState.SENT,
        location="http://journal/v1/status/1",
        attempts=2,
        sent_at=later,
        last_error=None,
    )
    await opened.store.journal_save(sent)
    assert await opened.store.due_journal(later) == [sent]  # due to be polled
    assert await opened.store.journal_exports(failed=True) == []

    refused = replace(sent, state=JournalState.REFUSED, reason="x" * 900, finished_at=later)
    await opened.store.journal_save(refused)
    [back] = await opened.store.journal_exports(failed=True)
    assert back == replace(refused, reason="x" * 500)  # kept short
    assert await opened.store.due_journal(later + timedelta(days=1)) == []
    assert await opened.store.oldest_waiting_journal() is None
