"""`alarmhub report response-times`: time to acknowledge, reach and resolve, against the SLA.

The figures come from core/reports.py, the same as `GET /api/v1/reports/…`;
the CLI has the database file and so reports on every municipality.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alarmhub.cli.db import actor, with_directory
from alarmhub.cli.output import EXIT_USAGE, error, print_plain_json
from alarmhub.clock import SystemClock
from alarmhub.config.rules import load_rules
from alarmhub.core import reports
from alarmhub.core.tenancy import Scope
from alarmhub.settings import Settings
from alarmhub.store import accounts

OSLO = ZoneInfo("Europe/Oslo")


def add_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="statistics").add_subparsers(title="report")
    rt = report.add_parser("response-times", help="time to acknowledge/on-site/resolve, SLA")
    rt.add_argument("--municipality", metavar="NNNN")
    rt.add_argument(
        "--since",
        type=date.fromisoformat,
        metavar="DATE",
        help="first day (Europe/Oslo), e.g. 2026-01-01; default: max_report_days before --until",
    )
    rt.add_argument(
        "--until",
        type=date.fromisoformat,
        metavar="DATE",
        help="last day, included; default today. At most max_report_days days in all",
    )
    rt.add_argument("--format", choices=["table", "csv", "json"], default="table")
    rt.set_defaults(func=cmd_report_response_times)


def _day(day: date) -> datetime:
    return datetime.combine(day, time(0), OSLO)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags (exit 2), or None."""
    if args.municipality is not None and not accounts.MUNICIPALITY_RE.match(args.municipality):
        return "--municipality must be a four-digit kommunenummer"
    if any(d is not None and not 1970 <= d.year <= 9998 for d in (args.since, args.until)):
        return "dates must be between the years 1970 and 9998"
    if args.since and args.until and args.until < args.since:
        return "--until is before --since"
    return None


def cmd_report_response_times(settings: Settings, args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem is not None:
        error(problem)
        return EXIT_USAGE
    now = SystemClock().now()
    days = reports.report_days(
        args.since, args.until, now.astimezone(OSLO).date(), settings.max_report_days
    )
    if isinstance(days, str):
        error(f"--since/--until: {days}")
        return EXIT_USAGE
    start, end = _day(days[0]), _day(days[1] + timedelta(days=1))
    rules = load_rules(settings.rules)
    scope = Scope.everything(actor())
    rows = with_directory(settings, lambda d: d.response_rows(scope, args.municipality, start, end))
    targets = {int(p): t for p, t in rules.sla_ack.items()}
    groups = reports.response_times(rows, targets, now)
    if args.format == "json":
        print_plain_json([reports.flat(g) for g in groups])
    elif args.format == "csv":
        sys.stdout.write(reports.to_csv(groups))
    else:
        print(reports.to_table(groups))
    return 0
