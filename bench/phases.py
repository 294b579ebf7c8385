"""The four phases of `make bench`: baseline, throughput, latency under load, registry scale.

Each phase is bounded in count and in time; each starts from a fresh database
and a fresh persistent session so runs do not deduplicate each other.
"""

from __future__ import annotations

import contextlib
import gc
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho

from bench import cluster_phases, harness, workload
from bench.harness import Hub, free_port


@dataclass
class Options:
    n: int
    runs: int
    rate: int
    duration_s: float
    scale_devices: int
    idle_s: float
    devices: int
    timeout_s: float
    profile_dir: Path | None
    profile_gil: bool
    hub_settings: dict[str, str]
    storm_n: int = 20_000
    # Live-stream listeners during the latency phase, an operator's page each: every
    # alarm change is serialised and written once per listener on the event loop
    # that also takes in the messages. The first is timed (`sse_p99_ms`).
    sse_clients: int = 1


def _start_time() -> datetime:
    # Device time is only data here; the rules' night window then follows the real clock.
    return datetime.now(UTC).replace(microsecond=0)


# --- 1 + 2: drain a pre-queued backlog ------------------------------------------


def baseline_once(
    port: int, items: Sequence[tuple[str, bytes]], tag: str, timeout_s: float
) -> dict[str, Any]:
    client_id = f"bench-base-{tag}"
    harness.create_session(port, client_id, harness.subscriptions())
    harness.publish_all(port, items)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.baseline_consumer",
            str(port),
            client_id,
            str(len(items)),
            str(timeout_s),
        ],
        capture_output=True,
        text=True,
        cwd=harness.REPO,
        check=True,
        timeout=timeout_s + 30,
    )
    harness.drop_session(port, client_id)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def throughput_once(
    port: int,
    work: Path,
    devices: Sequence[Any],
    items: Sequence[tuple[str, bytes]],
    tag: str,
    opts: Options,
    profile: Path | None = None,
    settled_by: str | None = None,
) -> dict[str, Any]:
    """`settled_by`: a counter that must also reach len(items) for the work to be done
    (the storm: `alarmhub_escalations_total`, each new alarm's first step), timed too."""
    db = work / f"throughput-{tag}.db"
    harness.register(db, devices)
    client_id = f"bench-hub-{tag}"
    harness.create_session(port, client_id, harness.subscriptions())
    harness.publish_all(port, items)
    hub = Hub(
        harness.hub_env(port, db, client_id, free_port(), **opts.hub_settings),
        work / f"hub-{tag}.log",
    )
    n = len(items)
    spy: subprocess.Popen[bytes] | None = None
    hub.start()
    hub_started = hub.started_at
    try:
        if profile is not None:
            spy = _py_spy(hub.pid, profile, gil=opts.profile_gil)
        first: tuple[float, float] | None = None
        cpu_first = 0.0
        last = (0.0, 0.0)
        deadline = time.perf_counter() + opts.timeout_s
        while time.perf_counter() < deadline:
            try:
                count = harness.metric_sum(
                    hub.metrics("alarmhub_messages_received_total"),
                    "alarmhub_messages_received_total",
                )
            except OSError:
                count = 0.0  # HTTP not up yet
            now = time.perf_counter()
            if count > 0 and first is None:
                first = (now, count)
                # CPU from here on is the drain's own, without start-up (imports, loading).
                cpu_first = harness.proc_cpu_s(hub.pid)
            last = (now, count)
            if count >= n:
                break
            if hub.process is not None and hub.process.poll() is not None:
                raise RuntimeError(f"alarmhub exited: {hub.tail()}")
            # Each scrape costs the daemon a few ms (many labelled series): at 20/s it
            # took 7 % of the profile. 4/s bounds the figure's error to ~2 %. Until the
            # first commit, 20/s: the clock then starts close to the drain's real start,
            # and a small backlog (the storm's smoke test) still gets two points.
            time.sleep(0.25 if first is not None else 0.05)
        cpu_s = harness.proc_cpu_s(hub.pid)
        settled = _settle(hub, settled_by, n, deadline) if settled_by and first else None
        text = hub.metrics()
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        hub.stop()
        harness.drop_session(port, client_id)
    if first is None or last[1] < n:
        return {"msgs_per_s": None, "committed": last[1], "error": "did not drain in time"}
    t0, c0 = first
    t1, c1 = last
    if c0 >= n:
        print("   (drained before the first /metrics poll: too few messages to time; raise --n)")
    batches = harness.metric_sum(text, "alarmhub_commit_batch_messages_count")
    if settled is not None:
        # From the first commit until the last first step too; CPU over the same span.
        ts, cpu_settled = settled
        settled = ((c1 - c0) / (ts - t0), (cpu_settled - cpu_first) / (c1 - c0) * 1e6)
    return {
        "settled_per_s": settled[0] if settled else None,
        "cpu_us_per_settled": settled[1] if settled else None,
        "msgs_per_s": (c1 - c0) / (t1 - t0) if t1 > t0 else None,
        "committed": c1,
        "first_seen_count": c0,
        "batches": batches,
        "mean_batch": c1 / batches if batches else None,
        "commit_s_mean": harness.metric_sum(text, "alarmhub_commit_seconds_sum") / batches
        if batches
        else None,
        "hub_cpu_s": cpu_s,
        "alarms_raised": harness.metric_sum(text, "alarmhub_alarms_raised_total"),
        # from process start to the last message committed: start-up included
        "total_s": t1 - hub_started,
        # CPU per message while draining: between the first non-zero poll and the end.
        "cpu_us_per_msg": (cpu_s - cpu_first) / (c1 - c0) * 1e6 if c1 > c0 else None,
    }


