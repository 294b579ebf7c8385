"""The bench harness works: its pure parts, and a tiny run against a real broker.

Not a timing test: nothing here asserts how fast anything is (docs/performance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from alarmhub.config.profiles import load_catalog
from alarmhub.core.decode import DecodeLimits, decode
from alarmhub.core.model import Decoded, RawMessage, Rejected
from alarmhub.dev.mosquitto import mosquitto_binary
from bench import profile, workload
from tests.support.helpers import REPO

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _printed(module: str, args: list[str]) -> str:
    """Run `python -m module args` from the checkout; what it printed."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _json_line(printed: str) -> dict[str, Any]:
    """The JSON line a bench prints last."""
    result: dict[str, Any] = json.loads(printed.strip().splitlines()[-1])
    return result


def test_the_mix_is_deterministic_and_decodes_as_intended() -> None:
    devices = workload.registry(100)
    first = list(workload.messages(2000, devices, run_id="a", start=T0))
    again = list(workload.messages(2000, devices, run_id="a", start=T0))
    assert first == again
    cats = Counter(m.category for m in first)
    assert cats["heartbeat"] > cats["location"] > cats["alarm"] > 0
    assert cats["repeat"] > 0
    assert cats["bad"] > 0
    registry = {d.id: d for d in devices}
    catalog = load_catalog(REPO / "devices")
    for m in first:
        result = decode(RawMessage(m.topic, m.payload, T0), registry, catalog, DecodeLimits())
        if m.category == "bad":
            assert isinstance(result, Rejected)
        else:
            assert isinstance(result, Decoded), (m, result)
    # Every message that expects a receipt has a unique id; repeats reuse an earlier one's bytes.
    refs = [m.ref for m in first if m.ref is not None]
    assert len(refs) == len(set(refs))
    originals = {m.payload for m in first if m.ref is not None}
    assert all(m.payload in originals for m in first if m.category == "repeat")


def test_each_press_in_the_latency_phase_gets_its_own_pendant() -> None:
    devices = workload.registry(50)
    presses = workload.press_devices(500)
    msgs = list(workload.messages(3000, devices, run_id="p", start=T0, presses=presses))
    pressed = [m.device_id for m in msgs if m.category == "alarm"]
    assert pressed
    assert len(pressed) == len(set(pressed))


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, None), ([5.0], 99, 5.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0), ([*range(1, 101)], 99, 99)],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert workload.percentile(values, q) == expected


def test_median_ignores_missing_runs() -> None:
    assert workload.median([3.0, None, 1.0, 2.0]) == 2.0
    assert workload.median([None]) is None
    assert workload.ratio(5.0, 10.0) == 0.5
    assert workload.ratio(5.0, None) is None


def test_profile_summary_reads_collapsed_stacks() -> None:
    raw = (
        "main (alarmhub/cli/main.py:10);_handle (alarmhub/app.py:20);decode (alarmhub/core/decode.py:5) 30\n"
        "main (alarmhub/cli/main.py:10);select (selectors.py:1) 10\n"
    )
    total, own, inclusive = profile.top(profile.parse(raw))
    assert total == 40
    assert own[0] == ("decode (alarmhub/core/decode.py)", 30)
    assert ("main (alarmhub/cli/main.py)", 40) in inclusive


@pytest.mark.broker
def test_a_tiny_bench_run_prints_the_json_line() -> None:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: `apt-get install mosquitto` (CI installs it)")
    args = [
        *("--n", "400", "--runs", "1", "--devices", "40"),
        *("--rate", "200", "--duration", "1", "--scale-devices", "2000", "--idle", "1"),
        # The cluster phase needs PostgreSQL: tests/system/test_cluster.py covers that path.
        *("--phases", "throughput,latency,scale"),
    ]
    result = _json_line(_printed("bench", args))
    assert result["baseline_msgs_per_s"] > 0
    # 400 messages may drain before the first /metrics poll: then there is no rate,
    # but every message must have been committed.
    assert result["alarmhub_committed"] >= 400
    assert result["p99_ms"] is not None
    assert result["sse_p99_ms"] is not None
    assert result["rss_mb_1m_devices_2000"] > 0
    # Issue 18's latency and CPU-at-rate figures come from these phases too (400 messages
    # drain too fast for a CPU-at-drain figure: the storm test below has 3,000).
    assert result["echo_p99_ms"] > 0
    assert result["cpu_us_per_msg_at_rate"] > 0


