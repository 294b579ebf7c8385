"""ALARMHUB_MQTT_URL as a list of brokers (issue 15 section 3).

Parsing keeps each element's checks and its password redaction (issue 13 item
10); ingest goes round the list with one session; /readyz names the whole list
and the broker it is connected to.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.clock import SystemClock
from alarmhub.dev.mosquitto import LocalBroker, free_port
from alarmhub.mqtt.client import Backoff, MqttIngest
from alarmhub.settings import SettingsError, load_settings, parse_mqtt_urls
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    hub_settings,
    native,
    register,
    run_cli,
)

SECRET = "s3cret-list-pw"  # a marker to look for in output, not a credential


def test_a_list_is_parsed_in_order_and_one_url_is_a_list_of_one() -> None:
    targets = parse_mqtt_urls(
        f"mqtts://a.example.no, mqtts://alarmhub:{SECRET}@b.example.no:8884 ,mqtts://c.example.no"
    )
    assert [(t.host, t.port, t.tls) for t in targets] == [
        ("a.example.no", 8883, True),
        ("b.example.no", 8884, True),
        ("c.example.no", 8883, True),
    ]
    assert targets[1].password == SECRET
    assert targets[1].shown == "mqtts://alarmhub:***@b.example.no:8884"
    [one] = parse_mqtt_urls("mqtt://127.0.0.1:1883")
    assert (one.host, one.port, one.tls) == ("127.0.0.1", 1883, False)


def test_settings_keep_the_first_as_mqtt_and_all_as_mqtt_brokers() -> None:
    s = load_settings(None, mqtt_url="mqtt://127.0.0.1:1883,mqtt://localhost:1884")
    assert s.mqtt.port == 1883
    assert [t.port for t in s.mqtt_brokers] == [1883, 1884]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"mqtt://127.0.0.1:1883,mqtt://alarmhub:{SECRET}@127.0.0.1:x", "bad port"),
        ("mqtt://127.0.0.1:1883,,mqtt://127.0.0.1:1884", "expected mqtt://"),
        ("mqtt://127.0.0.1:1883,", "expected mqtt://"),
        (f"mqtts://a.example.no,mqtt://alarmhub:{SECRET}@127.0.0.1", "one scheme"),
        (f"mqtt://127.0.0.1,mqtt://alarmhub:{SECRET}@10.0.0.5", "unencrypted"),
        ("mqtt://127.0.0.1,http://127.0.0.1", "expected mqtt://"),
    ],
)
def test_every_element_is_checked_and_named_without_its_password(url: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, mqtt_url=url)
    text = str(caught.value)
    assert "ALARMHUB_MQTT_URL" in text
    assert says in text
    assert SECRET not in text
    assert SECRET not in str(caught.value.__cause__)


def test_the_cli_names_a_bad_element_in_one_line_without_its_password() -> None:
    url = f"mqtt://127.0.0.1:1883,mqtt://alarmhub:{SECRET}@127.0.0.1:x"
    result = run_cli(["alarms", "list"], {"ALARMHUB_MQTT_URL": url})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "alarmhub:***@127.0.0.1:x" in line
    assert SECRET not in result.stderr + result.stdout


async def test_ingest_goes_round_the_list_in_order_with_one_client_id() -> None:
    """Three dead brokers: the attempts visit them a, b, c, a, b, … (never one twice in a row)."""
    urls = [f"mqtt://alarmhub:{SECRET}@127.0.0.1:{free_port()}" for _ in range(3)]
    targets = parse_mqtt_urls(",".join(urls))
    with capture_logs() as logs:
        ingest = MqttIngest(
            targets, "t-round-robin", ["x/#"], SystemClock().now, backoff=Backoff(0.05, 0.2)
        )
        async with ingest:
            assert await async_wait_until(
                lambda: sum(e["event"] == "mqtt.connect_failed" for e in logs) >= 7, 60
            )
    tried = [e["url"] for e in logs if e["event"] == "mqtt.connect_failed"][:7]
    shown = [t.shown for t in targets]
    assert tried == [shown[i % 3] for i in range(7)]
    assert not ingest.connected
    assert SECRET not in repr(logs)


@pytest.mark.broker
async def test_a_dead_first_broker_is_passed_over_and_readyz_names_the_live_one(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-1", "safety_alarm", "0301")], tmp_path)
    dead = f"mqtt://alarmhub:{SECRET}@127.0.0.1:{free_port()}"  # nothing listens there
    live = broker.url.replace("mqtt://", f"mqtt://alarmhub:{SECRET}@")  # anonymous broker
    settings = hub_settings(tmp_path, f"{dead},{live}", client_id)
    pub = Publisher(broker.port, f"{client_id}-pub")
    try:
        with capture_logs() as logs:
            async with AlarmHub(settings) as hub:
                assert hub.ingest is not None
                assert await hub.ingest.wait_connected(30)
                assert hub.mqtt_broker == broker.url.replace("mqtt://", "mqtt://alarmhub:***@")
                pub.publish(*native("pend-1", "m1", "button.pressed"))
                assert await async_wait_until(
                    lambda: db_count(db, "SELECT count(*) FROM inbox") == 1, 30
                )
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.http_port}") as c:
                    r = await c.get("/readyz")
    finally:
        pub.close()
    assert r.status_code == 200, r.text
    body = orjson.loads(r.content)
    shown = [t.shown for t in parse_mqtt_urls(f"{dead},{live}")]
    assert body["broker"] == ",".join(shown)
    assert body["mqtt_broker"] == shown[1]
    assert SECRET not in r.text
    assert SECRET not in repr(logs)
    failed = [e for e in logs if e["event"] == "mqtt.connect_failed"]
    assert failed, [e["event"] for e in logs]
    assert failed[0]["url"] == shown[0]
    [connected] = [e for e in logs if e["event"] == "mqtt.connected"]
    assert connected["url"] == shown[1]
