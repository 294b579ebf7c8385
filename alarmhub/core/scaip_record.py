"""What a SCAIP device was answered about its alarm, and what an operator is shown of it.

Pure. The answer itself leaves from the shell (daemon/scaip.py) after the commit; what it
will be is decided by the same committed state, so it is recorded here, as an `answered`
timeline entry in the very commit that makes it possible: the batch that raised or
joined the alarm (`snu=0` with the voice parameters under `immediate`, `snu=4` under
`hold_until_taken`), or the acknowledgement that ends the hold (`snu=0` with the voice
parameters the operator chose, else the configured ones). Bounded: an entry only when
the answer differs from the one the alarm's previous state gave; a device's HOLD
resends, or a second request joining an alarm answered the same way, write nothing.

`hbi` is not recorded: it goes with heartbeats (which raise no alarm) and is decided by
the shell's memory of what each device was told.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from alarmhub.core.model import (
    INTERNAL_EVENTS,
    Alarm,
    AlarmState,
    Device,
    ScaipVoice,
    TimelineEntry,
    TimelineType,
    Verdict,
)
from alarmhub.core.pipeline import BatchEffects
from alarmhub.core.rules import RuleSet
from alarmhub.core.scaip import DETAILS, SCAIP_FORMAT, AnswerMode, MessageType, ScaipPolicy, Snu

_HELD_TYPES = frozenset({MessageType.MESSAGE.value, MessageType.INFORMATION.value})
_FIRST = frozenset({Verdict.NEW, Verdict.REOPENED})
# The request's own texts an operator is shown, as the device sent them.
_SHOWN = ("ref", "crd", "lge", "stt", "lte", "ite", "lva", "did", "stc", "dty", "pri")


def answer_of(
    policy: ScaipPolicy, voice: ScaipVoice | None, *, waiting: bool, ref: str | None = None
) -> dict[str, Any]:
    """The answer to a request about an alarm, as recorded (core/scaip.py `answer_for`).

    `voice`: the device's own (or the operator's choice), which wins over the policy's.
    """
    out: dict[str, Any] = {"snu": int(Snu.HOLD)}
    if not (waiting and policy.answer is AnswerMode.HOLD_UNTIL_TAKEN):
        v = voice if voice is not None else policy.voice
        out = {"snu": int(Snu.HANDLED), "mre": v.mre, "cre": v.cre, "tnu": v.tnu}
    return {k: val for k, val in {**out, "ref": ref}.items() if val is not None}


def _key(answer: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """What makes two answers the same answer (the `ref` does not)."""
    if answer is None:
        return None
    return tuple(answer.get(k) for k in ("snu", "mre", "cre", "tnu"))


def answered_in_batch(
    effects: BatchEffects, before: Callable[[str], Alarm | None], rules: RuleSet
) -> list[TimelineEntry]:
    """The `answered` entries of a judged batch: added to its timeline before the commit.

    `before`: the alarm as it was before this batch (the in-memory index), to tell
    whether the answer changed (an acknowledged person alarm re-alerted by a new press
    is held again under `hold_until_taken`).
    """
    entries: list[TimelineEntry] = []
    last: dict[str, tuple[Any, ...] | None] = {}  # per alarm: the answer recorded so far
    for message in effects.messages:
        device = message.device
        for outcome in message.events:
            details = outcome.event.fields.get(DETAILS)
            alarm = effects.alarms.get(outcome.alarm_id or "")
            if device is None or alarm is None or not isinstance(details, dict):
                continue
            if details.get("mty") not in _HELD_TYPES:
                continue
            policy = rules.scaip_policy(device.municipality)
            voice = device.settings.scaip_voice
            ref = str(details.get("ref", ""))
            if alarm.id not in last:
                # A raised or reopened alarm had no answer yet; a joined one had its own.
                prior = None if outcome.verdict in _FIRST else before(alarm.id)
                was = None if prior is None else answer_of(policy, voice, waiting=_waiting(prior))
                last[alarm.id] = _key(was)
            now = answer_of(policy, voice, waiting=_waiting(alarm), ref=ref)
            if _key(now) == last[alarm.id]:
                continue
            last[alarm.id] = _key(now)
            entries.append(
                TimelineEntry(alarm.id, outcome.event.received_at, TimelineType.ANSWERED, None, now)
            )
    return entries


def _waiting(alarm: Alarm) -> bool:
    return alarm.state is AlarmState.OPEN


def raised_by_device(alarm: Alarm, rules: RuleSet) -> bool:
    """Could a device's request have raised this alarm (not alarmhub's own, e.g. silence)?"""
    every = (rules.rules, *(m.rules for m in rules.municipalities.values()))
    return any(
        r.alarm == alarm.kind and r.event not in INTERNAL_EVENTS for each in every for r in each
    )


def answered_on_taking(
    before: Alarm,
    after: Alarm,
    device: Device | None,
    rules: RuleSet,
    chosen: ScaipVoice | None,
    now: datetime,
) -> TimelineEntry | None:
    """The `answered` entry of the action that took a held SCAIP alarm, for its commit.

    Under `hold_until_taken` the device's next resend is answered `snu=0` with the
    voice parameters the operator chose (else the device's, else the municipality's).
    """
    if device is None or device.profile != SCAIP_FORMAT:
        return None
    policy = rules.scaip_policy(device.municipality)
    if policy.answer is not AnswerMode.HOLD_UNTIL_TAKEN:
        return None
    if not (_waiting(before) and not _waiting(after)) or not raised_by_device(after, rules):
        return None
    voice = chosen if chosen is not None else device.settings.scaip_voice
    # No `ref`: the answer goes to whichever request the device resends next.
    answer = answer_of(policy, voice, waiting=False)
    return TimelineEntry(after.id, now, TimelineType.ANSWERED, None, answer)


# --- what the operator sees --------------------------------------------------------


def operator_view(
    alarm_id: str,
    messages: Iterable[Mapping[str, Any]],
    timeline: Sequence[Mapping[str, Any]],
) -> dict[str, Any] | None:
    """The `scaip` object of the alarm's detail (docs/api.md): None for another alarm.

    `messages`: the device's recent messages (newest first, as the store lists them),
    each with its decoded events; only the events of this alarm count. Each element
    shown is the newest value the device sent (an `IN` update brings a position or a
    text the first request did not have). `answers`: the `answered` timeline entries,
    oldest first; `voice`: the voice parameters of the newest `snu=0`.
    """
    shown: dict[str, Any] = {}
    for message in messages:
        for event in message.get("events") or ():
            details = (event.get("fields") or {}).get(DETAILS)
            if event.get("alarm_id") != alarm_id or not isinstance(details, dict):
                continue
            for name in _SHOWN:
                if name in details and name not in shown:
                    shown[name] = details[name]
    answers = [
        {"at": e.get("at"), **(e.get("detail") or {})}
        for e in timeline
        if e.get("type") == TimelineType.ANSWERED.value
    ]
    if not shown and not answers:
        return None
    handled = [a for a in answers if a.get("snu") == int(Snu.HANDLED)]
    newest = handled[-1] if handled else {}
    voice = {k: newest[k] for k in ("mre", "cre", "tnu") if k in newest}
    lge = shown.get("lge")
    return {
        **shown,
        "crd": list(shown.get("crd") or []),
        "position": position_of(lge) if isinstance(lge, dict) else None,
        "answers": answers,
        "voice": voice or None,
    }


_NUMBER = r"[+-]?\d{1,3}(?:\.\d+)?"
_PAIR = re.compile(
    rf"^\s*([NS])?\s*({_NUMBER})\s*([NS])?\s*[,; ]\s*([EW])?\s*({_NUMBER})\s*([EW])?\s*$",
    re.IGNORECASE,
)


def position_of(lge: Mapping[str, Any]) -> dict[str, float] | None:
    """Decimal degrees from `geo` ("59.9139,10.7522", "N59.9139 E10.7522") or an NMEA `gga`.

    None when neither reads as a position on Earth: the text is then shown as sent.
    """
    geo, gga = lge.get("geo"), lge.get("gga")
    found = _from_geo(geo) if isinstance(geo, str) else None
    if found is None and isinstance(gga, str):
        found = _from_gga(gga)
    if found is None:
        return None
    lat, lon = found
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return {"lat": round(lat, 6), "lon": round(lon, 6)}


def _from_geo(text: str) -> tuple[float, float] | None:
    match = _PAIR.match(text)
    if match is None:
        return None
    ns1, lat, ns2, ew1, lon, ew2 = match.groups()
    sign_lat = -1 if (ns1 or ns2 or "N").upper() == "S" else 1
    sign_lon = -1 if (ew1 or ew2 or "E").upper() == "W" else 1
    return sign_lat * float(lat), sign_lon * float(lon)


def _from_gga(text: str) -> tuple[float, float] | None:
    """`$GPGGA,hhmmss,ddmm.mmmm,N,dddmm.mmmm,E,fix,…`: degrees and decimal minutes."""
    parts = text.split(",")
    if len(parts) < 7 or not parts[0].upper().endswith("GGA") or parts[6].strip() in ("", "0"):
        return None
    try:
        lat = _degrees(parts[2], 2) * (-1 if parts[3].upper() == "S" else 1)
        lon = _degrees(parts[4], 3) * (-1 if parts[5].upper() == "W" else 1)
    except ValueError:
        return None
    return lat, lon


def _degrees(text: str, width: int) -> float:
    if len(text) < width + 2 or not text[:width].isdigit():
        raise ValueError(text)
    return int(text[:width]) + float(text[width:]) / 60
