"""`alarmhub journal release|cancel --alarm ID --municipality NNNN`: a held note (issue 17).

A journal note is held, not sent, when the national identity number behind its
resident's pseudonym was replaced or removed after the alarm was raised: the
pseudonym may name another person now, and the note would go to their patient
record (docs/journal.md, "A pseudonym's number changed while its note waited").
The municipality's administrator decides whose note it is:

- `release` reads the number the note goes with from stdin (never an argument: it
  would show in `ps` and the shell's history), checks it, and sends the note with it,
  whatever the register holds now (the departed resident's number, or the corrected
  one);
- `cancel` ends it unsent (`--reason`, shown on the alarm).

Each changes only a held note of that alarm in the municipality named, and writes its
audit row (`journal.released`, `journal.cancelled`; never the number) in the same
transaction. Exit status: 0 done, 1 no such held note (or another failure), 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from alarmhub.cli.db import actor, with_residents, with_store
from alarmhub.cli.output import EXIT_USAGE, CommandError, error
from alarmhub.clock import SystemClock
from alarmhub.core.journal_status import JournalState
from alarmhub.core.model import Alarm
from alarmhub.core.national_id import Invalid, parse_national_id
from alarmhub.core.people import AuditEntry
from alarmhub.settings import Settings
from alarmhub.store.ports import AlarmStore
from alarmhub.store.residents import ResidentRegister
from alarmhub.store.sealing import KeyMissingError

MAX_REASON = 200


def add_parsers(journal: Any) -> None:
    rl = journal.add_parser(
        "release", help="send a held journal note, with the national identity number on stdin"
    )
    _alarm_arguments(rl)
    rl.add_argument(
        "--national-id-stdin",
        action="store_true",
        required=True,
        help="read the 11-digit number the note goes with from stdin (never an argument)",
    )
    rl.set_defaults(func=cmd_journal_release)
    cn = journal.add_parser("cancel", help="end a held journal note unsent")
    _alarm_arguments(cn)
    cn.add_argument("--reason", default=None, help="why, shown on the alarm (at most 200)")
    cn.set_defaults(func=cmd_journal_cancel)


def _alarm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alarm", required=True, metavar="ID", help="the alarm's id")
    p.add_argument(
        "--municipality",
        required=True,
        metavar="NNNN",
        help="the alarm's municipality: another municipality's note is refused",
    )


def cmd_journal_release(settings: Settings, args: argparse.Namespace) -> int:
    if not _checked(args.municipality):
        return EXIT_USAGE
    nid = parse_national_id(sys.stdin.readline())
    if isinstance(nid, Invalid):
        raise CommandError(f"the national identity number on stdin: {nid.reason}")
    alarm = _held_alarm(settings, args.alarm, args.municipality)
    entry = _entry(
        "journal.released",
        alarm,
        {"resident": alarm.resident, "kind": nid.kind.value, "synthetic": nid.synthetic},
    )

    async def release(r: ResidentRegister) -> bool:
        return await r.release_note(alarm.id, alarm.municipality, nid, [entry])

    try:
        done = with_residents(settings, release)
    except KeyMissingError as exc:
        raise CommandError(str(exc)) from None
    if not done:
        raise _not_held(alarm)
    print(f"released the journal note of alarm {alarm.id}: it goes to {nid.masked}")
    return 0


def cmd_journal_cancel(settings: Settings, args: argparse.Namespace) -> int:
    if not _checked(args.municipality):
        return EXIT_USAGE
    alarm = _held_alarm(settings, args.alarm, args.municipality)
    who = actor()
    reason = (args.reason or f"cancelled by {who}")[:MAX_REASON]
    entry = _entry("journal.cancelled", alarm, {"resident": alarm.resident, "reason": reason})

    async def cancel(r: ResidentRegister) -> bool:
        return await r.cancel_note(alarm.id, alarm.municipality, reason, [entry])

    if not with_residents(settings, cancel):
        raise _not_held(alarm)
    print(f"cancelled the journal note of alarm {alarm.id}: it is never sent")
    return 0


def _checked(code: str) -> bool:
    if len(code) != 4 or not code.isdigit():
        error("--municipality is a 4-digit municipality number, e.g. 0301")
        return False
    return True


def _held_alarm(settings: Settings, alarm_id: str, municipality: str) -> Alarm:
    """The alarm, if it is this municipality's and its note is held; else why not."""

    async def read(store: AlarmStore) -> tuple[Alarm | None, JournalState | None]:
        found = await store.get_alarms([alarm_id])
        exports = await store.journal_exports([alarm_id])
        return (found[0] if found else None), (exports[0].state if exports else None)

    alarm, state = with_store(settings, read)
    if alarm is None or alarm.municipality != municipality:
        raise CommandError(f"no alarm {alarm_id!r} in municipality {municipality}")
    if state is not JournalState.HELD:
        raise _not_held(alarm, state)
    return alarm


def _not_held(alarm: Alarm, state: JournalState | bool | None = False) -> CommandError:
    """`state` as read before (None: no export row); False: it changed since that read."""
    if state is False:
        shown = "no longer held: released or cancelled meanwhile"
    elif isinstance(state, JournalState):
        shown = f"not held: its journal state is {state.value}"
    else:
        shown = "not held: it has no journal note"
    return CommandError(f"alarm {alarm.id}'s journal note is {shown}; nothing done")


def _entry(action: str, alarm: Alarm, detail: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        actor(),
        action,
        SystemClock().now(),
        municipality=alarm.municipality,
        alarm_id=alarm.id,
        detail=detail,
    )
