"""`make demo` end to end: a real broker, the hub and the simulator in one process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.helpers import REPO, db_count, wait_until

pytestmark = pytest.mark.broker

# A ceiling on waiting for the demo to exit after a signal, so a hang fails the test
# instead of blocking the suite. Not a measure of shutdown speed: the verdict on a stop
# is its exit status and the lines a clean stop prints (`stop`); a normal stop takes a
# few seconds, and a slow machine may take longer without anything being wrong.
HANG_S = 60


def stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> tuple[str, str]:
    """Signal the demo and wait for it to exit; its stdout and stderr.

    A clean stop is exit status 0 with the demo's own shutdown lines: the simulator's
    summary (its task group ended, not cancelled mid-way), the hub's `alarmhub.stopping`
    in the alarmhub log (the daemon stopped intake on its own terms) and `demo: stopped`
    (printed only after the hub's context has exited), and no traceback anywhere.
    """
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the demo did not exit within {HANG_S} s of {sig.name} (a hang):\n{err}")
    assert proc.returncode == 0, err
    assert re.search(r"^demo: the simulator sent \d+ messages", err, re.MULTILINE), err
    assert re.search(r"^demo: stopped$", err, re.MULTILINE), err
    assert "Traceback" not in out + err, err
    return out, err


def assert_hub_stopped_cleanly(tmp_path: Path) -> None:
    """The hub logged its own stop, and nothing went wrong from then on."""
    log = (tmp_path / "demo" / "alarmhub.log").read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert "alarmhub.stopping" in names, log[-2000:]
    after = events[names.index("alarmhub.stopping") :]
    assert [e for e in after if e.get("level") in ("error", "critical")] == [], log[-2000:]


def start_demo(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALARMHUB_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alarmhub.dev.demo",
            "--port",
            "0",
            "--homes",
            "12",
            "--speed",
            "900",
            "--data-dir",
            str(tmp_path / "demo"),
            *extra,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_banner(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """Lines up to 'Press Ctrl-C': the URL and the logins are printed before it."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    return "".join(lines)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_prints_where_to_look_serves_raises_alarms_and_stops_on_a_signal(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc = start_demo(tmp_path, "--duration", "120")
    try:
        banner = read_banner(proc)
        url = re.search(r"operator page\s+(http://127\.0\.0\.1:(\d+)/)", banner)
        assert url, banner + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        for name in ("demo-operator", "demo-admin"):
            assert re.search(rf"{name}\s+password \S{{12,}}", banner), banner
        with urllib.request.urlopen(url.group(1) + "healthz", timeout=5) as resp:
            assert resp.status == 200
        db = tmp_path / "demo" / "alarmhub.db"
        assert wait_until(lambda: db_count(db, "SELECT count(*) FROM alarms") > 0, 20)
        assert db_count(db, "SELECT count(*) FROM inbox WHERE verdict = 'rejected'") == 0
        stop(proc, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # closes the pipes
    assert_hub_stopped_cleanly(tmp_path)
    # The private broker went with it: nothing listens on the demo's port any more.
    with pytest.raises(OSError):
        urllib.request.urlopen(url.group(1) + "healthz", timeout=2)


# Alarms of this run, not the seeded history.
LIVE = (
    "SELECT count(*) FROM alarms a WHERE NOT EXISTS (SELECT 1 FROM timeline t "
    "WHERE t.alarm_id = a.id AND t.type = 'raised' AND json_extract(t.detail, '$.seeded'))"
)
BY_SIMULATED_OPERATOR = (
    LIVE + " AND a.state = 'resolved' AND a.acknowledged_by LIKE 'simulated-operator-%'"
    " AND a.resolved_by LIKE 'simulated-operator-%'"
)


def test_simulated_operators_work_the_queue_through_the_api_and_history_is_seeded(
    tmp_path: Path,
) -> None:
    # Their delays 60x shorter: a plan of minutes takes seconds; the ceiling is not a timing.
    proc = start_demo(tmp_path, "--duration", "240", "--operator-speed", "60")
    try:
        banner = read_banner(proc)
        assert re.search(r"operators\s+ON: 3 simulated", banner), banner
        assert "make demo ARGS=--no-operators" in banner
        seeded = re.search(r"history\s+(\d+) seeded alarms over 21 days", banner)
        assert seeded, banner
        db = tmp_path / "demo" / "alarmhub.db"
        assert db_count(db, "SELECT count(*) FROM alarms") >= int(seeded.group(1)) > 0
        assert wait_until(lambda: db_count(db, BY_SIMULATED_OPERATOR) > 0, 90, 0.5)
        # Through the HTTP API: the audit log has the request's address, the history's has none.
        acked_live = db_count(
            db,
            "SELECT count(*) FROM audit WHERE action = 'alarm.resolve' "
            "AND actor LIKE 'simulated-operator-%' AND address = '127.0.0.1'",
        )
        assert acked_live > 0
        out, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert_hub_stopped_cleanly(tmp_path)
    assert re.search(r"simulated-operator-\d acknowledged a P\d \w+ alarm", out), out
    assert re.search(r"the simulated operators acknowledged [1-9]\d*", err), err
    assert "Traceback" not in err, err


def test_no_operators_leaves_the_queue_to_people(tmp_path: Path) -> None:
    # Were the flag ignored, operators this fast would acknowledge within a poll.
    proc = start_demo(
        tmp_path,
        "--duration",
        "120",
        "--no-operators",
        "--operator-speed",
        "1000",
        "--history-days",
        "0",
    )
    try:
        banner = read_banner(proc)
        assert re.search(r"operators\s+OFF \(--no-operators\)", banner), banner
        assert re.search(r"history\s+none seeded", banner), banner
        db = tmp_path / "demo" / "alarmhub.db"
        assert wait_until(lambda: db_count(db, LIVE) >= 5, 60, 0.5)
        time.sleep(3)  # a few of the operators' polls, had they been started
        assert db_count(db, "SELECT count(*) FROM alarms WHERE acknowledged_by IS NOT NULL") == 0
        assert db_count(db, "SELECT count(*) FROM users WHERE name LIKE 'simulated-%'") == 3
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert_hub_stopped_cleanly(tmp_path)


def test_demo_with_a_duration_ends_by_itself(tmp_path: Path) -> None:
    proc = start_demo(tmp_path, "--duration", "4")
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "operator page" in out
    assert re.search(r"the simulator sent [1-9]\d* messages", err), err
