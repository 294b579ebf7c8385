"""`promtool check metrics` accepts what /metrics serves, after real traffic."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from alarmhub.app import AlarmHub
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    hub_settings,
    native,
    register,
)

pytestmark = pytest.mark.broker


async def test_promtool_accepts_the_metrics_output(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: `apt-get install prometheus` (make test installs it)"
        )
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-1", "safety_alarm", "0301")], tmp_path)
    pub = Publisher(broker.port)
    try:
        async with AlarmHub(hub_settings(tmp_path, broker.url, client_id)) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "a", "button.pressed"))
            pub.publish("alarmhub/v1/pend-1/events", b"{broken")
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 2, 10
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.http_port}") as client:
                response = await client.get("/metrics")
                only = await client.get(
                    "/metrics", params={"name[]": "alarmhub_messages_received_total"}
                )
    finally:
        pub.close()
    assert response.status_code == 200
    text = response.text
    assert 'alarmhub_alarms_raised_total{kind="button",priority="1"} 1.0' in text
    assert (
        'alarmhub_messages_dead_lettered_total{device_kind="safety_alarm",reason="malformed_json"} 1.0'
        in text
    )
    # Label combinations exist at zero before anything happened to them.
    assert (
        'alarmhub_messages_dead_lettered_total{device_kind="gps_tracker",reason="oversized"} 0.0'
        in text
    )
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Bounded labels: no device id is ever a label value.
    assert "pend-1" not in text
    # `name[]` narrows the output to the named series, as prometheus-client's handler does.
    assert only.status_code == 200
    families = {line.split()[2] for line in only.text.splitlines() if line.startswith("# TYPE")}
    assert families == {"alarmhub_messages_received_total"}
    assert 'alarmhub_messages_received_total{device_kind="safety_alarm"} 2.0' in only.text
