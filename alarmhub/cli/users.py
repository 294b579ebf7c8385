"""`alarmhub users create|disable|enable|set-hpr|list`: people who log in.

Like the rest of the CLI these work on the database file directly, beside a
running daemon (WAL and a busy timeout). A generated password is printed once
and never stored in clear. `set-hpr` records a user's HPR number, by which the
journal note names the operator who resolved an alarm (docs/journal.md).
Exit status: 0 ok, 1 failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from alarmhub.cli.db import actor, with_directory
from alarmhub.cli.output import EXIT_USAGE, CommandError, error, print_plain_json, table
from alarmhub.clock import SystemClock
from alarmhub.core.hpr import InvalidHpr, parse_hpr
from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.settings import Settings
from alarmhub.store import accounts
from alarmhub.store.accounts import everyone
from alarmhub.store.errors import AccountError
from alarmhub.store.ports import Directory


def add_parser(sub: Any) -> None:
    users = sub.add_parser("users", help="people who log in").add_subparsers(title="users")
    uc = users.add_parser("create", help="create a user (prints a generated password once)")
    uc.add_argument("--name", required=True)
    uc.add_argument("--role", required=True, choices=[r.value for r in Role])
    uc.add_argument(
        "--municipality",
        action="append",
        default=[],
        metavar="NNNN",
        help="a municipality the user works for; repeat for several (not for admin)",
    )
    uc.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    uc.set_defaults(func=cmd_users_create)
    for verb, helptext in (
        ("disable", "lock a user out: logins, sessions, tokens and live streams stop"),
        ("enable", "let a disabled user log in again (old sessions stay ended)"),
    ):
        ud = users.add_parser(verb, help=helptext)
        ud.add_argument("--name", required=True)
        ud.set_defaults(func=cmd_users_set_active, active=verb == "enable")
    uh = users.add_parser(
        "set-hpr", help="record a user's HPR number (the journal note's author), or remove it"
    )
    uh.add_argument("--name", required=True)
    which = uh.add_mutually_exclusive_group(required=True)
    which.add_argument("--hpr", metavar="NUMBER", help="Helsepersonellregisteret's number")
    which.add_argument("--remove", action="store_true", help="remove the user's HPR number")
    uh.set_defaults(func=cmd_users_set_hpr)
    ul = users.add_parser("list", help="every user, with role, municipalities and state")
    ul.add_argument("--json", action="store_true")
    ul.set_defaults(func=cmd_users_list)


def cmd_users_create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        role, municipalities = accounts.validate_user(args.name, args.role, args.municipality)
    except AccountError as exc:
        error(str(exc))
        return EXIT_USAGE
    generated = not args.password_stdin
    password = accounts.generate_password() if generated else sys.stdin.readline().rstrip("\n")
    now = SystemClock().now()
    try:
        hashed = accounts.hash_password(password)

        async def create(d: Directory) -> User:
            entry = AuditEntry(
                actor(),
                "user.created",
                now,
                detail={"user": args.name, "role": role.value, "municipalities": municipalities},
            )
            # The user and its audit row commit together (issue 13 item 4).
            return await d.create_user(args.name, role, municipalities, hashed, now, [entry])

        user = with_directory(settings, create)
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    where = ", ".join(user.municipalities) or "all municipalities"
    print(f"created {user.role} {user.name} ({where})")
    if generated:
        print("password (shown once):")
        print(password)
    return 0


def cmd_users_set_active(settings: Settings, args: argparse.Namespace) -> int:
    now = SystemClock().now()
    action = "user.enabled" if args.active else "user.disabled"
    entry = AuditEntry(actor(), action, now, detail={"user": args.name})
    try:
        changed = with_directory(
            settings, lambda d: d.set_active(everyone, args.name, args.active, entry)
        )
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    state = "enabled" if args.active else "disabled"
    print(f"{args.name} {state}" if changed else f"{args.name} was already {state}")
    return 0


def cmd_users_set_hpr(settings: Settings, args: argparse.Namespace) -> int:
    hpr = None if args.remove else parse_hpr(args.hpr)
    if isinstance(hpr, InvalidHpr):
        error(f"--hpr: {hpr.reason}")
        return EXIT_USAGE
    now = SystemClock().now()
    if hpr is None:
        entry = AuditEntry(actor(), "user.hpr_removed", now, detail={"user": args.name})
    else:
        entry = AuditEntry(actor(), "user.hpr_set", now, detail={"user": args.name, "hpr": hpr})
    try:
        changed = with_directory(settings, lambda d: d.set_hpr(everyone, args.name, hpr, entry))
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    state = f"HPR number {hpr}" if hpr is not None else "no HPR number"
    print(f"{args.name}: {state}" if changed else f"{args.name} already had {state}")
    return 0


def cmd_users_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = [u.json() for u in with_directory(settings, lambda d: d.list_users(everyone))]
    if args.json:
        print_plain_json(rows, ensure_ascii=False)
        return 0
    for r in rows:
        r["municipalities"] = ",".join(r["municipalities"]) or "all"
        r["active"] = "active" if r["active"] else "disabled"
        r["hpr"] = r["hpr"] or "-"
    table(["name", "role", "municipalities", "active", "hpr", "created_at"], rows)
    return 0
