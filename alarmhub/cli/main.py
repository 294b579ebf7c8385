"""`alarmhub` — the command line: run the daemon, manage devices, read the queue.

Every command except `run` reads or writes the database directly, so it works
whether or not the daemon is running (SQLite in WAL mode with a busy timeout).
Exit status: 0 success, 1 the command failed, 2 a bad setting or argument.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from pydantic import ValidationError

from alarmhub import builtin
from alarmhub.cli.rules import CasesError, explain, run_cases
from alarmhub.clock import SystemClock
from alarmhub.config.device_settings import SettingsInvalidError, parse_settings
from alarmhub.config.profiles import (
    ProfileError,
    bridge_missing,
    bridge_unknown,
    default_profiles_dir,
    load_catalog,
    profile_guess,
    unknown_profile,
)
from alarmhub.config.rules import RulesError, load_rules, person_alarm_auto_resolvers
from alarmhub.core.bridges import valid_bridge
from alarmhub.core.decode import Catalog, valid_id
from alarmhub.core.model import Device, DeviceKind, EventType
from alarmhub.core.moves import move_errors
from alarmhub.core.people import AuditEntry
from alarmhub.core.views import alarm_json
from alarmhub.observability.logs import configure_logging
from alarmhub.settings import Settings, SettingsError, load_settings
from alarmhub.store.sqlite.store import MoveRefusedError, SqliteStore
from alarmhub.web.models import DeviceIn

EXIT_FAILED = 1
EXIT_USAGE = 2
MUNICIPALITY_DIGITS = 4


class CommandError(Exception):
    """A failure the person can fix; the message says how."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = load_settings(Path(args.config) if args.config else None)
    except SettingsError as exc:
        print(f"alarmhub: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    try:
        result: int = args.func(settings, args)
    except (CommandError, RulesError, ProfileError) as exc:
        print(f"alarmhub: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alarmhub", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", help="settings file (default: $ALARMHUB_CONFIG or config/alarmhub.toml)"
    )
    sub = p.add_subparsers(title="commands")

    run = sub.add_parser(
        "run", help="run the daemon: MQTT in, alarms out, HTTP on ALARMHUB_HTTP_LISTEN"
    )
    run.set_defaults(func=cmd_run)

    devices = sub.add_parser("devices", help="the device registry").add_subparsers(title="devices")
    reg = devices.add_parser("register", help="register (or update) one device")
    reg.add_argument("--id", required=True)
    reg.add_argument("--kind", required=True, choices=[k.value for k in DeviceKind])
    reg.add_argument("--municipality", required=True, help="four-digit kommunenummer, e.g. 0301")
    reg.add_argument("--heartbeat-interval", type=int, metavar="SECONDS")
    reg.add_argument("--label", help="a label for operators; no personal data")
    reg.add_argument("--profile", help="device profile name when its format has several (devices/)")
    reg.add_argument("--resident", help="a pseudonymous resident reference (never a name)")
    reg.add_argument(
        "--bridge",
        help="the Zigbee2MQTT bridge a Zigbee device is paired with (its MQTT account and "
        "base topic zigbee2mqtt/<bridge>); its messages through any other bridge are refused",
    )
    reg.add_argument(
        "--settings",
        metavar="JSON",
        help='per-device settings, e.g. \'{"windows": {"night": ["23:00", "06:00"]}, '
        '"geofence": {"lat": 59.91, "lon": 10.75, "radius_m": 500}, '
        '"dose_schedule": {"times": ["08:00", "20:00"], "window_min": 60}}\'',
    )
    reg.set_defaults(func=cmd_devices_register)
    lst = devices.add_parser("list", help="list registered devices")
    lst.add_argument("--municipality")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_devices_list)
    imp = devices.add_parser("import", help="register devices from a CSV file, all or none")
    imp.add_argument("file", metavar="FILE.csv")
    imp.set_defaults(func=cmd_devices_import)

    alarms = sub.add_parser("alarms", help="the alarm queue").add_subparsers(title="alarms")
    al = alarms.add_parser("list", help="most urgent first, then oldest first")
    al.add_argument("--state", choices=["open", "acknowledged", "resolved"])
    al.add_argument("--limit", type=int)
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_alarms_list)

    dead = sub.add_parser("dead-letters", help="messages that could not be used").add_subparsers(
        title="dead-letters"
    )
    dl = dead.add_parser("list", help="newest first")
    dl.add_argument("--limit", type=int)
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=cmd_dead_letters_list)

    # Command groups that live in their own modules.
    from alarmhub.cli import accounts as cli_accounts  # noqa: PLC0415
    from alarmhub.cli import simulate as cli_simulate  # noqa: PLC0415

    cli_accounts.add_commands(sub)
    cli_simulate.add_commands(sub)

    rules = sub.add_parser("rules", help="the rules file").add_subparsers(title="rules")
    chk = rules.add_parser("check", help="validate a rules file without starting")
    chk.add_argument("file", nargs="?", help="default: ALARMHUB_RULES, else the built-in rules")
    chk.set_defaults(func=cmd_rules_check)
    exp = rules.add_parser("explain", help="what would happen to an event, without doing it")
    exp.add_argument("--device", required=True, help="a registered device id")
    exp.add_argument("--event", required=True, help="an event type, e.g. door.opened")
    exp.add_argument("--at", help='local time in the rules\' time zone, e.g. "2026-11-22T02:13"')
    exp.add_argument(
        "--fields", metavar="JSON", help='event fields, e.g. \'{"lat": 59.9, "lon": 10.7}\''
    )
    exp.add_argument("--json", action="store_true")
    exp.set_defaults(func=cmd_rules_explain)
    tst = rules.add_parser("test", help="replay scripted cases on a virtual clock")
    tst.add_argument(
        "file",
        metavar="CASES.toml",
        nargs="?",
        help="cases file (default, for the built-in rules only: their built-in cases)",
    )
    tst.add_argument(
        "--rules",
        dest="rules_file",
        help="rules file (default: ALARMHUB_RULES, else the built-in rules)",
    )
    tst.set_defaults(func=cmd_rules_test)
    return p


