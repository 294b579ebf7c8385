"""The rules file's `[journal.<kind>]` sections -> :class:`JournalMapping` (issue 17).

One section per alarm kind: either the kind's journal note (a VKP alert code, the
encounter's mode of contact and reason) or `export = false` for a kind whose alarms
are about a device rather than a person's care. Validated as strictly as the rest of
the file: every code must be one the VKP code system has (core/journal/codes.py).
The cause and action choices are `[resolution.<kind>]`'s (config/resolution.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, model_validator

from alarmhub.core.journal import codes
from alarmhub.core.journal.mapping import JournalMapping, KindMapping, Unmapped, unmapped
from alarmhub.core.rules import RuleSet
from alarmhub.core.strays import STRAY_KIND


class JournalKindModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    export: bool = True
    alert: str | None = None
    mode: str = "2"
    reason: str = "2"

    @model_validator(mode="after")
    def _codes(self) -> JournalKindModel:
        if not self.export:
            if self.alert is not None:
                raise ValueError("export = false takes no alert")
            return self
        if self.alert is None:
            raise ValueError("an exported kind needs `alert`, a code of vkp-alert-code-v090")
        if self.alert not in codes.ALERT_CODES:
            raise ValueError(f"alert {self.alert!r} is not a code of vkp-alert-code-v090")
        if self.mode not in codes.ENCOUNTER_MODES:
            known = ", ".join(codes.ENCOUNTER_MODES)
            raise ValueError(f"mode {self.mode!r} is not a vkp-encounter-mode-v090 code ({known})")
        if self.reason not in codes.ENCOUNTER_REASONS:
            known = ", ".join(codes.ENCOUNTER_REASONS)
            raise ValueError(
                f"reason {self.reason!r} is not a vkp-encounter-reason-v090 code ({known})"
            )
        return self


def journal_mapping(models: dict[str, JournalKindModel]) -> JournalMapping:
    return JournalMapping(
        {
            kind: KindMapping(
                kind=kind,
                export=m.export,
                alert=m.alert or "",
                mode=m.mode,
                reason=m.reason,
            )
            for kind, m in sorted(models.items())
        }
    )


def kinds_by_municipality(rules: RuleSet) -> dict[str, set[str]]:
    """The alarm kinds each municipality can raise; "*": one without rules of its own.

    Besides the rules' kinds: the outage incident (when a storm policy is set) and the
    alarm a press from an unregistered device raises (core/strays.py).
    """
    every = {r.alarm for r in rules.rules if r.alarm} | {STRAY_KIND}
    if rules.storm is not None:
        every.add(rules.storm.incident_kind)
    found = {"*": every}
    for code, local in rules.municipalities.items():
        found[code] = every | {r.alarm for r in local.rules if r.alarm}
    return found


def journal_problems(rules: RuleSet, export_municipalities: Iterable[str]) -> list[Unmapped]:
    """`alarmhub rules check`'s refusal: kinds a municipality with export on cannot journal."""
    return unmapped(kinds_by_municipality(rules), rules.journal, export_municipalities)
