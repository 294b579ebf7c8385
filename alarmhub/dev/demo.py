"""`make demo`: a private broker, alarmhub and simulated homes on one machine.

What it does, in order: makes sure Mosquitto is installed (installing it with
apt-get when it may, otherwise printing the one command to run), starts a
private broker on a free loopback port, starts alarmhub in this process with
its database under `./var/demo/`, registers the simulated devices of a demo
municipality (0301 Oslo) with three weeks of seeded history, creates two demo
logins, starts the simulator and simulated operators, and prints where to look.
Ctrl-C or SIGTERM stops the simulator and the operators, then alarmhub, then
the broker, and exits 0.

The simulated operators (`simulated-operator-N`) are real users acting through
the HTTP API with tokens of their own, so the timeline and the audit log show
who acted; `--no-operators` leaves the queue to you.

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
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from alarmhub.app import AlarmHub
from alarmhub.clock import SystemClock
from alarmhub.config.rules import load_rules
from alarmhub.core.actions import Action
from alarmhub.core.people import Role
from alarmhub.dev.mosquitto import LocalBroker, mosquitto_binary
from alarmhub.observability.logs import configure_logging
from alarmhub.settings import ENV_PREFIX, Settings, load_settings, parse_mqtt_url
from alarmhub.sim.history import past_alarms, seed_history
from alarmhub.sim.model import Scenario
from alarmhub.sim.operators import SIMULATED_PREFIX, operator_names
from alarmhub.sim.simulator import Simulation, SimulationConfig, SimulatorError
from alarmhub.sim.staff import Acted, SimulatedStaff, StaffStats
from alarmhub.store.sqlite import accounts
from alarmhub.store.sqlite.store import SqliteStore

REPO = Path(__file__).resolve().parents[2]
MUNICIPALITY = "0301"  # Oslo
HTTP_PORTS = range(8080, 8100)
INSTALL = "sudo apt-get install -y mosquitto"
OPERATORS_IN_HISTORY = 3
HISTORY_GAP = timedelta(hours=1)  # the history ends before the live run's alarms begin
LOGINS = (
    ("demo-operator", Role.OPERATOR, "operator"),
    ("demo-admin", Role.MUNICIPALITY_ADMIN, "municipality admin"),
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
    operators: int = 3  # simulated operators at work; 0: the queue is left to people
    operator_speed: float = 1.0  # their delays divided by this (tests)
    history_days: int = 21


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
    p.add_argument("--operators", type=int, default=3, help="simulated operators at work")
    p.add_argument(
        "--no-operators",
        action="store_const",
        const=0,
        dest="operators",
        help="no simulated operators: work the queue yourself",
    )
    p.add_argument(
        "--operator-speed", type=float, default=1.0, help="simulated operators act X times faster"
    )
    p.add_argument("--history-days", type=int, default=21, help="days of seeded past alarms")
    a = p.parse_args(argv)
    if a.homes < 1 or not a.speed > 0 or (a.duration is not None and not a.duration > 0):
        p.error("--homes, --speed and --duration must be positive")
    if a.operators < 0 or a.history_days < 0 or not a.operator_speed > 0:
        p.error("--operators and --history-days must not be negative, --operator-speed positive")
    return Options(
        a.homes,
        a.speed,
        a.port,
        Scenario(a.scenario),
        a.duration,
        a.data_dir,
        a.seed,
        a.operators,
        a.operator_speed,
        a.history_days,
    )


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
        db = settings.database.path
        assert db is not None
        # Before the daemon starts: it then loads the history like any stored alarms.
        await (await SqliteStore.open(db)).close()  # the schema, for the users and history
        seeded = await seed_demo_history(db, sim, settings, opts, clock)
        tokens = await create_operators(db, opts)
        async with AlarmHub(settings, clock=clock) as hub:
            await hub.register_devices(sim.devices(), audit=(), assign_bridges=True)
            logins = await create_logins(db)
            announce(sys.stdout, hub, opts, len(sim.devices()), logins, log_path, seeded)
            staff = None
            if opts.operators:
                staff = SimulatedStaff(
                    f"http://127.0.0.1:{hub.http_port}",
                    tokens,
                    clock,
                    seed=opts.seed,
                    speed=opts.operator_speed,
                    on_action=FirstAcknowledgement(sys.stdout),
                )
            await simulate_until_stopped(sim, broker, clock, stop, opts, staff)
    print("demo: stopped", file=sys.stderr)
    return 0


async def create_logins(db: Path) -> list[tuple[str, str, str]]:
    """The demo's two people; fresh passwords every run, shown once on the terminal."""
    now = SystemClock().now()
    made = []
    for name, role, title in LOGINS:
        password = accounts.generate_password()
        hashed = await asyncio.to_thread(accounts.hash_password, password)
        await accounts.run(db, accounts.create_user, name, role, [MUNICIPALITY], hashed, now, ())
        made.append((name, password, title))
    return made