# --- run ---------------------------------------------------------------------


def cmd_run(settings: Settings, _args: argparse.Namespace) -> int:
    from alarmhub.app import AlarmHub  # noqa: PLC0415 - keep CLI start-up light

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with AlarmHub(settings) as hub:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(hub.stop()))
            # SIGHUP (systemctl reload): reload the rules; a bad file keeps the old ones.
            loop.add_signal_handler(signal.SIGHUP, hub.reload_rules)
            await hub.wait_stopped()

    try:
        asyncio.run(run())
    except OSError as exc:
        structlog.get_logger("alarmhub").error("alarmhub.failed", error=str(exc))
        return EXIT_FAILED
    return 0


# --- store helpers -------------------------------------------------------------


def cli_actor() -> str:
    """The audit actor of a CLI change: `cli:` and the operating-system user."""
    from alarmhub import cli_accounts  # noqa: PLC0415 - it imports this module

    return cli_accounts._actor()  # noqa: SLF001 - one definition of the CLI's actor


def import_audit(
    actor: str, now: datetime, address: str | None, devices: Sequence[Device]
) -> list[AuditEntry]:
    """One `device.imported` entry per municipality of an import, with its count."""
    return [
        AuditEntry(
            actor,
            "device.imported",
            now,
            address=address,
            municipality=m,
            detail={"count": sum(d.municipality == m for d in devices)},
        )
        for m in sorted({d.municipality for d in devices})
    ]


def _with_store(settings: Settings, work: Callable[[SqliteStore], Coroutine[Any, Any, int]]) -> int:
    db = settings.database
    if db.kind != "sqlite" or db.path is None:
        raise CommandError("only sqlite:/// databases are supported so far")

    async def go() -> int:
        store = await SqliteStore.open(db.path, synchronous=settings.sqlite_synchronous)  # type: ignore[arg-type]
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _device(
    id_: str,
    kind: str,
    municipality: str,
    interval: str | int | None,
    label: str | None,
    profile: str | None = None,
    bridge: str | None = None,
) -> Device:
    if not valid_id(id_) or any(c in id_ for c in "+#"):
        raise CommandError(f"device id {id_!r} is not valid: 1-128 printable characters, no + or #")
    try:
        device_kind = DeviceKind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in DeviceKind)
        raise CommandError(f"kind {kind!r} is not one of: {kinds}") from None
    if len(municipality) != MUNICIPALITY_DIGITS or not municipality.isdigit():
        raise CommandError(
            f"municipality {municipality!r} must be a four-digit kommunenummer, e.g. 0301"
        )
    seconds: int | None = None
    if interval not in (None, ""):
        try:
            seconds = int(interval)
        except ValueError:
            raise CommandError(
                f"heartbeat interval {interval!r} is not a whole number of seconds"
            ) from None
        if not 10 <= seconds <= 7 * 24 * 3600:
            raise CommandError("heartbeat interval must be between 10 s and 7 days")
    if bridge and not valid_bridge(bridge):
        raise CommandError(
            f"bridge {bridge!r} is not valid: 1-64 letters, digits, '.', '_' or '-' "
            "(it is an MQTT username and a topic level)"
        )
    return Device(
        id_,
        device_kind,
        municipality,
        profile or None,
        seconds,
        label or None,
        bridge=bridge or None,
    )


