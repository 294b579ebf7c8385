"""An answered alarm made by the real core, for the journal tests (core and CLI).

A pendant press runs through the core pipeline (it raises the alarm), then the
operator actions of core/actions.py (acknowledge, dispatch, on site, resolve). The
resolve carries a cause and an action picked from the kind's list in the shipped rules
file (core/resolution.py `choose`), as `POST …/resolve` does: the note reads back what
the resolve step really stored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import parse_rules
from alarmhub.core.actions import Action, Applied, apply_action
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.index import AlarmIndex
from alarmhub.core.journal.document import Organisation, author_of
from alarmhub.core.model import Alarm, Device, DeviceKind, RawMessage, TimelineEntry
from alarmhub.core.pipeline import Context, decode_all, fingerprint, process_batch
from alarmhub.core.resolution import Resolution, choose
from tests.support.helpers import REPO

RULES = parse_rules((REPO / "config" / "rules.toml").read_text())
OSLO = ZoneInfo("Europe/Oslo")
PRESS = datetime(2026, 11, 22, 1, 13, 5, tzinfo=UTC)  # 02:13:05 in Oslo
NIN = "17854112058"  # synthetic_nin(date(1941, 5, 17), 120): born 17 May 1941, month + 80
HPR = "1234567"  # a made-up HPR number, kari's in the user record
# The operator who resolves (`act` below), as the note names her: by her HPR number, and
# without one by her user name (core/journal/document.py author_of).
OPERATOR = author_of("kari", HPR)
OPERATOR_WITHOUT_HPR = author_of("kari", None)
CENTRE = Organisation("Responssenteret i Oslo", "974778807")
PENDANT = Device("pend-1", DeviceKind.SAFETY_ALARM, "0301", resident="r-17")


def raised_by_a_press() -> tuple[Alarm, list[TimelineEntry]]:
    ctx = Context({PENDANT.id: PENDANT}, load_catalog(REPO / "devices"), RULES, DecodeLimits())
    payload = {"id": "m-1", "ts": PRESS.isoformat(), "type": "button.pressed"}
    raw = RawMessage("alarmhub/v1/pend-1/events", orjson.dumps(payload), PRESS)
    decoded = decode_all([raw], ctx)
    effects = process_batch(
        [raw], decoded, [fingerprint(raw, decoded[0])], set(), AlarmIndex(), ctx
    )
    [alarm_id] = effects.new_alarm_ids
    return effects.alarms[alarm_id], list(effects.timeline)


# What the operator picks by default: a cause and an action of the button's list
# ([resolution.default] in the shipped rules), and a free text for the action.
CHOSEN = ("needed_help", "home_care", None, "Hjulpet opp")


def resolution(
    cause: str | None, action: str | None, cause_text: str | None, action_text: str | None
) -> Resolution:
    picked = choose(RULES.resolutions.for_kind("button"), cause, action, cause_text, action_text)
    assert isinstance(picked, Resolution), picked
    return picked


def act(
    alarm: Alarm,
    timeline: list[TimelineEntry],
    action: Action,
    after: timedelta,
    chosen: Resolution | None = None,
) -> Alarm:
    done = apply_action(alarm, action, "kari", PRESS + after, outcome="handled", resolution=chosen)
    assert isinstance(done, Applied)
    timeline.extend(done.timeline)
    return done.alarm


def answered(
    steps: tuple[Action, ...] = (Action.ACKNOWLEDGE, Action.DISPATCH, Action.ON_SITE),
    chosen: tuple[str | None, str | None, str | None, str | None] = CHOSEN,
) -> tuple[Alarm, list[TimelineEntry]]:
    """The press, the operator's steps (40 s, 2 min, 14 min) and the resolve at 25 min."""
    alarm, timeline = raised_by_a_press()
    after = {
        Action.ACKNOWLEDGE: timedelta(seconds=40),
        Action.DISPATCH: timedelta(minutes=2),
        Action.ON_SITE: timedelta(minutes=14),
    }
    for step in steps:
        alarm = act(alarm, timeline, step, after[step])
    alarm = act(alarm, timeline, Action.RESOLVE, timedelta(minutes=25), resolution(*chosen))
    return alarm, timeline
