"""Whose note it is when a pseudonym's number changed (core/journal/identity.py): a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alarmhub.core.journal.document import Patient
from alarmhub.core.journal.identity import Held, Registered, patient_for
from alarmhub.core.journal_status import JournalReason

RAISED = datetime(2026, 11, 22, 1, 13, 5, tzinfo=UTC)
BEFORE, AFTER = RAISED - timedelta(seconds=1), RAISED + timedelta(seconds=1)
A, B = "01819012365", "17854112058"


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (Registered(A, None), Patient(A)),  # never changed
        (Registered(None, None), Patient(None)),  # no number: not applicable later
        (Registered(B, None), Patient(B)),  # a late registration replaces nobody
        (Registered(B, BEFORE), Patient(B)),  # changed before the alarm: B's alarm
        (Registered(B, RAISED), Held()),  # in the same instant: held
        (Registered(B, AFTER), Held()),  # replaced, or removed and registered again
        (Registered(None, AFTER), Held()),  # removed after the alarm: it was someone's
        (Registered(None, BEFORE), Patient(None)),
        (Registered(B, AFTER, released=A), Patient(A)),  # the administrator named A
        (Registered(None, AFTER, released=A), Patient(A)),
    ],
)
def test_patient_for(found: Registered, expected: Patient | Held) -> None:
    assert patient_for(RAISED, found) == expected


def test_held_says_why() -> None:
    assert Held().reason is JournalReason.NATIONAL_ID_CHANGED
    assert Held().reason.value == "national id changed since the alarm"