def device_from_values(v: Mapping[str, Any]) -> Device:
    """A device from already-typed values: the registry's checks, then its settings.

    The API's create, change and decommission and every CSV row end here.
    Raises CommandError or SettingsInvalidError with a message for a person.
    """
    kind = v["kind"].value if isinstance(v["kind"], DeviceKind) else str(v["kind"])
    return replace(
        _device(
            v["id"],
            kind,
            v["municipality"],
            v["heartbeat_interval_s"],
            v["label"],
            v["profile"],
            v.get("bridge"),
        ),
        active=bool(v.get("active", True)),
        resident=v.get("resident"),
        settings=parse_settings(v.get("settings")),
    )


def known_profile(catalog: Catalog | None, device: Device) -> Device:
    """The device, or CommandError if it names a profile the catalogue lacks.

    No catalogue (a broken profile folder, which `rules check` and the daemon
    report): nothing to check against.
    """
    problem = None if catalog is None else unknown_profile(catalog, device)
    if problem is not None:
        raise CommandError(problem)
    return device


def validated_device(values: Mapping[str, Any], catalog: Catalog | None) -> Device:
    """A new device from untyped input, validated exactly as `POST /api/v1/devices` is.

    One definition for both (issue 13 item 5): the API's body model (bounded
    label and profile, a pseudonymous resident, settings an object), then
    :func:`device_from_values`. Raises CommandError naming the first bad field.
    """
    # The registry's own checks first, only for their messages (the kinds listed,
    # "four-digit kommunenummer"); a row must pass both either way.
    _device(
        str(values.get("id", "")),
        str(values.get("kind", "")),
        str(values.get("municipality", "")),
        values.get("heartbeat_interval_s"),
        None,
        None,
        values.get("bridge") or None,
    )
    try:
        body = DeviceIn.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "row"
        raise CommandError(f"{field}: {err['msg']}") from None
    try:
        device = device_from_values(body.model_dump())
    except SettingsInvalidError as exc:
        raise CommandError(str(exc)) from None
    return known_profile(catalog, device)


def _catalog(settings: Settings) -> Catalog | None:
    try:
        return load_catalog(settings.devices_dir or default_profiles_dir())
    except ProfileError:
        return None  # `rules check` and the daemon report a broken profile folder


def _warn_profile_guess(settings: Settings, device: Device) -> None:
    """Say so when the device's profile is a guess (issue 12 item 13); never fail on it."""
    catalog = _catalog(settings)
    if catalog is None:
        return
    for warning in (profile_guess(catalog, device), bridge_unknown(catalog, device)):
        if warning is not None:
            print(warning, file=sys.stderr)


def _check_bridge(settings: Settings, devices: Sequence[Device]) -> list[str]:
    """Devices whose Zigbee2MQTT profile needs a bridge they were not given."""
    catalog = _catalog(settings)
    if catalog is None:
        return []  # `rules check` and the daemon report a broken profile folder
    return [e for e in (bridge_missing(catalog, d) for d in devices) if e is not None]


def cmd_devices_register(settings: Settings, args: argparse.Namespace) -> int:
    # Validated as the API's POST /devices and every CSV row are (issue 13 item 5).
    values: dict[str, Any] = {
        "id": args.id,
        "kind": args.kind,
        "municipality": args.municipality,
        "heartbeat_interval_s": args.heartbeat_interval,
        "label": args.label,
        "profile": args.profile,
        "resident": args.resident,
        "bridge": args.bridge,
    }
    if args.settings is not None:
        try:
            values["settings"] = orjson.loads(args.settings)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"settings are not JSON: {exc}") from None
    device = validated_device(
        {k: v for k, v in values.items() if v is not None}, _catalog(settings)
    )
    for problem in _check_bridge(settings, [device]):
        raise CommandError(problem)

    async def work(store: SqliteStore) -> int:
        now = SystemClock().now()
        entry = AuditEntry(
            cli_actor(),
            "device.registered",
            now,
            device_id=device.id,
            municipality=device.municipality,
            detail={"active": device.active},
        )
        try:
            await store.register_devices([device], now, audit=[entry])
        except MoveRefusedError as exc:  # open alarms stay behind: issue 12 item 9
            raise CommandError(str(exc)) from None
        print(f"registered {device.id} ({device.kind}, municipality {device.municipality})")
        _warn_profile_guess(settings, device)
        return 0

    if device.heartbeat_interval_s is None:
        _warn_no_interval(settings, device)
    return _with_store(settings, work)


