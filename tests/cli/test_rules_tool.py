"""`alarmhub rules test|explain|check` through the real command line, and SIGHUP reload."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path

import orjson
import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import REPO, run_cli, spawn_daemon, wait_until


def test_the_shipped_cases_pass_and_exercise_every_default_rule(tmp_path: Path) -> None:
    result = run_cli(
        ["rules", "test", str(REPO / "config" / "rules.tests.toml")],
        {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cases = tomllib.loads((REPO / "config" / "rules.tests.toml").read_text())["cases"]
    assert result.stdout.strip().endswith(f"{len(cases)} passed, 0 failed")
    assert "rules no case exercised" not in result.stdout


def test_a_failing_case_prints_a_diff_and_exits_1(tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text(
        '[[devices]]\nid = "p"\nkind = "safety_alarm"\n\n'
        '[[cases]]\nname = "wrong priority expected"\nstart = "2026-11-22T02:00:00+01:00"\n'
        'steps = [\n  { at = 0, device = "p", event = "button.pressed" },\n'
        '  { at = 1, expect = [{ device = "p", kind = "button", priority = 2 }] },\n]\n'
    )
    result = run_cli(
        ["rules", "test", str(cases)], {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    )
    assert result.returncode == 1
    assert "FAIL  wrong priority expected" in result.stdout
    assert "- expected {'device': 'p', 'kind': 'button', 'priority': 2}" in result.stdout
    assert "+ unexpected {'device': 'p', 'kind': 'button', 'priority': 1" in result.stdout
    assert "0 passed, 1 failed" in result.stdout


def test_explain_a_night_door_opening_lists_rule_priority_and_every_step(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    assert (
        run_cli(
            [
                "devices",
                "register",
                "--id",
                "door-1",
                "--kind",
                "door_sensor",
                "--municipality",
                "0301",
                "--settings",
                '{"windows": {"night": ["23:00", "06:00"]}}',
            ],
            env,
        ).returncode
        == 0
    )
    night = run_cli(
        [
            "rules",
            "explain",
            "--device",
            "door-1",
            "--event",
            "door.opened",
            "--at",
            "2026-11-22T02:13",
            "--json",
        ],
        env,
    )
    assert night.returncode == 0, night.stderr
    out = orjson.loads(night.stdout)
    assert out["rule"] == "door opened at night"
    assert out["alarm"] == {"kind": "door_open_night", "priority": 2}
    assert out["policy"] == "p2"
    assert [(s["level"], s["target"], s["at"]) for s in out["escalation"]][:2] == [
        (1, "operator_queue", "02:13:00"),
        (2, "supervisor", "02:18:00"),
    ]
    # 22:30 is night by the global window but not by this device's own (23:00-06:00).
    evening = orjson.loads(
        run_cli(
            [
                "rules",
                "explain",
                "--device",
                "door-1",
                "--event",
                "door.opened",
                "--at",
                "2026-11-22T22:30",
                "--json",
            ],
            env,
        ).stdout
    )
    assert evening["rule"] is None
    assert evening["outcome"] == "stored and logged; no alarm"
    unknown = run_cli(["rules", "explain", "--device", "nope", "--event", "door.opened"], env)
    assert unknown.returncode == 1
    assert "no device 'nope'" in unknown.stderr


def test_register_rejects_bad_settings_naming_the_field(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    bad = run_cli(
        [
            "devices",
            "register",
            "--id",
            "g",
            "--kind",
            "gps_tracker",
            "--municipality",
            "0301",
            "--settings",
            '{"geofence": {"lat": 95, "lon": 10, "radius_m": 100}}',
        ],
        env,
    )
    assert bad.returncode == 1
    assert "settings.geofence.lat" in bad.stderr


@pytest.mark.broker
def test_sighup_reloads_rules_and_a_broken_file_keeps_the_old_ones(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text((REPO / "config" / "rules.toml").read_text())
    log = tmp_path / "daemon.log"
    daemon = spawn_daemon(
        {
            "ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
            "ALARMHUB_MQTT_URL": broker.url,
            "ALARMHUB_MQTT_CLIENT_ID": client_id,
            "ALARMHUB_RULES": str(rules),
        },
        log,
    )
    try:
        assert wait_until(lambda: b"alarmhub.started" in log.read_bytes(), 15), log.read_text()
        rules.write_text(rules.read_text() + "\n[[rules]]\nname = 'broken'\nevent = 'teleport'\n")
        daemon.send_signal(signal.SIGHUP)
        assert wait_until(lambda: b"rules.reload_failed" in log.read_bytes(), 10)
        rules.write_text((REPO / "config" / "rules.toml").read_text().replace("p1 = 60", "p1 = 45"))
        daemon.send_signal(signal.SIGHUP)
        assert wait_until(lambda: b"rules.reloaded" in log.read_bytes(), 10)
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
    assert daemon.returncode == 0
