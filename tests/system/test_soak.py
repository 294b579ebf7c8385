"""Soak: the daemon at a steady municipal load, watched for leaks and slowdowns.

A publisher thread sends a realistic mix (heartbeats, GPS fixes, presses and
battery reports from 600 devices) through the real broker to a spawned
`alarmhub run`, in bursts of BURST_SECONDS at a fixed rate; after each burst it
waits until every message it sent is committed (the backlog back to zero)
before the next. Escalation steps and their MQTT notices fire during the run.
Every second the test samples the daemon's RSS, open file descriptors, threads
and CPU time (utime + stime) from /proc, the sent and committed counts, and the
receipt latency (publish -> the device's "accepted" receipt, sent after the
commit).

The verdict is on alarmhub's behaviour, never on how fast this machine is (a
machine that gets busier mid-soak must not fail it):
- every burst's backlog (sent, not yet committed; in messages) returns to zero,
  and everything sent is stored exactly once;
- after a warm-up, RSS grows by at most a noise floor plus RSS_PER_MESSAGE_KB per
  message committed between the first and the last quarter; fds and threads by
  at most a few;
- the daemon's CPU time per committed message in the last quarter is at most
  CPU_RATIO x the first quarter's (a growing per-message cost).
Receipt latency and drain times are printed for humans, not asserted: they
measure the machine as much as alarmhub.

`make test` runs 60 s; `make soak` runs SOAK_SECONDS (600 by default).
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alarmhub.clock import SystemClock
from alarmhub.dev.mosquitto import LocalBroker, free_port
from tests.support.helpers import db_count, spawn_daemon, wait_until
from tests.system.test_faults import daemon_env, ready_status, stop_daemon

pytestmark = pytest.mark.broker

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "200"))  # messages per second
BURST_SECONDS = 10.0  # a burst is this many seconds' worth of messages at RATE
DRAIN_CEILING_S = 60.0  # a backlog not back to zero by then is a stall, not slowness
# Last-quarter median RSS over the first quarter's: allocator and page-cache noise
# (a few MiB, whatever the speed), plus 100 bytes per message committed in between.
# A leak of 1 KiB per message breaks it within a minute, one of 200 bytes in a
# 10-minute soak; the live-change ring still filling (~40 bytes per message measured
# over 600 s) does not.
RSS_FLOOR_KB = 3 * 1024
RSS_PER_MESSAGE_KB = 0.1
FD_TOLERANCE = 4
THREAD_TOLERANCE = 2
# CPU time per message is not a machine-independent figure on a VM: a fixed loop's CPU
# time here measured 8 or 14 ms from one second to the next, and the soak's own per-second
# cost 0.80-1.45 ms per message within one run, in stretches of several seconds (CI failed
# once at 1.6x between quarters with nothing growing). So the check compares the *median*
# per-second cost of each quarter (a few slow seconds do not move it) and only fails a
# growth well beyond that noise: a per-message cost that more than doubles, the mark of a
# scan over something that grows with history. Smaller growth is the business of
# `make bench` and the long soak's printed figures. `solo` keeps the parallel pass's load
# from ending mid-run (a load that goes away makes batches smaller and messages dearer).
# See docs/reliability.md (Soak).
CPU_RATIO = 2.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    threads: int
    committed: int
    latency_ms: float | None
    sent: int = 0
    cpu_s: float = 0.0  # the daemon's utime + stime so far

    @property
    def backlog(self) -> int:
        """Messages sent and not yet committed."""
        return self.sent - self.committed


@dataclass
class Load:
    """Publishes the mix in bursts at a fixed rate, each drained before the next.

    `committed` counts what the daemon has stored. After a burst the backlog
    (sent - committed) must return to zero within DRAIN_CEILING_S; a burst whose
    backlog does not is recorded in `stuck` and ends the load. How long each
    drain took is recorded for humans, not judged.
    """

    port: int
    rate: float
    devices: dict[str, str]  # id -> kind
    committed: Callable[[], int]
    sent_at: dict[str, float] = field(default_factory=dict)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds)
    sent: int = 0
    bursts: int = 0
    drain_s: list[float] = field(default_factory=list)
    stuck: list[tuple[int, int]] = field(default_factory=list)  # (burst, backlog left)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="soak-load"
        )
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
            body |= {
                "type": "location",
                "lat": 59.91 + rng.random() / 100,
                "lon": 10.75,
                "accuracy_m": 20,
            }
        elif kind == "safety_alarm" and roll < 0.02:
            body["type"] = "button.pressed"
        elif roll < 0.01:
            body |= {"type": "battery.low", "battery_pct": 9}
        return f"alarmhub/v1/{device}/events", orjson.dumps(body)

    def run(self) -> None:
        rng = random.Random(7)
        self.ids = sorted(self.devices)
        burst = max(1, int(self.rate * BURST_SECONDS))
        while not self.stop.is_set():
            start, first = time.monotonic(), self.sent
            while self.sent - first < burst and not self.stop.is_set():
                delay = start + (self.sent - first) / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(min(delay, 0.05))
                    continue
                topic, payload = self.message(self.sent, rng)
                with self.lock:
                    self.sent_at[f"s{self.sent}"] = time.monotonic()
                self.client.publish(topic, payload, qos=1)
                self.sent += 1
            self.bursts += 1
            # The pacing restarts after the drain: a slow drain never turns into a flood.
            began, sent = time.monotonic(), self.sent
            if not wait_until(lambda n=sent: self.committed() >= n, DRAIN_CEILING_S, interval=0.05):  # type: ignore[misc]
                self.stuck.append((self.bursts, sent - self.committed()))
                return
            self.drain_s.append(time.monotonic() - began)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def proc_sample(pid: int) -> tuple[int, int, int, float]:
    """RSS (KiB), open fds, threads and CPU seconds (utime + stime, all threads)."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    # Fields after the command name, which may contain spaces: utime and stime are
    # fields 14 and 15 of proc(5), i.e. 12 and 13 after the ')'.
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
    return rss, fds, threads, cpu


