"""`alarmhub journal export --alarm ID`: an answered alarm's journal note, printed, not sent;
`alarmhub journal status [--failed] [--json]`: what the delivery has done with each.

(`alarmhub journal keygen --municipality CODE --out FILE` makes the key pair of a
municipality's HelseID client and prints the public JWK to register: see the end.)

The FHIR R4 document Bundle (docs/journal.md) goes to stdout as JSON, exactly as the
delivery would send it; one status line goes to stderr: `journal: ready (not sent)`,
exit 0, or `journal: not applicable (<reason>)`, exit 1, with the Bundle still printed
when only the patient is missing (a preview, the patient without identifier). An
alarm that has no note at all (not resolved, its kind unmapped or not exported,
resolved by no operator) prints no Bundle, says why, and exits 1.

The resident's national identity number comes from the resident register
(store/residents.py `ResidentRegister.journal_identity`, which audits the read as
`resident.national_id_read`); it is printed in the Bundle only, never in a message. A
note held because the number behind the pseudonym changed since the alarm is printed
without the patient, exit 1, saying so (`journal: held (…)`); `alarmhub journal
release|cancel` (cli/journal_holds.py) decide it.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from alarmhub.cli import journal_holds
from alarmhub.cli.db import with_residents, with_store
from alarmhub.cli.output import (
    EXIT_FAILED,
    CommandError,
    print_json,
    print_plain_json,
    table,
    warn,
)
from alarmhub.config.rules import load_rules
from alarmhub.core.journal.bundle import build_bundle
from alarmhub.core.journal.document import (
    NotApplicable,
    Organisation,
    Patient,
    Skip,
    author_of,
    check_patient,
    qualify,
    resolution_from_timeline,
    timeline_entry,
)
from alarmhub.core.journal.identity import Held, Registered, patient_for
from alarmhub.core.model import Alarm, TimelineEntry
from alarmhub.settings import ENV_PREFIX, Settings, helseid
from alarmhub.store.accounts import ts
from alarmhub.store.journal_outbox import JournalExport
from alarmhub.store.ports import AlarmStore, NationalIds
from alarmhub.store.sealing import SealingError


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
    st = journal.add_parser(
        "status",
        help="the journal exports: pending, sent, confirmed, refused, held, cancelled, "
        "not applicable",
    )
    st.add_argument(
        "--failed",
        action="store_true",
        help="only refused and held exports, and those whose last attempt failed (being retried)",
    )
    st.add_argument("--json", action="store_true", help="JSON lines' list instead of a table")
    st.set_defaults(func=cmd_journal_status)
    journal_holds.add_parsers(journal)


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


STATUS_COLUMNS = [
    "alarm_id",
    "municipality",
    "state",
    "reason",
    "attempts",
    "created_at",
    "sent_at",
    "finished_at",
    "last_error",
]


def cmd_journal_status(settings: Settings, args: argparse.Namespace) -> int:
    """Newest first. Reasons and errors are the journal's, redacted: no identity number."""

    async def read(store: AlarmStore) -> list[JournalExport]:
        return await store.journal_exports(failed=args.failed)

    rows = [
        {
            "alarm_id": e.alarm_id,
            "municipality": e.municipality,
            "state": e.state.value,
            "reason": e.reason,
            "attempts": e.attempts,
            "created_at": ts(e.created_at),
            "sent_at": ts(e.sent_at),
            "finished_at": ts(e.finished_at),
            "last_error": e.last_error,
        }
        for e in with_store(settings, read)
    ]
    if args.json:
        print_plain_json(rows)
    else:
        table(STATUS_COLUMNS, rows)
    return 0


def cmd_journal_export(settings: Settings, args: argparse.Namespace) -> int:
    rules = load_rules(settings.rules)
    organisation = organisation_of(settings)

    async def read(store: AlarmStore) -> tuple[Alarm, list[TimelineEntry], str | None]:
        found = await store.get_alarms([args.alarm])
        if not found:
            raise CommandError(f"no alarm {args.alarm!r}")
        rows = await store.timeline(found[0].id)
        hpr = await store.hpr_of(found[0].resolved_by or "")  # the author, as delivery reads it
        return found[0], [timeline_entry(found[0].id, row) for row in rows], hpr

    found: tuple[Alarm, list[TimelineEntry], str | None] = with_store(settings, read)
    alarm, timeline, hpr = found
    ready = qualify(alarm, timeline, rules.journal)
    if isinstance(ready, NotApplicable):
        return _no_note(alarm, ready, str(settings.rules))
    registered = _register_patient(settings, alarm)
    patient = registered if isinstance(registered, Patient) else Patient(None)
    author = author_of(alarm.resolved_by or "", hpr)
    resolution = resolution_from_timeline(timeline)
    print_json(
        build_bundle(alarm, ready, patient, author, organisation, resolution, rules.timezone)
    )
    if isinstance(registered, Held):  # the preview names nobody: it may be another's
        warn(
            f"journal: held ({registered.reason.value}): release it for the number it goes with "
            f"(alarmhub journal release --alarm {alarm.id} --municipality {alarm.municipality}"
            " --national-id-stdin) or cancel it (alarmhub journal cancel)"
        )
        return EXIT_FAILED
    skip = check_patient(patient)
    warn(str(skip) if skip is not None else "journal: ready (not sent)")
    return EXIT_FAILED if skip is not None else 0


def _register_patient(settings: Settings, alarm: Alarm) -> Patient | Held:
    """The patient as delivery would send it (the register read audited), or Held when
    the number behind the pseudonym changed since the alarm; never printed here."""
    if alarm.resident is None:
        return Patient(None)
    resident = alarm.resident

    async def read(register: NationalIds) -> Registered:
        return await register.journal_identity(alarm.municipality, resident, alarm.id)

    try:
        return patient_for(alarm.raised_at, with_residents(settings, read))
    except SealingError as exc:
        raise CommandError(
            f"the resident's national identity number cannot be opened ({exc}): set "
            f"{ENV_PREFIX}RESIDENT_KEY (and {ENV_PREFIX}RESIDENT_OLD_KEYS) as the daemon has it"
        ) from exc


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
