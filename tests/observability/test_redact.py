"""No broker password in anything alarmhub shows (issue 13 item 10).

`ALARMHUB_MQTT_URL` may carry the password; every place that shows the URL shows
it through `alarmhub.redact.redact_url`: the settings error (exit 2, one line), the
`mqtt.connecting` log line, `/readyz`, and the reprs an exception or traceback
would print. The user name may stay: it says which account.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.mqtt.client import MqttIngest
from alarmhub.redact import redact_url
from alarmhub.settings import Settings, SettingsError, load_settings, parse_mqtt_url
from tests.support.helpers import hub_settings, run_cli

SECRET = "Hemmelig-4711"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"mqtts://alarmhub:{SECRET}@broker.example.no:8883",
            "mqtts://alarmhub:***@broker.example.no:8883",
        ),
        (f"mqtt://alarmhub:{SECRET}@127.0.0.1", "mqtt://alarmhub:***@127.0.0.1"),
        ("mqtt://alarmhub@127.0.0.1:1883", "mqtt://alarmhub@127.0.0.1:1883"),
        ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
        (f"mqtt://alarmhub:{SECRET}/x#y@h:1", "mqtt://alarmhub:***@h:1"),  # unescaped / and #
        (f"mqtt://alarmhub:{SECRET}@h:port", "mqtt://alarmhub:***@h:port"),  # not even valid
        (f"postgresql://alarmhub:{SECRET}@db/alarmhub", "postgresql://alarmhub:***@db/alarmhub"),
        (f"alarmhub:{SECRET}@h", "alarmhub:***@h"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"ALARMHUB_MQTT_URL": f"mqtt://alarmhub:{SECRET}@127.0.0.1:notaport"},
            "ALARMHUB_MQTT_URL",
        ),
        ({"ALARMHUB_MQTT_URL": f"tcp://alarmhub:{SECRET}@127.0.0.1:1883"}, "ALARMHUB_MQTT_URL"),
        ({"ALARMHUB_MQTT_URL": f"mqtt://alarmhub:{SECRET}@:1883"}, "ALARMHUB_MQTT_URL"),
        ({"ALARMHUB_DATABASE_URL": f"mysql://alarmhub:{SECRET}@db/x"}, "ALARMHUB_DATABASE_URL"),
    ],
)
def test_a_bad_url_is_named_without_its_password(env: dict[str, str], named: str) -> None:
    result = run_cli(["alarms", "list"], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "alarmhub:***@" in lines[0]
    assert SECRET not in result.stderr + result.stdout


def test_validation_errors_and_reprs_hold_no_password() -> None:
    """What a traceback or a logged exception would print."""
    with pytest.raises(ValidationError) as caught:
        Settings(mqtt_url=f"mqtt://alarmhub:{SECRET}@127.0.0.1:x")
    assert SECRET not in str(caught.value)
    with pytest.raises(SettingsError) as chained:
        load_settings(None, mqtt_url=f"mqtt://alarmhub:{SECRET}@127.0.0.1:x")
    assert SECRET not in str(chained.value)
    assert SECRET not in str(chained.value.__cause__)
    good = load_settings(None, mqtt_url=f"mqtts://alarmhub:{SECRET}@broker.example.no")
    assert good.mqtt.password == SECRET  # still there for the connection
    assert SECRET not in repr(good)
    assert SECRET not in repr(good.mqtt)
    assert "alarmhub:***@broker.example.no" in good.mqtt.shown


@pytest.mark.parametrize(
    ("url", "allow", "ok"),
    [
        ("mqtt://broker.example.no:1883", False, False),
        ("mqtt://10.0.0.5", False, False),
        ("mqtt://broker.example.no:1883", True, True),
        ("mqtts://broker.example.no", False, True),
        ("mqtt://127.0.0.1:1883", False, True),
        ("mqtt://localhost", False, True),
        ("mqtt://[::1]:1883", False, True),
    ],
)
def test_plain_mqtt_to_another_machine_needs_a_setting(url: str, allow: bool, ok: bool) -> None:
    env = {"ALARMHUB_MQTT_URL": url.replace("://", f"://alarmhub:{SECRET}@")}
    if allow:
        env["ALARMHUB_MQTT_ALLOW_PLAIN"] = "true"
    result = run_cli(["alarms", "list"], env)
    if ok:
        assert result.returncode != 2, result.stderr
        return
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ALARMHUB_MQTT_URL" in lines[0]
    assert "ALARMHUB_MQTT_ALLOW_PLAIN=true" in lines[0]
    assert "mqtts://" in lines[0]
    assert SECRET not in result.stderr


async def test_the_connecting_log_line_redacts() -> None:
    target = parse_mqtt_url(f"mqtt://alarmhub:{SECRET}@127.0.0.1:1")
    with capture_logs() as logs:
        async with MqttIngest(target, "t-redact", ["x/#"], lambda: datetime.now(UTC)):
            pass
    connecting = [e for e in logs if e["event"] == "mqtt.connecting"]
    assert connecting
    assert connecting[0]["url"] == "mqtt://alarmhub:***@127.0.0.1:1"
    assert SECRET not in repr(logs)


@pytest.mark.broker
async def test_readyz_and_the_log_show_the_broker_without_its_password(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    url = broker.url.replace("mqtt://", f"mqtt://alarmhub:{SECRET}@")  # anonymous broker
    with capture_logs() as logs:
        async with AlarmHub(hub_settings(tmp_path, url, client_id)) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(20)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.http_port}") as c:
                r = await c.get("/readyz")
    body = orjson.loads(r.content)
    assert body["broker"] == broker.url.replace("mqtt://", "mqtt://alarmhub:***@")
    assert SECRET not in r.text
    assert SECRET not in repr(logs)
