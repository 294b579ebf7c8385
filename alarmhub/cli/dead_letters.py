"""`alarmhub dead-letters list`: messages that could not be used, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from alarmhub.cli.db import with_store
from alarmhub.cli.output import print_json, table
from alarmhub.settings import Settings
from alarmhub.store.ports import AlarmStore


def add_parser(sub: Any) -> None:
    dead = sub.add_parser("dead-letters", help="messages that could not be used").add_subparsers(
        title="dead-letters"
    )
    dl = dead.add_parser("list", help="newest first")
    dl.add_argument("--limit", type=int)
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=cmd_dead_letters_list)


def cmd_dead_letters_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: AlarmStore) -> int:
        rows = await store.dead_letters(args.limit)
        if args.json:
            print_json(rows)
            return 0
        table(["seq", "received_at", "reason", "device_id", "topic", "detail"], rows)
        return 0

    return with_store(settings, work)