def _warn_no_interval(settings: Settings, device: Device) -> None:
    """A device without a heartbeat interval: say what supervises it (issue 12 item 16)."""
    try:
        default = load_rules(settings.rules).heartbeat_defaults.get(device.kind)
    except RulesError:
        default = None
    if default is None:
        print(
            f"warning: {device.id} has no --heartbeat-interval and the rules give "
            f"{device.kind} no default_heartbeat_interval_s: it will NOT be supervised "
            "(a dead device would never be reported)",
            file=sys.stderr,
        )
        return
    print(
        f"warning: {device.id} has no --heartbeat-interval; supervised with the "
        f"{device.kind} default of {int(default.total_seconds())} s from the rules",
        file=sys.stderr,
    )


def cmd_devices_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: SqliteStore) -> int:
        rows = await store.list_devices(args.municipality)
        if args.json:
            print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
            return 0
        _table(
            [
                "id",
                "kind",
                "municipality",
                "heartbeat_interval_s",
                "label",
                "bridge",
                "active",
                "last_seen_at",
            ],
            rows,
        )
        return 0

    return _with_store(settings, work)


REQUIRED_COLUMNS = ("id", "kind", "municipality")
OPTIONAL_COLUMNS = ("heartbeat_interval", "label", "profile", "resident", "settings", "bridge")
# Columns an import leaves alone on existing devices when the file does not have them,
# so re-importing a plain id,kind,municipality list never wipes a geofence or unpairs
# a Zigbee device from its bridge.
PRESERVABLE = frozenset({"resident", "settings", "bridge"})


def preserved_columns(text: str) -> frozenset[str]:
    header = next(csv.reader(text.splitlines()[:1]), [])
    return PRESERVABLE - {h.strip() for h in header}


def parse_device_csv(text: str, catalog: Catalog | None = None) -> tuple[list[Device], list[str]]:
    """Parse a registry CSV; return the devices and every row's error (all or nothing).

    Each row is validated as `POST /api/v1/devices` validates its body
    (:func:`validated_device`), its profile against `catalog` when given.
    """
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return [], [f"header: missing column(s) {', '.join(missing)} (need id,kind,municipality)"]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        return [], [f"header: unknown column(s) {', '.join(unknown)}"]
    devices: list[Device] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for line_no, row in enumerate(reader, start=2):
        try:
            device = validated_device(_csv_values(row), catalog)
        except CommandError as exc:
            errors.append(f"line {line_no}: {exc}")
            continue
        if device.id in seen:
            errors.append(f"line {line_no}: device {device.id} already on line {seen[device.id]}")
            continue
        seen[device.id] = line_no
        devices.append(device)
    return devices, errors


def _csv_values(row: Mapping[str, str | None]) -> dict[str, Any]:
    """A CSV row as the API's device body: blanks absent, the settings cell as JSON."""
    columns = {"heartbeat_interval": "heartbeat_interval_s"}
    values: dict[str, Any] = {}
    for column in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
        cell = (row.get(column) or "").strip()
        if cell or column in REQUIRED_COLUMNS:
            values[columns.get(column, column)] = cell
    if "settings" in values:
        try:
            values["settings"] = orjson.loads(values["settings"])
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"settings are not JSON: {exc}") from None
    return values


