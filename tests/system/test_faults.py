"""Fault injection against the real daemon, the real Mosquitto and the real SQLite file.

Each test injects one fault (kill -9, a broker outage, a locked or full database,
a hanging webhook, a never-reading SSE client, a stepped wall clock, SIGTERM under
load) and checks the promises: nothing lost, nothing doubled, the fault visible
in logs, metrics and `/readyz`, and recovery without a person. The long variants
are marked `slow` (`make test-all`); `make test` runs bounded ones. Figures of
each run are printed (`pytest -s`) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.daemon import fanout, notifier
from alarmhub.dev.mosquitto import LocalBroker, free_port
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    native,
    register,
    rules_with_webhook,
    run_cli,
    spawn_daemon,
    wait_until,
)

pytestmark = pytest.mark.broker

INBOX = "SELECT count(*) FROM inbox"
BACKOFF_MIN_S = 0.2  # the daemons' reconnect backoff minimum (daemon_env)
# A ceiling on waiting for a daemon to exit, so a hang fails the test instead of blocking
# it; a clean stop is judged by its exit status and log, not by how long it took.
HANG_S = 30


# --- helpers shared with tests/system/test_soak.py ------------------------------------------


def daemon_env(db: Path, broker: LocalBroker, client_id: str, **extra: str) -> dict[str, str]:
    env = {
        "ALARMHUB_DATABASE_URL": f"sqlite:///{db}",
        "ALARMHUB_MQTT_URL": broker.url,
        "ALARMHUB_MQTT_CLIENT_ID": client_id,
        "ALARMHUB_MQTT_RECONNECT_MIN_S": str(BACKOFF_MIN_S),
        "ALARMHUB_MQTT_RECONNECT_MAX_S": "2",
    }
    env.update(extra)
    return env


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def http_get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    except httpx.HTTPError:
        return None


def ready_status(port: int) -> int | None:
    r = http_get(port, "/readyz")
    return None if r is None else r.status_code


def metric(port: int, name: str) -> float | None:
    """One unlabelled sample from /metrics, or None."""
    r = http_get(port, "/metrics")
    if r is None:
        return None
    m = re.search(rf"^{re.escape(name)} (\S+)$", r.text, re.MULTILINE)
    return float(m.group(1)) if m else None


def log_events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            item = orjson.loads(line)
            if isinstance(item, dict):
                out.append(item)
    return out


def event_names(log: Path) -> list[str]:
    return [str(e.get("event")) for e in log_events(log)]


def gaps_s(log: Path, event: str) -> list[float]:
    """Seconds between consecutive log lines of `event`, from their timestamps."""
    times = [
        datetime.fromisoformat(str(e["timestamp"]))
        for e in log_events(log)
        if e.get("event") == event
    ]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def mixed_burst(n: int, devices: int) -> tuple[list[tuple[str, bytes]], int, int]:
    """n messages: 1 in 10 a button press, 1 in 20 malformed JSON, the rest heartbeats.

    Returns the messages, the number of presses and the number of dead letters.
    """
    items: list[tuple[str, bytes]] = []
    presses = bad = 0
    for i in range(n):
        device = f"c{i % devices:04d}"
        if i % 10 == 0:
            items.append(native(f"c{(i // 10) % devices:04d}", f"press-{i}", "button.pressed"))
            presses += 1
        elif i % 20 == 5:
            items.append((f"alarmhub/v1/{device}/events", f'{{"id": "bad-{i}", broken'.encode()))
            bad += 1
        else:
            items.append(native(device, f"hb-{i}", "heartbeat"))
    return items, presses, bad


def assert_exactly_once(db: Path, n: int, devices: int, presses: int, bad: int) -> dict[str, int]:
    """Every message stored once; alarms, repeats, escalations and dead letters exact."""
    counts = {
        "inbox": db_count(db, INBOX),
        "distinct_msg": db_count(
            db, "SELECT count(DISTINCT device_id || '/' || msg_id) FROM inbox"
        ),
        "dead_letters": db_count(db, "SELECT count(*) FROM inbox WHERE verdict='rejected'"),
        "alarms": db_count(db, "SELECT count(*) FROM alarms"),
        "repeats": db_count(db, "SELECT coalesce(sum(repeat_count), 0) FROM alarms"),
        "raised": db_count(db, "SELECT count(*) FROM timeline WHERE type='raised'"),
        "repeated": db_count(db, "SELECT count(*) FROM timeline WHERE type='repeated'"),
        "escalations": db_count(db, "SELECT count(*) FROM escalations"),
        "escalated": db_count(db, "SELECT count(*) FROM timeline WHERE type='escalated'"),
    }
    assert counts["inbox"] == n, counts
    # Malformed JSON has no readable id (NULL, not counted by DISTINCT): every other id once.
    assert counts["distinct_msg"] == n - bad, counts
    assert counts["dead_letters"] == bad, counts
    assert counts["alarms"] == devices, counts
    assert counts["repeats"] == presses - devices, counts
    assert counts["raised"] == devices, counts
    assert counts["repeated"] == presses - devices, counts
    # Level 1 (the queue) fires at once for every alarm; later steps fire once each if the
    # run outlasts them (level 2 is due 60 s after raising). Never a step twice.
    assert db_count(db, "SELECT count(*) FROM escalations WHERE round=0 AND step=0") == devices
    assert counts["escalated"] == db_count(
        db, "SELECT count(*) FROM escalations WHERE reason='escalate'"
    ), counts
    twice = db_rows(
        db,
        "SELECT alarm_id, json_extract(detail, '$.level'), count(*) FROM timeline "
        "WHERE type='escalated' GROUP BY 1, 2 HAVING count(*) > 1",
    )
    assert twice == [], twice[:5]
    notices = db_count(db, "SELECT count(*) FROM outbox")
    assert notices == db_count(
        db, "SELECT count(*) FROM escalations WHERE reason='escalate' AND level > 1"
    ), notices
    counts["outbox"] = notices
    return counts


# --- 1. kill -9, many times, mid-burst --------------------------------------------------


def kill_loop(tmp_path: Path, broker: LocalBroker, client_id: str, n: int, kills: int) -> None:
    db = tmp_path / "alarmhub.db"
    devices = 200
    register(
        f"sqlite:///{db}", [(f"c{i:04d}", "safety_alarm", "0301") for i in range(devices)], tmp_path
    )
    # Small batches stretch the burst over many commits, so each kill lands mid-stream.
    env = daemon_env(db, broker, client_id, ALARMHUB_MAX_BATCH="50")
    log = tmp_path / "daemon.log"
    items, presses, bad = mixed_burst(n, devices)
    rng = random.Random(n * 31 + kills)
    # The burst in kills + 1 parts, part k published once life k+1 is up: at each kill a
    # part is still unpublished, so no life can have drained the whole burst before its
    # kill, however fast the daemon (with the whole burst queued at the broker, one life
    # once drained the rest before the test looked).
    size = -(-n // (kills + 1))
    parts = [items[i : i + size] for i in range(0, n, size)]
    committed_at_kill: list[int] = []
    daemon = spawn_daemon(env, log)
    pub = Publisher(broker.port, f"{client_id}-pub")
    started = time.monotonic()
    sender: threading.Thread | None = None

    def send(part: list[tuple[str, bytes]]) -> threading.Thread:
        if sender is not None:
            sender.join(60)
            assert not sender.is_alive()
        thread = threading.Thread(target=pub.publish_many, args=(part,), daemon=True)
        thread.start()
        return thread

    try:
        assert wait_until(lambda: b"mqtt.connected" in log.read_bytes(), 15), log.read_text()
        for life, part in enumerate(parts[:kills], start=1):
            # Each life must be up before it gets its part, and is killed while taking it:
            # at least 50 of it committed, then a random delay.
            assert wait_until(lambda k=life: event_names(log).count("mqtt.connected") >= k, 30)  # type: ignore[misc]
            target = db_count(db, INBOX) + 50
            sender = send(part)
            assert wait_until(lambda m=target: db_count(db, INBOX) >= m, 60), (  # type: ignore[misc]
                target,
                db_count(db, INBOX),
            )
            time.sleep(rng.uniform(0, 0.05))
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            committed_at_kill.append(db_count(db, INBOX))
            daemon = spawn_daemon(env, log)
        sender = send([m for part in parts[kills:] for m in part])
        sender.join(60)
        assert not sender.is_alive()
        assert wait_until(lambda: db_count(db, INBOX) >= n, 120), db_count(db, INBOX)
        time.sleep(1.0)  # a late duplicate would show up now
        counts = assert_exactly_once(db, n, devices, presses, bad)
    finally:
        pub.close()
        code = stop_daemon(daemon)
    assert code == 0, log.read_text()[-2000:]
    assert len(committed_at_kill) == kills
    assert all(c < n for c in committed_at_kill), (
        f"a kill came after the burst: {committed_at_kill}"
    )
    # Each kill really interrupted a running daemon: the log shows one start per life.
    assert event_names(log).count("mqtt.connecting") == kills + 1
    print(
        f"\nkill -9 x{kills} during {n} messages in {time.monotonic() - started:.1f} s; "
        f"committed at each kill {committed_at_kill}; final {counts}; lost 0, duplicated 0"
    )


def test_kill_9_repeatedly_during_a_burst_bounded(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    kill_loop(tmp_path, broker, client_id, n=3_000, kills=3)


@pytest.mark.slow
def test_kill_9_ten_times_during_20000_messages(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    kill_loop(tmp_path, broker, client_id, n=20_000, kills=10)


# --- 2. the broker goes away mid-stream and comes back on the same port -----------------


def broker_outage(
    tmp_path: Path, broker: LocalBroker, client_id: str, outage_s: float, sig: int
) -> None:
    db = tmp_path / "alarmhub.db"
    devices = 100
    register(
        f"sqlite:///{db}", [(f"c{i:04d}", "safety_alarm", "0301") for i in range(devices)], tmp_path
    )
    port = free_port()
    env = daemon_env(
        db, broker, client_id, ALARMHUB_MAX_BATCH="50", ALARMHUB_HTTP_LISTEN=f"127.0.0.1:{port}"
    )
    log = tmp_path / "daemon.log"
    n = 3_000
    items, presses, bad = mixed_burst(n, devices)
    before, after = items[:2_000], items[2_000:]
    daemon = spawn_daemon(env, log)
    try:
        assert wait_until(lambda: ready_status(port) == 200, 20), log.read_text()[-2000:]
        # Freeze alarmhub so the broker holds (and has half-sent) messages it has not
        # committed; then the broker goes away; then alarmhub thaws, with deliveries in
        # its socket buffer whose acks can no longer reach anyone.
        daemon.send_signal(signal.SIGSTOP)
        try:
            pub = Publisher(broker.port, f"{client_id}-pub")
            pub.publish_many(before)  # the broker has every one of them (PUBACK)
            pub.close()
            broker.stop(sig)
            at_stop = db_count(db, INBOX)
        finally:
            daemon.send_signal(signal.SIGCONT)
        down_at = time.monotonic()
        # paho learns that the broker is gone when its thawed network thread reads the
        # socket: what the broker had sent, then EOF (or a reset) from the kernel, which
        # closed the dead broker's end; ingest clears its connected flag before it logs
        # `mqtt.disconnected`. So wait for that line (a ceiling on a hang, not a timing:
        # a loaded machine may take long to run the thawed daemon), then readiness must
        # already say so, at once.
        # Under load paho's thawed thread may first fail a reconnect (`mqtt.connect_failed`)
        # and log the lost connection's line in an order the test cannot choose; either
        # says paho knows, and readiness below must already say so.
        gone = {"mqtt.disconnected", "mqtt.connect_failed"}
        assert wait_until(lambda: bool(gone & set(event_names(log))), HANG_S), log.read_text()[
            -2000:
        ]
        noticed_s = time.monotonic() - down_at
        readyz, deadline = None, time.monotonic() + HANG_S
        while readyz is None and time.monotonic() < deadline:
            readyz = http_get(port, "/readyz")  # None: no answer within 2 s; ask again
        assert readyz is not None, "/readyz never answered"
        assert readyz.status_code == 503, readyz.text
        body = orjson.loads(readyz.content)
        assert body["checks"]["broker_connected"] is False
        assert body["checks"]["database_writable"] is True
        assert metric(port, "alarmhub_mqtt_connected") == 0
        time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
        failed_attempts = event_names(log).count("mqtt.connect_failed")
        assert ready_status(port) == 503
        broker.start()
        up_at = time.monotonic()
        assert wait_until(lambda: ready_status(port) == 200, 15), log.read_text()[-2000:]
        reconnect_s = time.monotonic() - up_at
        pub = Publisher(broker.port, f"{client_id}-pub")
        pub.publish_many(after)
        pub.close()
        assert wait_until(lambda: db_count(db, INBOX) >= n, 60), db_count(db, INBOX)
        time.sleep(0.5)
        counts = assert_exactly_once(db, n, devices, presses, bad)
        assert metric(port, "alarmhub_mqtt_reconnects_total") == 1
        assert metric(port, "alarmhub_mqtt_connected") == 1
    finally:
        code = stop_daemon(daemon)
    assert code == 0, log.read_text()[-2000:]
    names = event_names(log)
    assert "mqtt.disconnected" in names
    assert at_stop < len(before), "alarmhub had drained everything: the outage tested nothing"
    # Retrying with backoff, not spinning: it did retry, and no two attempts came closer
    # together than the backoff's minimum (0.2 s here). A slow machine only widens the
    # gaps, so this holds however long the outage's steps took.
    assert failed_attempts >= 1, failed_attempts
    gaps = gaps_s(log, "mqtt.connect_failed")
    assert all(g >= BACKOFF_MIN_S for g in gaps), gaps
    print(
        f"\nbroker {signal.Signals(sig).name} for {outage_s:.0f} s with {len(before) - at_stop} "
        f"messages un-drained; the loss noticed {noticed_s:.2f} s after the thaw; "
        f"{failed_attempts} reconnect attempts during the outage; "
        f"/readyz 200 again {reconnect_s:.2f} s after the broker came back; final {counts}"
    )


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGTERM, id="term"),
        # kill -9 of Mosquitto itself: under load, 2 of 4 runs stored 2,999 of 3,000. The
        # lost one had been PUBACKed to the publisher but was neither delivered to
        # alarmhub nor in the broker's last autosave (docs/reliability.md, Known
        # limits). A broker-persistence limit, not an alarmhub one; kept out of
        # `make test` until it is pinned down, run by `make test-all`.
        pytest.param(signal.SIGKILL, id="kill", marks=pytest.mark.slow),
    ],
)
def test_broker_outage_bounded(
    tmp_path: Path, broker: LocalBroker, client_id: str, sig: int
) -> None:
    broker_outage(tmp_path, broker, client_id, outage_s=5, sig=sig)


@pytest.mark.slow
def test_broker_outage_30s(tmp_path: Path, broker: LocalBroker, client_id: str) -> None:
    broker_outage(tmp_path, broker, client_id, outage_s=30, sig=signal.SIGTERM)


# --- 3. database trouble: a lock held by another process, a full disk ----------------


def assert_store_fault_visible(port: int, log: Path) -> None:
    body = orjson.loads(http_get(port, "/readyz").content)  # type: ignore[union-attr]
    assert body["checks"]["database_writable"] is False, body
    assert metric(port, "alarmhub_store_writable") == 0
    assert (metric(port, "alarmhub_commit_failures_total") or 0) >= 1
    failed = [e for e in log_events(log) if e.get("event") == "store.commit_failed"]
    assert failed, "store.commit_failed was not logged"


def test_database_locked_by_another_process(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """`BEGIN EXCLUSIVE` held elsewhere for longer than busy_timeout: wait, do not ack, recover."""
    db = tmp_path / "alarmhub.db"
    devices = 50
    register(
        f"sqlite:///{db}", [(f"c{i:04d}", "safety_alarm", "0301") for i in range(devices)], tmp_path
    )
    port = free_port()
    env = daemon_env(db, broker, client_id, ALARMHUB_HTTP_LISTEN=f"127.0.0.1:{port}")
    log = tmp_path / "daemon.log"
    items, presses, bad = mixed_burst(1_500, devices)
    first, during, last = items[:500], items[500:1_000], items[1_000:]
    daemon = spawn_daemon(env, log)
    pub = Publisher(broker.port, f"{client_id}-pub")
    try:
        assert wait_until(lambda: ready_status(port) == 200, 20), log.read_text()[-2000:]
        pub.publish_many(first)
        assert wait_until(lambda: db_count(db, INBOX) == 500, 20)
        # Phase A: the lock is held for 8 s (busy_timeout is 5 s); alarmhub must wait it out.
        lock = sqlite3.connect(db, timeout=10, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        try:
            pub.publish_many(during)
            assert wait_until(lambda: ready_status(port) == 503, 20), log.read_text()[-1500:]
            assert_store_fault_visible(port, log)
            assert db_count(db, INBOX) == 500  # nothing of the locked period is stored ...
            time.sleep(max(0.0, 8 - (time.monotonic() - locked_at)))
        finally:
            lock.rollback()
            lock.close()
        released = time.monotonic()
        assert wait_until(lambda: db_count(db, INBOX) == 1_000, 30), db_count(db, INBOX)
        recovered_s = time.monotonic() - released
        assert wait_until(lambda: ready_status(port) == 200, 10)
        assert metric(port, "alarmhub_store_writable") == 1
        failures = metric(port, "alarmhub_commit_failures_total")
        # Phase B: locked again, and alarmhub dies meanwhile. Had it acknowledged the
        # messages it could not store, they would be gone now.
        lock = sqlite3.connect(db, timeout=10, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            pub.publish_many(last)
            assert wait_until(lambda: metric(port, "alarmhub_store_writable") == 0, 60)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
        finally:
            lock.rollback()
            lock.close()
        assert db_count(db, INBOX) == 1_000
        daemon = spawn_daemon(env, log)
        assert wait_until(lambda: db_count(db, INBOX) >= 1_500, 60), db_count(db, INBOX)
        time.sleep(0.5)
        counts = assert_exactly_once(db, 1_500, devices, presses, bad)
    finally:
        pub.close()
        code = stop_daemon(daemon)
    assert code == 0, log.read_text()[-2000:]
    assert "store.recovered" in event_names(log)
    # Logged once per minute, not once per retry: however long the faults lasted, no two
    # store.commit_failed lines within a minute of each other (1 s for timestamp skew:
    # the log's wall clock against the monotonic clock that OncePer counts on).
    assert "store.commit_failed" in event_names(log)
    assert all(g >= 59 for g in gaps_s(log, "store.commit_failed")), gaps_s(
        log, "store.commit_failed"
    )
    print(
        f"\nlocked 8 s: {failures:.0f} commit failures counted, recovered {recovered_s:.2f} s "
        f"after release; locked + kill -9: nothing lost; final {counts}"
    )


@contextlib.contextmanager
def small_disk(where: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of `size` (root only); unmounted afterwards even if the test fails."""
    where.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Fill the file system to the last byte (unbuffered, so no flush fails later)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)
    return filler


