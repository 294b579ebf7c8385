"""Shared test helpers: a real broker, a real database, a publisher, polling."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from alarmhub.settings import Settings, load_settings
from alarmhub.store.errors import StoreUnavailableError
from alarmhub.store.sqlite.migrations import KNOWN_VERSION, schema_version

if TYPE_CHECKING:
    from alarmhub.mqtt.client import MqttIngest
    from alarmhub.observability.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]


def hub_settings(tmp_path: Path, broker_url: str, client_id: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "mqtt_url": broker_url,
        "mqtt_client_id": client_id,
        "database_url": f"sqlite:///{tmp_path / 'alarmhub.db'}",
        "http_listen": "127.0.0.1:0",
        "rules": REPO / "config" / "rules.toml",
        "devices_dir": REPO / "devices",
        "mqtt_reconnect_min_s": 0.1,
        "mqtt_reconnect_max_s": 1.0,
    }
    values.update(extra)
    return load_settings(None, **values)


class Publisher:
    """A plain paho client that publishes QoS 1 and waits until the broker has each."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id
        )
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.received: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1) -> None:
        data = orjson.dumps(payload) if isinstance(payload, dict) else payload
        self.client.publish(topic, data, qos=qos).wait_for_publish(10)

    def publish_many(self, items: Iterable[tuple[str, bytes]], qos: int = 1) -> int:
        infos = [self.client.publish(t, p, qos=qos) for t, p in items]
        for info in infos:
            info.wait_for_publish(30)
        return len(infos)

    def subscribe(self, topic: str) -> None:
        def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
            self.received.append((msg.topic, bytes(msg.payload)))

        subscribed = threading.Event()
        self.client.on_message = on_message
        self.client.on_subscribe = lambda *_args: subscribed.set()
        rc, _mid = self.client.subscribe(topic, qos=1)
        # Until the SUBACK the broker may not route to us yet: a receipt published
        # meanwhile would be lost, and a test waiting for it would fail by timing.
        assert rc == paho.MQTT_ERR_SUCCESS, rc
        assert subscribed.wait(30), f"no SUBACK for {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def native(
    device: str, msg_id: str, etype: str, ts: str = "2026-11-25T10:00:00Z", **fields: Any
) -> tuple[str, bytes]:
    return (
        f"alarmhub/v1/{device}/events",
        orjson.dumps({"id": msg_id, "ts": ts, "type": etype, **fields}),
    )


