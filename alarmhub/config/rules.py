"""Load `config/rules.toml` into a frozen :class:`RuleSet`, all or nothing.

Validation is strict (`extra="forbid"`): a typo in a rules file must stop the
start, naming the key path, rather than silently leave an alarm unrouted. A
reload that fails keeps the rules already in force.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alarmhub.config.journal import JournalKindModel, journal_mapping, journal_problems
from alarmhub.config.resolution import ResolutionModel, resolutions, unknown_kinds
from alarmhub.core.device_settings import VoiceModel
from alarmhub.core.escalation import Policy, Step
from alarmhub.core.geo import ZoneStatus
from alarmhub.core.model import INTERNAL_EVENTS, DeviceKind, EventType, Priority, ScaipVoice
from alarmhub.core.rules import (
    MunicipalityRules,
    Rule,
    RuleSet,
    StormPolicy,
    Target,
    TimeWindow,
)
from alarmhub.core.scaip import AnswerMode, ScaipPolicy
from alarmhub.core.strays import STRAY_KIND, STRAY_PRIORITY


class RulesError(Exception):
    """A rules file that cannot be used; the message names the file and the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _clock(text: str) -> time:
    hours, sep, minutes = text.partition(":")
    try:
        if not sep or len(minutes) != 2:
            raise ValueError(text)  # noqa: TRY301 - one message for every malformed time
        return time(int(hours), int(minutes))
    except ValueError as exc:
        raise ValueError(f"expected HH:MM, got {text!r}") from exc


def _window(value: list[str]) -> list[str]:
    if len(value) != 2:
        raise ValueError('a window is ["HH:MM", "HH:MM"]')
    _clock(value[0])
    _clock(value[1])
    return value


Municipality = Annotated[str, Field(pattern=r"^\d{4}$")]
# A duration in whole seconds, at most a year: a bigger number is a typo, and one
# past timedelta's range (or that overflows `raised_at + after_s`) would escape as
# an OverflowError instead of a RulesError naming the key.
MAX_SECONDS = 366 * 24 * 3600
Seconds = Annotated[int, Field(ge=0, le=MAX_SECONDS)]
PositiveSeconds = Annotated[int, Field(gt=0, le=MAX_SECONDS)]
WindowPair = Annotated[list[str], Field(min_length=2, max_length=2)]
HeartbeatSeconds = Annotated[int, Field(ge=10, le=7 * 24 * 3600)]  # as the registry allows


