"""`alarmhub journal export --alarm ID`: an answered alarm's journal note, printed, not sent.

(`alarmhub journal keygen --municipality CODE --out FILE` makes the key pair of a
municipality's HelseID client and prints the public JWK to register: see the end.)

The FHIR R4 document Bundle (docs/journal.md) goes to stdout as JSON, exactly as the
delivery would send it; one status line goes to stderr: `journal: ready (not sent)`,
exit 0, or `journal: not applicable (<reason>)`, exit 1, with the Bundle still printed
when only the patient is missing (a preview, the patient without identifier). An
alarm that has no note at all (not resolved, its kind unmapped or not exported,
resolved by no operator) prints no Bundle, says why, and exits 1.

The resident's national identity number comes from the resident register when the
opened store implements :class:`~alarmhub.store.ports.NationalIds`; until then every
alarm is `journal: not applicable (no national id)`.
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from alarmhub.cli.db import with_store
from alarmhub.cli.output import EXIT_FAILED, CommandError, print_json, warn
from alarmhub.config.rules import load_rules
from alarmhub.core.journal import codes
from alarmhub.core.journal.bundle import build_bundle
from alarmhub.core.journal.document import (
    Author,
    NotApplicable,
    Organisation,
    Patient,
    Skip,
    check_patient,
    qualify,
    resolution_from_timeline,
)
from alarmhub.core.model import Alarm, TimelineEntry, TimelineType
from alarmhub.settings import ENV_PREFIX, Settings, helseid
from alarmhub.store.ports import AlarmStore, NationalIds


def add_parser(sub: Any) -> None:
    journal = sub.add_parser(
        "journal", help="the journal note of answered alarms (VKP/JFT, FHIR R4)"
    ).add_subparsers(title="journal")
    ex = journal.add_parser(
        "export", help="print an alarm's journal document (FHIR R4 Bundle) without sending it"
    )
    ex.add_argument("--alarm", required=True, metavar="ID", help="the alarm's id")
    ex.set_defaults(func=cmd_journal_export)
    kg = journal.add_parser(
        "keygen", help="make a key pair for a municipality's HelseID client; print the public JWK"
    )
    kg.add_argument("--municipality", required=True, metavar="CODE", help="e.g. 0301")
    kg.add_argument("--out", required=True, metavar="FILE", help="the private key (PEM) to write")
    kg.add_argument("--kind", choices=("rsa", "ec"), default="rsa", help="RSA 4096 or EC P-256")
    kg.set_defaults(func=cmd_journal_keygen)


def cmd_journal_keygen(settings: Settings, args: argparse.Namespace) -> int:
    """Write a new private key (mode 0600, never over a file) and print its public JWK.

    The JWK (stdout) is what the municipality's HelseID client is registered with; the
    private key stays on this machine and is named by the client's `key_file`.
    """
    del settings
    if not re.fullmatch(r"[0-9]{4}", args.municipality):
        raise CommandError(f"{args.municipality!r} is not a municipality code (four digits)")
    out = Path(args.out)
    key = helseid.new_private_key(args.kind)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CommandError(
            f"{out}: {exc.strerror or exc} (an existing key is never replaced)"
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(helseid.private_pem(key))
    signing = helseid.signing_key_from(key, None, out)
    jwk = {**signing.public_jwk, "kid": signing.thumbprint, "alg": signing.algorithm, "use": "sig"}
    print_json(jwk)
    warn(
        f"journal: wrote the private key of municipality {args.municipality}'s HelseID client "
        f"to {out}; register the public JWK above with HelseID, then set its key_file in "
        f'{ENV_PREFIX}JOURNAL_HELSEID (or [journal_helseid."{args.municipality}"]), docs/journal.md'
    )
    return 0


def cmd_journal_export(settings: Settings, args: argparse.Namespace) -> int:
    rules = load_rules(settings.rules)
    organisation = organisation_of(settings)

    async def work(store: AlarmStore) -> int:
        found = await store.get_alarms([args.alarm])
        if not found:
            raise CommandError(f"no alarm {args.alarm!r}")
        alarm = found[0]
        timeline = [timeline_entry(alarm.id, row) for row in await store.timeline(alarm.id)]
        ready = qualify(alarm, timeline, rules.journal)
        if isinstance(ready, NotApplicable):
            return _no_note(alarm, ready, str(settings.rules))
        patient = Patient(await national_id(store, alarm))
        resolved_by = alarm.resolved_by or ""
        # Provisional: the user record's HPR number (or national id) replaces the user name.
        author = Author(codes.USER_SYSTEM, resolved_by, resolved_by)
        resolution = resolution_from_timeline(timeline, ready.kind)
        print_json(
            build_bundle(alarm, ready, patient, author, organisation, resolution, rules.timezone)
        )
        skip = check_patient(patient)
        warn(str(skip) if skip is not None else "journal: ready (not sent)")
        return EXIT_FAILED if skip is not None else 0

    return with_store(settings, work)


def _no_note(alarm: Alarm, why: NotApplicable, rules_path: str) -> int:
    if why.reason is Skip.NOT_RESOLVED:
        raise CommandError(
            f"alarm {alarm.id} is {alarm.state.value}: its journal note is written when it "
            "is resolved"
        )
    if why.reason is Skip.NO_MAPPING:
        raise CommandError(
            f"alarm kind {alarm.kind!r} has no [journal.{alarm.kind}] section in {rules_path}: "
            "add one (docs/journal.md)"
        )
    warn(str(why))
    return EXIT_FAILED


def organisation_of(settings: Settings) -> Organisation:
    name, number = settings.journal_organisation_name, settings.journal_organisation_number
    if name is None or number is None:
        raise CommandError(
            f"set {ENV_PREFIX}JOURNAL_ORGANISATION_NAME and "
            f"{ENV_PREFIX}JOURNAL_ORGANISATION_NUMBER: the note names the response centre"
        )
    return Organisation(name, number)


async def national_id(store: object, alarm: Alarm) -> str | None:
    """The resident's number from the register, when the store has one; never printed."""
    if alarm.resident is None or not isinstance(store, NationalIds):
        return None
    return await store.national_id(alarm.municipality, alarm.resident)


def timeline_entry(alarm_id: str, row: dict[str, Any]) -> TimelineEntry:
    """A stored timeline row (store.timeline) as the core's value."""
    at = row["at"]
    return TimelineEntry(
        alarm_id,
        at if isinstance(at, datetime) else datetime.fromisoformat(at),
        TimelineType(row["type"]),
        row.get("actor"),
        row.get("detail") or {},
    )