def test_disk_full(tmp_path: Path, broker: LocalBroker, client_id: str) -> None:
    """The database's file system fills up: alarmhub waits unacknowledged and recovers."""
    # The test's premise is that the space returned holds the rest of the burst. What
    # the catch-up needs is the rest of the data plus the WAL, and the WAL's peak is
    # speed-dependent: it is cut at ALARMHUB_SQLITE_WAL_LIMIT_MB, but this test's own
    # db_count() polls pin it, and between two cuts it grows by what the commits of
    # one check interval write. On a 16 MB disk one run in four (at 97be215, with
    # issue 12's larger inbox rows) saw the WAL cut at 8 MB and the disk fill again for
    # good: a full disk, correctly held unacknowledged, not a defect. The WAL limit
    # itself is proven by test_wal_bound.py; here the disk is sized so that the space
    # returned is ample on any machine (the filler takes all of it while "full").
    with small_disk(tmp_path / "disk", "64m") as disk:
        db = disk / "alarmhub.db"
        devices = 50
        register(
            f"sqlite:///{db}",
            [(f"c{i:04d}", "safety_alarm", "0301") for i in range(devices)],
            tmp_path,
        )
        port = free_port()
        env = daemon_env(
            db,
            broker,
            client_id,
            ALARMHUB_HTTP_LISTEN=f"127.0.0.1:{port}",
            ALARMHUB_SQLITE_WAL_LIMIT_MB="4",
        )
        log = tmp_path / "daemon.log"
        n = 6_000
        items, presses, bad = mixed_burst(n, devices)
        daemon = spawn_daemon(env, log)
        pub = Publisher(broker.port, f"{client_id}-pub")
        try:
            assert wait_until(lambda: ready_status(port) == 200, 20), log.read_text()[-2000:]
            pub.publish_many(items[:500])
            assert wait_until(lambda: db_count(db, INBOX) == 500, 20)
            filler = fill(disk)
            # Space already inside the WAL file is reused: keep sending until writes fail.
            sent = 500
            while sent < n and metric(port, "alarmhub_store_writable") != 0:
                pub.publish_many(items[sent : sent + 250])
                sent += 250
                time.sleep(0.3)
            assert wait_until(lambda: ready_status(port) == 503, 15), (sent, db_count(db, INBOX))
            assert_store_fault_visible(port, log)
            stuck = db_count(db, INBOX)
            time.sleep(2)
            assert db_count(db, INBOX) == stuck
            assert ready_status(port) == 503
            error = next(
                e["error"] for e in log_events(log) if e.get("event") == "store.commit_failed"
            )
            filler.unlink()
            freed = time.monotonic()
            pub.publish_many(items[sent:])
            assert wait_until(lambda: db_count(db, INBOX) >= n, 60), db_count(db, INBOX)
            recovered_s = time.monotonic() - freed
            assert wait_until(lambda: ready_status(port) == 200, 10)
            time.sleep(0.5)
            counts = assert_exactly_once(db, n, devices, presses, bad)
        finally:
            pub.close()
            code = stop_daemon(daemon)
        assert code == 0, log.read_text()[-2000:]
        assert "store.recovered" in event_names(log)
        cuts = event_names(log).count("store.wal_truncated")
        print(
            f"\ndisk full after {stuck} messages ({error!r}); stored the rest "
            f"{recovered_s:.2f} s after space was freed; WAL cut {cuts} times; final {counts}"
        )