@contextmanager
def sqlite_at(db: Path | str, **kwargs: Any) -> Iterator[sqlite3.Connection]:
    """A connection of the test's own to `db`: committed (or rolled back) and closed.

    Not `with sqlite3.connect(db) as conn:`, which commits but leaves the connection
    open until the collector finds it: from Python 3.13 that is a ResourceWarning, an
    error under this suite's `filterwarnings`, raised in whichever test runs then.
    """
    conn = sqlite3.connect(db, **kwargs)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def db_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite_at(db, timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric's value as scraped (`alarmhub_..._total`, its labels); 0 for a series
    never created, so a test can assert a count that should have stayed at zero."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def db_count(db: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    """The count `sql` selects; 0 while a starting daemon has not created its schema yet.

    Once the schema is complete, a query it cannot run (a table or column that does not
    exist) is an error, not 0: `count(*) FROM dead_letters` (no such table) made an
    assertion that could never fail.
    """
    try:
        return int(db_rows(db, sql, params)[0][0])
    except sqlite3.OperationalError:
        if _schema_complete(db):
            raise
        return 0  # the schema is not there yet (or the database is busy creating it)


def _schema_complete(db: Path) -> bool:
    try:
        with sqlite_at(db, timeout=10) as conn:
            return schema_version(conn) >= KNOWN_VERSION
    except sqlite3.Error:
        return False


def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


async def async_wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def settled_until(
    ingest: MqttIngest, done: Callable[[list[bytes]], bool], timeout: float = 20.0
) -> tuple[list[bytes], int]:
    """Take `ingest`'s batches, settling each, until `done(payloads so far)`.

    The payloads in arrival order and how many of them were acknowledged; a batch not
    arriving within `timeout` raises TimeoutError.
    """
    payloads: list[bytes] = []
    acked = 0
    batches = ingest.batches(max_batch=500, coalesce_s=0.001)
    while not done(payloads):
        batch = await asyncio.wait_for(anext(batches), timeout)
        payloads.extend(d.raw.payload for d in batch)
        acked += ingest.settle(batch, ())
    return payloads, acked


def register(db_url: str, rows: Iterable[tuple[str, ...]], tmp_path: Path) -> None:
    """Register devices through the real CLI's CSV import.

    Rows are (id, kind, municipality) or, for a Zigbee device, (…, bridge).
    """
    csv = tmp_path / "devices.csv"
    csv.write_text(
        "id,kind,municipality,bridge\n"
        + "".join(",".join((*r, "") if len(r) == 3 else r) + "\n" for r in rows)
    )
    result = run_cli(["devices", "import", str(csv)], {"ALARMHUB_DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr


def assign_bridge(db_url: str, bridge: str, municipality: str) -> None:
    """A system admin assigns a new bridge to its municipality, through the real CLI."""
    args = ["bridges", "assign", bridge, "--municipality", municipality]
    result = run_cli(args, {"ALARMHUB_DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALARMHUB_")}
    full_env.update(env)
    full_env.setdefault("ALARMHUB_RULES", str(REPO / "config" / "rules.toml"))
    full_env.setdefault("ALARMHUB_DEVICES_DIR", str(REPO / "devices"))
    return subprocess.run(
        [sys.executable, "-m", "alarmhub.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def spawn_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALARMHUB_")}
    full_env.update(env)
    full_env.setdefault("ALARMHUB_RULES", str(REPO / "config" / "rules.toml"))
    full_env.setdefault("ALARMHUB_DEVICES_DIR", str(REPO / "devices"))
    full_env.setdefault("ALARMHUB_HTTP_LISTEN", "127.0.0.1:0")
    full_env.setdefault("ALARMHUB_LOG_FORMAT", "json")
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "alarmhub.cli", "run"],
            env=full_env,
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


def rules_with_webhook(tmp_path: Path, url: str) -> Path:
    """The shipped rules with step 2 of the default policy sent to a webhook after 1 s."""
    text = (REPO / "config" / "rules.toml").read_text()
    old = '  { after_s = 60, target = "supervisor", level = 2 },\n'
    assert old in text
    text = text.replace(old, '  { after_s = 1, target = "hook", level = 2 },\n', 1)
    text += f'\n[targets.hook]\nwebhook = "{url}"\n'
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


class NoticeLink:
    """The notifier's MQTT link (daemon/notifier.py Broker) on a real Mosquitto: a paho
    client that publishes at QoS 1, and a second one subscribed to everything, so that
    `topics` lists what the broker really routed, in its order."""

    def __init__(self, port: int, client_id: str) -> None:
        self._link = Publisher(port, client_id=f"{client_id}-link")
        self._watch = Publisher(port, client_id=f"{client_id}-watch")
        self._watch.subscribe("#")

    @property
    def connected(self) -> bool:
        return bool(self._link.client.is_connected())

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 1) -> paho.MQTTMessageInfo:
        return self._link.client.publish(topic, payload, qos=qos)

    @property
    def topics(self) -> list[str]:
        return [topic for topic, _payload in list(self._watch.received)]

    def close(self) -> None:
        self._link.close()
        self._watch.close()


def failing_commits(store: Any) -> asyncio.Event:
    """Make `store.commit_batch` fail as a failing disk does (StoreUnavailableError) for as
    long as the returned event is set; it starts set, and clearing it heals the store."""
    failing = asyncio.Event()
    failing.set()
    commit = store.commit_batch

    async def broken(*args: Any, **kwargs: Any) -> Any:
        if failing.is_set():
            raise StoreUnavailableError("disk I/O error (test)")
        return await commit(*args, **kwargs)

    store.commit_batch = broken
    return failing


def mentions(text: str, secret: str) -> bool:
    """`secret` in `text` as a whole token: a municipality code such as "4601" inside a
    time's microseconds (08:27:04.546012) is no leak, and a substring test failed on such
    a clock reading."""
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", text) is not None
