"""The JSON API's request and response bodies: the OpenAPI document is generated from these.

Times in responses are ISO 8601 strings in UTC exactly as `views.alarm_json`
writes them, so the list, the detail and the live stream agree byte for byte.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, model_validator

from alarmhub.core.actions import MAX_NOTE, MAX_OUTCOME
from alarmhub.core.device_settings import VoiceModel
from alarmhub.core.journal_status import JournalState
from alarmhub.core.model import DeviceKind
from alarmhub.core.registry import (
    BridgeId,
    DeviceId,
    DeviceSettingsIn,
    Municipality,
    Resident,
)
from alarmhub.core.resolution import MAX_FREE_TEXT
from alarmhub.core.scaip import CRE_CALL_TNU
from alarmhub.core.tenancy import Permission

Note = Annotated[str, Field(min_length=1, max_length=MAX_NOTE)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlarmOut(BaseModel):
    id: str
    device_id: str
    municipality: str
    kind: str
    priority: int
    state: Literal["open", "acknowledged", "resolved"]
    raised_at: str
    last_seen_at: str
    repeat_count: int
    escalation_level: int
    acknowledged_at: str | None
    acknowledged_by: str | None
    dispatched_at: str | None
    on_site_at: str | None
    resolved_at: str | None
    resolved_by: str | None
    outcome: str | None
    rules_version: str
    suppressed_by: str | None
    escalation_exhausted_at: str | None = Field(
        None, description="the escalation policy's last step passed with the alarm still open"
    )
    clearing_event: str | None = Field(
        None,
        description="a device event that would have cleared this person alarm "
        "(e.g. door.closed); it waits for an operator",
    )
    clearing_at: str | None = None
    scheduled_at: str | None = Field(
        None,
        description="the scheduled instant this alarm is about (a missed dose): "
        "each dose is an alarm of its own; null for other alarms",
    )
    escalation_from: str | None = Field(
        None, description="when the current escalation started (null: raised_at)"
    )
    escalation_generation: int = Field(
        0, description="how many times escalation started afresh (re-alert, reopen, release)"
    )
    superseded_by: str | None = Field(
        None,
        description="the newer alarm of the same device and kind raised beside this one "
        "(a trigger that could not join it); this one stays in the queue until handled",
    )
    rev: int = Field(
        0,
        description="the stored alarm's revision: goes up by one with every change, "
        "so a client can tell which of two copies is newer",
    )
    cause: str | None = Field(
        None, description="the cause (årsak) recorded on resolving: a code of the kind's list"
    )
    cause_text: str | None = Field(None, description="the operator's free text on the cause")
    action_taken: str | None = Field(
        None, description="the action taken (tiltak) recorded on resolving: a code of the list"
    )
    action_text: str | None = Field(None, description="the operator's free text on the action")
    trigger_ts: str | None = Field(
        None,
        description="the device's own time of the newest event that raised or re-triggered "
        "the alarm: a clearing event from before it (a buffered fix delivered late) leaves "
        "the alarm alone; null for alarms stored before it was kept",
    )


class AlarmPage(BaseModel):
    items: list[AlarmOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at end")
    total: int = Field(
        description="how many alarms the filters (state, municipality, priority) select in "
        "the caller's municipalities when this page was read, whatever `limit` and `cursor`: "
        "a client that reads only part of the list says how much it left out"
    )
    seq: int = Field(
        description="the live stream's position when this page was read: open "
        "/alarms/stream with Last-Event-ID (or ?last_event_id=) set to it to miss nothing"
    )


class TimelineOut(BaseModel):
    at: str
    type: str
    actor: str | None
    detail: dict[str, Any]


class DeviceOut(BaseModel):
    id: str
    kind: str
    municipality: str
    profile: str | None
    heartbeat_interval_s: int | None
    label: str | None
    active: bool
    registered_at: str
    last_seen_at: str | None
    resident: str | None = None
    settings: dict[str, Any] = {}
    bridge: str | None = None
    sip_credentials: Literal["set", "set_before_move"] | None = Field(
        None,
        description="a SCAIP device's SIP digest credentials: null (none), `set`, or "
        "`set_before_move` (set in the municipality it was moved from: still accepted, "
        "so its alarms are not refused, but known there; set new ones, docs/scaip.md)",
    )


class EventOut(BaseModel):
    seq: int
    received_at: str
    msg_id: str | None
    verdict: str
    reason: str | None
    events: list[dict[str, Any]]


class JournalOut(BaseModel):
    state: JournalState = Field(
        description="not_applicable, pending, sent, confirmed, refused, held (the resident's "
        "national id changed since the alarm: an administrator releases or cancels it) or "
        "cancelled (docs/journal.md)"
    )
    reason: str | None = Field(
        None,
        description='why: "no national id", "national id changed since the alarm", the '
        "journal's reason for a refusal, or a cancellation's",
    )
    created_at: str | None = Field(None, description="when the resolve queued the export")
    sent_at: str | None = Field(None, description="when the journal accepted it (202)")
    finished_at: str | None = Field(
        None, description="when it was confirmed, refused, cancelled or found not applicable"
    )
    attempts: int = Field(0, description="requests made so far (sends and failed tries)")
    last_error: str | None = Field(
        None, description="the last failed attempt's error while it is retried"
    )


class AlarmDetail(AlarmOut):
    timeline: list[TimelineOut]
    device: DeviceOut | None
    recent_events: list[EventOut]
    national_id_masked: str | None = Field(
        None,
        description="the resident's national identity number with its last five digits "
        "hidden (010190*****); null without a register entry. Every read is audited",
    )
    journal: JournalOut
    scaip: ScaipOut | None = Field(
        None, description="what a SCAIP device sent and was answered (docs/scaip.md); else null"
    )


class ScaipVoiceOut(BaseModel):
    mre: int | None = None
    cre: int | None = None
    tnu: str | None = None


class ScaipOut(BaseModel):
    """A SCAIP alarm as the operator sees it: the newest value of each element its
    device sent about this alarm, the answers it was given, and what taking it sends."""

    ref: str | None = Field(None, description="the request's reference (`ref`)")
    crd: list[str] = Field(description="callback addresses as sent: gsm:+47…, sip:…, no-voice:")
    lge: dict[str, str] | None = Field(None, description="`geo`, `tim`, `gga` as sent")
    position: dict[str, float] | None = Field(
        None, description="`lge` read as decimal degrees {lat, lon}; null when it does not read"
    )
    stt: str | None = None
    lte: str | None = None
    ite: str | None = None
    lva: str | None = None
    did: str | None = None
    stc: int | None = None
    dty: int | None = None
    pri: int | None = None
    answers: list[dict[str, Any]] = Field(
        description="each distinct answer, oldest first: {at, snu, mre, cre, tnu, ref}"
    )
    voice: ScaipVoiceOut | None = Field(
        None, description="mre/cre/tnu of the newest snu=0 answer: how the device calls"
    )
    answer_policy: Literal["immediate", "hold_until_taken"]
    configured_voice: ScaipVoiceOut = Field(
        description="what snu=0 carries unless the operator chooses (device's, else municipality's)"
    )


class ChoiceOut(BaseModel):
    code: str
    text: str


class ChoicesOut(BaseModel):
    causes: list[ChoiceOut]
    actions: list[ChoiceOut]


class ResolutionChoicesOut(BaseModel):
    default: ChoicesOut = Field(description="for every alarm kind without a list of its own")
    kinds: dict[str, ChoicesOut]


class NoteIn(_In):
    note: Note


class OptionalNoteIn(_In):
    note: Note | None = None


class VoiceIn(VoiceModel):
    """The SCAIP voice parameters an operator chooses on taking an alarm (docs/scaip.md):
    `mre` voice mode 0-3, `cre` callback 1-60 minutes / 61 predefined receiver / 62 `tnu`,
    `tnu` the number to call (`+` and 3-20 digits), needed with `cre` 62."""

    @model_validator(mode="after")
    def _tnu_with_62(self) -> VoiceIn:
        if self.cre == CRE_CALL_TNU and self.tnu is None:
            raise ValueError("cre 62 (call tnu) needs tnu")
        if self.mre is None and self.cre is None and self.tnu is None:
            raise ValueError("give at least one of mre, cre, tnu")
        return self


class AcknowledgeIn(OptionalNoteIn):
    """An acknowledgement; `voice` for a SCAIP device held until an operator takes it."""

    voice: VoiceIn | None = None


Code = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]
FreeText = Annotated[str, Field(min_length=1, max_length=MAX_FREE_TEXT)]


class ResolveIn(_In):
    outcome: Annotated[str, Field(min_length=1, max_length=MAX_OUTCOME, examples=["false_alarm"])]
    note: Note | None = None
    cause: Code | None = Field(
        None,
        description="the cause (årsak): a code of the alarm kind's list "
        "(GET /api/v1/resolution-choices); another code is refused with 422 and the allowed",
        examples=["fall"],
    )
    cause_text: FreeText | None = None
    action_taken: Code | None = Field(
        None,
        description="the action taken (tiltak): a code of the kind's list",
        examples=["talked"],
    )
    action_text: FreeText | None = None


class HprIn(_In):
    hpr: Annotated[
        str,
        Field(
            min_length=1,
            max_length=16,
            description="the user's HPR number (Helsepersonellregisteret): 1-9 digits; "
            "leading zeros are dropped",
        ),
    ]


class ResidentIn(_In):
    municipality: Municipality
    national_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=32,
            description="11 digits: a fødselsnummer or D-number (synthetic test numbers, "
            "month + 80, are accepted); never echoed back",
        ),
    ]


class JournalReleaseIn(_In):
    national_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=32,
            description="the 11-digit number the held note goes with (checked as the "
            "register's are); never echoed back",
        ),
    ]


class JournalCancelIn(_In):
    reason: Annotated[str | None, Field(max_length=200, description="shown on the alarm")] = None


class ResidentOut(BaseModel):
    municipality: str
    resident: str
    national_id: str = Field(description="masked: the last five digits hidden (010190*****)")
    key_id: str = Field(description="which resident key sealed it (for key rotation)")
    updated_at: str
    updated_by: str


class DevicePatch(_In):
    """Only the fields present are changed; `null` clears an optional field."""

    kind: DeviceKind | None = None
    municipality: Municipality | None = None
    heartbeat_interval_s: Annotated[int, Field(ge=10, le=7 * 24 * 3600)] | None = None
    label: Annotated[str, Field(max_length=200)] | None = None
    profile: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    active: bool | None = None
    resident: Resident | None = None
    settings: DeviceSettingsIn | None = None
    bridge: BridgeId | None = None


class CredentialsIn(_In):
    """A SCAIP device's SIP digest password (issue 16): stored as HA1 only, never returned."""

    password: SecretStr = Field(description="8 to 256 characters, no control characters")


