"""Every device is supervised (issue 12 item 16): kind defaults, and a warning at registration."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from alarmhub.clock import FakeClock
from alarmhub.config.rules import load_rules, parse_rules
from alarmhub.core.device_settings import parse_settings
from alarmhub.core.model import Device, DeviceKind, Event
from alarmhub.daemon.state import HubState
from alarmhub.daemon.supervisor import Supervision
from alarmhub.observability.metrics import Metrics
from tests.support.helpers import REPO, run_cli

RULES = REPO / "config" / "rules.toml"
MINIMAL = '[[rules]]\nname = "logged"\nevent = "heartbeat"\n'


@pytest.mark.parametrize(
    ("kind", "own_interval_s", "defaults", "expected_s"),
    [
        # Its own interval wins over the kind's default.
        (DeviceKind.SAFETY_ALARM, 300, "safety_alarm = 3600", 300),
        # Registered without one: its kind's default.
        (DeviceKind.SAFETY_ALARM, None, "safety_alarm = 3600", 3600),
        (DeviceKind.GPS_TRACKER, None, "safety_alarm = 3600\ngps_tracker = 900", 900),
        # Neither: not supervised (and the daemon and the CLI say so).
        (DeviceKind.DOOR_SENSOR, None, "safety_alarm = 3600", None),
    ],
)
def test_heartbeat_interval_falls_back_to_the_kind_default(
    kind, own_interval_s, defaults, expected_s
):
    rules = parse_rules(f"[default_heartbeat_interval_s]\n{defaults}\n{MINIMAL}")
    device = Device("d", kind, "0301", heartbeat_interval_s=own_interval_s)
    got = rules.heartbeat_interval(device)
    assert got == (timedelta(seconds=expected_s) if expected_s is not None else None)


def test_the_shipped_rules_supervise_every_device_kind() -> None:
    defaults = load_rules(RULES).heartbeat_defaults
    assert set(defaults) == set(DeviceKind)


@pytest.mark.parametrize(
    ("rules_text", "expected"),
    [
        (None, "supervised with the safety_alarm default of 3600 s"),
        (MINIMAL, "will NOT be supervised"),
    ],
)
def test_registering_without_an_interval_warns(tmp_path: Path, rules_text, expected) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    if rules_text is not None:
        (tmp_path / "rules.toml").write_text(rules_text)
        env["ALARMHUB_RULES"] = str(tmp_path / "rules.toml")
    args = ["devices", "register", "--id", "p1", "--kind", "safety_alarm", "--municipality", "0301"]
    result = run_cli(args, env)
    assert result.returncode == 0, result.stderr
    assert expected in result.stderr
    with_interval = run_cli([*args[:3], "p2", *args[4:], "--heartbeat-interval", "300"], env)
    assert with_interval.returncode == 0
    assert "heartbeat-interval" not in with_interval.stderr  # other warnings may apply (profile)


async def _no_events(events: list[tuple[Event, Device]]) -> None:
    del events


@pytest.mark.parametrize(
    ("defaults", "interval_s", "warned"),
    [
        ("", None, True),  # no interval, no default for its kind: said out loud
        ("safety_alarm = 3600", None, False),  # the kind's default supervises it
        ("", 300, False),  # its own interval
    ],
)
def test_a_device_registered_unsupervised_is_logged(defaults, interval_s, warned) -> None:
    """Item 16: the daemon's registration path (API, CLI via the registry refresh) warns."""
    rules = parse_rules(f"[default_heartbeat_interval_s]\n{defaults}\n{MINIMAL}")
    clock = FakeClock(datetime(2026, 11, 25, 10, tzinfo=UTC))
    sup = Supervision(HubState(rules), clock, Metrics(), raise_events=_no_events)
    device = Device("p1", DeviceKind.SAFETY_ALARM, "0301", heartbeat_interval_s=interval_s)
    with capture_logs() as logs:
        sup.watch(device, sup.now(), clock.now(), 3)
    events = [e for e in logs if e["event"] == "supervision.device_unsupervised"]
    assert [e["device_id"] for e in events] == (["p1"] if warned else [])
    assert (len(sup.heartbeats) == 1) is not warned


@pytest.mark.parametrize("times", [["20:00", "08:00"], ["08:00", "8:00"], ["08:00", "08:00"]])
def test_dose_times_in_any_order_are_stored_in_order_and_supervised(times: list[str]) -> None:
    """The settings accepted times out of order or twice ("8:00" beside "08:00"); the
    supervisor's schedule refused them, so that dispenser (and the devices after it)
    went unwatched and the next start failed (found in review, 2026-12-06)."""
    settings = parse_settings({"dose_schedule": {"times": times}})
    assert list(settings.dose_times) == sorted(set(settings.dose_times))
    rules = load_rules(REPO / "config" / "rules.toml")
    clock = FakeClock(datetime(2026, 11, 25, 10, tzinfo=UTC))
    sup = Supervision(HubState(rules), clock, Metrics(), raise_events=_no_events)
    for n, dose_times in enumerate([settings.dose_times, tuple(times)]):  # and as stored before
        device = Device(
            f"disp-{n}",
            DeviceKind.MEDICATION_DISPENSER,
            "0301",
            settings=replace(settings, dose_times=dose_times),
        )
        sup.watch(device, sup.now(), clock.now(), 3)
        assert sup.doses.settled(device.id) is not None
