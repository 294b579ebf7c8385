"""Load `config/rules.toml` into a frozen :class:`RuleSet`, all or nothing.

Validation is strict (`extra="forbid"`): a typo in a rules file must stop the
start, naming the key path, rather than silently leave an alarm unrouted. A
reload that fails keeps the rules already in force.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alarmhub.core.model import DeviceKind, EventType, Priority
from alarmhub.core.rules import Rule, RuleSet, TimeWindow


class RulesError(Exception):
    """A rules file that cannot be used; the message names the file and the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _clock(text: str) -> time:
    try:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))
    except ValueError as exc:
        raise ValueError(f"expected HH:MM, got {text!r}") from exc


class RuleModel(_Strict):
    name: str
    event: EventType
    device_kind: DeviceKind | None = None
    alarm: str | None = None
    priority: Annotated[int, Field(ge=1, le=4)] | None = None
    between: tuple[str, str] | None = None
    resolves: list[str] = []
    flap_window_s: Annotated[int, Field(ge=0)] = 0

    @field_validator("between")
    @classmethod
    def _between(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        if v is not None:
            _clock(v[0])
            _clock(v[1])
        return v


class RulesModel(_Strict):
    timezone: str = "Europe/Oslo"
    sla_ack_s: dict[str, Annotated[int, Field(gt=0)]] = {}
    rules: list[RuleModel]

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("sla_ack_s")
    @classmethod
    def _sla(cls, v: dict[str, int]) -> dict[str, int]:
        for key in v:
            if key not in {"p1", "p2", "p3", "p4"}:
                raise ValueError(f"keys are p1…p4, got {key!r}")
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
    alarm_kinds = {r.alarm for r in model.rules if r.alarm}
    for i, r in enumerate(model.rules):
        for kind in r.resolves:
            if kind not in alarm_kinds:
                raise RulesError(
                    f"{source}: rules[{i}].resolves: no rule raises alarm kind {kind!r}"
                )
        if r.alarm is not None and r.priority is None:
            raise RulesError(
                f"{source}: rules[{i}].priority: a rule that raises an alarm needs one"
            )
    rules = tuple(
        Rule(
            name=r.name,
            event=r.event,
            device_kind=r.device_kind,
            alarm=r.alarm,
            priority=Priority(r.priority) if r.priority is not None else None,
            window=TimeWindow(_clock(r.between[0]), _clock(r.between[1])) if r.between else None,
            resolves=tuple(r.resolves),
            flap_window=timedelta(seconds=r.flap_window_s),
        )
        for r in model.rules
    )
    return RuleSet(
        rules=rules,
        timezone=ZoneInfo(model.timezone),
        version=hashlib.sha256(text.encode()).hexdigest()[:12],
        sla_ack={Priority(int(k[1])): timedelta(seconds=s) for k, s in model.sla_ack_s.items()},
    )


def load_rules(path: Path) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror}") from exc
    return parse_rules(text, str(path))


def alarm_kinds(rules: RuleSet) -> list[str]:
    return sorted({r.alarm for r in rules.rules if r.alarm})


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"])
        loc = loc.replace(".[", "[")
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
