"""`alarmhub simulate …`: realistic device traffic through the device profiles.

The traffic goes through the broker in the formats real devices use (native,
Zigbee2MQTT, OwnTracks), so it exercises the same decoders as real devices.
Exit status: 0 when every message was sent, 1 when some failed or the broker
was unreachable, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from typing import Any

from alarmhub.cli.db import actor, opened_store
from alarmhub.cli.output import EXIT_FAILED, EXIT_USAGE, error, warn
from alarmhub.clock import SystemClock
from alarmhub.core.people import import_audit
from alarmhub.settings import Settings, parse_mqtt_url
from alarmhub.sim.model import Scenario
from alarmhub.sim.simulator import Simulation, SimulationConfig, SimulatorError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="publish simulated device traffic to the broker",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("--homes", type=int, required=True, help="number of simulated homes")
    p.add_argument("--broker", help="mqtt://host:port (default: ALARMHUB_MQTT_URL)")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second; above 1 replays the recent past",
    )
    p.add_argument("--seed", type=int, help="repeat a run exactly (default: a random seed)")
    p.add_argument("--scenario", choices=[s.value for s in Scenario], default=Scenario.NORMAL.value)
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="real seconds to run (default: until Ctrl-C; one hour when --speed is above 1)",
    )
    p.add_argument("--municipality", default="0301", help="four-digit kommunenummer")
    p.add_argument(
        "--register",
        action="store_true",
        help="register the simulated devices in the database (ALARMHUB_DATABASE_URL) first",
    )
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        error(problem, "alarmhub simulate")
        return EXIT_USAGE
    try:
        target = parse_mqtt_url(args.broker) if args.broker else settings.mqtt
    except ValueError as exc:
        error(f"--broker: {exc}", "alarmhub simulate")
        return EXIT_USAGE
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    config = SimulationConfig(
        homes=args.homes,
        municipality=args.municipality,
        scenario=Scenario(args.scenario),
        seed=seed,
        speed=args.speed,
        duration_s=args.duration,
    )
    sim = Simulation(config)
    devices = sim.devices()
    warn(
        f"simulate: {args.homes} homes, {len(devices)} devices, scenario {args.scenario}, "
        f"speed {args.speed:g}, seed {seed}"
    )
    if args.duration is None and args.speed > 1:
        warn("simulate: --speed above 1 without --duration: running for one hour")
    clock = SystemClock()

    async def run() -> int:
        if args.register:
            db = settings.database
            if db.kind != "sqlite" or db.path is None:
                error("--register needs a sqlite:/// database", "alarmhub simulate")
                return EXIT_FAILED
            async with opened_store(settings) as store:
                now = clock.now()
                # A person's change of the registry like any import: audited with it.
                entries = import_audit(actor(), now, None, devices)
                await store.register_devices(devices, now, audit=entries, assign_bridges=True)
            warn(f"simulate: registered {len(devices)} devices in {db.path}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats = await sim.run(
            target, clock, stop, client_id=f"alarmhub-sim-{os.getpid()}", progress=sys.stderr
        )
        warn(
            f"simulate: sent {stats.sent} messages in {stats.seconds:.1f} s "
            f"({stats.rate:.0f}/s), {stats.errors} errors, {stats.reconnects} reconnects"
        )
        return EXIT_FAILED if stats.errors else 0

    try:
        return asyncio.run(run())
    except SimulatorError as exc:
        error(str(exc), "alarmhub simulate")
        return EXIT_FAILED


def _check(args: argparse.Namespace) -> str | None:
    if args.homes < 1:
        return "--homes must be at least 1"
    if not args.speed > 0 or args.speed == float("inf"):
        return "--speed must be a positive number"
    if args.duration is not None and not args.duration > 0:
        return "--duration must be a positive number of seconds"
    if len(args.municipality) != 4 or not args.municipality.isdigit():
        return "--municipality must be a four-digit kommunenummer, e.g. 0301"
    return None