class RuleModel(_Strict):
    name: str
    event: EventType
    device_kind: DeviceKind | None = None
    alarm: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")] | None = None
    priority: Annotated[int, Field(ge=1, le=4)] | None = None
    between: str | WindowPair | None = None
    zone: ZoneStatus | None = None
    resolves: list[str] = []
    flap_window_s: Seconds = 0
    policy: str | None = None
    auto_resolve_person_alarm: bool = False

    @field_validator("between")
    @classmethod
    def _between(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            _window(v)
        return v


class StepModel(_Strict):
    after_s: Seconds
    target: str
    level: Annotated[int, Field(ge=1, le=9)]


class PolicyModel(_Strict):
    steps: Annotated[list[StepModel], Field(min_length=1)]
    repeat: Annotated[int, Field(ge=0, le=9)] = 0
    from_previous: bool = False
    ack_timeout_s: PositiveSeconds | None = None
    round_interval_s: PositiveSeconds | None = None


class TargetModel(_Strict):
    mqtt: bool = False
    webhook: Annotated[str, Field(pattern=r"^https?://")] | None = None


class StormModel(_Strict):
    kinds: list[str] = ["device_offline", "power_lost"]
    threshold: Annotated[int, Field(ge=2)] = 10
    window_s: PositiveSeconds = 300
    priority: Annotated[int, Field(ge=1, le=4)] = 2
    policy: str | None = None  # the incident's escalation policy; default "p<priority>"


class ScaipAnswerModel(VoiceModel):
    """`[scaip]` / `[municipalities.<code>.scaip]`: how SCAIP alarms are answered."""

    answer: AnswerMode = AnswerMode.IMMEDIATE

    def policy(self, base: ScaipPolicy | None = None) -> ScaipPolicy:
        """A municipality's policy: a voice parameter it does not name is the global one's."""
        if base is None:
            return ScaipPolicy(self.answer, self.voice())
        b = base.voice
        mre = b.mre if self.mre is None else self.mre
        cre = b.cre if self.cre is None else self.cre
        return ScaipPolicy(self.answer, ScaipVoice(mre, cre, self.tnu or b.tnu))


class MunicipalityModel(_Strict):
    windows: dict[str, WindowPair] = {}
    policies: dict[str, PolicyModel] = {}
    rules: list[RuleModel] = []
    scaip: ScaipAnswerModel | None = None


class RulesModel(_Strict):
    timezone: str = "Europe/Oslo"
    sla_ack_s: dict[str, PositiveSeconds] = {}
    heard_resolves: list[str] = []
    offline_after_misses: Annotated[int, Field(ge=1, le=100)] = 3
    municipality_silence_max_h: Annotated[float, Field(gt=0, le=24 * 7)] = 24
    restart_grace_s: Seconds = 60
    default_heartbeat_interval_s: dict[DeviceKind, HeartbeatSeconds] = {}
    no_fix_alarm_after_s: PositiveSeconds | None = None
    merge_max_age_s: PositiveSeconds = 6 * 3600
    windows: dict[str, WindowPair] = {}
    policies: dict[str, PolicyModel] = {}
    targets: dict[str, TargetModel] = {}
    storm: StormModel | None = None
    municipalities: dict[Municipality, MunicipalityModel] = {}
    journal: dict[str, JournalKindModel] = {}
    scaip: ScaipAnswerModel = ScaipAnswerModel()
    # The cause and action-taken choices per alarm kind (config/resolution.py).
    resolution: dict[str, ResolutionModel] = {}
    rules: list[RuleModel]

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            # OSError: zoneinfo opens a file by the name, so a 300-character name
            # fails with "File name too long" (found by tests/config/test_fuzz_rules.py).
            raise ValueError(f"unknown time zone {v[:64]!r}") from exc
        return v

    @field_validator("sla_ack_s")
    @classmethod
    def _sla(cls, v: dict[str, int]) -> dict[str, int]:
        for key in v:
            if key not in {"p1", "p2", "p3", "p4"}:
                raise ValueError(f"keys are p1…p4, got {key!r}")
        return v

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for pair in v.values():
            _window(pair)
        return v


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from exc
    try:
        model = RulesModel.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"{source}: {_explain(exc)}") from exc
    _check_references(model, source)
    policies = {
        name: _policy(name, p, f"{source}: policies.{name}") for name, p in model.policies.items()
    }
    storm = None
    if model.storm is not None:
        storm = StormPolicy(
            kinds=frozenset(model.storm.kinds),
            threshold=model.storm.threshold,
            window=timedelta(seconds=model.storm.window_s),
            priority=Priority(model.storm.priority),
            policy=model.storm.policy,
        )
    return RuleSet(
        rules=tuple(_rule(r) for r in model.rules),
        timezone=ZoneInfo(model.timezone),
        version=hashlib.sha256(text.encode()).hexdigest()[:12],
        sla_ack={Priority(int(k[1])): timedelta(seconds=s) for k, s in model.sla_ack_s.items()},
        windows={n: TimeWindow(_clock(a), _clock(b)) for n, (a, b) in model.windows.items()},
        policies=policies,
        targets={n: Target(n, t.mqtt, t.webhook) for n, t in model.targets.items()},
        municipalities={
            code: MunicipalityRules(
                rules=tuple(_rule(r) for r in m.rules),
                windows={n: TimeWindow(_clock(a), _clock(b)) for n, (a, b) in m.windows.items()},
                policies={
                    n: _policy(n, p, f"{source}: municipalities.{code}.policies.{n}")
                    for n, p in m.policies.items()
                },
                scaip=m.scaip.policy(model.scaip.policy()) if m.scaip is not None else None,
            )
            for code, m in model.municipalities.items()
        },
        scaip=model.scaip.policy(),
        storm=storm,
        heard_resolves=tuple(model.heard_resolves),
        offline_after_misses=model.offline_after_misses,
        municipality_silence_max=timedelta(hours=model.municipality_silence_max_h),
        restart_grace=timedelta(seconds=model.restart_grace_s),
        heartbeat_defaults={
            k: timedelta(seconds=s) for k, s in model.default_heartbeat_interval_s.items()
        },
        no_fix_after=(
            timedelta(seconds=model.no_fix_alarm_after_s) if model.no_fix_alarm_after_s else None
        ),
        merge_max_age=timedelta(seconds=model.merge_max_age_s),
        journal=journal_mapping(model.journal),
        resolutions=resolutions(model.resolution),
    )


