"""`alarmhub tokens create|list|revoke`: API bearer tokens.

A new token is printed once, alone on the last line, so scripts can take it
with `tail -n 1`; only its hash is stored. Exit status: 0 ok, 1 failed, 2 bad
arguments.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from alarmhub.cli.db import actor, with_directory
from alarmhub.cli.output import EXIT_USAGE, CommandError, error, print_plain_json, table
from alarmhub.clock import SystemClock
from alarmhub.core.people import AuditEntry
from alarmhub.settings import Settings
from alarmhub.store import accounts
from alarmhub.store.accounts import everyone
from alarmhub.store.errors import AccountError
from alarmhub.store.ports import Directory


def add_parser(sub: Any) -> None:
    tokens = sub.add_parser("tokens", help="API bearer tokens").add_subparsers(title="tokens")
    tc = tokens.add_parser("create", help="create a token; printed once, alone on the last line")
    tc.add_argument("--user", required=True)
    lifetime = tc.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--expires",
        type=int,
        metavar="DAYS",
        help="valid for DAYS days (default: the setting token_lifetime_days)",
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


def cmd_tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    if args.expires is not None and args.expires < 1:
        error("--expires must be at least 1 day")
        return EXIT_USAGE
    now = SystemClock().now()
    days = args.expires if args.expires is not None else settings.token_lifetime_days
    expires = None if args.never else now + timedelta(days=days)

    async def create(d: Directory) -> str:
        entry = AuditEntry(
            actor(),
            "token.created",
            now,
            detail={"user": args.user, "expires_at": accounts.ts(expires)},
        )
        # The token and its audit row commit together (issue 13 item 4).
        return await d.create_token(args.user, now, expires, [entry])

    try:
        token = with_directory(settings, create)
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    until = f"until {accounts.ts(expires)}" if expires else "without expiry"
    print(f"token for {args.user}, valid {until} (shown once):")
    print(token)
    return 0


def cmd_tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    now = SystemClock().now()
    found = with_directory(settings, lambda d: d.list_tokens(everyone, args.user))
    rows = [t.json(now) for t in found]
    if args.json:
        print_plain_json(rows)
        return 0
    table(["id", "user", "state", "created_at", "expires_at", "revoked_at", "revoked_by"], rows)
    return 0


def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    now = SystemClock().now()
    entry = AuditEntry(actor(), "token.revoked", now)
    try:
        token = with_directory(settings, lambda d: d.revoke_token(everyone, args.id, entry))
    except AccountError as exc:
        raise CommandError(str(exc)) from exc
    print(f"token {token.id} of {token.user} revoked at {token.revoked_at}")
    return 0
