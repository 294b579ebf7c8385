"""Two daemons on one SQLite file: the second is refused at start, with who holds it.

On SQLite a daemon owns the single-owner work without asking anyone, so two on one
file both took intake: with the service's one client id they took the broker
session from each other several times a second, and both fired every escalation.
The verdicts here are which hub owns and connects, the second's refusal and its
message, and that the lock goes with its process however that ends (kill -9).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from alarmhub.app import AlarmHub
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.errors import StoreInUseError
from tests.support.helpers import async_wait_until, hub_settings, run_cli, spawn_daemon

pytestmark = pytest.mark.broker

WAIT = 60.0


def _env(tmp_path: Path, broker: LocalBroker, client_id: str, instance: str) -> dict[str, str]:
    return {
        "ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'alarmhub.db'}",
        "ALARMHUB_MQTT_URL": broker.url,
        "ALARMHUB_MQTT_CLIENT_ID": client_id,
        "ALARMHUB_INSTANCE_ID": instance,
        "ALARMHUB_HTTP_LISTEN": "127.0.0.1:0",
    }


async def test_a_second_daemon_on_the_same_sqlite_file_is_refused(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    settings = hub_settings(tmp_path, broker.url, client_id, instance_id="first")
    async with AlarmHub(settings, serve_http=False) as first:
        assert first.ingest is not None
        assert await first.ingest.wait_connected(WAIT)
        # In this process: refused before it owns or connects to anything.
        with pytest.raises(StoreInUseError, match="instance first"):
            async with AlarmHub(settings, serve_http=False):
                pytest.fail("a second daemon started on the same SQLite file")
        # `alarmhub run` in another process: one line saying why, exit 1.
        done = run_cli(["run"], _env(tmp_path, broker, client_id, "second"), timeout=WAIT)
        assert done.returncode == 1, done.stderr
        assert "in use by another alarmhub" in done.stderr
        assert "instance first" in done.stderr
        assert "PostgreSQL" in done.stderr
        # The first went on owning and connected throughout.
        assert first.owns == ["intake"]
        assert first.mqtt_connected
    # A clean stop hands the file over.
    async with AlarmHub(settings, serve_http=False) as again:
        assert again.owns == ["intake"]


async def test_the_lock_goes_with_a_killed_daemon(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    log_path = tmp_path / "killed.log"
    proc = spawn_daemon(_env(tmp_path, broker, client_id, "killed"), log_path)
    try:
        assert await async_wait_until(
            lambda: "alarmhub.started" in log_path.read_text() or proc.poll() is not None, WAIT
        )
        assert proc.poll() is None, log_path.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    settings = hub_settings(tmp_path, broker.url, client_id, instance_id="after")
    async with AlarmHub(settings, serve_http=False) as hub:
        assert hub.owns == ["intake"]
