"""`alarmhub db status` and `alarmhub db migrate`: the schema version, for people and scripts.

`alarmhub run` refuses a schema older or newer than it knows (store/versions.py),
so an upgrade is: `db migrate` once, then restart every instance. `db status`
answers with its exit status too, so a script can decide without parsing text:

    0  the schema is current
    3  behind: older than this alarmhub, or no alarmhub tables yet (`db migrate`)
    4  ahead: newer than this alarmhub knows (upgrade alarmhub; never downgraded)
    1  the database could not be read (the message says why)

`db migrate` exits 0 when the schema is current afterwards (whether or not it
applied anything), 4 when it refused a newer schema, 1 when it failed.
"""

from __future__ import annotations

import argparse
from typing import Any

from alarmhub.cli.db import migrate_schema, schema_status
from alarmhub.cli.output import EXIT_FAILED, error, print_plain_json
from alarmhub.redact import redact_url
from alarmhub.settings import Settings
from alarmhub.store.errors import StoreError
from alarmhub.store.schema_state import SchemaState, SchemaVersionError

EXIT_BEHIND = 3
EXIT_AHEAD = 4
EXIT_OF_STATE = {
    SchemaState.CURRENT: 0,
    SchemaState.EMPTY: EXIT_BEHIND,
    SchemaState.BEHIND: EXIT_BEHIND,
    SchemaState.AHEAD: EXIT_AHEAD,
}


def add_parser(sub: Any) -> None:
    db = sub.add_parser(
        "db", help="the database schema: its version, and migrating it"
    ).add_subparsers(title="db")
    st = db.add_parser(
        "status",
        help="store, database, schema version found and known; exit 0 current, 3 behind, 4 ahead",
    )
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_db_status)
    mg = db.add_parser(
        "migrate", help="apply the schema versions the database lacks (idempotent, never down)"
    )
    mg.set_defaults(func=cmd_db_migrate)


def cmd_db_status(settings: Settings, args: argparse.Namespace) -> int:
    db = settings.database
    try:
        found = schema_status(settings)
    except StoreError as exc:
        error(str(exc))
        return EXIT_FAILED
    shown = redact_url(settings.database_url)
    if args.json:
        print_plain_json(
            {
                "store": db.kind,
                "database": shown,
                "found": found.found,
                "known": found.known,
                "state": str(found.state),
                "advice": found.advice(),
            }
        )
    else:
        print(f"store:    {db.kind}")
        print(f"database: {shown}")
        print(f"schema:   version {found.found} found, this alarmhub knows {found.known}")
        print(f"state:    {found.state}: {found.advice()}")
    return EXIT_OF_STATE[found.state]


def cmd_db_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    shown = redact_url(settings.database_url)

    def progress(version: int) -> None:
        print(f"applying version {version} ...", flush=True)

    print(f"migrating {settings.database.kind} database {shown}", flush=True)
    try:
        applied = migrate_schema(settings, progress)
    except SchemaVersionError as exc:
        error(str(exc))
        return EXIT_AHEAD
    except StoreError as exc:
        error(str(exc))
        return EXIT_FAILED
    now = schema_status(settings).found
    if applied:
        listed = ", ".join(str(v) for v in applied)
        print(f"applied version(s) {listed}: the schema is now version {now}")
    else:
        print(f"the schema is current (version {now}): nothing to apply")
    return 0
