"""`alarmhub users …`, `alarmhub tokens …`, `alarmhub audit …`, `alarmhub report …`.

Like the rest of the CLI these work on the database file directly, beside a
running daemon (WAL and a busy timeout). Secrets are printed once and never
stored in clear: a generated password, and a bearer token alone on the last
line so scripts can take it with `tail -n 1`. Exit status: 0 ok, 1 failed,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from alarmhub.cli.main import EXIT_USAGE, CommandError, _table, _with_store
from alarmhub.clock import SystemClock
from alarmhub.core import reports
from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.settings import Settings
from alarmhub.store.sqlite import access, accounts
from alarmhub.store.sqlite.accounts import AccountError
from alarmhub.store.sqlite.store import SqliteStore

T = TypeVar("T")
OSLO = ZoneInfo("Europe/Oslo")
CLI_ACTOR_PREFIX = "cli:"


def add_commands(sub: Any) -> None:
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
    ul = users.add_parser("list", help="every user, with role, municipalities and state")
    ul.add_argument("--json", action="store_true")
    ul.set_defaults(func=cmd_users_list)

    tokens = sub.add_parser("tokens", help="API bearer tokens").add_subparsers(title="tokens")
    tc = tokens.add_parser("create", help="create a token; printed once, alone on the last line")
    tc.add_argument("--user", required=True)
    lifetime = tc.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--expires", type=int, metavar="DAYS", help="valid for DAYS days (default: the setting "
        "token_lifetime_days)"
    )
    lifetime.add_argument("--never", action="store_true", help="never expires (revoke by hand)")
    tc.set_defaults(func=cmd_tokens_create)
    tl = tokens.add_parser("list", help="tokens (ids, never the secrets) and their state")
    tl.add_argument("--user", metavar="NAME")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=cmd_tokens_list)
    tr = tokens.add_parser("revoke", help="revoke a token by the id `tokens list` prints")
    tr.add_argument("id", metavar="ID")
    tr.set_defaults(func=cmd_tokens_revoke)

    audit = sub.add_parser("audit", help="who did what").add_subparsers(title="audit")
    al = audit.add_parser("list", help="newest first")
    al.add_argument("--json", action="store_true")
    al.add_argument("--limit", type=int, default=100)
    al.set_defaults(func=cmd_audit_list)

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


def _db(settings: Settings, fn: Callable[..., T], *args: Any) -> T:
    """Run a store function on the database, migrated first (a fresh file works too)."""

    async def migrate(_store: SqliteStore) -> int:
        return 0

    _with_store(settings, migrate)
    path = settings.database.path
    assert path is not None  # _with_store refused anything but sqlite
    with accounts.connect(path) as conn:
        return fn(conn, *args)


def _actor() -> str:
    import getpass  # noqa: PLC0415

    try:
        return CLI_ACTOR_PREFIX + getpass.getuser()
    except (KeyError, OSError):
        return CLI_ACTOR_PREFIX + "unknown"


def cmd_users_create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        role, municipalities = accounts.validate_user(args.name, args.role, args.municipality)
    except AccountError as exc:
        print(f"alarmhub: {exc}", file=sys.stderr)
        return EXIT_USAGE
    generated = not args.password_stdin
    password = accounts.generate_password() if generated else sys.stdin.readline().rstrip("\n")
    now = SystemClock().now()
    try:
        hashed = accounts.hash_password(password)

        def create(conn: Any) -> User:
            entry = AuditEntry(
                _actor(),
                "user.created",
                now,
                detail={"user": args.name, "role": role.value, "municipalities": municipalities},
            )
            # The user and its audit row commit together (issue 13 item 4).
            return accounts.create_user(conn, args.name, role, municipalities, hashed, now, [entry])

        user = _db(settings, create)
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    where = ", ".join(user.municipalities) or "all municipalities"
    print(f"created {user.role} {user.name} ({where})")
    if generated:
        print("password (shown once):")
        print(password)
    return 0


def cmd_tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    if args.expires is not None and args.expires < 1:
        print("alarmhub: --expires must be at least 1 day", file=sys.stderr)
        return EXIT_USAGE
    now = SystemClock().now()
    days = args.expires if args.expires is not None else settings.token_lifetime_days
    expires = None if args.never else now + timedelta(days=days)

    def create(conn: Any) -> str:
        entry = AuditEntry(
            _actor(),
            "token.created",
            now,
            detail={"user": args.user, "expires_at": accounts.ts(expires)},
        )
        # The token and its audit row commit together (issue 13 item 4).
        return accounts.create_token(conn, args.user, now, expires, [entry])

    try:
        token = _db(settings, create)
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    until = f"until {accounts.ts(expires)}" if expires else "without expiry"
    print(f"token for {args.user}, valid {until} (shown once):")
    print(token)
    return 0


def cmd_users_set_active(settings: Settings, args: argparse.Namespace) -> int:
    now = SystemClock().now()
    action = "user.enabled" if args.active else "user.disabled"
    entry = AuditEntry(_actor(), action, now, detail={"user": args.name})
    try:
        changed = _db(settings, access.set_active, access.everyone, args.name, args.active, entry)
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    state = "enabled" if args.active else "disabled"
    print(f"{args.name} {state}" if changed else f"{args.name} was already {state}")
    return 0


def cmd_users_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = [u.json() for u in _db(settings, access.list_users, access.everyone)]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        r["municipalities"] = ",".join(r["municipalities"]) or "all"
        r["active"] = "active" if r["active"] else "disabled"
    _table(["name", "role", "municipalities", "active", "created_at"], rows)
    return 0


def cmd_tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    now = SystemClock().now()
    found = _db(settings, access.list_tokens, access.everyone, args.user)
    rows = [t.json(now) for t in found]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _table(["id", "user", "state", "created_at", "expires_at", "revoked_at", "revoked_by"], rows)
    return 0


def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    now = SystemClock().now()
    entry = AuditEntry(_actor(), "token.revoked", now)
    try:
        token = _db(settings, access.revoke_token, access.everyone, args.id, entry)
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    print(f"token {token.id} of {token.user} revoked at {token.revoked_at}")
    return 0


def cmd_audit_list(settings: Settings, args: argparse.Namespace) -> int:
    if args.limit < 1:
        print("alarmhub: --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    rows = _db(settings, accounts.list_audit, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        r["detail"] = json.dumps(r["detail"], ensure_ascii=False)
    _table(
        ["at", "actor", "action", "municipality", "alarm_id", "device_id", "address", "detail"],
        rows,
    )
    return 0


def _day(day: date) -> datetime:
    return datetime.combine(day, time(0), OSLO)


def cmd_report_response_times(settings: Settings, args: argparse.Namespace) -> int:
    from alarmhub.config.rules import load_rules  # noqa: PLC0415
    from alarmhub.core.tenancy import Scope  # noqa: PLC0415
    from alarmhub.store.sqlite.tenancy import response_rows  # noqa: PLC0415

    if args.municipality is not None and not accounts.MUNICIPALITY_RE.match(args.municipality):
        print("alarmhub: --municipality must be a four-digit kommunenummer", file=sys.stderr)
        return EXIT_USAGE
    if any(d is not None and not 1970 <= d.year <= 9998 for d in (args.since, args.until)):
        print("alarmhub: dates must be between the years 1970 and 9998", file=sys.stderr)
        return EXIT_USAGE
    if args.since and args.until and args.until < args.since:
        print("alarmhub: --until is before --since", file=sys.stderr)
        return EXIT_USAGE
    now = SystemClock().now()
    days = reports.report_days(
        args.since, args.until, now.astimezone(OSLO).date(), settings.max_report_days
    )
    if isinstance(days, str):
        print(f"alarmhub: --since/--until: {days}", file=sys.stderr)
        return EXIT_USAGE
    start, end = _day(days[0]), _day(days[1] + timedelta(days=1))
    rules = load_rules(settings.rules)
    rows = _db(settings, response_rows, Scope.everything(_actor()), args.municipality, start, end)
    targets = {int(p): t for p, t in rules.sla_ack.items()}
    groups = reports.response_times(rows, targets, now)
    if args.format == "json":
        print(json.dumps([reports.flat(g) for g in groups], indent=2))
    elif args.format == "csv":
        sys.stdout.write(reports.to_csv(groups))
    else:
        print(reports.to_table(groups))
    return 0