def _check_references(model: RulesModel, source: str) -> None:
    """Every name a rule uses must be defined: a dangling reference is a silent no-alarm."""
    every = [("rules", i, r) for i, r in enumerate(model.rules)]
    for code, m in model.municipalities.items():
        every.extend((f"municipalities.{code}.rules", i, r) for i, r in enumerate(m.rules))
    kinds = {r.alarm for _, _, r in every if r.alarm}
    windows = set(model.windows)
    for m in model.municipalities.values():
        windows |= set(m.windows)
    policies = set(model.policies) | {n for m in model.municipalities.values() for n in m.policies}
    for where, i, r in every:
        _check_rule(r, f"{source}: {where}[{i}]", kinds, windows, policies)
    _check_policies(model, kinds, source)
    _check_journal(model, kinds, source)
    _check_storm(model, every, source)
    _check_default_policies(model, source)
    unknown = unknown_kinds(model.resolution, kinds | {STRAY_KIND, StormPolicy().incident_kind})
    if unknown:
        raise RulesError(
            f"{source}: resolution.{unknown[0]}: no rule raises alarm kind {unknown[0]!r}"
        )


def _check_rule(
    r: RuleModel, at: str, kinds: set[str], windows: set[str], policies: set[str]
) -> None:
    for kind in r.resolves:
        if kind not in kinds:
            raise RulesError(f"{at}.resolves: no rule raises alarm kind {kind!r}")
    if r.alarm is not None and r.priority is None:
        raise RulesError(f"{at}.priority: a rule that raises an alarm needs one")
    if isinstance(r.between, str) and r.between not in windows:
        raise RulesError(f"{at}.between: no window named {r.between!r} under [windows]")
    if r.policy is not None and r.policy not in policies:
        raise RulesError(f"{at}.policy: no policy named {r.policy!r} under [policies]")
    if r.zone is not None and r.event is not EventType.LOCATION:
        raise RulesError(f"{at}.zone: only location events have a zone")
    if r.zone is ZoneStatus.UNCERTAIN:
        raise RulesError(f"{at}.zone: use inside or outside; an uncertain fix decides nothing")


def _check_journal(model: RulesModel, kinds: set[str], source: str) -> None:
    """A `[journal.<kind>]` for a kind nothing raises is a typo that leaves the real kind
    unmapped: refused, like a dangling `resolves`."""
    known = kinds | {STRAY_KIND} | ({StormPolicy().incident_kind} if model.storm else set())
    for kind in model.journal:
        if kind not in known:
            raise RulesError(f"{source}: journal.{kind}: no rule raises alarm kind {kind!r}")


def _check_storm(model: RulesModel, every: list[tuple[str, int, RuleModel]], source: str) -> None:
    """Only technical and follow-up alarms may be folded into an outage incident.

    A kind some rule raises at priority 1-2 is a person alarm: folded, it would
    be hidden behind an incident row while someone waits for help (issue 12
    item 7). A kind no rule raises folds nothing: a typo, refused as well. The
    incident needs a policy, or an outage would never escalate.
    """
    storm = model.storm
    if storm is None:
        return
    raised = {r.alarm: (where, i, r) for where, i, r in every if r.alarm}
    for kind in storm.kinds:
        found = raised.get(kind)
        if found is None:
            raise RulesError(f"{source}: storm.kinds: no rule raises alarm kind {kind!r}")
        person = [
            (where, i, r)
            for where, i, r in every
            if r.alarm == kind and r.priority is not None and r.priority <= 2
        ]
        if person:
            where, i, r = person[0]
            raise RulesError(
                f"{source}: storm.kinds: {kind!r} is a person alarm ({where}[{i}] raises it "
                f"at priority {r.priority}): person alarms are never folded into an incident"
            )
    name = storm.policy or f"p{storm.priority}"
    if name not in model.policies:
        raise RulesError(
            f"{source}: storm: no policy {name!r} under [policies] for the outage incident: "
            "it would never escalate"
        )


def _check_policies(model: RulesModel, kinds: set[str], source: str) -> None:
    for kind in model.heard_resolves:
        if kind not in kinds:
            raise RulesError(f"{source}: heard_resolves: no rule raises alarm kind {kind!r}")
    targets = set(model.targets) | {"operator_queue"}
    for name, p in model.policies.items():
        for j, step in enumerate(p.steps):
            if step.target not in targets:
                raise RulesError(
                    f"{source}: policies.{name}.steps[{j}].target: no target named "
                    f"{step.target!r} under [targets]"
                )


