"""`make demo`: a private broker, alarmhub and simulated homes on one machine.

What it does, in order: makes sure Mosquitto is installed (installing it with
apt-get when it may, otherwise printing the one command to run), starts a
private broker on a free loopback port, starts alarmhub in this process with
its database under `./var/demo/`, registers the simulated devices of a demo
municipality (0301 Oslo), creates two demo logins, starts the simulator and
prints where to look. Ctrl-C or SIGTERM stops the simulator, then alarmhub,
then the broker, and exits 0.

The demo's data starts fresh on every run: yesterday's open alarms would only
confuse the queue. It uses its own settings, not `ALARMHUB_*` variables, so it
cannot touch a real database by accident.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from alarmhub.app import AlarmHub
from alarmhub.clock import SystemClock
from alarmhub.logs import configure_logging
from alarmhub.mosquitto import LocalBroker, mosquitto_binary
from alarmhub.settings import ENV_PREFIX, Settings, load_settings, parse_mqtt_url
from alarmhub.sim.model import Scenario
from alarmhub.simulator import Simulation, SimulationConfig, SimulatorError
from alarmhub.store import accounts

REPO = Path(__file__).resolve().parent.parent
MUNICIPALITY = "0301"  # Oslo
HTTP_PORTS = range(8080, 8100)
INSTALL = "sudo apt-get install -y mosquitto"
LOGINS = (
    ("demo-operator", accounts.Role.OPERATOR, "operator"),
    ("demo-admin", accounts.Role.MUNICIPALITY_ADMIN, "municipality admin"),
)


class DemoError(Exception):
    """Why the demo cannot start, with what to do about it."""


@dataclass(frozen=True, slots=True)
class Options:
    homes: int
    speed: float
    port: int | None  # None: 8080 or the next free one; 0: any free port
    scenario: Scenario
    duration: float | None
    data_dir: Path
    seed: int


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        ensure_mosquitto()
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    for name in sorted(k for k in os.environ if k.startswith(ENV_PREFIX)):
        print(f"demo: ignoring {name}: the demo uses its own settings", file=sys.stderr)
        del os.environ[name]
    fresh_data_dir(opts.data_dir)
    broker = LocalBroker(opts.data_dir / "broker")
    try:
        broker.start()
    except (OSError, TimeoutError) as exc:
        print(f"demo: the private Mosquitto did not start: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(run(opts, broker))
    except (DemoError, SimulatorError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.stop()


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="make demo ARGS=…", description=__doc__.splitlines()[0])
    p.add_argument("--homes", type=int, default=25)
    p.add_argument("--speed", type=float, default=10.0, help="simulated seconds per real second")
    p.add_argument("--port", type=int, help="HTTP port (default: 8080 or the next free; 0: any)")
    p.add_argument("--scenario", choices=[s.value for s in Scenario], default="normal")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    p.add_argument("--seed", type=int, default=17)
    a = p.parse_args(argv)
    if a.homes < 1 or not a.speed > 0 or (a.duration is not None and not a.duration > 0):
        p.error("--homes, --speed and --duration must be positive")
    return Options(a.homes, a.speed, a.port, Scenario(a.scenario), a.duration, a.data_dir, a.seed)


def ensure_mosquitto() -> None:
    """Install Mosquitto when allowed to; otherwise say the one command that does."""
    if mosquitto_binary() is not None:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise DemoError(
            "mosquitto is not installed. Install the `mosquitto` package "
            "(macOS: `brew install mosquitto`) and run `make demo` again."
        )
    command = [apt, "install", "-y", "mosquitto"]
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or _run([sudo, "-n", "true"]) != 0:
            raise DemoError(
                f"mosquitto is not installed. Run:\n\n    {INSTALL}\n\nthen `make demo`."
            )
        command = [sudo, "-n", *command]
    print(f"demo: mosquitto is not installed; installing it: {' '.join(command)}", file=sys.stderr)
    if _run(command, show=True) != 0 or mosquitto_binary() is None:
        raise DemoError(f"installing mosquitto failed. Run:\n\n    {INSTALL}\n\nthen `make demo`.")


def _run(argv: list[str], *, show: bool = False) -> int:
    """Fixed argument lists only: apt-get or sudo from PATH, one named package."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    out = None if show else subprocess.DEVNULL
    return subprocess.run(argv, env=env, stdout=out, stderr=out, check=False).returncode  # noqa: S603


