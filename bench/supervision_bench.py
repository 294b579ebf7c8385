"""Benchmark helper for :class:`alarmhub.core.supervision.Supervisor` (not a test).

    .venv/bin/python bench/supervision_bench.py 100000 1000000

Reports, per size: RSS growth while building (VmRSS from /proc/self/status;
ru_maxrss as a fallback), build time, one heartbeat for every device, one due()
step with every device healthy and nothing due, and the lazy re-arm burst when
every device's first deadline passes at once (all were heard, none reported).
Run each size in a fresh process for a clean RSS figure.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alarmhub.core.supervision import Supervisor

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def _rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(n_devices: int) -> dict[str, float]:
    names = [f"device-{i:07d}" for i in range(n_devices)]  # the registry owns these anyway
    gc.collect()
    rss0 = _rss_kib()
    t = time.perf_counter()
    sup = Supervisor(grace=timedelta(seconds=30))
    for i, name in enumerate(names):
        # Intervals 1..60 min, three misses: deadlines spread over 3 min..3 h.
        sup.watch(name, timedelta(minutes=1 + i % 60), 3, T0)
    build_s = time.perf_counter() - t
    rss_built = _rss_kib()

    t = time.perf_counter()
    assert sup.due(T0 + timedelta(minutes=1)) == []  # all healthy, nothing due: a peek
    due_idle_s = time.perf_counter() - t

    later = T0 + timedelta(hours=3)  # after every first deadline: all must be re-armed
    t = time.perf_counter()
    for name in names:
        sup.heard(name, later)
    heard_s = time.perf_counter() - t

    # Every first deadline has passed; all were heard: each entry is re-armed once.
    t = time.perf_counter()
    assert sup.due(T0 + timedelta(hours=3, seconds=1)) == []
    due_rearm_s = time.perf_counter() - t
    return {
        "devices": n_devices,
        "rss_delta_mib": (rss_built - rss0) / 1024,
        "bytes_per_device": (rss_built - rss0) * 1024 / n_devices,
        "build_s": build_s,
        "heard_all_s": heard_s,
        "heard_us_each": heard_s / n_devices * 1e6,
        "due_idle_ms": due_idle_s * 1e3,
        "due_rearm_all_s": due_rearm_s,
        "heap_size": sup.heap_size,
    }


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["100000"]:
        result = run(int(arg))
        print(" ".join(f"{k}={v:.3f}" for k, v in result.items()))