def _check_default_policies(model: RulesModel, source: str) -> None:
    """Every alarm a rule can raise must have an escalation policy (issue 12 item 6).

    A rule without `policy` escalates under "p<priority>": the global one, or its
    municipality's own. Without it, every such alarm would be raised with no policy
    and never escalate, silently.
    """
    for i, r in enumerate(model.rules):
        if r.alarm is not None and r.policy is None and r.priority is not None:
            name = f"p{r.priority}"
            # A global rule applies in every municipality: only a global policy covers all.
            if name not in model.policies:
                raise RulesError(
                    f"{source}: rules[{i}]: raises priority {r.priority} alarm {r.alarm!r} "
                    f"but there is no policy {name!r} under [policies]: it would never escalate"
                )
    # alarmhub raises one alarm of its own under a default policy, in any municipality:
    # a call for help from an unregistered or decommissioned device (core/strays.py),
    # whenever a rule would raise a person alarm (priority 1-2) for a device like it.
    stray = f"p{int(STRAY_PRIORITY)}"
    every = [*model.rules, *(r for m in model.municipalities.values() for r in m.rules)]
    person = any(r.alarm is not None and r.priority is not None and r.priority <= 2 for r in every)
    if person and stray not in model.policies:
        raise RulesError(
            f"{source}: policies: no policy {stray!r}: a press from an unregistered or "
            f"decommissioned device raises a priority {int(STRAY_PRIORITY)} alarm under it, "
            "which would never escalate"
        )
    for code, m in model.municipalities.items():
        for i, r in enumerate(m.rules):
            if r.alarm is not None and r.policy is None and r.priority is not None:
                name = f"p{r.priority}"
                if name not in m.policies and name not in model.policies:
                    raise RulesError(
                        f"{source}: municipalities.{code}.rules[{i}]: raises priority "
                        f"{r.priority} alarm {r.alarm!r} but there is no policy {name!r} "
                        "under [policies] or its municipality's: it would never escalate"
                    )


def person_alarm_auto_resolvers(rules: RuleSet) -> list[str]:
    """Warnings for `rules check`: rules that let a device event close a person alarm."""
    every = [("", r) for r in rules.rules]
    every += [
        (f"municipality {code}: ", r) for code, m in rules.municipalities.items() for r in m.rules
    ]
    return [
        f"{where}rule {r.name!r} sets auto_resolve_person_alarm: a device event "
        f"({r.event.value}) may close priority 1-2 alarms {list(r.resolves)} without an "
        "operator (a door closes behind someone who walked out)"
        for where, r in every
        if r.auto_resolve_person_alarm
    ]


def _rule(r: RuleModel) -> Rule:
    window: TimeWindow | str | None = None
    if isinstance(r.between, str):
        window = r.between
    elif r.between is not None:
        window = TimeWindow(_clock(r.between[0]), _clock(r.between[1]))
    return Rule(
        name=r.name,
        event=r.event,
        device_kind=r.device_kind,
        alarm=r.alarm,
        priority=Priority(r.priority) if r.priority is not None else None,
        window=window,
        zone=r.zone,
        resolves=tuple(r.resolves),
        flap_window=timedelta(seconds=r.flap_window_s),
        policy=r.policy,
        auto_resolve_person_alarm=r.auto_resolve_person_alarm,
    )


def _policy(name: str, p: PolicyModel, where: str) -> Policy:
    try:
        return Policy(
            name=name,
            steps=tuple(Step(timedelta(seconds=s.after_s), s.target, s.level) for s in p.steps),
            repeat=p.repeat,
            from_previous=p.from_previous,
            ack_timeout=timedelta(seconds=p.ack_timeout_s) if p.ack_timeout_s else None,
            round_interval=timedelta(seconds=p.round_interval_s) if p.round_interval_s else None,
        )
    except ValueError as exc:
        raise RulesError(f"{where}: {exc}") from exc


def load_rules(path: Path, *, journal_exporting: Iterable[str] = ()) -> RuleSet:
    """The rules file, refused whole when anything in it cannot be used.

    `journal_exporting`: the municipalities with journal export on (the daemon's, at
    start and on reload). An alarm kind one of them can raise without a
    `[journal.<kind>]` section would be resolved with no way to write its note.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror}") from exc
    rules = parse_rules(text, str(path))
    problems = journal_problems(rules, journal_exporting)
    if problems:
        raise RulesError(f"{path}: " + "; ".join(str(p) for p in problems))
    return rules


def alarm_kinds(rules: RuleSet) -> list[str]:
    return rules.alarm_kinds()


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"])
        loc = loc.replace(".[", "[")
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


# Device-only and alarmhub-only event types, for `rules explain` and docs.
DEVICE_EVENTS = tuple(e for e in EventType if e not in INTERNAL_EVENTS)
