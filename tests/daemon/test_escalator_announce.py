"""How the escalator tells the first steps ingest committed: each alarm shown once as
stored, counted per level, and logged per alarm only where that line is wanted.

Issue 18: in a storm each `alarm.escalated` line is at debug, and with debug off it is
not built at all; the metric is added once per level, not per row. The Escalator is
driven directly here (no store, no broker): `first_steps` decides, the test plays the
commit, `first_steps_committed` announces.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
from structlog.testing import LogCapture

from alarmhub.clock import FakeClock
from alarmhub.config.rules import parse_rules
from alarmhub.core.model import Alarm, AlarmState, Priority, amended
from alarmhub.daemon import escalator as escalator_module
from alarmhub.daemon.escalator import ESCALATED_LINES_PER_BATCH, Escalator
from alarmhub.daemon.state import HubState
from alarmhub.observability.metrics import Metrics

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
RULES = parse_rules((Path(__file__).parents[2] / "config" / "rules.toml").read_text())


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogCapture]:
    """Lines as the daemon's filtering logger passes them (level set by `_at`).

    The module's logger is a fresh proxy: one cached under another configuration by an
    earlier test in this process would not see this one.
    """
    old = structlog.get_config()
    capture = LogCapture()
    # As configure_logging merges bound context: the line's fields as written out.
    processors: list[Any] = [structlog.contextvars.merge_contextvars, capture]
    structlog.configure(processors=processors, cache_logger_on_first_use=False)
    monkeypatch.setattr(escalator_module, "log", structlog.get_logger("alarmhub.escalator"))
    try:
        yield capture
    finally:
        structlog.configure(**old)


def _at(level: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))


def _committed(n: int, skip: int | None = None) -> tuple[Escalator, Metrics, list[Any], set[str]]:
    """n new alarms decided and committed (all recorded but `skip`); what was shown."""
    shown: list[tuple[Alarm, bool]] = []
    metrics = Metrics()
    state = HubState(RULES)
    none = cast("Any", None)  # neither store nor gate is touched by these two calls
    escalator = Escalator(
        state, none, none, FakeClock(NOW), metrics, lambda a, n: shown.append((a, n))
    )
    alarms = [
        Alarm(f"a-{i}", f"d-{i}", "0301", "button", Priority.CRITICAL, AlarmState.OPEN, NOW, NOW)
        for i in range(n)
    ]
    alarms = [amended(a, policy="p1") for a in alarms]
    rows = escalator.first_steps(alarms, NOW)
    assert len(rows) == n
    recorded = [i != skip for i in range(n)]
    # As ingest's _apply leaves them: the escalated alarm, at the revision the store wrote.
    stored = {r.alarm_id: amended(r.alarm, rev=1) for r in rows if r.alarm is not None}
    announced = escalator.first_steps_committed(rows, recorded, stored)
    return escalator, metrics, shown, announced


def _escalations(metrics: Metrics, level: str) -> float | None:
    return metrics.registry.get_sample_value("alarmhub_escalations_total", {"level": level})


def test_a_storm_shows_each_alarm_once_as_stored_and_counts_it_without_a_line_each(
    logs: LogCapture,
) -> None:
    _at(logging.INFO)
    n = ESCALATED_LINES_PER_BATCH * 3
    escalator, metrics, shown, announced = _committed(n, skip=4)
    assert len(shown) == n - 1 == len(announced)
    assert "a-4" not in announced  # recorded by another instance first: not told here
    assert len({a.id for a, _ in shown}) == n - 1
    assert all((a.escalation_level, a.rev) == (1, 1) for a, _ in shown)  # as stored
    assert _escalations(metrics, "1") == n - 1
    assert escalator.fired_count == n - 1
    # Learnt as fired whether recorded now or not: never decided twice.
    assert all(escalator.fired[f"a-{i}"] == {(0, 0)} for i in range(n))
    assert [e["event"] for e in logs.entries] == ["alarms.escalated"]
    assert logs.entries[0]["count"] == n - 1
    assert logs.entries[0]["by_level"] == {"1": n - 1}


def test_a_storm_with_debug_on_logs_each_alarm_at_debug_with_its_id(logs: LogCapture) -> None:
    _at(logging.DEBUG)
    n = ESCALATED_LINES_PER_BATCH + 1
    _committed(n)
    each = [e for e in logs.entries if e["event"] == "alarm.escalated"]
    assert {e["alarm_id"] for e in each} == {f"a-{i}" for i in range(n)}
    assert {e["log_level"] for e in each} == {"debug"}
    assert [e["count"] for e in logs.entries if e["event"] == "alarms.escalated"] == [n]


def test_a_few_steps_are_logged_each_at_info(logs: LogCapture) -> None:
    _at(logging.INFO)
    _, metrics, shown, _ = _committed(3)
    each = [e for e in logs.entries if e["event"] == "alarm.escalated"]
    assert [(e["alarm_id"], e["log_level"], e["level"]) for e in each] == [
        (f"a-{i}", "info", 1) for i in range(3)
    ]
    assert not [e for e in logs.entries if e["event"] == "alarms.escalated"]
    assert _escalations(metrics, "1") == 3
    assert len(shown) == 3
