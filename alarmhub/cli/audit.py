"""`alarmhub audit list`: who did what, newest first, from the database file."""

from __future__ import annotations

import argparse
import json
from typing import Any

from alarmhub.cli.db import with_directory
from alarmhub.cli.output import EXIT_USAGE, error, print_plain_json, table
from alarmhub.settings import Settings

COLUMNS = ["at", "actor", "action", "municipality", "alarm_id", "device_id", "address", "detail"]


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="who did what").add_subparsers(title="audit")
    al = audit.add_parser("list", help="newest first")
    al.add_argument("--json", action="store_true")
    al.add_argument("--limit", type=int, default=100)
    al.set_defaults(func=cmd_audit_list)


def cmd_audit_list(settings: Settings, args: argparse.Namespace) -> int:
    if args.limit < 1:
        error("--limit must be at least 1")
        return EXIT_USAGE
    rows = with_directory(settings, lambda d: d.list_audit(args.limit))
    if args.json:
        print_plain_json(rows, ensure_ascii=False)
        return 0
    for r in rows:
        # One cell in the table: the detail as compact JSON text.
        r["detail"] = json.dumps(r["detail"], ensure_ascii=False)
    table(COLUMNS, rows)
    return 0