def quarters(values: list[float]) -> tuple[float, float]:
    q = max(1, len(values) // 4)
    return statistics.median(values[:q]), statistics.median(values[-q:])


def cpu_per_message_ms(window: list[Sample]) -> float:
    """The median over `window`'s seconds of the daemon's CPU time per message committed.

    The median, not the total over the window: this VM's cost for the same work moves
    by up to 1.8x for a few seconds at a time, and a growing cost moves every second.
    """
    costs = [
        (b.cpu_s - a.cpu_s) * 1000 / (b.committed - a.committed)
        for a, b in itertools.pairwise(window)
        if b.committed - a.committed > 0
    ]
    assert costs, f"nothing committed between t={window[0].t} and t={window[-1].t}"
    return statistics.median(costs)


def check_flat(samples: list[Sample], warmup: float) -> dict[str, Any]:
    """Compare the first and last quarters after warm-up; return the figures.

    Every bound is per message committed or a plain count, so a machine that
    processes the same messages more slowly gets the same verdict.
    """
    steady = [s for s in samples if s.t >= warmup]
    assert len(steady) >= 8, f"too few samples after warm-up: {len(steady)}"
    q = max(2, len(steady) // 4)
    first, last = steady[:q], steady[-q:]
    rss0, rss1 = quarters([s.rss_kb for s in steady])
    fd0, fd1 = quarters([s.fds for s in steady])
    th0, th1 = quarters([s.threads for s in steady])
    between = statistics.median(s.committed for s in last) - statistics.median(
        s.committed for s in first
    )
    rss_allowed = RSS_FLOOR_KB + RSS_PER_MESSAGE_KB * between
    cpu0, cpu1 = cpu_per_message_ms(first), cpu_per_message_ms(last)
    lat = [s.latency_ms for s in steady if s.latency_ms is not None]
    lat0, lat1 = quarters(lat) if lat else (float("nan"), float("nan"))
    figures = {
        "rss_mb": (
            round(samples[0].rss_kb / 1024, 1),
            round(rss0 / 1024, 1),
            round(rss1 / 1024, 1),
        ),
        "rss_growth_allowed_mb": round(rss_allowed / 1024, 1),
        "messages_between_quarters": int(between),
        "fds": (samples[0].fds, fd0, fd1),
        "threads": (samples[0].threads, th0, th1),
        "cpu_ms_per_message": (round(cpu0, 3), round(cpu1, 3)),
        "max_backlog": max(s.backlog for s in samples),
        "receipt_p50_ms": (round(lat0, 1), round(lat1, 1)),  # reported, not judged
    }
    assert rss1 - rss0 <= rss_allowed, f"RSS grew: {figures}"
    assert fd1 - fd0 <= FD_TOLERANCE, f"fds grew: {figures}"
    assert th1 - th0 <= THREAD_TOLERANCE, f"threads grew: {figures}"
    assert cpu1 <= CPU_RATIO * cpu0, f"CPU per message grew: {figures}"
    return figures


def soak(tmp_path: Path, broker: LocalBroker, client_id: str, seconds: float) -> None:
    db = tmp_path / "alarmhub.db"
    kinds = ["safety_alarm"] * 3 + ["gps_tracker", "door_sensor"]
    devices = {f"k{i:04d}": kinds[i % len(kinds)] for i in range(600)}
    csv = tmp_path / "devices.csv"
    csv.write_text(
        "id,kind,municipality\n"
        + "".join(
            f"{d},{k},{['0301', '4601', '5001'][i % 3]}\n"
            for i, (d, k) in enumerate(devices.items())
        )
    )
    from tests.support.helpers import run_cli  # noqa: PLC0415

    assert (
        run_cli(
            ["devices", "import", str(csv)], {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
        ).returncode
        == 0
    )
    port = free_port()
    env = daemon_env(db, broker, client_id, ALARMHUB_HTTP_LISTEN=f"127.0.0.1:{port}")
    log = tmp_path / "daemon.log"
    daemon = spawn_daemon(env, log)
    load = Load(broker.port, RATE, devices, lambda: db_count(db, "SELECT count(*) FROM inbox"))
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
            assert not load.stuck, f"backlog (burst, messages left) not drained: {load.stuck}"
            rss, fds, threads, cpu = proc_sample(daemon.pid)
            recent = [d for t, d in load.latencies[seen:]]
            seen = len(load.latencies)
            latency = statistics.median(recent) * 1000 if recent else None
            committed = db_count(db, "SELECT count(*) FROM inbox")
            sent = load.sent  # after the committed count, so the backlog is never negative
            samples.append(Sample(now - start, rss, fds, threads, committed, latency, sent, cpu))
        load.stop.set()
        sender.join(DRAIN_CEILING_S + 10)
        assert not sender.is_alive(), "the load never finished its last drain"
        assert not load.stuck, f"backlog (burst, messages left) not drained: {load.stuck}"
        sent = load.sent
        # The last (partial) burst was drained by the sender: the backlog is zero.
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
    record.write_bytes(
        orjson.dumps(
            {
                "seconds": seconds,
                "rate": RATE,
                "sent": sent,
                **figures,
                "samples": [s.__dict__ for s in samples],
            }
        )
    )
    drains = sorted(load.drain_s)
    print(
        f"\nsoak {seconds:.0f} s at {RATE:.0f} msg/s: {sent} messages in {load.bursts} bursts, all "
        f"stored, every backlog back to zero (drain median {statistics.median(drains) * 1000:.0f} ms, "
        f"max {drains[-1] * 1000:.0f} ms); {alarms} alarms, {escalations} escalation steps, {notices} "
        f"notices sent; (start, first quarter, last quarter) {figures}; samples in {record}"
    )


@pytest.mark.solo
def test_soak_one_minute(tmp_path: Path, broker: LocalBroker, client_id: str) -> None:
    soak(tmp_path, broker, client_id, seconds=60)


@pytest.mark.slow
@pytest.mark.solo
@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_soak_long(tmp_path: Path, broker: LocalBroker, client_id: str) -> None:
    soak(tmp_path, broker, client_id, seconds=SOAK_SECONDS)


def test_flatness_check_catches_a_leak() -> None:
    """The bounds fail a leak or a growing per-message cost, and pass noise and a busy machine.

    A leak of 1 KiB per message, one fd per ~600 messages, or CPU per message
    growing with history to 10x over the run (2.5x between the quarters' medians)
    fail; a machine that gets busy mid-run (half the messages per second, latency
    x10) does not, nor this VM's measured CPU noise: the same work costing 0.80 or
    1.45 ms per message in stretches of seconds, even a fast first quarter against a
    slow last one, as long as alarmhub's own cost per message stays put.
    """
    rng = random.Random(1)

    def series(
        leak_kb_per_msg: float = 0,
        fd_every: float = 0,
        cpu_growth: float = 0,
        slow_after: float = 1e9,
        machine: Callable[[int], float] = lambda _t: rng.uniform(0.95, 1.05),
    ) -> list[Sample]:
        out, committed, cpu = [], 0, 0.0
        for t in range(60):
            rate = 200 if t < slow_after else 100  # messages per second this machine manages
            committed += rate
            per_msg = 0.5e-3 * (1 + cpu_growth * t / 60) * machine(t)
            cpu += rate * per_msg
            out.append(
                Sample(
                    t,
                    int(80_000 + leak_kb_per_msg * committed + rng.uniform(-1500, 1500)),
                    20 + (int(committed / fd_every) if fd_every else rng.choice([0, 1])),
                    12,
                    committed,
                    (5 if t < slow_after else 50) + rng.uniform(-2, 2),
                    committed + rng.randint(0, 5),
                    cpu,
                )
            )
        return out

    check_flat(series(), warmup=12)
    check_flat(series(slow_after=40), warmup=12)  # a busier machine: fewer msg/s, slower receipts
    check_flat(series(leak_kb_per_msg=0.04), warmup=12)  # the live-change ring filling
    # The VM's noise: stretches of 3-7 s at one of two speeds, and the worst case of it.
    stretches = [rng.choice([0.8, 1.45]) for _ in range(60) for _ in range(rng.randint(3, 7))]
    check_flat(series(machine=lambda t: stretches[t]), warmup=12)
    check_flat(series(machine=lambda t: 0.8 if t < 30 else 1.45), warmup=12)
    with pytest.raises(AssertionError, match="RSS grew"):
        check_flat(series(leak_kb_per_msg=1), warmup=12)
    with pytest.raises(AssertionError, match="RSS grew"):
        check_flat(series(leak_kb_per_msg=1, slow_after=40), warmup=12)  # also when slowed down
    with pytest.raises(AssertionError, match="fds grew"):
        check_flat(series(fd_every=600), warmup=12)
    with pytest.raises(AssertionError, match="CPU per message grew"):
        check_flat(series(cpu_growth=9), warmup=12)  # 10x over the run, 2.5x between quarters
    with pytest.raises(AssertionError, match="CPU per message grew"):  # also through the noise
        check_flat(series(cpu_growth=9, machine=lambda t: stretches[t]), warmup=12)
