"""`alarmhub bridges assign|list`: a system admin says which municipality a new bridge serves.

A Zigbee2MQTT bridge serves one municipality (core/bridges.py). Once it has
devices, they say which; before, this assignment does, so that no municipality
admin can claim a care home's new bridge by registering the first device on it.
The system admin creates the bridge's MQTT account anyway (docs/operations.md), and
assigns it in the same step. Audited as `bridge.assigned`. `list` shows every
assignment, the upgrade's (`assigned_by` migration) too. Exit status: 0 ok,
1 refused (the bridge has devices of another municipality), 2 bad arguments.
"""

from __future__ import annotations

import argparse
from typing import Any

from alarmhub.cli.db import actor, with_store
from alarmhub.cli.output import EXIT_USAGE, CommandError, error, print_plain_json, table
from alarmhub.clock import SystemClock
from alarmhub.core.bridges import valid_bridge
from alarmhub.settings import Settings
from alarmhub.store import accounts
from alarmhub.store.errors import BridgeInUseError
from alarmhub.store.ports import AlarmStore


def add_parser(sub: Any) -> None:
    bridges = sub.add_parser("bridges", help="Zigbee2MQTT bridges").add_subparsers(title="bridges")
    ba = bridges.add_parser(
        "assign",
        help="assign a bridge to the municipality it serves (before its first device "
        "is registered by a municipality admin)",
    )
    ba.add_argument("bridge", metavar="BRIDGE", help="the bridge's id (its MQTT username)")
    ba.add_argument("--municipality", required=True, metavar="NNNN")
    ba.set_defaults(func=cmd_bridges_assign)
    bl = bridges.add_parser("list", help="assigned bridges: municipality, when and by whom")
    bl.add_argument("--json", action="store_true")
    bl.set_defaults(func=cmd_bridges_list)


def cmd_bridges_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: AlarmStore) -> list[dict[str, str]]:
        return await store.list_bridges()

    rows = with_store(settings, work)
    if args.json:
        print_plain_json(rows)
        return 0
    table(["id", "municipality", "assigned_at", "assigned_by"], rows)
    return 0


def cmd_bridges_assign(settings: Settings, args: argparse.Namespace) -> int:
    if not valid_bridge(args.bridge):
        error(f"{args.bridge!r} is not a bridge id (letters, digits, '.', '_', '-'; 1-64)")
        return EXIT_USAGE
    if not accounts.MUNICIPALITY_RE.match(args.municipality):
        error(f"{args.municipality!r} is not a municipality number (four digits)")
        return EXIT_USAGE

    async def work(store: AlarmStore) -> int:
        try:
            was = await store.assign_bridge(
                args.bridge, args.municipality, SystemClock().now(), actor=actor()
            )
        except BridgeInUseError as exc:
            raise CommandError(str(exc)) from None
        if was == args.municipality:
            print(f"bridge {args.bridge} was already assigned to {args.municipality}")
        else:
            since = f" (was {was})" if was is not None else ""
            print(f"assigned bridge {args.bridge} to {args.municipality}{since}")
        return 0

    return with_store(settings, work)
