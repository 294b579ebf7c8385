"""Soak: the daemon at a steady municipal load, watched for leaks and slowdowns.

A publisher thread sends a realistic mix (heartbeats, GPS fixes, presses and
battery reports from 600 devices) at a fixed rate through the real broker to a
spawned `alarmhub run`; escalation steps and their MQTT notices fire during the
run. Every second the test samples the daemon's RSS, open file descriptors and
threads from /proc, the committed count, and the receipt latency (publish ->
the device's "accepted" receipt, which alarmhub sends after the commit).

Flatness: after a warm-up, the median of the last quarter of samples must stay
within a tolerance of the first quarter's. The tolerances are chosen so that a
leak of ~1 KiB per message (12 MB over a minute at 200 msg/s) or one fd per
hundred messages breaks them, while allocator and page-cache noise does not.

`make test` runs 60 s; `make soak` runs SOAK_SECONDS (600 by default).
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alarmhub.clock import SystemClock
from alarmhub.mosquitto import LocalBroker, free_port
from tests.support import db_count, spawn_daemon, wait_until
from tests.test_faults import daemon_env, ready_status, stop_daemon

pytestmark = pytest.mark.broker

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "200"))  # messages per second
RSS_TOLERANCE_KB = 6 * 1024  # last-quarter median over first-quarter median
FD_TOLERANCE = 4
THREAD_TOLERANCE = 2


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    threads: int
    committed: int
    latency_ms: float | None


@dataclass
class Load:
    """Publishes the mix at a fixed rate and records receipt latencies."""

    port: int
    rate: float
    devices: dict[str, str]  # id -> kind
    sent_at: dict[str, float] = field(default_factory=dict)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds)
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="soak-load")
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self._on_receipt
        self.client.connect("127.0.0.1", self.port)
        self.client.subscribe("alarmhub/v1/+/receipts", qos=0)
        self.client.loop_start()
        self.lock = threading.Lock()

    def _on_receipt(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        ref = orjson.loads(msg.payload).get("ref")
        with self.lock:
            at = self.sent_at.pop(ref, None)
        if at is not None:
            now = time.monotonic()
            self.latencies.append((now, now - at))

    def message(self, i: int, rng: random.Random) -> tuple[str, bytes]:
        device = rng.choice(self.ids)
        kind = self.devices[device]
        ts = SystemClock().now().isoformat()
        body: dict[str, Any] = {"id": f"s{i}", "ts": ts, "type": "heartbeat"}
        roll = rng.random()
        if kind == "gps_tracker" and roll < 0.5:
            body |= {"type": "location", "lat": 59.91 + rng.random() / 100, "lon": 10.75, "accuracy_m": 20}
        elif kind == "safety_alarm" and roll < 0.02:
            body["type"] = "button.pressed"
        elif roll < 0.01:
            body |= {"type": "battery.low", "battery_pct": 9}
        return f"alarmhub/v1/{device}/events", orjson.dumps(body)

    def run(self) -> None:
        rng = random.Random(7)
        self.ids = sorted(self.devices)
        start = time.monotonic()
        while not self.stop.is_set():
            due = start + self.sent / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.05))
                continue
            topic, payload = self.message(self.sent, rng)
            with self.lock:
                self.sent_at[f"s{self.sent}"] = time.monotonic()
            self.client.publish(topic, payload, qos=1)
            self.sent += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def proc_sample(pid: int) -> tuple[int, int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    return rss, fds, threads


def quarters(values: list[float]) -> tuple[float, float]:
    q = max(1, len(values) // 4)
    return statistics.median(values[:q]), statistics.median(values[-q:])


def check_flat(samples: list[Sample], warmup: float) -> dict[str, Any]:
    """Compare the first and last quarters after warm-up; return the figures."""
    steady = [s for s in samples if s.t >= warmup]
    assert len(steady) >= 8, f"too few samples after warm-up: {len(steady)}"
    rss0, rss1 = quarters([s.rss_kb for s in steady])
    fd0, fd1 = quarters([s.fds for s in steady])
    th0, th1 = quarters([s.threads for s in steady])
    lat = [s.latency_ms for s in steady if s.latency_ms is not None]
    lat0, lat1 = quarters(lat)
    figures = {
        "rss_mb": (round(samples[0].rss_kb / 1024, 1), round(rss0 / 1024, 1), round(rss1 / 1024, 1)),
        "fds": (samples[0].fds, fd0, fd1),
        "threads": (samples[0].threads, th0, th1),
        "receipt_p50_ms": (round(lat0, 1), round(lat1, 1)),
    }
    assert rss1 - rss0 <= RSS_TOLERANCE_KB, figures
    assert fd1 - fd0 <= FD_TOLERANCE, figures
    assert th1 - th0 <= THREAD_TOLERANCE, figures
    # Latency may wobble with the machine; a growing backlog grows it without bound.
    assert lat1 <= max(3 * lat0, lat0 + 50), figures
    return figures


def soak(tmp_path: Path, broker: LocalBroker, client_id: str, seconds: float) -> None:
    db = tmp_path / "alarmhub.db"
    kinds = ["safety_alarm"] * 3 + ["gps_tracker", "door_sensor"]
    devices = {f"k{i:04d}": kinds[i % len(kinds)] for i in range(600)}
    csv = tmp_path / "devices.csv"
    csv.write_text("id,kind,municipality\n" + "".join(
        f"{d},{k},{['0301', '4601', '5001'][i % 3]}\n" for i, (d, k) in enumerate(devices.items())))
    from tests.support import run_cli  # noqa: PLC0415

    assert run_cli(["devices", "import", str(csv)], {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}).returncode == 0
    port = free_port()
    env = daemon_env(db, broker, client_id, ALARMHUB_HTTP_LISTEN=f"127.0.0.1:{port}")
    log = tmp_path / "daemon.log"
    daemon = spawn_daemon(env, log)
    load = Load(broker.port, RATE, devices)
    sender = threading.Thread(target=load.run, daemon=True)
    samples: list[Sample] = []
    try:
        assert wait_until(lambda: ready_status(port) == 200, 20), log.read_text()[-2000:]
        start = time.monotonic()
        sender.start()
        seen = 0
        while (now := time.monotonic()) - start < seconds:
            time.sleep(1.0)
            assert daemon.poll() is None, log.read_text()[-2000:]
            rss, fds, threads = proc_sample(daemon.pid)
            recent = [d for t, d in load.latencies[seen:]]
            seen = len(load.latencies)
            latency = statistics.median(recent) * 1000 if recent else None
            samples.append(Sample(now - start, rss, fds, threads, db_count(db, "SELECT count(*) FROM inbox"), latency))
        load.stop.set()
        sender.join(10)
        sent = load.sent
        assert wait_until(lambda: db_count(db, "SELECT count(*) FROM inbox") >= sent, 30)
        assert db_count(db, "SELECT count(*) FROM inbox") == sent
        assert db_count(db, "SELECT count(*) FROM inbox WHERE verdict='rejected'") == 0
        figures = check_flat(samples, warmup=min(60.0, seconds * 0.2))
        alarms = db_count(db, "SELECT count(*) FROM alarms")
        escalations = db_count(db, "SELECT count(*) FROM escalations")
        notices = db_count(db, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
    finally:
        load.close()
        code = stop_daemon(daemon)
    assert code == 0, log.read_text()[-2000:]
    record = tmp_path.parent / f"soak-{int(seconds)}s.json"
    record.write_bytes(orjson.dumps({"seconds": seconds, "rate": RATE, "sent": sent, **figures,
                                     "samples": [s.__dict__ for s in samples]}))
    print(f"\nsoak {seconds:.0f} s at {RATE:.0f} msg/s: {sent} messages, all stored, {alarms} alarms, "
          f"{escalations} escalation steps, {notices} notices sent; (start, first quarter, last "
          f"quarter) {figures}; samples in {record}")


def test_soak_one_minute(tmp_path: Path, broker: LocalBroker, client_id: str) -> None:
    soak(tmp_path, broker, client_id, seconds=60)


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_soak_long(tmp_path: Path, broker: LocalBroker, client_id: str) -> None:
    soak(tmp_path, broker, client_id, seconds=SOAK_SECONDS)


def test_flatness_check_catches_a_leak() -> None:
    """The tolerances fail a slow leak (1 KiB per message at 200 msg/s) and pass noise."""
    rng = random.Random(1)

    def series(leak_kb_per_s: float, fd_every: float = 0) -> list[Sample]:
        return [Sample(t, int(80_000 + leak_kb_per_s * t + rng.uniform(-1500, 1500)),
                       20 + (int(t / fd_every) if fd_every else rng.choice([0, 1])), 12, 0,
                       5 + rng.uniform(-2, 2)) for t in range(60)]

    check_flat(series(0), warmup=12)
    with pytest.raises(AssertionError):
        check_flat(series(200), warmup=12)  # 200 msg/s x 1 KiB
    with pytest.raises(AssertionError):
        check_flat(series(0, fd_every=3), warmup=12)  # 200 msg/s, one fd per ~600 messages
