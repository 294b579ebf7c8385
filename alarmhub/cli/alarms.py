"""`alarmhub alarms list`: the queue as operators see it, from the database file."""

from __future__ import annotations

import argparse
from typing import Any

from alarmhub.cli.db import with_store
from alarmhub.cli.output import CommandError, print_json, table
from alarmhub.core.views import alarm_json
from alarmhub.settings import Settings
from alarmhub.store.ports import AlarmStore

COLUMNS = [
    "id",
    "priority",
    "kind",
    "state",
    "municipality",
    "device_id",
    "raised_at",
    "repeat_count",
    "escalation_level",
]


def add_parser(sub: Any) -> None:
    alarms = sub.add_parser("alarms", help="the alarm queue").add_subparsers(title="alarms")
    al = alarms.add_parser("list", help="most urgent first, then oldest first")
    al.add_argument("--state", choices=["open", "acknowledged", "resolved"])
    al.add_argument("--limit", type=int)
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_alarms_list)


def cmd_alarms_list(settings: Settings, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise CommandError("--limit must be at least 1")

    async def work(store: AlarmStore) -> int:
        alarms = await store.list_alarms(args.state, args.limit)
        rows = [alarm_json(a) for a in alarms]
        if args.json:
            print_json(rows)
            return 0
        table(COLUMNS, rows)
        return 0

    return with_store(settings, work)
