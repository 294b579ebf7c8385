"""The VKP FHIR R4 document Bundle of one answered alarm, as a JSON-ready dict.

Composition first (the note: its events with their times, and its sections), then
the DetectedIssue (the alarm, coded), the Encounter (the response: mode of contact,
period, reason), the Patient, the Practitioner (the operator who resolved it) and
the Organization (the response centre).

Deterministic on purpose: the Bundle's identifier and every fullUrl are uuid5 names
of the response centre's organisation number, the alarm id and the resource's role,
and every time comes from the timeline. The same alarm gives byte-identical output,
so a resend after a crash is the very same document, which the journal recognises by
its identifier rather than filing a second note.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from alarmhub.core.journal import codes
from alarmhub.core.journal.document import (
    Author,
    NotApplicable,
    Organisation,
    Patient,
    Ready,
    Steps,
    check_patient,
    qualify,
)
from alarmhub.core.journal.mapping import JournalMapping, KindMapping
from alarmhub.core.model import Alarm, TimelineEntry
from alarmhub.core.national_id import IdKind, NationalId, parse_national_id
from alarmhub.core.resolution import Choice, Resolution

# Fixed for ever: changing it changes every identifier, and a resend would be new.
NAMESPACE = uuid.UUID("61f21c52-e70b-418c-97e6-cd1e242bacca")
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Document:
    identifier: str  # urn:uuid:…, the Bundle's: stable per alarm
    bundle: Json


def document_uuid(organisation: Organisation, alarm_id: str, role: str) -> str:
    """`urn:uuid:` of a uuid5 named by centre, alarm and role: the same for ever."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{organisation.number}/{alarm_id}/{role}')}"


def journal_document(
    alarm: Alarm,
    timeline: Iterable[TimelineEntry],
    patient: Patient,
    author: Author,
    organisation: Organisation,
    resolution: Resolution,
    mapping: JournalMapping,
    tz: tzinfo = UTC,
) -> Document | NotApplicable:
    """The note to send for a resolved alarm, or why there is none."""
    entries = tuple(timeline)
    ready = qualify(alarm, entries, mapping)
    if isinstance(ready, NotApplicable):
        return ready
    skip = check_patient(patient)
    if skip is not None:
        return skip
    bundle = build_bundle(alarm, ready, patient, author, organisation, resolution, tz)
    return Document(bundle["identifier"]["value"], bundle)


def build_bundle(
    alarm: Alarm,
    ready: Ready,
    patient: Patient,
    author: Author,
    organisation: Organisation,
    resolution: Resolution,
    tz: tzinfo = UTC,
) -> Json:
    """The Bundle, whatever the patient: a patient without a national id gives a preview
    (`alarmhub journal export` prints it) that :func:`journal_document` never sends."""

    def url(role: str) -> str:
        return document_uuid(organisation, alarm.id, role)

    refs = _Refs(
        patient=_patient_ref(url("patient"), patient),
        practitioner={"reference": url("practitioner"), "display": author.display},
        organization={"reference": url("organization"), "display": organisation.name},
        encounter={"reference": url("encounter")},
        issue={"reference": url("detectedissue")},
    )
    parts = [
        ("composition", _composition(alarm, ready, resolution, author, refs, url, tz)),
        ("detectedissue", _detected_issue(ready, resolution, refs)),
        ("encounter", _encounter(ready, refs, url)),
        ("patient", _patient(patient)),
        ("practitioner", _practitioner(author)),
        ("organization", _organization(organisation)),
    ]
    return {
        "resourceType": "Bundle",
        "identifier": {"system": codes.RFC3986, "value": url("bundle")},
        "type": "document",
        "timestamp": instant(ready.steps.resolved),
        "entry": [{"fullUrl": url(role), "resource": resource} for role, resource in parts],
    }


@dataclass(frozen=True, slots=True)
class _Refs:
    patient: Json
    practitioner: Json
    organization: Json
    encounter: Json
    issue: Json


def instant(at: datetime) -> str:
    """A FHIR instant in UTC with milliseconds, e.g. 2026-11-22T01:13:05.000Z."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local(at: datetime, tz: tzinfo) -> str:
    return at.astimezone(tz).strftime("%d.%m.%Y %H:%M:%S")


def _coding(system: str, code_display: tuple[str, str]) -> Json:
    return {"system": system, "code": code_display[0], "display": code_display[1]}


def _concept(system: str, code_display: tuple[str, str]) -> Json:
    return {"coding": [_coding(system, code_display)]}


def _events(steps: Steps, resolution: Resolution) -> list[Json]:
    timed = [
        (codes.EVENT_RAISED, steps.raised),
        (codes.EVENT_HANDLING, steps.acknowledged),
        (codes.EVENT_DISPATCHED, steps.dispatched),
        (codes.EVENT_RESPONDER, steps.on_site),
        (codes.EVENT_CAUSE, steps.resolved if resolution.has_cause else None),
        (codes.EVENT_ACTION, steps.resolved if resolution.has_action else None),
        (codes.EVENT_CLOSED, steps.resolved),
    ]
    return [
        {"code": [_concept(codes.EVENT_SYSTEM, code)], "period": {"start": instant(at)}}
        for code, at in timed
        if at is not None
    ]


def _div(*paragraphs: str) -> Json:
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs if p)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def _choice_text(choice: Choice | None, note: str | None) -> list[str]:
    return [choice.text if choice is not None else "", note or ""]


def _joined(parts: list[str]) -> str:
    """The choice's text and the free text as one line: "Fall. Sto opp for fort"."""
    return ". ".join(p.rstrip(".") for p in parts if p)


