"""`make bench [ARGS=...]`: how fast alarmhub is here, against what a bare client manages here.

    .venv/bin/python -m bench                 # full: 100,000 messages, 3 runs, 1M devices
    .venv/bin/python -m bench --quick         # < 2 min: 20,000 messages, 3 runs, 5 s at rate
    .venv/bin/python -m bench --phases throughput --profile /tmp/prof

Prints a human summary and, last, one JSON line. Every figure is a median of
`--runs` runs taken in the same invocation, with the runs' spread beside it:
the machine is shared, so compare ratios, not absolute numbers. See
docs/performance.md for what each phase does and the results so far.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cluster_phases, harness, phases, profile, scaip_phases, storm_phases, workload

PHASES = ("throughput", "latency", "storm", "scale", "cluster", "scaip")
# The JSON line's first keys, each SQLite figure beside its baselines and PostgreSQL's;
# the rest follow in the order the phases produced them.
KEY_ORDER = (
    "baseline_msgs_per_s",
    "alarmhub_events_per_s",
    "ratio",
    "pg_drain_ratio_1",
    "pg_drain_ratio_2",
    "pg_drain_ratio_3",
    "storm_ratio",
    "storm_ratio_pg_1",
    "storm_ratio_pg_2",
    "storm_ratio_pg_3",
    "echo_p99_ms",
    "p50_ms",
    "p99_ms",
    "pg_p99_ms",
    "sse_p99_ms",
    "cpu_us_per_msg_at_rate",
    "cpu_us_per_msg_at_drain",
    "rss_mb_1m_devices",
    "startup_s_1m_devices",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small counts: done in under two minutes")
    p.add_argument(
        "--n", type=int, help="messages per throughput run (default 100,000; quick 20,000)"
    )
    p.add_argument(
        "--runs", type=int, default=3, help="repeats of throughput and latency (default 3)"
    )
    p.add_argument("--rate", type=int, default=2000, help="messages/s in the latency phase")
    p.add_argument("--duration", type=float, help="seconds at that rate (default 10; quick 5)")
    p.add_argument("--devices", type=int, default=2000, help="devices sending the mix")
    p.add_argument(
        "--storm-n",
        type=int,
        help="storm phase: pendants each raising one new alarm (default 20,000; quick 5,000)",
    )
    p.add_argument(
        "--scale-devices", type=int, help="registry size for the scale phase (default 1,000,000)"
    )
    p.add_argument(
        "--idle",
        type=float,
        help="seconds to watch the idle 1M-device daemon (default 10; quick 5)",
    )
    p.add_argument(
        "--scaip-devices",
        type=int,
        help="scaip phase: simulated SCAIP devices in the backlog (default 2,000; quick 500)",
    )
    p.add_argument(
        "--scaip-rate", type=int, default=200, help="scaip phase: alarms/s for the p99 (200)"
    )
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}")
    p.add_argument(
        "--profile", type=Path, help="py-spy the first throughput run into this directory"
    )
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an alarmhub setting for the daemon, e.g. --set sqlite_synchronous=NORMAL",
    )
    p.add_argument(
        "--switch-interval",
        type=float,
        help="experiment: sys.setswitchinterval() in the daemon process (default: Python's)",
    )
    p.add_argument(
        "--sse-clients",
        type=int,
        default=1,
        help="latency phase: live-stream listeners (operators' pages) connected; the first is "
        "timed (default 1)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    chosen = [x.strip() for x in a.phases.split(",") if x.strip()]
    unknown = set(chosen) - set(PHASES)
    if unknown:
        print(f"unknown phase(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    opts = phases.Options(
        n=a.n or (20_000 if a.quick else 100_000),
        runs=a.runs,
        rate=a.rate,
        duration_s=a.duration or (5.0 if a.quick else 10.0),
        scale_devices=a.scale_devices or 1_000_000,
        idle_s=a.idle or (5.0 if a.quick else 10.0),
        devices=a.devices,
        timeout_s=120.0,
        profile_dir=a.profile,
        profile_gil=a.profile_gil,
        hub_settings=dict(s.split("=", 1) for s in a.set),
        storm_n=a.storm_n or (5_000 if a.quick else 20_000),
        sse_clients=max(1, a.sse_clients),
    )
    scaip = scaip_phases.ScaipOptions(
        devices=a.scaip_devices or (500 if a.quick else 2000),
        rate=a.scaip_rate,
        duration_s=opts.duration_s,
        timeout_s=opts.timeout_s,
        hub_settings=opts.hub_settings,
    )
    if a.switch_interval is not None:
        opts.hub_settings["BENCH_SWITCH_INTERVAL"] = str(a.switch_interval)
    tmp = tempfile.mkdtemp(prefix="alarmhub-bench-")
    work = Path(tmp)
    started = time.perf_counter()
    print(f"alarmhub bench in {work} on {harness.machine()}")
    result: dict[str, Any] = {}
    try:
        with harness.bench_broker(work / "broker") as broker:
            result = run(broker.port, work, chosen, opts)
            if "scaip" in chosen:
                result |= scaip_phases.run(broker.port, work, scaip, opts.runs)

    finally:
        if not a.keep:
            import shutil  # noqa: PLC0415

            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntook {time.perf_counter() - started:.0f} s")
    result = ordered(result)
    print(targets(result))
    print(json.dumps(result))
    return 0


def run(port: int, work: Path, chosen: list[str], opts: phases.Options) -> dict[str, Any]:
    devices = workload.registry(opts.devices)
    out: dict[str, Any] = {
        "baseline_msgs_per_s": None,
        "alarmhub_events_per_s": None,
        "ratio": None,
        "p50_ms": None,
        "p99_ms": None,
        "sse_p99_ms": None,
        "rss_mb_1m_devices": None,
        "startup_s_1m_devices": None,
    }
    if "throughput" in chosen:
        msgs = list(workload.messages(opts.n, devices, run_id="tp", start=phases._start_time()))  # noqa: SLF001
        items = [(m.topic, m.payload) for m in msgs]
        print(
            f"\n1+2. drain {len(items):,} pre-queued QoS 1 messages, {opts.runs} runs "
            "(baseline, then alarmhub)"
        )
        base, hub, ratios = [], [], []
        drained: list[dict[str, Any]] = []
        base_cpu: list[float | None] = []
        for r in range(opts.runs):
            tag = f"{r}-{time.monotonic_ns() % 10**6}"
            b = phases.baseline_once(port, items, tag, opts.timeout_s)
            prof = opts.profile_dir / "throughput.raw" if opts.profile_dir and r == 0 else None
            h = phases.throughput_once(port, work, devices, items, tag, opts, prof)
            drained.append(h)
            base.append(b["msgs_per_s"])
            base_cpu.append(b.get("cpu_us_per_msg"))
            hub.append(h["msgs_per_s"])
            ratios.append(workload.ratio(h["msgs_per_s"], b["msgs_per_s"]))
            print(
                f"   run {r + 1}: bare paho {b['msgs_per_s']:,.0f}/s "
                f"({_f(b.get('cpu_us_per_msg'), '.0f')} us/msg); alarmhub "
                f"{_f(h['msgs_per_s'], ',.0f')}/s (batches {_f(h.get('mean_batch'), '.0f')} msgs, "
                f"commit {_f(_ms(h.get('commit_s_mean')), '.2f')} ms, "
                f"cpu {_f(h.get('hub_cpu_s'), '.1f')} s, "
                f"{_f(h.get('cpu_us_per_msg'), '.0f')} us/msg while draining) "
                f"ratio {_f(ratios[-1], '.2f')}"
            )
            if prof is not None and prof.exists():
                print(profile.summary(prof))
        out["baseline_msgs_per_s"] = workload.round_or_none(workload.median(base), 0)
        out["baseline_cpu_us_per_msg"] = workload.round_or_none(workload.median(base_cpu), 1)
        out["alarmhub_events_per_s"] = workload.round_or_none(workload.median(hub), 0)
        out["ratio"] = workload.round_or_none(workload.median(ratios), 3)
        out["alarmhub_committed"] = min(h_["committed"] for h_ in drained)
        out["cpu_us_per_msg_at_drain"] = workload.round_or_none(
            workload.median([h_.get("cpu_us_per_msg") for h_ in drained]), 1
        )
        print(
            f"   median: bare paho {out['baseline_msgs_per_s']} msg/s "
            f"(runs {workload.spread(base)}), alarmhub {out['alarmhub_events_per_s']} msg/s "
            f"committed (runs {workload.spread(hub)}), "
            f"ratio {out['ratio']} (runs {workload.spread(ratios, 3)}; target >= 0.6)"
        )
    if "latency" in chosen:
        print(
            f"\n3. {opts.rate:,} msg/s for {opts.duration_s:g} s, {opts.runs} runs: "
            "publish -> receipt, publish -> SSE; the bare echo client first in each run"
        )
        runs = []
        echoes = []
        for r in range(opts.runs):
            echo = storm_phases.echo_once(port, devices, f"{r}{time.monotonic_ns() % 10**6}", opts)
            echoes.append(echo)
            print(
                f"   run {r + 1}: echo: receipt p50 {_f(echo['p50_ms'], '.1f')} "
                f"p99 {_f(echo['p99_ms'], '.1f')} ms "
                f"({echo['receipts_missing']} of {echo['receipts_expected']} missing; "
                f"{_f(echo['cpu_us_per_msg'], '.0f')} us/msg)"
            )
            prof = opts.profile_dir / "latency.raw" if opts.profile_dir and r == 0 else None
            tag = f"{r}{time.monotonic_ns() % 10**6}"
            lat = phases.latency_once(port, work, devices, tag, opts, prof)
            runs.append(lat)
            print(
                f"   run {r + 1}: offered {lat['offered_per_s']:,.0f}/s "
                f"(alarmhub {lat['hub_core_pct']:.0f} % of a core, "
                f"{lat['cpu_us_per_msg']:.0f} us/msg); "
                f"receipt p50 {_f(lat['p50_ms'], '.1f')} "
                f"p99 {_f(lat['p99_ms'], '.1f')} max {_f(lat['max_ms'], '.1f')} ms "
                f"({lat['receipts_missing']} of {lat['receipts_expected']} missing); SSE p50 "
                f"{_f(lat['sse_p50_ms'], '.1f')} p99 {_f(lat['sse_p99_ms'], '.1f')} ms over "
                f"{lat['sse_alarms']} alarms, {lat['sse_clients']} listener(s)"
                + (f" [{lat['sse_note']}]" if lat["sse_note"] else "")
            )
            if prof is not None and prof.exists():
                print(profile.summary(prof))
        for key in ("p50_ms", "p99_ms", "sse_p99_ms"):
            out[key] = workload.round_or_none(workload.median([x[key] for x in runs]), 2)
        out["max_ms"] = workload.round_or_none(workload.median([x["max_ms"] for x in runs]), 1)
        out["echo_p99_ms"] = workload.round_or_none(
            workload.median([x["p99_ms"] for x in echoes]), 2
        )
        out["echo_p50_ms"] = workload.round_or_none(
            workload.median([x["p50_ms"] for x in echoes]), 2
        )
        out["sse_clients"] = opts.sse_clients
        # The bare echo client's own CPU per message at the same rate: with the bare
        # drain's (`baseline_cpu_us_per_msg`), what a paho client alone pays at rate.
        out["echo_cpu_us_per_msg_at_rate"] = workload.round_or_none(
            workload.median([x["cpu_us_per_msg"] for x in echoes]), 1
        )
        out["cpu_us_per_msg_at_rate"] = workload.round_or_none(
            workload.median([x["cpu_us_per_msg"] for x in runs]), 1
        )
        out["sse_p50_ms"] = workload.round_or_none(
            workload.median([x["sse_p50_ms"] for x in runs]), 2
        )
        print(
            f"   median: p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms (runs "
            f"{workload.spread([x['p99_ms'] for x in runs])}; target <= 10 and "
            f"<= 3 x echo p99 {out['echo_p99_ms']} ms), "
            f"cpu {out['cpu_us_per_msg_at_rate']} us/msg, "
            f"SSE p99 {out['sse_p99_ms']} ms "
            f"(runs {workload.spread([x['sse_p99_ms'] for x in runs])}; target <= 25)"
        )
        if out["sse_p99_ms"] is None:
            out["sse_note"] = runs[0]["sse_note"]
    if "storm" in chosen:
        out |= storm_phases.run_storm(port, work, opts.storm_n, opts)
    if "scale" in chosen:
        print(f"\n4. a registry of {opts.scale_devices:,} devices with heartbeat supervision")
        s = phases.scale(port, work, opts)
        print(
            f"   registered in {s['register_s']:.1f} s; "
            f"start-up {s['startup_s']:.1f} s (target <= 30); "
            f"RSS {s['rss_mb']:.0f} MiB, peak {s['rss_peak_mb']:.0f} MiB (target <= 1024); "
            f"{s['supervised']:,.0f} supervised; "
            f"step {_f(s['supervision_step_ms_mean'], '.3f')} ms mean = "
            f"{s['supervision_core_pct']:.2f} % of a core (target <= 5); whole idle process "
            f"{s['idle_core_pct']:.1f} % of a core over {s['idle_window_s']:.0f} s"
        )
        scale_key = "" if opts.scale_devices == 1_000_000 else f"_{opts.scale_devices}"
        out[f"rss_mb_1m_devices{scale_key}"] = round(s["rss_mb"], 0)
        out[f"startup_s_1m_devices{scale_key}"] = round(s["startup_s"], 2)
        out["supervision_core_pct"] = round(s["supervision_core_pct"], 3)
        out["idle_core_pct"] = round(s["idle_core_pct"], 2)
    if "cluster" in chosen:
        out |= _cluster(port, work, devices, opts)
    return out


def _cluster(port: int, work: Path, devices: list[Any], opts: phases.Options) -> dict[str, Any]:
    """PostgreSQL with 1, 2 and 3 instances beside a bare paho drain, and the failover time."""
    msgs = workload.messages(opts.n, devices, run_id="pg", start=phases._start_time())  # noqa: SLF001
    items = [(m.topic, m.payload) for m in msgs]
    print(
        f"\n5. PostgreSQL: drain {len(items):,} messages with 1, 2, 3 instances, {opts.runs} runs"
    )
    ratios: dict[int, list[float | None]] = {1: [], 2: [], 3: []}
    for r in range(opts.runs):
        tag = f"{r}-{time.monotonic_ns() % 10**6}"
        b = phases.baseline_once(port, items, f"pg{tag}", opts.timeout_s)
        line = [f"bare paho {b['msgs_per_s']:,.0f}/s"]
        for k, got in ratios.items():
            h = cluster_phases.drain_once(port, work, devices, items, tag, k, opts)
            got.append(workload.ratio(h["msgs_per_s"], b["msgs_per_s"]))
            line.append(f"{k} inst. {_f(h['msgs_per_s'], ',.0f')}/s ({_f(got[-1], '.2f')})")
        print(f"   run {r + 1}: " + "; ".join(line))
    print(
        f"\n5b. PostgreSQL, 1 instance: {opts.rate:,} msg/s for {opts.duration_s:g} s, "
        "publish -> receipt"
    )
    p99s = []
    for r in range(opts.runs):
        lat = cluster_phases.latency_once(
            port, work, devices, f"{r}{time.monotonic_ns() % 10**6}", opts
        )
        p99s.append(lat["p99_ms"])
        print(
            f"   run {r + 1}: receipt p50 {_f(lat['p50_ms'], '.1f')} "
            f"p99 {_f(lat['p99_ms'], '.1f')} ms "
            f"({lat['receipts_missing']} of {lat['receipts_expected']} missing)"
        )
    out: dict[str, Any] = {
        f"pg_drain_ratio_{k}": workload.round_or_none(workload.median(v), 3)
        for k, v in ratios.items()
    }
    out["pg_p99_ms"] = workload.round_or_none(workload.median(p99s), 2)
    print("\n6. failover: kill -9 of the owner -> first alarm committed by a survivor, 3 runs")
    times = []
    for r in range(3):
        fo = cluster_phases.failover_once(port, work, f"{r}{time.monotonic_ns() % 10**6}", opts)
        times.append(fo["failover_s"])
        print(f"   run {r + 1}: {_f(fo['failover_s'], '.2f')} s {fo.get('error', '')}")
    out["failover_s"] = workload.round_or_none(workload.median(times), 2)
    print(
        f"   median: {out['pg_drain_ratio_1']}, {out['pg_drain_ratio_2']}, "
        f"{out['pg_drain_ratio_3']} x bare paho; failover {out['failover_s']} s "
        f"(runs {workload.spread(times)}; ALARMHUB_FAILOVER_S={cluster_phases.FAILOVER_S:g})"
    )
    return out


def ordered(result: dict[str, Any]) -> dict[str, Any]:
    """KEY_ORDER first (those present), then the rest as the phases produced them."""
    head = {k: result[k] for k in KEY_ORDER if k in result}
    return head | {k: v for k, v in result.items() if k not in head}


def targets(r: dict[str, Any]) -> str:
    """Issue 18's targets against this run's figures ("n/a" where a phase did not run)."""

    def div(a: str, b: str) -> float | None:
        return workload.ratio(r.get(a), r.get(b))

    rows = [
        ("mixed drain ratio", r.get("ratio"), ">= 0.6"),
        ("storm_ratio", r.get("storm_ratio"), ">= 0.5"),
        ("pg_drain_ratio_1", r.get("pg_drain_ratio_1"), ">= 0.3"),
        ("p99_ms / echo_p99_ms", div("p99_ms", "echo_p99_ms"), "<= 3"),
        ("p99_ms", r.get("p99_ms"), "<= 10 where bare paho drains >= 30,000/s"),
        ("sse_p99_ms", r.get("sse_p99_ms"), "<= 25 there"),
        (
            "cpu_us_per_msg_at_rate / _at_drain",
            div("cpu_us_per_msg_at_rate", "cpu_us_per_msg_at_drain"),
            "<= 2",
        ),
        (
            "  the same for the bare paho clients (echo at rate / drain), no target",
            div("echo_cpu_us_per_msg_at_rate", "baseline_cpu_us_per_msg"),
            "",
        ),
    ]
    lines = ["\ntargets (issue 18), this run:"]
    lines += [f"   {name}: {_f(v, '.3g')}" + (f" (target {t})" if t else "") for name, v, t in rows]
    return "\n".join(lines)


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000


def _f(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


if __name__ == "__main__":
    sys.exit(main())