# --- 4. slow consumers: a webhook that hangs or fails, an SSE client that never reads ---


class Hook:
    """A webhook receiver whose behaviour the test switches: hang, 500, or accept.

    "hang" holds each request, unanswered, until the test sets `release`; then it closes
    the connection without an answer (a receiver that hung and then dropped the call).
    Once released, later "hang" requests are dropped at once. `held` is how many
    requests the receiver is holding right now.
    """

    def __init__(self) -> None:
        self.mode = "hang"
        self.release = threading.Event()
        self.accepted: list[dict[str, Any]] = []
        self.requests = 0
        self.held = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                hook.requests += 1
                if hook.mode == "hang":
                    hook.held += 1
                    hook.release.wait()
                    hook.held -= 1
                    return
                if hook.mode == "fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                hook.accepted.append(orjson.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def outbox(db: Path) -> list[tuple[Any, ...]]:
    return db_rows(
        db,
        "SELECT alarm_id, attempts, last_error, sent_at, next_attempt_at "
        "FROM outbox WHERE channel='webhook' ORDER BY id",
    )


async def test_hanging_then_failing_webhook_does_not_slow_ingest_and_is_retried(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest commits while a webhook call hangs; the notice is retried with backoff until accepted.

    The receiver holds the first notice unanswered until the test lets go, so "while
    the call is outstanding" is a state the test sets up, not a race between the flood
    and a timeout: every heartbeat of the flood must be committed while the notifier is
    still inside that call (no outbox row has an attempt recorded yet). Were ingest
    waiting on the notifier, the flood would never be stored and the wait would fail.
    The send timeout is raised above the test's own run time, so only the test ends
    the hang. Retries are stepped on a hand-moved clock: each is checked against the
    backoff (1 s, then 2 s), never against how fast anything ran.
    """
    monkeypatch.setattr(notifier, "SEND_TIMEOUT_S", 600.0)  # longer than pytest's 300 s timeout
    db = tmp_path / "alarmhub.db"
    alarms, flood = 5, 3_000
    register(
        f"sqlite:///{db}",
        [(f"w{i}", "safety_alarm", "0301") for i in range(alarms)]
        + [(f"c{i:04d}", "safety_alarm", "0301") for i in range(50)],
        tmp_path,
    )
    hook = Hook()
    clock = FakeClock(datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC))
    rules = rules_with_webhook(tmp_path, f"http://127.0.0.1:{hook.port}/hook")
    pub = Publisher(broker.port, f"{client_id}-pub")
    try:
        settings = hub_settings(tmp_path, broker.url, client_id, rules=rules)
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            for i in range(alarms):
                pub.publish(*native(f"w{i}", f"press-{i}", "button.pressed"))
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM escalations") == alarms, 10
            )
            clock.advance(timedelta(seconds=2))  # the webhook step is due: five notices
            assert await async_wait_until(lambda: hook.held == 1, 10), hook.requests
            # A flood of heartbeats while the receiver holds the first notice.
            items = [native(f"c{i % 50:04d}", f"hb-{i}", "heartbeat") for i in range(flood)]
            t0 = time.monotonic()
            await asyncio.to_thread(pub.publish_many, items)
            assert await async_wait_until(lambda: db_count(db, INBOX) == alarms + flood, 60), (
                db_count(db, INBOX)
            )
            flood_s = time.monotonic() - t0
            # All stored, and the call is still outstanding: the receiver holds it, and
            # the notifier has not finished a single attempt.
            assert hook.held == 1
            assert hook.requests == 1
            assert [(r[1], r[2], r[3]) for r in outbox(db)] == [(0, None, None)] * alarms, outbox(
                db
            )
            # The receiver drops the call (and every later one) unanswered: a failure each.
            hook.release.set()
            assert await async_wait_until(lambda: all(r[1] == 1 for r in outbox(db)), 15), outbox(
                db
            )
            rows = outbox(db)
            assert len(rows) == alarms
            assert all(r[2].startswith("RemoteProtocolError") and r[3] is None for r in rows), rows
            # Backoff: with the clock held, nothing is retried (1 s after the first failure).
            await asyncio.sleep(2.5)
            assert [r[1] for r in outbox(db)] == [1] * alarms
            assert hook.requests == alarms
            hook.mode = "fail"
            clock.advance(timedelta(seconds=2))
            assert await async_wait_until(lambda: all(r[1] == 2 for r in outbox(db)), 10), outbox(
                db
            )
            assert all(r[2] == "RuntimeError: webhook answered 500" for r in outbox(db))
            # The second wait is longer (2 s): one second later nothing is due yet.
            clock.advance(timedelta(seconds=1))
            await asyncio.sleep(2)
            assert [r[1] for r in outbox(db)] == [2] * alarms
            hook.mode = "ok"
            clock.advance(timedelta(seconds=2))
            assert await async_wait_until(lambda: all(r[3] is not None for r in outbox(db)), 10), (
                outbox(db)
            )
            assert [r[1] for r in outbox(db)] == [3] * alarms
            assert sorted(a["alarm"] for a in hook.accepted) == sorted(r[0] for r in outbox(db))
            assert hub.notifier.failed == 2 * alarms
    finally:
        pub.close()
        hook.close()
    print(
        f"\nwebhook held, dropped, then 500, then 204: {flood} messages stored in {flood_s:.2f} s "
        f"while the first notice was held; each notice tried 3 times (1 s, 2 s backoff) and "
        f"recorded as sent once"
    )


async def test_sse_client_that_never_reads_is_cut_off_and_does_not_slow_ingest(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.api_harness import stack  # noqa: PLC0415 - needs the API's accounts

    caplog.set_level(logging.WARNING)
    # A listener's queue of 1,000 changes instead of 10,000: the mechanism under test
    # is the overflow, and the stalled connection's kernel buffers (several MB on
    # loopback) absorb thousands of changes before its queue even starts to fill.
    # With one change per new alarm, 12,000 alarms no longer always overflowed 10,000
    # (seen once); the reading client's backlog stays under one round of 250.
    monkeypatch.setattr(fanout, "QUEUE_SIZE", 1_000)

    async with stack(tmp_path, broker, client_id, alarms=False) as s:
        register(
            f"sqlite:///{s.db}",
            [(f"s{i:04d}", "safety_alarm", "0301") for i in range(12_000)],
            tmp_path,
        )
        port = int(s.base.rsplit(":", 1)[1])
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled_port = stalled.getsockname()[1]
        stalled.sendall(
            f"GET /api/v1/alarms/stream HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {s.tokens['op0301']}\r\n\r\n".encode()
        )
        try:
            assert await async_wait_until(lambda: s.hub.live.listeners == 1, 30)
            async with s.client("op0301b") as c, c.stream("GET", "/api/v1/alarms/stream") as resp:
                assert resp.status_code == 200
                got, last_id = 0, 0

                async def read() -> None:  # a healthy client reads all the time
                    nonlocal got, last_id
                    async for line in resp.aiter_lines():
                        got += line.startswith("event: alarm")
                        if line.startswith("id: "):
                            last_id = int(line[4:])

                reader = asyncio.create_task(read())
                assert await async_wait_until(lambda: s.hub.live.listeners == 2, 30)
                sent, t0 = 0, time.monotonic()
                # Rounds of 250 alarms, and the next round only once the reading client has
                # every change so far: its backlog never exceeds one round's changes, far
                # below a listener's queue, however fast this machine ingests or serves. Only
                # the client that does not read accumulates, until its queue overflows.
                # (Without the wait, a loaded machine served the reading client more slowly
                # than it ingested, and it too fell a queue behind and was cut off.)
                while s.hub.live.dropped_listeners == 0 and sent < 12_000:
                    items = [
                        native(f"s{i:04d}", f"p{i}", "button.pressed")
                        for i in range(sent, sent + 250)
                    ]
                    await asyncio.to_thread(s.pub.publish_many, items)
                    sent += 250
                    assert await async_wait_until(
                        lambda n=sent: db_count(s.db, "SELECT count(*) FROM alarms") == n,  # type: ignore[misc]
                        60,
                    ), "ingest stalled behind the client that does not read"
                    seq = s.hub.live.seq
                    assert await async_wait_until(lambda q=seq: last_id >= q, 60), (last_id, seq)  # type: ignore[misc]
                ingest_s = time.monotonic() - t0
                changes = s.hub.live.seq
                # Exactly the client that stopped reading was cut off ...
                assert list(s.hub.live.cut_off) == [f"127.0.0.1:{stalled_port}"], list(
                    s.hub.live.cut_off
                )
                # ... and the reading client is still listening and has every alarm.
                assert s.hub.live.listeners == 1
                assert await async_wait_until(lambda: got >= sent, 60), (got, sent)
                reader.cancel()
        finally:
            stalled.close()
    # Clients that went away are not server errors: uvicorn logged "Exception in ASGI
    # application" (FastAPI's SSE keep-alive, anyio.BrokenResourceError) at error level.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
    print(
        f"\nSSE: a never-reading client was cut off after {sent} alarms, {changes} changes "
        f"(stored in {ingest_s:.2f} s); the reading client stayed connected"
    )


# --- 5. the wall clock steps an hour: no burst of escalations, nobody declared offline --


async def test_clock_jumps_with_many_devices(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    watched, alarmed = 300, 20
    csv = tmp_path / "d.csv"
    csv.write_text(
        "id,kind,municipality,heartbeat_interval\n"
        + "".join(f"hb{i:03d},safety_alarm,0301,60\n" for i in range(watched))
        + "".join(f"al{i:02d},safety_alarm,4601\n" for i in range(alarmed))
    )
    assert (
        run_cli(
            ["devices", "import", str(csv)], {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
        ).returncode
        == 0
    )
    clock = FakeClock(datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC))
    offline = "SELECT count(*) FROM alarms WHERE kind='device_offline'"
    pub = Publisher(broker.port, f"{client_id}-pub")
    try:
        async with AlarmHub(
            hub_settings(tmp_path, broker.url, client_id), clock=clock, serve_http=False
        ) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish_many(
                [native(f"al{i:02d}", f"p{i}", "button.pressed") for i in range(alarmed)]
            )
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM escalations") == alarmed, 10
            )
            for step in (timedelta(hours=1), timedelta(hours=-2), timedelta(hours=1)):
                clock.jump(step)
                await asyncio.sleep(2.5)  # supervision steps every 1 s; the escalator wakes too
                assert db_count(db, offline) == 0, step
                assert db_count(db, "SELECT count(*) FROM escalations") == alarmed, step
            assert hub.supervision.declared_silent == 0
            # Real time passing still works: 3 x 60 s of silence -> every watched device offline.
            clock.advance(timedelta(seconds=181))
            assert await async_wait_until(lambda: db_count(db, offline) == watched, 15), db_count(
                db, offline
            )
            # ... and the 60 s escalation step fires once per alarm, not once per jump.
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM escalations WHERE step=1") == alarmed, 10
            )
            # 181 s also passes the 180 s step: each fires once, whatever the jumps did.
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM escalations WHERE step=2") == alarmed, 10
            )
            await asyncio.sleep(1.5)
            assert (
                db_count(
                    db,
                    "SELECT count(*) FROM escalations WHERE alarm_id IN "
                    "(SELECT id FROM alarms WHERE kind='button')",
                )
                == 3 * alarmed
            )
    finally:
        pub.close()


# --- 6. SIGTERM under load ------------------------------------------------------------


def test_sigterm_under_load_commits_the_batch_in_flight_and_exits_0(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    devices = 100
    register(
        f"sqlite:///{db}", [(f"c{i:04d}", "safety_alarm", "0301") for i in range(devices)], tmp_path
    )
    env = daemon_env(db, broker, client_id, ALARMHUB_MAX_BATCH="200")
    log = tmp_path / "daemon.log"
    n = 6_000
    items, presses, bad = mixed_burst(n, devices)
    daemon = spawn_daemon(env, log)
    pub = Publisher(broker.port, f"{client_id}-pub")
    try:
        # Subscribed (SUBACK), not only started: a new session matches nothing before
        # it, and the broker drops what is published then (client.py, _on_connect). The
        # "stall" of mqtt-on-loop's CI run was that: the burst's first messages, never
        # delivered (two of five runs with a core kept busy: the first 63 and 695).
        assert wait_until(lambda: b"mqtt.connected" in log.read_bytes(), 20), log.read_text()
        sender = threading.Thread(target=pub.publish_many, args=(items,), daemon=True)
        sender.start()
        assert wait_until(lambda: db_count(db, INBOX) >= n // 4, 30)
        t0 = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(HANG_S)  # a ceiling, so a hang fails here: not a measure of speed
        exit_s = time.monotonic() - t0
        at_exit = db_count(db, INBOX)
        sender.join(60)
        committed_batches = [
            e.get("batches_committed")
            for e in log_events(log)
            if e.get("event") == "alarmhub.stopping"
        ]
        daemon = spawn_daemon(env, log)
        assert wait_until(lambda: db_count(db, INBOX) >= n, 60), db_count(db, INBOX)
        time.sleep(0.5)
        counts = assert_exactly_once(db, n, devices, presses, bad)
    finally:
        pub.close()
        stop_daemon(daemon)
    assert code == 0, log.read_text()[-3000:]
    assert at_exit < n, "the burst was over before SIGTERM: it proved nothing"
    # A clean stop: exit 0 (above), alarmhub.stopping logged, no error logged, and after
    # the restart every message exactly once (what was acked had been committed).
    assert committed_batches, "alarmhub.stopping was not logged"
    errors = [e for e in log_events(log) if e.get("level") in ("error", "critical")]
    assert errors == [], errors[:3]
    print(
        f"\nSIGTERM at {at_exit} of {n} messages: exit 0 after {exit_s:.2f} s; after restart {counts}"
    )