async def seed_demo_history(
    db: Path, sim: Simulation, settings: Settings, opts: Options, clock: SystemClock
) -> int:
    """Weeks of resolved alarms up to an hour ago, so the reports have something to show."""
    if not opts.history_days:
        return 0
    rules = load_rules(settings.rules)
    end = clock.now() - HISTORY_GAP
    past = past_alarms(
        sim.devices(),
        end,
        opts.history_days,
        opts.seed,
        operator_names(OPERATORS_IN_HISTORY),
        rules,
    )
    return await seed_history(db, past, rules.version)


async def create_operators(db: Path, opts: Options) -> dict[str, str]:
    """The simulated operators as real users; returns a bearer token per operator at work.

    The history's operators exist as users even with `--no-operators`, so every
    name on a timeline is a user. Their password is random and never shown: they
    act through the API with their tokens only.
    """
    now = SystemClock().now()
    names = operator_names(max(opts.operators, OPERATORS_IN_HISTORY))
    hashed = await asyncio.to_thread(accounts.hash_password, accounts.generate_password())
    tokens: dict[str, str] = {}
    for name in names:
        await accounts.run(
            db, accounts.create_user, name, Role.OPERATOR, [MUNICIPALITY], hashed, now, ()
        )
        if len(tokens) < opts.operators:
            tokens[name] = await accounts.run(db, accounts.create_token, name, now, None, ())
    return tokens


class FirstAcknowledgement:
    """Says on the terminal when the first simulated operator acknowledged an alarm."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._said = False

    def __call__(self, acted: Acted) -> None:
        if self._said or acted.action is not Action.ACKNOWLEDGE:
            return
        self._said = True
        a = acted.alarm
        print(
            f"demo: {acted.operator} acknowledged a P{a['priority']} {a['kind']} alarm "
            f"{acted.after_s:.0f} s after it was raised (the first; see the alarm's timeline)",
            file=self._out,
            flush=True,
        )


async def simulate_until_stopped(
    sim: Simulation,
    broker: LocalBroker,
    clock: SystemClock,
    stop: asyncio.Event,
    opts: Options,
    staff: SimulatedStaff | None = None,
) -> None:
    """Run the simulator; the demo keeps serving after the plan ends, until stopped or timed out."""
    async with asyncio.TaskGroup() as tg:
        simulated = tg.create_task(
            sim.run(parse_mqtt_url(broker.url), clock, stop, client_id="alarmhub-demo-sim"),
            name="demo-simulator",
        )
        working = tg.create_task(staff.run(stop), name="demo-operators") if staff else None
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
    if working is not None:
        print(f"demo: {staff_summary(working.result())}", file=sys.stderr)


def staff_summary(s: StaffStats) -> str:
    return (
        f"the simulated operators acknowledged {s.acknowledged}, dispatched {s.dispatched} "
        f"and resolved {s.resolved} alarms ({s.taken_by_others} taken by others first, "
        f"{s.errors} errors)"
    )


def announce(
    out: TextIO,
    hub: AlarmHub,
    opts: Options,
    devices: int,
    logins: list[tuple[str, str, str]],
    log_path: Path,
    seeded: int = 0,
) -> None:
    base = f"http://127.0.0.1:{hub.http_port}"
    if opts.operators:
        first, last = operator_names(opts.operators)[0], operator_names(opts.operators)[-1]
        who = first if opts.operators == 1 else f"{first} … {last}"
        speed = f", {opts.operator_speed:g}x faster" if opts.operator_speed != 1 else ""
        operators = [
            (
                f"  operators       ON: {opts.operators} simulated ({who}{speed}) acknowledge, "
                "dispatch and resolve alarms"
            ),
            (
                "                  turn them off to work the queue yourself: "
                "make demo ARGS=--no-operators"
            ),
        ]
    else:
        operators = ["  operators       OFF (--no-operators): the queue is yours"]
    history = (
        f"  history         {seeded} seeded alarms over {opts.history_days} days "
        f"(see Reports; handled by {SIMULATED_PREFIX}N)"
        if seeded
        else "  history         none seeded"
    )
    lines = [
        "",
        "alarmhub demo is running",
        f"  operator page   {base}/",
        f"  health          {base}/healthz   metrics {base}/metrics",
        f"  municipality    {MUNICIPALITY} Oslo: {opts.homes} simulated homes, {devices} devices",
        f"  simulator       {opts.scenario.value}, speed {opts.speed:g}x, seed {opts.seed}",
        *operators,
        history,
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
