"""`ALARMHUB_INSTANCE_ID`: which process answered, when several share one database (issue 15).

The id is in `/readyz` (beside the keys it always had) and in `alarmhub.started`.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import hub_settings


@pytest.mark.broker
async def test_readyz_and_the_started_line_name_the_instance(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    settings = hub_settings(tmp_path, broker.url, client_id, instance_id="node-b.2")
    with capture_logs() as logs:
        async with (
            AlarmHub(settings) as hub,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.http_port}") as c,
        ):
            r = await c.get("/readyz")
    body = orjson.loads(r.content)
    assert body["instance_id"] == "node-b.2"
    # The keys scripts already read are all still there.
    assert {"ready", "checks", "broker"} <= body.keys()
    assert body["broker"] == broker.url
    [started] = [e for e in logs if e["event"] == "alarmhub.started"]
    assert started["instance_id"] == "node-b.2"
    # The MQTT client id stays the service's own, shared by every instance.
    assert hub.settings.mqtt_client_id == client_id