def cmd_devices_import(settings: Settings, args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CommandError(f"{args.file}: {exc.strerror}") from exc
    devices, errors = parse_device_csv(text, _catalog(settings))
    errors = errors or _check_bridge(settings, devices)
    if errors:
        for err in errors:
            print(f"{args.file}: {err}", file=sys.stderr)
        print(f"alarmhub: nothing imported: {len(errors)} row error(s)", file=sys.stderr)
        return EXIT_FAILED

    async def work(store: SqliteStore) -> int:
        now = SystemClock().now()
        entries = import_audit(cli_actor(), now, None, devices)
        try:
            await store.register_devices(devices, now, keep=preserved_columns(text), audit=entries)
        except MoveRefusedError as exc:  # open alarms stay behind: issue 12 item 9
            for err in move_errors(devices, exc.refused):
                print(f"{args.file}: {err}", file=sys.stderr)
            print(f"alarmhub: nothing imported: {len(exc.refused)} row error(s)", file=sys.stderr)
            return EXIT_FAILED
        print(f"imported {len(devices)} device(s) from {args.file}")
        return 0

    return _with_store(settings, work)


def cmd_alarms_list(settings: Settings, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise CommandError("--limit must be at least 1")

    async def work(store: SqliteStore) -> int:
        alarms = await store.list_alarms(args.state, args.limit)
        rows = [alarm_json(a) for a in alarms]
        if args.json:
            print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
            return 0
        _table(
            [
                "id",
                "priority",
                "kind",
                "state",
                "municipality",
                "device_id",
                "raised_at",
                "repeat_count",
                "escalation_level",
            ],
            rows,
        )
        return 0

    return _with_store(settings, work)


def cmd_dead_letters_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: SqliteStore) -> int:
        rows = await store.dead_letters(args.limit)
        if args.json:
            print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
            return 0
        _table(["seq", "received_at", "reason", "device_id", "topic", "detail"], rows)
        return 0

    return _with_store(settings, work)


def cmd_rules_explain(settings: Settings, args: argparse.Namespace) -> int:
    rules = load_rules(settings.rules)
    try:
        event_type = EventType(args.event)
    except ValueError:
        raise CommandError(f"unknown event type {args.event!r}: see docs/protocol.md") from None
    now = SystemClock().now()
    at = now
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise CommandError(f"--at {args.at!r} is not a time like 2026-11-22T02:13") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=rules.timezone)
    try:
        fields = orjson.loads(args.fields) if args.fields else {}
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"--fields is not JSON: {exc}") from exc

    async def work(store: SqliteStore) -> int:
        found = await store.get_devices([args.device])
        if not found:
            raise CommandError(f"no device {args.device!r} is registered")
        # What the store holds now: silences in force at (or after) `at`, active alarms.
        result = explain(
            rules,
            found[0],
            event_type,
            at.astimezone(UTC),
            fields,
            silences=await store.active_silences(at),
            alarms=await store.load_active_alarms(),
        )
        if args.json:
            print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
            return 0
        for key, value in result.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                print(f"{key}:")
                for item in value:
                    print("  - " + ", ".join(f"{k} {v}" for k, v in item.items()))
            elif isinstance(value, list):
                print(f"{key}:")
                for item in value:
                    print(f"  - {item}")
            else:
                print(f"{key}: {value}")
        return 0

    return _with_store(settings, work)


def cmd_rules_test(settings: Settings, args: argparse.Namespace) -> int:
    rules_path = Path(args.rules_file) if args.rules_file else settings.rules
    if args.file:
        cases = Path(args.file)
    elif not args.rules_file and settings.rules_builtin:
        cases = builtin.rules_tests_file()
        print(f"{cases} (built-in cases) against {_rules_label(settings, rules_path)}")
    else:
        # The built-in cases test the built-in rules; against other rules they would
        # fail for reasons that say nothing about those rules.
        raise CommandError(f"name the cases file that tests {rules_path}: rules test CASES.toml")
    rules = load_rules(rules_path)
    catalog = load_catalog(settings.devices_dir or default_profiles_dir())
    try:
        results = run_cases(rules, catalog, cases)
    except CasesError as exc:
        raise CommandError(str(exc)) from exc
    failed = [r for r in results if r.failures]
    for r in results:
        print(f"{'FAIL' if r.failures else 'ok  '}  {r.name}")
        for failure in r.failures:
            print("      " + failure.replace("\n", "\n      "))
    matched = set().union(*(r.rules_matched for r in results)) if results else set()
    every = {r.name for r in rules.rules}
    for local in rules.municipalities.values():
        every |= {r.name for r in local.rules}
    untested = sorted(every - matched)
    if untested:
        print(f"rules no case exercised: {', '.join(untested)}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return EXIT_FAILED if failed or not results else 0


def cmd_rules_check(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else settings.rules
    rules = load_rules(path)
    for warning in person_alarm_auto_resolvers(rules):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{_rules_label(settings, path)}: OK, {len(rules.rules)} rules, version {rules.version}")
    return 0


def _rules_label(settings: Settings, path: Path) -> str:
    """The rules file as a person should read it: which file, and whether it is ours."""
    if path == settings.rules and settings.rules_builtin:
        return f"{path} (built-in default)"
    return str(path)


def _table(columns: list[str], rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    text = [[("" if r.get(c) is None else str(r.get(c)))[:60] for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for t in text:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))

