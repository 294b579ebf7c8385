"""The bench's moving parts: a private broker, the database, a publisher, alarmhub in a process."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from alarmhub.clock import SystemClock
from alarmhub.config.profiles import load_catalog
from alarmhub.core.model import Device
from alarmhub.dev.mosquitto import LocalBroker, free_port
from alarmhub.store.sqlite.store import SqliteStore

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "config" / "rules.toml"
DEVICES_DIR = REPO / "devices"
REGISTER_CHUNK = 100_000
PUBLISH_WINDOW = 20_000


def bench_broker(data_dir: Path) -> LocalBroker:
    """Mosquitto without persistence, so queued sessions live in memory only.

    The production-like config (alarmhub.dev.mosquitto) saves its state on every
    change (`autosave_on_changes`, `autosave_interval 1`): that throttles an
    offline backlog of 100,000 messages to ~140 msg/s and would measure the
    broker's disk, not alarmhub. Sessions and their queues still persist across
    client reconnects while the broker runs, which is all the bench needs.
    """
    return LocalBroker(data_dir, persistence=False, max_inflight=1000)


def subscriptions() -> list[str]:
    return load_catalog(DEVICES_DIR).subscriptions()


def register(db: Path, devices: Sequence[Device]) -> float:
    """Register devices through the store's bulk path; returns seconds taken."""

    async def go() -> None:
        store = await SqliteStore.open(db)
        try:
            now = SystemClock().now()
            for i in range(0, len(devices), REGISTER_CHUNK):
                await store.register_devices(devices[i : i + REGISTER_CHUNK], now, audit=())
        finally:
            await store.close()

    t = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - t


def _client(client_id: str, *, clean: bool = True) -> paho.Client:
    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean,
        protocol=paho.MQTTv311,
    )
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    return c


def create_session(port: int, client_id: str, topics: Iterable[str]) -> None:
    """Connect once with the consumer's client id, subscribe QoS 1 and leave: the broker
    then queues every matching message for that persistent session."""
    c = _client(client_id, clean=False)
    subscribed = threading.Event()
    c.on_subscribe = lambda *_a: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe([(t, 1) for t in topics])
    if not subscribed.wait(10):
        raise TimeoutError("the broker did not confirm the subscription")
    c.disconnect()
    c.loop_stop()


def drop_session(port: int, client_id: str) -> None:
    """Connect once with `clean_session=True`: the broker discards that persistent session.

    A drained session left behind keeps its subscriptions, so the broker would queue a
    copy of every later phase's message for it (up to `max_queued`): broker work that
    grows with each phase run before it and is no part of what the next phase measures.
    """
    c = _client(client_id, clean=True)
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    connected.wait(10)
    c.disconnect()
    c.loop_stop()


def publish_all(port: int, items: Iterable[tuple[str, bytes]]) -> int:
    """Publish QoS 1 as fast as the broker confirms; returns the count once all are confirmed."""
    c = _client(f"bench-pub-{os.getpid()}-{time.monotonic_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    # Packet ids are 16 bits: keep fewer than 65,535 unconfirmed, or paho refuses
    # a publish whose id is still in flight (ERR_QUEUE_SIZE).
    window: deque[paho.MQTTMessageInfo] = deque()
    count = 0
    for t, p in items:
        if len(window) >= PUBLISH_WINDOW:
            window.popleft().wait_for_publish(60)
        window.append(c.publish(t, p, qos=1))
        count += 1
    for info in window:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()
    return count


def hub_env(port: int, db: Path, client_id: str, http_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALARMHUB_")}
    env.update(
        {
            "ALARMHUB_MQTT_URL": f"mqtt://127.0.0.1:{port}",
            "ALARMHUB_MQTT_CLIENT_ID": client_id,
            "ALARMHUB_DATABASE_URL": f"sqlite:///{db}",
            "ALARMHUB_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "ALARMHUB_RULES": str(RULES),
            "ALARMHUB_DEVICES_DIR": str(DEVICES_DIR),
            "ALARMHUB_LOG_FORMAT": "json",
            "ALARMHUB_LOG_LEVEL": "warning",
        }
    )
    env.update(
        {k if k.startswith("BENCH_") else f"ALARMHUB_{k.upper()}": v for k, v in extra.items()}
    )
    return env


class Hub:
    """`alarmhub run` in its own process, watched from outside through HTTP."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = dict(env)
        # An experiment knob, not an alarmhub setting: the interpreter's GIL switch
        # interval for the daemon process (bench --switch-interval).
        self.switch_interval = self.env.pop("BENCH_SWITCH_INTERVAL", None)
        self.http_port = int(env["ALARMHUB_HTTP_LISTEN"].rsplit(":", 1)[1])
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            self.command(),
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
        log.close()

    def command(self) -> list[str]:
        if self.switch_interval is None:
            return [sys.executable, "-m", "alarmhub.cli", "run"]
        code = (
            f"import sys; sys.setswitchinterval({float(self.switch_interval)}); "
            "from alarmhub.cli import main; sys.exit(main(['run']))"
        )
        return [sys.executable, "-c", code]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from process start until /readyz answers 200."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"alarmhub exited with {self.process.returncode}: {self.tail()}")
            try:
                status, _ = self.get("/readyz", timeout=1.0)
            except OSError:
                status = 0
            if status == 200:
                return time.perf_counter() - self.started_at
            time.sleep(0.05)
        raise TimeoutError(f"alarmhub not ready after {timeout} s: {self.tail()}")

    def metrics(self, *names: str) -> str:
        """/metrics, or only the named series (`name[]`): polling all of it costs the daemon."""
        query = "?" + "&".join(f"name[]={n}" for n in names) if names else ""
        return self.get("/metrics" + query, timeout=5.0)[1].decode()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def metric_sum(text: str, name: str) -> float:
    """Sum of every series of one metric in Prometheus text exposition."""
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    for m in pattern.finditer(text):
        total += float(m.group(1))
    return total


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat"))


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc `stat` file (a process's, or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    return {
        "python": sys.version.split()[0],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "mosquitto": (mosq.stdout or mosq.stderr).splitlines()[0]
        if (mosq.stdout or mosq.stderr)
        else "?",
    }


__all__ = ["LocalBroker", "free_port"]