def _composition(
    alarm: Alarm,
    ready: Ready,
    resolution: Resolution,
    author: Author,
    refs: _Refs,
    url: Callable[[str], str],
    tz: tzinfo,
) -> Json:
    steps, kind = ready.steps, ready.kind
    alert, raised = codes.ALERT_CODES[kind.alert], _local(steps.raised, tz)
    said = [
        f"{alert}: alarm {alarm.kind} fra enhet {alarm.device_id}, meldt {raised}.",
        *(
            f"{what} {_local(at, tz)}."
            for what, at in (
                ("Behandling påbegynt", steps.acknowledged),
                ("Utrykning bestilt", steps.dispatched),
                ("Utrykning på stedet", steps.on_site),
                ("Avsluttet", steps.resolved),
            )
            if at is not None
        ),
    ]
    sections = [
        _section("Hendelse", codes.SECTION_ALARM, _div(*said), [refs.issue, refs.encounter]),
    ]
    if resolution.has_cause:
        text = _div(*_choice_text(resolution.cause, resolution.cause_text))
        sections.append(_section("Årsak", codes.SECTION_REASON, text, [refs.issue]))
    if resolution.has_action:
        text = _div(*_choice_text(resolution.action, resolution.action_text))
        sections.append(_section("Tiltak", codes.SECTION_RESPONSE, text, [refs.issue]))
    signed = _div(f"Avsluttet av {author.display} {_local(steps.resolved, tz)}.")
    sections.append(_section("Signatur", codes.SECTION_SIGNATURE, signed, [refs.practitioner]))
    return {
        "resourceType": "Composition",
        "meta": {"profile": [codes.PROFILE_COMPOSITION]},
        "identifier": {"system": codes.RFC3986, "value": url("composition")},
        "status": "final",
        "type": _concept(codes.LOINC, codes.NOTE_TYPE),
        "category": [_concept(codes.CATEGORY_SYSTEM, codes.CATEGORY)],
        "subject": refs.patient,
        "encounter": refs.encounter,
        "date": instant(steps.resolved),
        "author": [refs.practitioner],
        "title": codes.TITLE,
        "custodian": refs.organization,
        "event": _events(steps, resolution),
        "section": sections,
    }


def _section(title: str, code: tuple[str, str], text: Json, entries: list[Json]) -> Json:
    return {
        "title": title,
        "code": _concept(codes.SECTION_SYSTEM, code),
        "text": text,
        "entry": entries,
    }


def _detected_issue(ready: Ready, resolution: Resolution, refs: _Refs) -> Json:
    kind: KindMapping = ready.kind
    alert = (kind.alert, codes.ALERT_CODES[kind.alert])
    issue: Json = {
        "resourceType": "DetectedIssue",
        "meta": {"profile": [codes.PROFILE_DETECTED_ISSUE]},
        "status": "final",
        "code": _concept(codes.ALERT_SYSTEM, alert),
        "patient": refs.patient,
        "identifiedDateTime": instant(ready.steps.raised),
    }
    cause = _joined(_choice_text(resolution.cause, resolution.cause_text))
    if cause:
        issue["detail"] = cause
    if resolution.has_action:
        action: Json = {}
        if resolution.action is not None:
            action["coding"] = [
                {
                    "system": codes.ACTION_SYSTEM,
                    "code": resolution.action.code,
                    "display": resolution.action.text,
                }
            ]
        action["text"] = _joined(_choice_text(resolution.action, resolution.action_text))
        issue["mitigation"] = [
            {
                "action": action,
                "date": instant(ready.steps.resolved),
                "author": refs.practitioner,
            }
        ]
    return issue


def _encounter(ready: Ready, refs: _Refs, url: Callable[[str], str]) -> Json:
    kind = ready.kind
    mode = (kind.mode, codes.ENCOUNTER_MODES[kind.mode])
    reason = (kind.reason, codes.ENCOUNTER_REASONS[kind.reason])
    return {
        "resourceType": "Encounter",
        "meta": {"profile": [codes.PROFILE_ENCOUNTER]},
        "identifier": [{"system": codes.RFC3986, "value": url("encounter")}],
        "status": "finished",
        "class": _coding(codes.ACT_CODE, codes.VIRTUAL),
        "subject": refs.patient,
        "participant": [
            {"type": [_concept(codes.MODE_SYSTEM, mode)], "individual": refs.practitioner}
        ],
        "period": {
            "start": instant(ready.steps.raised),
            "end": instant(ready.steps.resolved),
        },
        "reasonCode": [_concept(codes.REASON_SYSTEM, reason)],
        "serviceProvider": refs.organization,
    }


def _patient_identifier(patient: Patient) -> Json | None:
    if patient.national_id is None:
        return None
    checked = parse_national_id(patient.national_id)
    is_d = isinstance(checked, NationalId) and checked.kind is IdKind.D_NUMBER
    system = codes.DNR_SYSTEM if is_d else codes.FNR_SYSTEM
    return {"system": system, "value": patient.national_id}


def _patient_ref(reference: str, patient: Patient) -> Json:
    ref: Json = {"reference": reference}
    identifier = _patient_identifier(patient)
    if identifier is not None:
        ref["identifier"] = identifier
    if patient.display:
        ref["display"] = patient.display
    return ref


def _patient(patient: Patient) -> Json:
    resource: Json = {"resourceType": "Patient"}
    identifier = _patient_identifier(patient)
    if identifier is not None:
        resource["identifier"] = [identifier]
    if patient.display:
        resource["name"] = [{"text": patient.display}]
    return resource


def _practitioner(author: Author) -> Json:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": author.system, "value": author.value}],
        "name": [{"text": author.display}],
    }


def _organization(organisation: Organisation) -> Json:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": codes.ORG_SYSTEM, "value": organisation.number}],
        "name": organisation.name,
    }
