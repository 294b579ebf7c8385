"""Settings and the command line, through the real entry point."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from alarmhub.settings import SettingsError, load_settings, parse_database_url, parse_mqtt_url
from tests.support.helpers import run_cli


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "a.toml"
    conf.write_text(
        'mqtt_url = "mqtt://file-host:1883"\nhttp_listen = "0.0.0.0:9000"\nhttp_allow_plain = true\n'
    )
    monkeypatch.setenv("ALARMHUB_MQTT_URL", "mqtts://user:p%40ss@env-host")
    s = load_settings(conf)
    assert s.mqtt.host == "env-host"
    assert (s.mqtt.port, s.mqtt.tls, s.mqtt.username, s.mqtt.password) == (
        8883,
        True,
        "user",
        "p@ss",
    )
    assert (s.listen.host, s.listen.port) == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///alarmhub.db", Path("alarmhub.db")),
        ("sqlite:////var/lib/alarmhub/a.db", Path("/var/lib/alarmhub/a.db")),
    ],
)
def test_sqlite_urls(url: str, path: Path) -> None:
    assert parse_database_url(url).path == path


def test_mqtt_default_port() -> None:
    assert parse_mqtt_url("mqtt://broker").port == 1883


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ALARMHUB_MQTT_URL": "http://x"}, "ALARMHUB_MQTT_URL"),
        ({"ALARMHUB_DATABASE_URL": "mysql://x"}, "ALARMHUB_DATABASE_URL"),
        ({"ALARMHUB_HTTP_LISTEN": "8080"}, "ALARMHUB_HTTP_LISTEN"),
        ({"ALARMHUB_MQTT_CLIENT_ID": "a/b"}, "ALARMHUB_MQTT_CLIENT_ID"),
        ({"ALARMHUB_MAX_PAYLOAD_BYTES": "lots"}, "ALARMHUB_MAX_PAYLOAD_BYTES"),
    ],
)
def test_bad_setting_is_one_line_naming_it_and_exit_2(env: dict[str, str], named: str) -> None:
    result = run_cli(["alarms", "list"], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert named in lines[0]


def test_unknown_key_in_settings_file_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "a.toml"
    conf.write_text('mqtt_urll = "mqtt://x"\n')
    with pytest.raises(SettingsError, match="mqtt_urll"):
        load_settings(conf)


def test_register_list_and_import_devices(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    ok = run_cli(
        [
            "devices",
            "register",
            "--id",
            "pend-1",
            "--kind",
            "safety_alarm",
            "--municipality",
            "0301",
            "--heartbeat-interval",
            "300",
            "--label",
            "Flat 3",
        ],
        env,
    )
    assert ok.returncode == 0, ok.stderr
    bad = run_cli(
        ["devices", "register", "--id", "x", "--kind", "safety_alarm", "--municipality", "301"], env
    )
    assert bad.returncode == 1
    assert "four-digit" in bad.stderr
    csv = tmp_path / "d.csv"
    csv.write_text(
        "id,kind,municipality,heartbeat_interval,label\nd-1,door_sensor,4601,,\nd-2,gps_tracker,4601,600,Tracker\n"
    )
    imp = run_cli(["devices", "import", str(csv)], env)
    assert imp.returncode == 0, imp.stderr
    listed = orjson.loads(run_cli(["devices", "list", "--json"], env).stdout)
    assert [(d["id"], d["municipality"], d["heartbeat_interval_s"]) for d in listed] == [
        ("pend-1", "0301", 300),
        ("d-1", "4601", None),
        ("d-2", "4601", 600),
    ]


def test_import_with_a_bad_row_imports_nothing_and_names_every_bad_row(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    csv = tmp_path / "d.csv"
    csv.write_text(
        "id,kind,municipality\nok-1,door_sensor,4601\nbad-1,toaster,4601\nok-2,fall_sensor,46x1\nok-1,door_sensor,4601\n"
    )
    result = run_cli(["devices", "import", str(csv)], env)
    assert result.returncode == 1
    assert "line 3" in result.stderr
    assert "toaster" in result.stderr
    assert "line 4" in result.stderr
    assert "line 5" in result.stderr
    assert orjson.loads(run_cli(["devices", "list", "--json"], env).stdout) == []


def test_import_without_required_column_says_which(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    csv = tmp_path / "d.csv"
    csv.write_text("id,kind\nx,door_sensor\n")
    result = run_cli(["devices", "import", str(csv)], env)
    assert result.returncode == 1
    assert "municipality" in result.stderr


def test_alarms_list_json_is_an_array_with_the_documented_fields(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    result = run_cli(["alarms", "list", "--json", "--state", "open"], env)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == []


def test_rules_check_reports_key_path_of_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text(
        '[[rules]]\nname = "x"\nevent = "button.pressed"\nalarm = "button"\npriority = 9\n'
    )
    result = run_cli(
        ["rules", "check", str(bad)], {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    )
    assert result.returncode == 1
    assert "rules[0].priority" in result.stderr
    good = run_cli(["rules", "check"], {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"})
    assert good.returncode == 0
    assert "OK" in good.stdout
