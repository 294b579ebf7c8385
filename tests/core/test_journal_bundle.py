"""The journal note (core/journal/) of a real alarm's timeline, checked three ways.

The alarm is made by the core pipeline itself (a pendant press raises it) and the
operator actions of core/actions.py (acknowledge, dispatch, on site, resolve, the
resolve with a cause and an action picked from the kind's `[resolution]` list, as
`POST …/resolve` stores them). Its document is then:

- compared with tests/golden/journal_button.json (UPDATE_GOLDEN=1 rewrites it), whose
  operator has an HPR number; without one the note differs in the author's identifier
  only (alarmhub's user name under `urn:alarmhub:user`);
- parsed by fhir.resources' R4B models (FHIR's own structure and cardinalities);
- checked against VKP's profile rules (tests/support/vkp.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle

from alarmhub.core.journal import codes
from alarmhub.core.journal.bundle import Document, build_bundle, journal_document
from alarmhub.core.journal.document import (
    Author,
    NotApplicable,
    Patient,
    Ready,
    Skip,
    qualify,
    resolution_from_timeline,
)
from alarmhub.core.model import Alarm, AlarmState, TimelineEntry, TimelineType
from alarmhub.core.resolution import Resolution
from tests.support import vkp
from tests.support.helpers import REPO
from tests.support.journal import (
    CENTRE,
    HPR,
    NIN,
    OPERATOR,
    OPERATOR_WITHOUT_HPR,
    OSLO,
    PRESS,
    RULES,
    answered,
    raised_by_a_press,
)
from tests.support.national_ids import synthetic_nin

GOLDEN = REPO / "tests" / "golden" / "journal_button.json"


def document(
    alarm: Alarm,
    timeline: list[TimelineEntry],
    patient: Patient | None = None,
    author: Author = OPERATOR,
) -> Document | NotApplicable:
    return journal_document(
        alarm,
        timeline,
        patient or Patient(NIN),
        author,
        CENTRE,
        resolution_from_timeline(timeline),
        RULES.journal,
        OSLO,
    )


def text(bundle: dict[str, object]) -> str:
    return json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"


def test_the_golden_note_of_a_press_answered_in_full() -> None:
    assert synthetic_nin(datetime(1941, 5, 17).date(), 120) == NIN
    doc = document(*answered())
    assert isinstance(doc, Document)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text(doc.bundle), encoding="utf-8")
    assert text(doc.bundle) == GOLDEN.read_text(encoding="utf-8")


def test_the_golden_note_is_a_valid_fhir_r4_document() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    parsed = Bundle.model_validate(golden)
    assert parsed.type == "document"
    kinds = [type(e.resource).__name__ for e in parsed.entry or []]
    assert kinds == [
        "Composition",
        "DetectedIssue",
        "Encounter",
        "Patient",
        "Practitioner",
        "Organization",
    ]


def test_the_golden_note_keeps_the_vkp_profile_rules() -> None:
    assert vkp.problems(json.loads(GOLDEN.read_text(encoding="utf-8"))) == []


def test_the_golden_note_names_its_author_by_hpr_number() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    practitioner = golden["entry"][4]["resource"]
    assert practitioner["identifier"] == [{"system": codes.HPR_SYSTEM, "value": HPR}]
    assert practitioner["name"] == [{"text": "kari"}]
    assert vkp.author_problems(golden) == []


def test_an_operator_without_hpr_number_is_named_by_user_name_and_nothing_else_changes() -> None:
    doc = document(*answered(), author=OPERATOR_WITHOUT_HPR)
    assert isinstance(doc, Document)
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    expected["entry"][4]["resource"]["identifier"] = [
        {"system": codes.USER_SYSTEM, "value": "kari"}
    ]
    assert doc.bundle == expected
    Bundle.model_validate(doc.bundle)
    assert vkp.problems(doc.bundle) == []
    assert vkp.author_problems(doc.bundle) == [
        "Practitioner.identifier: no HPR number (UNCONFIRMED: JFT may require one)"
    ]


def test_the_checker_catches_what_it_checks() -> None:
    """The profile checker is not vacuous: a broken note is refused, naming each rule."""
    bundle = json.loads(GOLDEN.read_text(encoding="utf-8"))
    composition, issue, encounter = (bundle["entry"][i]["resource"] for i in range(3))
    bundle["entry"][4]["resource"]["identifier"][0]["value"] = "0123"
    issue["code"]["coding"][0]["code"] = "9.9"
    encounter["class"]["code"] = "AMB"
    composition["event"][0]["code"][0]["coding"][0]["display"] = "meldt"
    del composition["subject"]
    found = "\n".join(vkp.problems(bundle))
    for expected in (
        "'9.9' is not in",
        "class: must be",
        "'meldt' is not",
        "subject: required",
        "Practitioner.identifier.value: not an HPR number",
    ):
        assert expected in found


def test_the_events_carry_the_timeline_times() -> None:
    doc = document(*answered())
    assert isinstance(doc, Document)
    composition = doc.bundle["entry"][0]["resource"]
    events = {e["code"][0]["coding"][0]["code"]: e["period"]["start"] for e in composition["event"]}
    assert events == {
        "0": "2026-11-22T01:13:05.000Z",  # raised
        "1": "2026-11-22T01:13:45.000Z",  # acknowledged: handling began
        "4": "2026-11-22T01:15:05.000Z",  # dispatched
        "5": "2026-11-22T01:27:05.000Z",  # on site
        "6": "2026-11-22T01:38:05.000Z",  # cause, recorded at resolve
        "7": "2026-11-22T01:38:05.000Z",  # action, recorded at resolve
        "3": "2026-11-22T01:38:05.000Z",  # closed
    }


def test_the_same_alarm_gives_byte_identical_output_and_another_alarm_other_ids() -> None:
    first, again = document(*answered()), document(*answered())
    assert isinstance(first, Document)
    assert isinstance(again, Document)
    assert text(first.bundle) == text(again.bundle)
    alarm, timeline = answered()
    other = document(
        replace(alarm, id="another"), [replace(e, alarm_id="another") for e in timeline]
    )
    assert isinstance(other, Document)
    urls = {e["fullUrl"] for e in first.bundle["entry"]} | {first.identifier}
    assert urls.isdisjoint({e["fullUrl"] for e in other.bundle["entry"]} | {other.identifier})


def test_no_acknowledge_dispatch_or_on_site_leaves_those_events_out() -> None:
    doc = document(*answered(steps=()))
    assert isinstance(doc, Document)
    composition = doc.bundle["entry"][0]["resource"]
    codes_sent = [e["code"][0]["coding"][0]["code"] for e in composition["event"]]
    # Resolving an open alarm acknowledges it first (core/actions.py): handling began then.
    assert codes_sent == ["0", "1", "6", "7", "3"]
    assert vkp.problems(doc.bundle) == []


def test_no_cause_or_action_leaves_their_events_sections_and_mitigation_out() -> None:
    doc = document(*answered(chosen=(None, None, None, None)))
    assert isinstance(doc, Document)
    composition, issue = doc.bundle["entry"][0]["resource"], doc.bundle["entry"][1]["resource"]
    assert [e["code"][0]["coding"][0]["code"] for e in composition["event"]] == [
        "0",
        "1",
        "4",
        "5",
        "3",
    ]
    assert [s["title"] for s in composition["section"]] == ["Hendelse", "Signatur"]
    assert "mitigation" not in issue
    assert "detail" not in issue
    assert vkp.problems(doc.bundle) == []


def test_free_text_alone_is_a_cause() -> None:
    doc = document(*answered(chosen=(None, "talked", "Sto opp for fort", None)))
    assert isinstance(doc, Document)
    issue = doc.bundle["entry"][1]["resource"]
    assert issue["detail"] == "Sto opp for fort"
    assert issue["mitigation"][0]["action"]["coding"][0]["code"] == "talked"


def test_the_note_shows_the_choice_as_the_operator_saw_it_when_the_list_changed_since() -> None:
    """The resolve step stores the choice's text beside its code; the note reads that."""
    alarm, timeline = answered()
    resolved = timeline[-1]
    detail = {**resolved.detail, "action_taken": "old", "action_label": "Gammel tekst"}
    timeline[-1] = replace(resolved, detail=detail)
    doc = document(alarm, timeline)
    assert isinstance(doc, Document)
    coding = doc.bundle["entry"][1]["resource"]["mitigation"][0]["action"]["coding"][0]
    assert (coding["code"], coding["display"]) == ("old", "Gammel tekst")


