"""`alarmhub devices register|list|import|credentials`: the device registry from the command line.

Validation is the registry's own (core/registry.py), shared with the API, so a
device or CSV row refused here is refused there with the same message. What is
left here is the shell: read the file and the profile catalogue, write through
the store with its audit entries, and print.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from alarmhub.cli.db import actor, with_directory, with_store
from alarmhub.cli.output import EXIT_FAILED, CommandError, error, print_json, table, warn
from alarmhub.clock import SystemClock
from alarmhub.config.profiles import ProfileError, default_profiles_dir, load_catalog
from alarmhub.config.rules import RulesError, load_rules
from alarmhub.core.bridges import BridgeTaken, bridge_errors
from alarmhub.core.decode import Catalog
from alarmhub.core.digest import credentials_for, password_problem
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.moves import move_errors
from alarmhub.core.people import AuditEntry, import_audit
from alarmhub.core.registry import (
    bridge_missing,
    bridge_unknown,
    parse_device_csv,
    preserved_columns,
    profile_guess,
    validated_device,
)
from alarmhub.core.tenancy import Scope
from alarmhub.settings import Settings
from alarmhub.store.errors import BridgeTakenError, MoveRefusedError
from alarmhub.store.ports import AlarmStore, Directory

LIST_COLUMNS = [
    "id",
    "kind",
    "municipality",
    "heartbeat_interval_s",
    "label",
    "bridge",
    "active",
    "last_seen_at",
]


def add_parser(sub: Any) -> None:
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
    imp = devices.add_parser(
        "import",
        help="register devices from a CSV file, all or none",
        description="Register or update devices from a CSV file, all or none: header "
        "id,kind,municipality plus optional heartbeat_interval,label,profile,resident,"
        "settings,bridge. Columns resident, settings and bridge the file lacks stay as "
        "stored on existing devices, except a resident on a device the file moves to "
        "another municipality: cleared, since resident references are per municipality "
        "(give the resident column to set the new one).",
    )
    imp.add_argument("file", metavar="FILE.csv")
    imp.set_defaults(func=cmd_devices_import)
    cred = devices.add_parser(
        "credentials",
        help="set a SCAIP device's SIP digest credentials (stored as HA1, never the password)",
    )
    cred.add_argument("--id", help="the device id: a SCAIP device's cid")
    cred.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line), never from the command line",
    )
    cred.add_argument(
        "--from-csv",
        metavar="FILE.csv",
        help="set many devices' credentials from a CSV file with the header `id,password` "
        "(every row checked first: one bad row and nothing is set)",
    )
    cred.set_defaults(func=cmd_devices_credentials)


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
            warn(warning)


def _check_bridge(settings: Settings, devices: Sequence[Device]) -> list[str]:
    """Devices whose Zigbee2MQTT profile needs a bridge they were not given."""
    catalog = _catalog(settings)
    if catalog is None:
        return []  # `rules check` and the daemon report a broken profile folder
    return [e for e in (bridge_missing(catalog, d) for d in devices) if e is not None]


def _register_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as the API's device body: absent flags absent, --settings as JSON."""
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
    return {k: v for k, v in values.items() if v is not None}


def cmd_devices_register(settings: Settings, args: argparse.Namespace) -> int:
    # Validated as the API's POST /devices and every CSV row are (issue 13 item 5).
    device = validated_device(_register_values(args), _catalog(settings))
    for problem in _check_bridge(settings, [device]):
        raise CommandError(problem)

    async def work(store: AlarmStore) -> int:
        now = SystemClock().now()
        entry = AuditEntry(
            actor(),
            "device.registered",
            now,
            device_id=device.id,
            municipality=device.municipality,
            detail={"active": device.active},
        )
        try:
            # The CLI is a system admin's: a first device opens (assigns) its bridge.
            stale = await store.register_devices([device], now, audit=[entry], assign_bridges=True)
        except MoveRefusedError as exc:  # open alarms stay behind: issue 12 item 9
            raise CommandError(str(exc)) from None
        except BridgeTakenError as exc:  # a bridge serves one municipality
            raise CommandError("; ".join(_owned_by(t) for t in exc.taken)) from None
        print(f"registered {device.id} ({device.kind}, municipality {device.municipality})")
        _warn_profile_guess(settings, device)
        _warn_credentials(stale)
        return 0

    if device.heartbeat_interval_s is None:
        _warn_no_interval(settings, device)
    return with_store(settings, work)


def _warn_credentials(stale: Sequence[str]) -> None:
    """Moved devices whose SIP credentials their old municipality set: kept, and said so."""
    if stale:
        warn(
            f"warning: the SIP credentials of {', '.join(stale[:20])}"
            + (f" and {len(stale) - 20} more" if len(stale) > 20 else "")
            + " were set in the municipality they were moved from: they still work, so "
            "their alarms are not refused, but whoever there knows the password can still "
            "send alarms as the device: set new ones with `alarmhub devices credentials` "
            "and configure the device with them (docs/scaip.md)"
        )


def _warn_no_interval(settings: Settings, device: Device) -> None:
    """A device without a heartbeat interval: say what supervises it (issue 12 item 16)."""
    try:
        default = load_rules(settings.rules).heartbeat_defaults.get(device.kind)
    except RulesError:
        default = None
    if default is None:
        warn(
            f"warning: {device.id} has no --heartbeat-interval and the rules give "
            f"{device.kind} no default_heartbeat_interval_s: it will NOT be supervised "
            "(a dead device would never be reported)"
        )
        return
    warn(
        f"warning: {device.id} has no --heartbeat-interval; supervised with the "
        f"{device.kind} default of {int(default.total_seconds())} s from the rules"
    )


