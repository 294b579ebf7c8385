"""`alarmhub residents set|list|remove|new-key|rekey`: the resident register (issue 17).

A resident's national identity number is read from stdin only
(`--national-id-stdin`), never from an argument: arguments show in `ps` and in
shell history. It is checked (core/national_id.py), sealed with the resident key
(ALARMHUB_RESIDENT_KEY) and stored; `list` shows each number masked, and the
listing is audited like every read of a number. Exit status: 0 ok, 1 failed, 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Sequence
from typing import Any

from alarmhub.cli.db import actor, with_residents
from alarmhub.cli.output import EXIT_USAGE, CommandError, error, print_plain_json, table
from alarmhub.clock import SystemClock
from alarmhub.core.national_id import Invalid, parse_national_id
from alarmhub.core.people import AuditEntry
from alarmhub.settings import Settings
from alarmhub.store.accounts import ts
from alarmhub.store.residents import Rekeyed, ResidentEntry, ResidentRegister, SealedRow
from alarmhub.store.sealing import KeyMissingError, SealingError

_MUNICIPALITY = {"required": True, "metavar": "NNNN", "help": "the resident's municipality"}


def add_parser(sub: Any) -> None:
    residents = sub.add_parser(
        "residents", help="the resident register: national identity numbers, sealed"
    ).add_subparsers(title="residents")
    rs = residents.add_parser("set", help="set or replace a resident's national identity number")
    rs.add_argument("--municipality", **_MUNICIPALITY)
    rs.add_argument("--resident", required=True, help="the pseudonym the devices name (r-17)")
    rs.add_argument(
        "--national-id-stdin",
        action="store_true",
        required=True,
        help="read the 11-digit number from stdin (never from an argument)",
    )
    rs.set_defaults(func=cmd_residents_set)
    rl = residents.add_parser("list", help="a municipality's register, numbers masked (audited)")
    rl.add_argument("--municipality", **_MUNICIPALITY)
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=cmd_residents_list)
    rr = residents.add_parser("remove", help="remove a resident's number")
    rr.add_argument("--municipality", **_MUNICIPALITY)
    rr.add_argument("--resident", required=True)
    rr.set_defaults(func=cmd_residents_remove)
    rk = residents.add_parser("new-key", help="print a fresh resident key (base64, 32 bytes)")
    rk.set_defaults(func=cmd_residents_new_key)
    rx = residents.add_parser(
        "rekey", help="reseal every number under the current key (after a key rotation)"
    )
    rx.set_defaults(func=cmd_residents_rekey)


def _checked_municipality(code: str) -> bool:
    if len(code) != 4 or not code.isdigit():
        error("--municipality is a 4-digit municipality number, e.g. 0301")
        return False
    return True


def cmd_residents_set(settings: Settings, args: argparse.Namespace) -> int:
    if not _checked_municipality(args.municipality):
        return EXIT_USAGE
    nid = parse_national_id(sys.stdin.readline())
    if isinstance(nid, Invalid):
        raise CommandError(f"the national identity number on stdin: {nid.reason}")
    who = actor()
    entry = AuditEntry(
        who,
        "resident.national_id_set",
        SystemClock().now(),
        municipality=args.municipality,
        detail={"resident": args.resident, "kind": nid.kind.value, "synthetic": nid.synthetic},
    )

    async def put(r: ResidentRegister) -> tuple[ResidentEntry, bool]:
        return await r.set_national_id(args.municipality, args.resident, nid, who, [entry])

    try:
        stored, created = with_residents(settings, put)
    except KeyMissingError as exc:
        raise CommandError(str(exc)) from None
    verb = "registered" if created else "replaced the number of"
    print(f"{verb} {stored.resident} in {stored.municipality}: {stored.national_id}")
    return 0


def cmd_residents_list(settings: Settings, args: argparse.Namespace) -> int:
    if not _checked_municipality(args.municipality):
        return EXIT_USAGE
    now = SystemClock().now()

    def audit(rows: Sequence[SealedRow]) -> list[AuditEntry]:
        detail = {"residents": [r.resident for r in rows], "shown": "masked"}
        action = "resident.national_ids_listed"
        return [AuditEntry(actor(), action, now, municipality=args.municipality, detail=detail)]

    async def listing(r: ResidentRegister) -> list[ResidentEntry]:
        return await r.listing(args.municipality, audit)

    rows = [
        {
            "municipality": e.municipality,
            "resident": e.resident,
            "national_id": e.national_id,
            "key_id": e.key_id,
            "updated_at": ts(e.updated_at),
            "updated_by": e.updated_by,
        }
        for e in with_residents(settings, listing)
    ]
    if args.json:
        print_plain_json(rows)
        return 0
    table(["resident", "national_id", "key_id", "updated_at", "updated_by"], rows)
    return 0


def cmd_residents_remove(settings: Settings, args: argparse.Namespace) -> int:
    entry = AuditEntry(
        actor(),
        "resident.national_id_removed",
        SystemClock().now(),
        municipality=args.municipality,
        detail={"resident": args.resident},
    )

    async def remove(r: ResidentRegister) -> bool:
        return await r.remove(args.municipality, args.resident, [entry])

    if not with_residents(settings, remove):
        raise CommandError(f"no resident {args.resident} in the register of {args.municipality}")
    print(f"removed {args.resident} from the register of {args.municipality}")
    return 0


def cmd_residents_new_key(_settings: Settings, _args: argparse.Namespace) -> int:
    print(base64.b64encode(os.urandom(32)).decode())
    return 0


def cmd_residents_rekey(settings: Settings, _args: argparse.Namespace) -> int:
    """Reseal chunk by chunk, saying on stderr how far it got after each committed one,
    so an operator watching a large register sees it move and knows where a failure
    left it (the chunks before it are done; running it again continues)."""

    def progress(done: Rekeyed) -> None:
        print(f"resealed {done.resealed} so far, {done.skipped} skipped", file=sys.stderr)

    async def rekey(r: ResidentRegister) -> Rekeyed:
        return await r.rekey(actor(), progress)

    try:
        done = with_residents(settings, rekey)
    except SealingError as exc:
        raise CommandError(str(exc)) from None
    print(f"resealed {done.resealed} number(s) under the current key")
    if done.skipped:
        print(
            f"{done.skipped} number(s) were changed or removed while rekey ran and were left "
            "as that change wrote them; run rekey again to reseal any still under an old key"
        )
    return 0