class ImportResult(BaseModel):
    imported: int
    rotate_credentials: list[str] | None = Field(
        None,
        description="only when not empty: imported devices whose SIP credentials were set "
        "in the municipality they were moved from; set new ones (docs/scaip.md)",
    )


class SilenceIn(_In):
    municipality: Municipality
    device_id: DeviceId | None = Field(
        default=None,
        description="null silences every device of the municipality: at most "
        "`municipality_silence_max_h` of the rules (default 24 h), also its length without ends_at",
    )
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = Field(
        default=None, description="required for a device; optional for a municipality"
    )
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    include_priority_1: bool = Field(
        default=False,
        description="also hide priority 1 alarms (presses, falls); by default they "
        "escalate as usual under any silence",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SilenceIn:
        for t in (self.starts_at, self.ends_at):
            if t is not None and not 1970 <= t.year <= 9998:
                raise ValueError("times must be between the years 1970 and 9998")
        if self.ends_at is None:
            if self.device_id is not None:
                raise ValueError("a device's silence needs ends_at")
            return self
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if (self.ends_at - self.starts_at).days > 366:
            raise ValueError("a silence lasts at most 366 days")
        return self


class SilenceOut(BaseModel):
    id: str
    municipality: str
    device_id: str | None
    starts_at: str
    ends_at: str
    reason: str
    created_by: str
    created_at: str
    include_priority_1: bool = False


class Me(BaseModel):
    name: str
    role: Literal["operator", "municipality_admin", "admin"]
    municipalities: list[str]
    all_municipalities: bool = Field(description="true for admins, who see every municipality")
    permissions: list[Permission] = Field(
        description="what the caller's role may do (core/tenancy.py GRANTS): the pages show a "
        "control only when its permission is here; the API refuses the rest with 403 anyway"
    )


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    alarm_id: str | None
    device_id: str | None
    municipality: str | None
    address: str | None
    detail: dict[str, Any]


class DeadLetterOut(BaseModel):
    seq: int
    received_at: str
    topic: str
    device_id: str | None
    municipality: str | None
    msg_id: str | None
    reason: str | None
    detail: str | None


class StatsOut(BaseModel):
    count: int
    median_s: float | None
    p90_s: float | None
    p99_s: float | None


class GroupOut(BaseModel):
    priority: int
    kind: str
    alarms: int
    acknowledge: StatsOut
    on_site: StatsOut
    resolve: StatsOut
    sla_target_s: float | None
    sla_decided: int
    sla_met: int
    sla_compliance: float | None


class DailyOut(BaseModel):
    priority: int
    day: date
    acknowledge: StatsOut


class ReportOut(BaseModel):
    municipality: str | None
    since: date | None
    until: date | None
    groups: list[GroupOut]
    daily: list[DailyOut]