def _settle(hub: Hub, metric: str, n: int, deadline: float) -> tuple[float, float] | None:
    """When `metric` reached n (perf_counter) and the process's CPU seconds then."""
    while time.perf_counter() < deadline:
        if harness.metric_sum(hub.metrics(metric), metric) >= n:
            return time.perf_counter(), harness.proc_cpu_s(hub.pid)
        time.sleep(0.05)
    return None


def _py_spy(pid: int, out: Path, *, gil: bool) -> subprocess.Popen[bytes] | None:
    binary = Path(sys.executable).parent / "py-spy"
    if not binary.exists():
        print("  (py-spy not installed in the venv: no profile)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            str(binary),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            # --gil: only the thread holding the GIL. At full drain the GIL is the
            # limit, so this shows what to cut; without it, waits count as work too.
            *(["--gil"] if gil else []),
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# --- 3: latency at a fixed rate -----------------------------------------------------


def _api_token(env: dict[str, str]) -> tuple[str | None, str]:
    """An admin user and a bearer token through the real CLI; (None, why) when impossible."""
    base = [sys.executable, "-m", "alarmhub.cli"]
    made = subprocess.run(
        [*base, "users", "create", "--name", "bench-admin", "--role", "admin", "--password-stdin"],
        input="bench-password-not-secret-6\n",
        env=env,
        capture_output=True,
        text=True,
        cwd=harness.REPO,
        check=False,
    )
    if made.returncode != 0:
        return None, f"`alarmhub users create` failed: {made.stderr.strip()[:200]}"
    tok = subprocess.run(
        [*base, "tokens", "create", "--user", "bench-admin"],
        env=env,
        capture_output=True,
        text=True,
        cwd=harness.REPO,
        check=False,
    )
    if tok.returncode != 0 or not tok.stdout.strip():
        return None, f"`alarmhub tokens create` failed: {tok.stderr.strip()[:200]}"
    return tok.stdout.strip().splitlines()[-1].strip(), ""


class _SseReader(threading.Thread):
    """Reads the live stream; remembers when each device's first alarm arrived."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(name="sse", daemon=True)
        self.url = url
        self.token = token
        self.first_seen: dict[str, float] = {}
        self.connected = threading.Event()
        self.error: str | None = None
        self._stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(5.0, read=None)) as client,
                client.stream("GET", self.url, headers=headers) as resp,
            ):
                if resp.status_code != 200:
                    self.error = f"GET /api/v1/alarms/stream answered {resp.status_code}"
                    self.connected.set()
                    return
                self.connected.set()
                event = ""
                for line in resp.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "alarm":
                        now = time.perf_counter()
                        device = orjson.loads(line[5:].strip()).get("device_id")
                        if device and device not in self.first_seen:
                            self.first_seen[device] = now
                    elif not line:
                        event = ""
        except (httpx.HTTPError, OSError) as exc:
            if not self._stop.is_set():
                self.error = f"stream failed: {exc}"
            self.connected.set()

    def stop(self) -> None:
        self._stop.set()


def latency_once(
    port: int,
    work: Path,
    devices: Sequence[Any],
    tag: str,
    opts: Options,
    profile: Path | None = None,
    pg_url: str | None = None,
) -> dict[str, Any]:
    """With `pg_url`, on that (empty) PostgreSQL database instead of a SQLite file."""
    total = int(opts.rate * opts.duration_s)
    presses = workload.press_devices(max(10, total // 20), prefix=f"press{tag}")
    db = work / f"latency-{tag}.db"
    if pg_url is None:
        harness.register(db, [*devices, *presses])
    else:
        cluster_phases.register(pg_url, [*devices, *presses])
    settings = dict(opts.hub_settings)
    # One bench user holds every listener: its per-user cap must not refuse them.
    settings.setdefault("max_streams_per_user", str(max(5, opts.sse_clients)))
    env = harness.hub_env(port, db, f"bench-lat-{tag}", free_port(), **settings)
    if pg_url is not None:
        env["ALARMHUB_DATABASE_URL"] = pg_url
    token, why_no_sse = _api_token(env)
    hub = Hub(env, work / f"hub-lat-{tag}.log")
    hub.start()
    listeners: list[_SseReader] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        hub.wait_ready(opts.timeout_s)
        if token is not None:
            url = f"http://127.0.0.1:{hub.http_port}/api/v1/alarms/stream"
            listeners = [_SseReader(url, token) for _ in range(opts.sse_clients)]
            for reader in listeners:
                reader.start()
            for reader in listeners:
                reader.connected.wait(10)
            why_no_sse = next((r.error for r in listeners if r.error), why_no_sse)
        sse = listeners[0] if listeners else None

        def before() -> None:
            nonlocal spy
            if profile is not None:
                spy = _py_spy(hub.pid, profile, gil=opts.profile_gil)
                time.sleep(0.5)

        out = drive_at_rate(port, devices, presses, tag, opts, hub.pid, before, sse)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        for reader in listeners:
            reader.stop()
        hub.stop()
        harness.drop_session(port, env["ALARMHUB_MQTT_CLIENT_ID"])
    if out["sse_note"] is None:
        out["sse_note"] = why_no_sse or None
    out["sse_clients"] = len(listeners)
    return out


def drive_at_rate(
    port: int,
    devices: Sequence[Any],
    presses: Sequence[Any],
    tag: str,
    opts: Options,
    pid: int | None,
    before: Any = None,
    sse: _SseReader | None = None,
) -> dict[str, Any]:
    """Publish the mix at `opts.rate` after a warm-up; time publish -> receipt (and SSE).

    Whoever answers on `alarmhub/v1/+/receipts` is measured: alarmhub (latency_once) or
    the bare echo client (storm_phases.echo_once). With `pid`, that process's CPU over
    the publishing window is taken from /proc (`hub_core_pct`, `cpu_us_per_msg`).
    """
    total = int(opts.rate * opts.duration_s)
    receipts: dict[str, float] = {}

    def on_receipt(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        ref = orjson.loads(msg.payload).get("ref")
        if ref is not None and ref not in receipts:
            receipts[ref] = now

    sub = harness._client(f"bench-receipts-{tag}")  # noqa: SLF001
    sub.on_message = on_receipt
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe("alarmhub/v1/+/receipts", qos=0)
    subscribed.wait(10)

    pub = harness._client(f"bench-rate-{tag}")  # noqa: SLF001
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    msgs = list(
        workload.messages(total, devices, run_id=f"lat{tag}", start=_start_time(), presses=presses)
    )
    # Warm up (imports, first-use caches) with a short burst that is not measured.
    for m in workload.messages(200, devices, run_id=f"warm{tag}", start=_start_time(), seed=7):
        pub.publish(m.topic, m.payload, qos=1)
    time.sleep(1.0)
    sent: dict[str, float] = {}
    press_sent: dict[str, float] = {}
    if before is not None:
        before()
    with _no_collector():
        return _timed_window(pub, sub, msgs, sent, press_sent, receipts, opts, pid, sse)


@contextlib.contextmanager
def _no_collector() -> Iterator[None]:
    """This process's cyclic collector off while it times messages, on again after.

    The receipts and the live feed are timed here, on this process's threads: a full
    collection of its heap (the window's 20,000 messages and their records) held the
    GIL for 47.6 ms in the middle of a window, and every receipt arriving meanwhile
    was timed that much late, alarmhub's and the bare echo client's alike
    (docs/performance.md, sixteenth part). Frozen first, so what exists is never
    scanned; the window's own garbage is freed by reference counting.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _timed_window(
    pub: paho.Client,
    sub: paho.Client,
    msgs: list[Any],
    sent: dict[str, float],
    press_sent: dict[str, float],
    receipts: dict[str, float],
    opts: Options,
    pid: int | None,
    sse: _SseReader | None,
) -> dict[str, Any]:
    cpu0 = harness.proc_cpu_s(pid) if pid is not None else 0.0
    start = time.perf_counter()
    behind = 0.0
    for i, m in enumerate(msgs):
        due = start + i / opts.rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            behind = max(behind, now - due)
        t = time.perf_counter()
        if m.ref is not None:
            sent[m.ref] = t
        if m.category == "alarm" and m.device_id not in press_sent:
            press_sent[m.device_id] = t
        pub.publish(m.topic, m.payload, qos=1)
    publish_s = time.perf_counter() - start
    cpu = harness.proc_cpu_s(pid) - cpu0 if pid is not None else None
    wait_until = time.perf_counter() + 10
    while time.perf_counter() < wait_until and (
        len(set(sent) & receipts.keys()) < len(sent)
        or (sse is not None and len(press_sent.keys() & sse.first_seen.keys()) < len(press_sent))
    ):
        time.sleep(0.1)
    sub.disconnect()
    sub.loop_stop()
    pub.disconnect()
    pub.loop_stop()
    lat = [(receipts[r] - t) * 1000 for r, t in sent.items() if r in receipts]
    sse_lat = (
        [(sse.first_seen[d] - t) * 1000 for d, t in press_sent.items() if d in sse.first_seen]
        if sse is not None and not sse.error
        else []
    )
    return {
        "offered_per_s": len(msgs) / publish_s,
        "hub_core_pct": cpu / publish_s * 100 if cpu is not None else None,
        # CPU of the measured process per message offered in the window (steady state:
        # what arrives in the window is what it works on in the window).
        "cpu_us_per_msg": cpu / len(msgs) * 1e6 if cpu is not None and msgs else None,
        "publisher_max_behind_ms": behind * 1000,
        "receipts_expected": len(sent),
        "receipts_missing": len(sent) - len(lat),
        "p50_ms": workload.percentile(lat, 50),
        "p99_ms": workload.percentile(lat, 99),
        "max_ms": max(lat) if lat else None,
        "sse_alarms": len(sse_lat),
        "sse_missing": len(press_sent) - len(sse_lat) if sse_lat else None,
        "sse_p50_ms": workload.percentile(sse_lat, 50),
        "sse_p99_ms": workload.percentile(sse_lat, 99),
        "sse_max_ms": max(sse_lat) if sse_lat else None,
        "sse_note": (sse.error if sse is not None else None),
    }


# --- 4: a registry of a million devices ---------------------------------------------


def scale(port: int, work: Path, opts: Options) -> dict[str, Any]:
    n = opts.scale_devices
    db = work / "scale.db"
    t = time.perf_counter()
    step = harness.REGISTER_CHUNK
    for i in range(0, n, step):
        chunk = workload.registry(min(step, n - i), prefix=f"s{i // step:03d}", heartbeat_s=900)
        harness.register(db, chunk)
    register_s = time.perf_counter() - t
    hub = Hub(
        harness.hub_env(port, db, "bench-scale", free_port(), **opts.hub_settings),
        work / "hub-scale.log",
    )
    hub.start()
    try:
        startup_s = hub.wait_ready(max(opts.timeout_s, 180))
        rss_ready, _ = harness.proc_rss_mb(hub.pid)
        text0 = hub.metrics()
        cpu0, t0 = harness.proc_cpu_s(hub.pid), time.perf_counter()
        time.sleep(opts.idle_s)
        cpu1, t1 = harness.proc_cpu_s(hub.pid), time.perf_counter()
        text1 = hub.metrics()
        rss, hwm = harness.proc_rss_mb(hub.pid)
    finally:
        hub.stop()
    steps = harness.metric_sum(
        text1, "alarmhub_supervision_step_seconds_count"
    ) - harness.metric_sum(text0, "alarmhub_supervision_step_seconds_count")
    step_s = harness.metric_sum(
        text1, "alarmhub_supervision_step_seconds_sum"
    ) - harness.metric_sum(text0, "alarmhub_supervision_step_seconds_sum")
    return {
        "devices": n,
        "register_s": register_s,
        "startup_s": startup_s,
        "rss_mb_ready": rss_ready,
        "rss_mb": rss,
        "rss_peak_mb": hwm,
        "supervised": harness.metric_sum(text1, "alarmhub_devices_supervised"),
        "supervision_steps": steps,
        "supervision_step_ms_mean": step_s / steps * 1000 if steps else None,
        "supervision_core_pct": step_s / (t1 - t0) * 100,
        "idle_core_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
        "idle_window_s": t1 - t0,
    }