def test_the_storm_is_one_new_press_from_each_pendant() -> None:
    pendants = workload.press_devices(300, prefix="storm")
    storm = workload.storm(pendants, run_id="s", start=T0)
    assert [m.device_id for m in storm] == [d.id for d in pendants]
    registry = {d.id: d for d in pendants}
    catalog = load_catalog(REPO / "devices")
    for m in storm:
        result = decode(RawMessage(m.topic, m.payload, T0), registry, catalog, DecodeLimits())
        assert isinstance(result, Decoded), (m, result)
        assert [e.type for e in result.events] == ["button.pressed"]


# The storm runs SQLite and PostgreSQL with 1, 2 and 3 instances: about a minute, so it
# is in the slow set (`make test-all`); the keys of the other phases are checked above.
@pytest.mark.slow
@pytest.mark.broker
def test_the_storm_echo_and_cpu_figures_are_printed() -> None:
    """Issue 18's figures: present and sane in a tiny run (never compared to a target)."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: `apt-get install mosquitto` (CI installs it)")
    args = [
        *("--n", "3000", "--runs", "1", "--devices", "40", "--storm-n", "3000"),
        *("--rate", "200", "--duration", "1"),
        *("--phases", "throughput,latency,storm"),
    ]
    printed = _printed("bench", args)
    result = _json_line(printed)
    assert result["storm_n"] == 3000
    assert result["storm_baseline_msgs_per_s"] > 0
    assert result["storm_ratio"] > 0
    # Until every alarm's first step fired too, and the CPU that took.
    assert result["storm_escalated_per_s"] > 0
    assert result["storm_cpu_us_per_alarm"] > 0
    # PostgreSQL beside SQLite: measured where the local server answers, else a note says why.
    pg = [result[f"storm_ratio_pg_{k}"] for k in (1, 2, 3)]
    assert all(r is not None and r > 0 for r in pg) or result["storm_pg_note"]
    assert result["echo_p99_ms"] > 0
    assert result["p99_ms"] > 0
    assert result["cpu_us_per_msg_at_rate"] > 0
    assert result["cpu_us_per_msg_at_drain"] > 0
    # The SQLite figures lead the line, each beside its baseline.
    keys = list(result)
    assert keys.index("ratio") < keys.index("storm_ratio") < keys.index("echo_p99_ms")
    assert keys.index("echo_p99_ms") < keys.index("p99_ms")
    assert "storm_ratio" in printed.split("targets (issue 18)")[1]


@pytest.mark.parametrize(
    ("args", "alarms"),
    [
        (["storm", "--n", "300"], 300),
        # 2 % of the mix are presses, each from a pendant of its own.
        (["rate", "--n", "400", "--rate", "2000", "--burst", "8", "--devices", "40"], None),
    ],
)
def test_the_in_process_bench_commits_every_message_and_prints_its_figures(
    args: list[str], alarms: int | None
) -> None:
    """bench.inprocess: every message through Ingest.run, in batches as the daemon makes them."""
    result = _json_line(_printed("bench.inprocess", args))
    n = int(args[args.index("--n") + 1])
    assert result["messages"] == n
    assert result["batches"] >= 1
    assert result["loop_us_per_msg"] >= 0
    assert result["loop_turns_per_batch"] > 0
    if alarms is not None:
        assert result["alarms_active"] == alarms
    else:
        # Fed in bursts of 8 at 2,000/s, not as one backlog: more than one batch.
        assert result["batches"] > 1
        assert result["alarms_active"] > 0
