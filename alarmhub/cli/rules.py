"""`alarmhub rules check|explain|test`: the rules file, tested like code.

`check` validates a file without starting the daemon; `explain` and `test` run
the real decisions on a virtual clock (cli/rules_tool.py) and print them.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from alarmhub import builtin
from alarmhub.cli.db import with_store
from alarmhub.cli.output import EXIT_FAILED, CommandError, print_json, warn
from alarmhub.cli.rules_tool import CasesError, explain, run_cases
from alarmhub.clock import SystemClock
from alarmhub.config.profiles import default_profiles_dir, load_catalog
from alarmhub.config.rules import load_rules, person_alarm_auto_resolvers
from alarmhub.core.journal.mapping import parse_municipalities
from alarmhub.core.model import EventType
from alarmhub.settings import Settings
from alarmhub.store.ports import AlarmStore


def add_parser(sub: Any) -> None:
    rules = sub.add_parser("rules", help="the rules file").add_subparsers(title="rules")
    chk = rules.add_parser("check", help="validate a rules file without starting")
    chk.add_argument("file", nargs="?", help="default: ALARMHUB_RULES, else the built-in rules")
    chk.add_argument(
        "--journal-municipalities",
        metavar="CODES",
        help="municipalities with journal export on, e.g. 0301,4601: every alarm kind they "
        "can raise needs a [journal.<kind>] section (default: those whose HelseID client is "
        "configured, ALARMHUB_JOURNAL_HELSEID)",
    )
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


def cmd_rules_check(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else settings.rules
    if args.journal_municipalities is None:
        exporting = settings.journal_exporting()
    else:
        try:
            exporting = parse_municipalities(args.journal_municipalities)
        except ValueError as exc:
            raise CommandError(f"--journal-municipalities: {exc}") from None
    # Refused as the daemon refuses it at start and on reload (config/rules.py).
    rules = load_rules(path, journal_exporting=exporting)
    for warning in person_alarm_auto_resolvers(rules):
        warn(f"warning: {warning}")
    print(f"{_rules_label(settings, path)}: OK, {len(rules.rules)} rules, version {rules.version}")
    return 0


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

    async def work(store: AlarmStore) -> int:
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
            print_json(result)
        else:
            _print_explained(result)
        return 0

    return with_store(settings, work)


def _print_explained(result: dict[str, Any]) -> None:
    """`key: value` lines; lists as `  - ` items, a dict item as `k v, k v`."""
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


def _rules_label(settings: Settings, path: Path) -> str:
    """The rules file as a person should read it: which file, and whether it is ours."""
    if path == settings.rules and settings.rules_builtin:
        return f"{path} (built-in default)"
    return str(path)