@pytest.mark.parametrize(
    ("patient", "reason"),
    [
        (Patient(None), Skip.NO_NATIONAL_ID),
        (Patient("01818012338"), Skip.INVALID_NATIONAL_ID),
    ],
)
def test_without_a_valid_national_id_there_is_no_note(patient: Patient, reason: Skip) -> None:
    result = document(*answered(), patient=patient)
    assert result == NotApplicable(reason)
    assert str(NotApplicable(Skip.NO_NATIONAL_ID)) == "journal: not applicable (no national id)"


def test_an_alarm_that_is_not_resolved_or_not_exported_or_unmapped_has_no_note() -> None:
    alarm, timeline = answered()
    open_alarm, open_timeline = raised_by_a_press()
    assert document(open_alarm, open_timeline) == NotApplicable(Skip.NOT_RESOLVED)
    assert qualify(replace(alarm, kind="battery_low"), timeline, RULES.journal) == NotApplicable(
        Skip.NOT_EXPORTED
    )
    assert qualify(replace(alarm, kind="new_kind"), timeline, RULES.journal) == NotApplicable(
        Skip.NO_MAPPING
    )


def test_an_alarm_a_device_resolved_has_no_operator_and_no_note() -> None:
    alarm, timeline = raised_by_a_press()
    auto = TimelineEntry(alarm.id, PRESS + timedelta(minutes=1), TimelineType.AUTO_RESOLVED)
    resolved = replace(alarm, state=AlarmState.RESOLVED, resolved_at=auto.at)
    assert qualify(resolved, [*timeline, auto], RULES.journal) == NotApplicable(Skip.NO_OPERATOR)


def test_a_preview_without_national_id_names_no_patient_and_is_still_well_formed() -> None:
    alarm, timeline = answered()
    ready = qualify(alarm, timeline, RULES.journal)
    assert isinstance(ready, Ready)
    bundle = build_bundle(alarm, ready, Patient(None), OPERATOR, CENTRE, Resolution(), OSLO)
    Bundle.model_validate(bundle)
    patient = bundle["entry"][3]["resource"]
    assert patient == {"resourceType": "Patient"}
    assert vkp.problems(bundle) == ["Patient.identifier: needs a fødselsnummer or D-nummer"]


def test_a_d_number_is_sent_under_the_d_number_system() -> None:
    d_number = synthetic_nin(datetime(1990, 2, 3).date(), 42, d_number=True)
    assert d_number is not None
    doc = document(*answered(), patient=Patient(d_number))
    assert isinstance(doc, Document)
    patient = doc.bundle["entry"][3]["resource"]
    assert patient["identifier"] == [{"system": codes.DNR_SYSTEM, "value": d_number}]
    assert vkp.problems(doc.bundle) == []