def cmd_devices_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: AlarmStore) -> int:
        rows = await store.list_devices(args.municipality)
        if args.json:
            print_json(rows)
            return 0
        table(LIST_COLUMNS, rows)
        return 0

    return with_store(settings, work)


def cmd_devices_import(settings: Settings, args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CommandError(f"{args.file}: {exc.strerror}") from exc
    devices, errors = parse_device_csv(text, _catalog(settings))
    errors = errors or _check_bridge(settings, devices)
    if errors:
        return _refused(args.file, errors)

    async def work(store: AlarmStore) -> int:
        now = SystemClock().now()
        entries = import_audit(actor(), now, None, devices)
        try:
            stale = await store.register_devices(
                devices, now, keep=preserved_columns(text), audit=entries, assign_bridges=True
            )
        except MoveRefusedError as exc:  # open alarms stay behind: issue 12 item 9
            return _refused(args.file, move_errors(devices, exc.refused))
        except BridgeTakenError as exc:
            rows = bridge_errors(devices, exc.taken)
            notes = [f" ({_others(t)})" for t in exc.taken]
            return _refused(args.file, [e + n for e, n in zip(rows, notes, strict=True)])
        print(f"imported {len(devices)} device(s) from {args.file}")
        _warn_credentials(stale)
        return 0

    return with_store(settings, work)


def _others(taken: BridgeTaken) -> str:
    """Whose the bridge is: the CLI is a system admin's, who may know (the API does not say)."""
    if taken.assigned:
        return (
            f"it has no devices and is assigned to {', '.join(taken.others)}: "
            f"`alarmhub bridges assign {taken.bridge} --municipality {taken.municipality}` "
            "reassigns it"
        )
    return f"its devices are in {', '.join(taken.others)}"


def _owned_by(taken: BridgeTaken) -> str:
    return f"{taken.message()} ({_others(taken)})"


def _refused(file: str, errors: Sequence[str]) -> int:
    """Every row's error, then the all-or-nothing verdict: nothing was imported."""
    for err in errors:
        warn(f"{file}: {err}")
    error(f"nothing imported: {len(errors)} row error(s)")
    return EXIT_FAILED


def cmd_devices_credentials(settings: Settings, args: argparse.Namespace) -> int:
    """Store what SIP digest needs for the device(s) in the configured realm (issue 16)."""
    rows = _credential_rows(args)
    realm = settings.scaip_realm
    all_creds = [credentials_for(device_id, realm, pw) for device_id, pw in rows]
    del rows

    async def work(directory: Directory) -> int:
        now = SystemClock().now()
        scope = Scope.everything(actor())
        devices = [await directory.get_device(scope, c.device_id) for c in all_creds]
        missing = [c.device_id for c, d in zip(all_creds, devices, strict=True) if d is None]
        if missing:
            raise CommandError(
                f"no device {', '.join(missing[:10])} is registered: register it first"
                + (" (nothing set)" if len(all_creds) > 1 else "")
            )
        for creds, device in zip(all_creds, devices, strict=True):
            assert device is not None
            entry = AuditEntry(
                actor(),
                "device.credentials_set",
                now,
                device_id=creds.device_id,
                municipality=device["municipality"],
                detail={"realm": realm},
            )
            if not await directory.set_device_credentials(scope, creds, now, [entry]):
                raise CommandError(f"no device {creds.device_id} is registered: register it first")
            if device.get("profile") != "scaip":
                warn(
                    f"warning: {creds.device_id} has profile {device.get('profile')!r}, not 'scaip'"
                )
        if len(all_creds) == 1:
            print(f"credentials set for {all_creds[0].device_id} (SIP digest realm {realm!r})")
        else:
            print(f"credentials set for {len(all_creds)} device(s) (SIP digest realm {realm!r})")
        return 0

    return with_directory(settings, work)


def _credential_rows(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(id, password) from --from-csv, or the one device of --id with --password-stdin."""
    if args.from_csv is not None:
        if args.id is not None or args.password_stdin:
            raise CommandError("--from-csv takes neither --id nor --password-stdin")
        return credentials_csv(args.from_csv)
    if args.id is None or not args.password_stdin:
        raise CommandError("give --id ID --password-stdin, or --from-csv FILE.csv")
    password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    problem = password_problem(password)
    if problem is not None:
        raise CommandError(f"{problem} (read from standard input)")
    return [(args.id, password)]


def credentials_csv(file: str) -> list[tuple[str, str]]:
    """The (id, password) rows of a credentials CSV, every row checked; never echoes a password."""
    try:
        text = Path(file).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CommandError(f"{file}: {exc.strerror}") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["id", "password"]:
        raise CommandError(f"{file}: the first line must be the header `id,password`")
    rows: list[tuple[str, str]] = []
    errors: list[str] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip():
            errors.append(f"line {line}: expected `id,password`")
            continue
        device_id, password = row[0].strip(), row[1]
        problem = password_problem(password)
        if problem is not None:
            errors.append(f"line {line} ({device_id}): {problem}")
        elif device_id in seen:
            errors.append(f"line {line} ({device_id}): the id is listed twice")
        seen.add(device_id)
        rows.append((device_id, password))
    if errors:
        return _refused_credentials(file, errors)
    if not rows:
        raise CommandError(f"{file}: no rows")
    return rows


def _refused_credentials(file: str, errors: Sequence[str]) -> list[tuple[str, str]]:
    for err in errors:
        warn(f"{file}: {err}")
    raise CommandError(f"nothing set: {len(errors)} row error(s)")
