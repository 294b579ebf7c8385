"""`make bench`'s scaip phase: SCAIP alarms over UDP on loopback (issue 16).

- *throughput*: a backlog of N simulated devices (alarmhub/sim/scaip_device.py, one UDP
  socket for all) each raising one alarm at once; committed per second = answers `snu=0`
  per second, from the first request to the last `0`.
- *latency*: alarms from fresh devices at a fixed rate (default 200/s) for a while;
  p50/p99 from a request's first send to its `snu=0` (whether inline or as a new MESSAGE).

Every device authenticates with digest as a real one would (the first request is
challenged, the nonce reused after), so the figures include it. Skipped, with a message,
while the receiver (alarmhub.sip) is not importable.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alarmhub.clock import SystemClock
from alarmhub.core.model import Device, DeviceKind
from alarmhub.sim.scaip_device import Outcome, ResendPolicy, ScaipFleet
from bench import harness, workload
from bench.harness import Hub, free_port

REALM = "alarmhub"  # ALARMHUB_SCAIP_REALM's default: the credentials' HA1 are made in it
# The standard's resend interval (5-20 s) and Timer F: a loss on loopback shows as a tail,
# which is the point; give-up bounds the phase.
POLICY = ResendPolicy(answer_timeout_s=10.0, give_up_after_s=120.0)


@dataclass(frozen=True)
class ScaipOptions:
    devices: int  # the throughput backlog
    rate: int  # alarms per second in the latency phase
    duration_s: float
    timeout_s: float
    hub_settings: dict[str, str]


def unavailable() -> str | None:
    """Why the phase cannot run here, or None."""
    try:
        import alarmhub.sip.server  # noqa: F401, PLC0415
    except ImportError as exc:
        return f"the SCAIP receiver is not importable ({exc})"
    return None


def cid(tag: str, i: int) -> str:
    return f"{sum(map(ord, tag)) % 90 + 10}{i:08d}"


def password(i: int) -> str:
    return f"bench-{i}"


def provision(db: Path, ids: list[str]) -> None:
    """Register SCAIP devices and their digest credentials in-process (the CLI would start
    one process per device)."""
    from alarmhub.core.digest import credentials_for  # noqa: PLC0415 -- issue 16's receiver
    from alarmhub.core.people import Role  # noqa: PLC0415
    from alarmhub.core.tenancy import Scope  # noqa: PLC0415
    from alarmhub.store.sqlite.directory import SqliteDirectory  # noqa: PLC0415

    devices = [Device(id=d, kind=DeviceKind.SAFETY_ALARM, municipality="0301", profile="scaip")
               for d in ids]  # fmt: skip
    harness.register(db, devices)

    async def go() -> None:
        directory = SqliteDirectory(db)
        scope = Scope("bench", Role.ADMIN, None)
        now = SystemClock().now()
        for i, d in enumerate(ids):
            creds = credentials_for(d, REALM, password(i))
            await directory.set_device_credentials(scope, creds, now, audit=())

    asyncio.run(go())


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hub(port: int, work: Path, db: Path, tag: str, opts: ScaipOptions) -> tuple[Hub, int]:
    udp = _udp_port()
    env = harness.hub_env(
        port,
        db,
        f"bench-scaip-{tag}",
        free_port(),
        scaip_listen=f"udp://127.0.0.1:{udp}",
        **opts.hub_settings,
    )
    return Hub(env, work / f"hub-scaip-{tag}.log"), udp


def throughput_once(port: int, work: Path, tag: str, opts: ScaipOptions) -> dict[str, Any]:
    db = work / f"scaip-tp-{tag}.db"
    ids = [cid(tag, i) for i in range(opts.devices)]
    provision(db, ids)
    hub, udp = _hub(port, work, db, f"tp{tag}", opts)
    hub.start()
    try:
        hub.wait_ready(opts.timeout_s)

        async def burst() -> list[Any]:
            async with ScaipFleet(f"udp://127.0.0.1:{udp}", POLICY) as fleet:
                records = [fleet.device(d, password(i)).alarm(f"t{i}") for i, d in enumerate(ids)]
                await fleet.wait_all(opts.timeout_s)
                return records

        records = asyncio.run(burst())
    finally:
        hub.stop()
    handled = [r for r in records if r.outcome is Outcome.HANDLED and r.ended_at is not None]
    start = min((r.started_at for r in records), default=0.0)
    end = max((r.ended_at for r in handled if r.ended_at is not None), default=start)
    return {
        "devices": len(records),
        "handled": len(handled),
        "resent": sum(len(r.attempts) > 1 for r in records),
        "alarms_per_s": len(handled) / (end - start) if handled and end > start else None,
    }


def latency_once(port: int, work: Path, tag: str, opts: ScaipOptions) -> dict[str, Any]:
    total = int(opts.rate * opts.duration_s)
    db = work / f"scaip-lat-{tag}.db"
    ids = [cid(tag, i) for i in range(total)]
    provision(db, ids)
    hub, udp = _hub(port, work, db, f"lat{tag}", opts)
    hub.start()
    try:
        hub.wait_ready(opts.timeout_s)

        async def paced() -> tuple[list[Any], float]:
            async with ScaipFleet(f"udp://127.0.0.1:{udp}", POLICY) as fleet:
                loop = asyncio.get_running_loop()
                start = loop.time()
                records, behind = [], 0.0
                for i, d in enumerate(ids):
                    due = start + i / opts.rate
                    if due > loop.time():
                        await asyncio.sleep(due - loop.time())
                    behind = max(behind, loop.time() - due)
                    records.append(fleet.device(d, password(i)).alarm(f"l{i}"))
                await fleet.wait_all(opts.timeout_s)
                return records, behind

        records, behind = asyncio.run(paced())
    finally:
        hub.stop()
    lat = [r.answered_after_s * 1000 for r in records if r.answered_after_s is not None]
    return {
        "offered": total,
        "answered": len(lat),
        "sender_max_behind_ms": behind * 1000,
        "p50_ms": workload.percentile(lat, 50),
        "p99_ms": workload.percentile(lat, 99),
        "max_ms": max(lat) if lat else None,
    }


def run(port: int, work: Path, opts: ScaipOptions, runs: int) -> dict[str, Any]:
    """The phase as __main__ prints it; the JSON keys scaip_alarms_per_s, scaip_p99_ms."""
    out: dict[str, Any] = {"scaip_alarms_per_s": None, "scaip_p99_ms": None}
    why = unavailable()
    if why is not None:
        print(f"\n7. SCAIP over UDP: skipped: {why}")
        out["scaip_note"] = f"skipped: {why}"
        return out
    print(
        f"\n7. SCAIP over UDP: a backlog of {opts.devices:,} devices, one alarm each, {runs} runs"
    )
    rates = []
    for r in range(runs):
        tp = throughput_once(port, work, f"{r}{time.monotonic_ns() % 10**6}", opts)
        rates.append(tp["alarms_per_s"])
        print(
            f"   run {r + 1}: {tp['handled']:,} of {tp['devices']:,} answered 0 "
            f"({tp['resent']} resent): {_f(tp['alarms_per_s'], ',.0f')} alarms/s"
        )
    out["scaip_alarms_per_s"] = workload.round_or_none(workload.median(rates), 0)
    print(f"\n7b. SCAIP: {opts.rate:,} alarms/s for {opts.duration_s:g} s, request -> snu=0")
    p99s = []
    for r in range(runs):
        lat = latency_once(port, work, f"{r}{time.monotonic_ns() % 10**6}", opts)
        p99s.append(lat["p99_ms"])
        print(
            f"   run {r + 1}: {lat['answered']:,} of {lat['offered']:,} answered; p50 "
            f"{_f(lat['p50_ms'], '.1f')} p99 {_f(lat['p99_ms'], '.1f')} max "
            f"{_f(lat['max_ms'], '.1f')} ms (sender behind at most "
            f"{lat['sender_max_behind_ms']:.0f} ms)"
        )
    out["scaip_p99_ms"] = workload.round_or_none(workload.median(p99s), 2)
    print(
        f"   median: {out['scaip_alarms_per_s']} alarms/s (runs {workload.spread(rates)}), "
        f"p99 {out['scaip_p99_ms']} ms (runs {workload.spread(p99s)})"
    )
    return out


def _f(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)
