"""`amended` is `dataclasses.replace` for an Alarm, copied slot by slot (issue 18)."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarmhub.core.model import Alarm, AlarmState, Priority, amended

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
BASE = Alarm("a-1", "pend-1", "0301", "button", Priority.CRITICAL, AlarmState.OPEN, T0, T0)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"rev": 7},
        {"escalation_level": 2},
        {"resident": "r-17", "policy": "p1"},
        {"state": AlarmState.RESOLVED, "resolved_at": T0 + timedelta(minutes=3), "outcome": "auto"},
    ],
)
def test_amended_is_replace(changes: dict[str, Any]) -> None:
    got = amended(BASE, **changes)
    assert got == replace(BASE, **changes)
    assert got is not BASE
    assert BASE.rev == 0  # the original is untouched


@given(st.integers(0, 10**6), st.text(max_size=8), st.integers(0, 5))
def test_every_field_is_copied(rev: int, note: str, level: int) -> None:
    alarm = replace(BASE, rev=rev, cause_text=note, escalation_level=level, clearing_at=T0)
    copied = amended(alarm)
    assert [getattr(copied, f.name) for f in fields(Alarm)] == [
        getattr(alarm, f.name) for f in fields(Alarm)
    ]


def test_an_unknown_field_is_refused_as_replace_refuses_it() -> None:
    with pytest.raises(TypeError):
        amended(BASE, nonsense=1)