def fresh_data_dir(data_dir: Path) -> None:
    """Remove only what an earlier demo run left: its database, log and broker state."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("alarmhub.db", "alarmhub.db-wal", "alarmhub.db-shm", "alarmhub.log"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(data_dir / "broker", ignore_errors=True)


def http_port(requested: int | None) -> int:
    if requested is not None:
        return requested
    for port in HTTP_PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return 0


def demo_settings(opts: Options, broker: LocalBroker) -> Settings:
    return load_settings(
        None,
        mqtt_url=broker.url,
        mqtt_client_id="alarmhub-demo",
        database_url=f"sqlite:///{(opts.data_dir / 'alarmhub.db').resolve()}",
        http_listen=f"127.0.0.1:{http_port(opts.port)}",
        rules=REPO / "config" / "rules.toml",
        devices_dir=REPO / "devices",
        log_format="json",
    )


async def run(opts: Options, broker: LocalBroker) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = demo_settings(opts, broker)
    log_path = opts.data_dir / "alarmhub.log"
    with log_path.open("a", encoding="utf-8") as log_file:
        # The terminal is for the person; the hub's JSON log goes to a file.
        configure_logging(settings.log_level, "json", stream=log_file)
        sim = Simulation(
            SimulationConfig(
                homes=opts.homes,
                municipality=MUNICIPALITY,
                scenario=opts.scenario,
                seed=opts.seed,
                speed=opts.speed,
                duration_s=opts.duration,
            )
        )
        clock = SystemClock()
        async with AlarmHub(settings, clock=clock) as hub:
            await hub.register_devices(sim.devices())
            db = settings.database.path
            assert db is not None
            logins = await create_logins(db)
            announce(sys.stdout, hub, opts, len(sim.devices()), logins, log_path)
            await simulate_until_stopped(sim, broker, clock, stop, opts)
    print("demo: stopped", file=sys.stderr)
    return 0


async def create_logins(db: Path) -> list[tuple[str, str, str]]:
    """The demo's two people; fresh passwords every run, shown once on the terminal."""
    now = SystemClock().now()
    made = []
    for name, role, title in LOGINS:
        password = accounts.generate_password()
        hashed = await asyncio.to_thread(accounts.hash_password, password)
        await accounts.run(db, accounts.create_user, name, role, [MUNICIPALITY], hashed, now)
        made.append((name, password, title))
    return made


async def simulate_until_stopped(
    sim: Simulation, broker: LocalBroker, clock: SystemClock, stop: asyncio.Event, opts: Options
) -> None:
    """Run the simulator; the demo keeps serving after the plan ends, until stopped or timed out."""
    async with asyncio.TaskGroup() as tg:
        simulated = tg.create_task(
            sim.run(parse_mqtt_url(broker.url), clock, stop, client_id="alarmhub-demo-sim"),
            name="demo-simulator",
        )
        if opts.duration is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), opts.duration)
            stop.set()
        else:
            await stop.wait()
    stats = simulated.result()
    print(
        f"demo: the simulator sent {stats.sent} messages ({stats.rate:.0f}/s), "
        f"{stats.errors} errors",
        file=sys.stderr,
    )


def announce(
    out: TextIO,
    hub: AlarmHub,
    opts: Options,
    devices: int,
    logins: list[tuple[str, str, str]],
    log_path: Path,
) -> None:
    base = f"http://127.0.0.1:{hub.http_port}"
    lines = [
        "",
        "alarmhub demo is running",
        f"  operator page   {base}/",
        f"  health          {base}/healthz   metrics {base}/metrics",
        f"  municipality    {MUNICIPALITY} Oslo: {opts.homes} simulated homes, {devices} devices",
        f"  simulator       {opts.scenario.value}, speed {opts.speed:g}x, seed {opts.seed}",
        f"  data and logs   {opts.data_dir}/ (alarmhub log: {log_path})",
        "  logins",
        *(
            f"    {name:<14} password {pw}   ({title}, {MUNICIPALITY})"
            for name, pw, title in logins
        ),
        "",
        "Press Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), file=out, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
