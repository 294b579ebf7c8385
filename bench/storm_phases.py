"""`make bench`'s storm phase and the latency phase's echo baseline (issue 18).

*storm*: N pendants (`--storm-n`, 20,000; quick 5,000) each raise ONE new alarm,
published as a backlog for alarmhub's persistent session while it is stopped; then
`alarmhub run` starts and drains it. The rate is read from outside exactly as the
throughput phase reads it (`alarmhub_messages_received_total`, counted after the
commit, polled 4/s from the first non-zero poll), and every message is a new alarm
(`alarmhub_alarms_raised_total` is checked). `storm_ratio` = alarms committed per
second / a bare paho drain of the same backlog in the same run. Then the same backlog
on a scratch PostgreSQL with 1, 2 and 3 instances (`storm_ratio_pg_1/2/3`), skipped
with `storm_pg_note` when the local server does not answer. On SQLite the run also
waits until every alarm's first escalation step fired (`alarmhub_escalations_total`):
`storm_escalated_per_s` = alarms / (first commit → last first step), and
`storm_cpu_us_per_alarm` = alarmhub's CPU over that span / alarms. A step the escalator
decides after the drain is outside `storm_ratio`'s window, but not outside these.

*echo*: bench/echo_consumer.py in its own process answers each message with a receipt
straight from paho's callback; the latency phase's publisher and receipt timer
(phases.drive_at_rate) measure it as they measure alarmhub (`echo_p99_ms`).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import cluster_phases, harness, phases, profile, workload

PG_INSTANCES = (1, 2, 3)


def pg_available() -> str | None:
    """None when the bench's PostgreSQL answers; otherwise why not."""

    async def go() -> None:
        conn = await asyncpg.connect(cluster_phases.PG_ADMIN_URL, timeout=5)
        await conn.close()

    try:
        asyncio.run(go())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {cluster_phases.PG_ADMIN_URL} not reachable: {exc}"
    return None


def run_storm(port: int, work: Path, n: int, opts: phases.Options) -> dict[str, Any]:
    """Medians of `opts.runs`: bare paho, alarmhub on SQLite, PostgreSQL with 1, 2, 3 instances."""
    pg_note = pg_available()
    arms = ["sqlite"] + ([] if pg_note else [f"pg_{k}" for k in PG_INSTANCES])
    print(
        f"\n7. storm: {n:,} pendants each raising one new alarm from a broker backlog, "
        f"{opts.runs} runs (bare paho, then alarmhub: {', '.join(arms)})"
    )
    if pg_note:
        print(f"   (PostgreSQL skipped: {pg_note})")
    base: list[float | None] = []
    rates: dict[str, list[float | None]] = {a: [] for a in arms}
    ratios: dict[str, list[float | None]] = {a: [] for a in arms}
    # SQLite: until every new alarm's first step fired too (operators told), and CPU.
    settled: dict[str, list[float | None]] = {"rate": [], "cpu": [], "drain_cpu": []}
    for r in range(opts.runs):
        tag = f"st{r}-{time.monotonic_ns() % 10**6}"
        pendants = workload.press_devices(n, prefix=f"storm{tag}")
        items = [
            (m.topic, m.payload)
            for m in workload.storm(pendants, run_id=tag, start=phases._start_time())  # noqa: SLF001
        ]
        b = phases.baseline_once(port, items, f"storm-{tag}", opts.timeout_s)
        base.append(b["msgs_per_s"])
        line = [f"bare paho {b['msgs_per_s']:,.0f}/s"]
        for arm in arms:
            if arm == "sqlite":
                prof = opts.profile_dir / "storm.raw" if opts.profile_dir and r == 0 else None
                h = phases.throughput_once(
                    port, work, pendants, items, tag, opts, prof, "alarmhub_escalations_total"
                )
                settled["rate"].append(h.get("settled_per_s"))
                settled["cpu"].append(h.get("cpu_us_per_settled"))
                settled["drain_cpu"].append(h.get("cpu_us_per_msg"))
                if prof is not None and prof.exists():
                    print(profile.summary(prof))
                if h.get("alarms_raised") is not None and h["alarms_raised"] < n:
                    print(f"   (only {h['alarms_raised']:.0f} of {n} presses raised an alarm)")
            else:
                k = int(arm.rsplit("_", 1)[1])
                h = cluster_phases.drain_once(port, work, pendants, items, f"s{tag}", k, opts)
            rates[arm].append(h["msgs_per_s"])
            ratios[arm].append(workload.ratio(h["msgs_per_s"], b["msgs_per_s"]))
            rate = "n/a" if h["msgs_per_s"] is None else f"{h['msgs_per_s']:,.0f}"
            ratio = "n/a" if ratios[arm][-1] is None else f"{ratios[arm][-1]:.3f}"
            line.append(f"{arm} {rate}/s ({ratio})")
            if arm == "sqlite":
                line.append(
                    f"sqlite escalated {_fmt(settled['rate'][-1], ',.0f')}/s, "
                    f"{_fmt(settled['cpu'][-1], '.0f')} us CPU/alarm "
                    f"(drain {_fmt(settled['drain_cpu'][-1], '.0f')})"
                )
        print(f"   run {r + 1}: " + "; ".join(line))
    out: dict[str, Any] = {
        "storm_n": n,
        "storm_baseline_msgs_per_s": workload.round_or_none(workload.median(base), 0),
        "storm_alarms_per_s": workload.round_or_none(workload.median(rates["sqlite"]), 0),
        "storm_ratio": workload.round_or_none(workload.median(ratios["sqlite"]), 3),
        "storm_escalated_per_s": workload.round_or_none(workload.median(settled["rate"]), 0),
        "storm_cpu_us_per_alarm": workload.round_or_none(workload.median(settled["cpu"]), 1),
    }
    for k in PG_INSTANCES:
        got = ratios.get(f"pg_{k}")
        out[f"storm_ratio_pg_{k}"] = workload.round_or_none(workload.median(got or []), 3)
    if pg_note:
        out["storm_pg_note"] = pg_note
    print(
        f"   median: bare paho {out['storm_baseline_msgs_per_s']} msg/s "
        f"(runs {workload.spread(base)}); alarmhub {out['storm_alarms_per_s']} alarms/s "
        f"(runs {workload.spread(rates['sqlite'])}); storm_ratio {out['storm_ratio']} "
        f"(runs {workload.spread(ratios['sqlite'], 3)}; target >= 0.5); PostgreSQL 1/2/3: "
        f"{out['storm_ratio_pg_1']} / {out['storm_ratio_pg_2']} / {out['storm_ratio_pg_3']}"
    )
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def echo_once(port: int, devices: list[Any], tag: str, opts: phases.Options) -> dict[str, Any]:
    """The latency phase's drive against the bare echo client instead of alarmhub."""
    total = int(opts.rate * opts.duration_s)
    presses = workload.press_devices(max(10, total // 20), prefix=f"echo{tag}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.echo_consumer",
            str(port),
            f"bench-echo-{tag}",
            *harness.subscriptions(),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=harness.REPO,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the echo client did not subscribe")
        out = phases.drive_at_rate(port, devices, presses, f"echo{tag}", opts, proc.pid)
    finally:
        try:
            proc.communicate(timeout=30)  # closes stdin: the echo client leaves
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out
